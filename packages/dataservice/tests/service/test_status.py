"""``DispatchServer.status()`` / ``WorkerServer.status()`` and ``tensorwire status`` against
a dispatcher and a worker with a running job."""

from __future__ import annotations

import json

import pytest
import tensorwire as tw
from tensorwire.observe import DispatcherStatus, WorkerStatus, status_from_dict
from tensorwire_testing.commands import run_status

from .helpers import distribute

FAST_HEARTBEATS = {"heartbeat_interval_ms": 100}


def _until(check, timeout: float = 30.0):
    return tw.test.eventually(check, timeout=timeout, retry_on=(AssertionError,))


@pytest.fixture
def running_job(service_factory):
    """A dispatcher, its worker, and a reader part way through a distributed_epoch job."""
    dispatcher, [worker] = service_factory(1, worker_config=FAST_HEARTBEATS)
    dataset = distribute(
        tw.data.Dataset.range(10_000), dispatcher, "distributed_epoch", job_name="training"
    )
    iterator = iter(dataset.as_numpy_iterator())
    for _ in range(50):
        next(iterator)

    def reported():
        status = dispatcher.status()
        assert status.jobs and status.jobs[0].elements_produced >= 50
        return status

    _until(reported)
    yield dispatcher, worker, iterator


def test_dispatcher_status_lists_the_job_its_worker_and_reader(running_job):
    dispatcher, worker, _ = running_job
    status = dispatcher.status()
    assert isinstance(status, DispatcherStatus) and status.kind == "dispatcher"
    assert status.datasets == 1 and status.clients == 1
    [job] = status.jobs
    assert job.job_name == "training"
    assert job.processing_mode == "distributed_epoch"
    assert len(job.clients) == 1 and not job.finished
    [task] = job.tasks
    assert task.worker_address == worker._worker_address
    assert task.elements_produced >= 50
    assert [w.address for w in status.workers] == [worker._worker_address]
    assert status.workers[0].tasks == (task.task_id,)
    assert status_from_dict(json.loads(json.dumps(status.as_dict()))) == status


def test_worker_status_lists_its_tasks(running_job):
    dispatcher, worker, _ = running_job
    status = worker.status()
    assert isinstance(status, WorkerStatus) and status.registered
    [task] = status.tasks
    assert task.job_id == dispatcher.status().jobs[0].job_id
    assert task.elements_served >= 50
    assert 0 <= task.buffered <= task.buffer_capacity


def test_status_command_prints_jobs_workers_and_readers(running_job, cross_process_protocol):
    dispatcher, worker, _ = running_job
    result = run_status(dispatcher.target)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    job = dispatcher.status().jobs[0]
    assert f"dispatcher {dispatcher.target}" in out
    assert "training" in out and "distributed_epoch" in out
    assert str(job.job_id) in out and str(job.clients[0]) in out
    assert worker._worker_address in out
    assert "workers:" in out and "jobs:" in out


def test_status_command_json_parses(running_job, cross_process_protocol):
    dispatcher, worker, _ = running_job
    result = run_status(dispatcher.target, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "dispatcher"
    assert data["jobs"][0]["job_name"] == "training"
    assert data["jobs"][0]["tasks"][0]["worker_address"] == worker._worker_address
    worker_data = json.loads(
        run_status(f"{dispatcher.target.split('://')[0]}://{worker._address}", "--json").stdout
    )
    assert worker_data["kind"] == "worker"
    assert len(worker_data["tasks"]) == 1


def test_status_without_the_token_is_refused_with_a_reason(service_factory, cross_process_protocol):
    dispatcher, _ = service_factory(0, cluster_token="s3cret")
    refused = run_status(dispatcher.target)
    assert refused.returncode == 2
    assert "requires a cluster token" in refused.stderr
    allowed = run_status(dispatcher.target, "--token", "s3cret")
    assert allowed.returncode == 0, allowed.stderr
    assert "jobs: none" in allowed.stdout


def test_dispatcher_refuses_malformed_task_stats(service_factory):
    from tensorwire_dataservice.service.protocol import DISPATCHER_SERVICE, call

    dispatcher, _ = service_factory(0)
    protocol, address = dispatcher.target.split("://")
    with pytest.raises(tw.errors.InvalidArgumentError, match="WorkerHeartbeat"):
        call(
            protocol,
            address,
            DISPATCHER_SERVICE,
            "WorkerHeartbeat",
            {"worker_address": "localhost:1", "tasks": [], "stats": [[1, 2]]},
        )
