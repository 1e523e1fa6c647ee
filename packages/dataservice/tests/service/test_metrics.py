"""The metrics ports of a dispatcher and a worker: the families are there, and their values
move as a job runs (scraped over HTTP, as Prometheus does)."""

from __future__ import annotations

import pytest
import tensorwire as tw
from tensorwire_dataservice.service.protocol import WORKER_SERVICE
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.metrics import scrape, total

from .helpers import distribute

FAST_HEARTBEATS = {"metrics_port": 0, "heartbeat_interval_ms": 100}


def _until(check, timeout: float = 30.0):
    """``check()``'s result once it stops failing its assertions (bounded)."""
    return tw.test.eventually(check, timeout=timeout, retry_on=(AssertionError, KeyError))


@pytest.fixture
def metered_service(service_factory):
    dispatcher, [worker] = service_factory(1, metrics_port=0, worker_config=FAST_HEARTBEATS)
    return dispatcher, worker


def test_servers_without_a_metrics_port_have_no_url(service_factory):
    dispatcher, [worker] = service_factory(1)
    assert dispatcher.metrics_url is None and worker.metrics_url is None


def test_worker_metrics_count_elements_per_task_as_a_job_runs(metered_service):
    dispatcher, worker = metered_service
    idle = scrape(worker.metrics_url)
    assert total(idle, "tensorwire_data_worker_tasks") == 0
    iterator = distribute(tw.data.Dataset.range(500), dispatcher, "distributed_epoch")
    iterator = iter(iterator.as_numpy_iterator())
    for _ in range(20):
        next(iterator)

    def served_at_least(n):
        def check():
            samples = scrape(worker.metrics_url)
            assert total(samples, "tensorwire_data_task_elements_served_total") >= n
            return samples

        return check

    early = _until(served_at_least(20))
    assert total(early, "tensorwire_data_worker_tasks") == 1
    assert total(early, "tensorwire_data_task_elements_produced_total") >= 20
    assert total(early, "tensorwire_data_task_served_bytes_total") > 0
    assert total(early, "tensorwire_data_task_buffer_capacity_elements") >= 2
    # (Once the task is done the worker deletes it, and its series with it: the
    # dispatcher keeps the job's totals, see below.)
    assert len(list(iterator)) == 480

    def calls_counted():
        # A call is counted once it ends: the element stream at the end of the job (the
        # dispatcher's nudge may end before or after the first elements, so it cannot be
        # counted on early: a CI run found no call counted at 20 elements served).
        samples = scrape(worker.metrics_url)
        assert total(samples, "tensorwire_calls_total", method=f"/{WORKER_SERVICE}/GetElements") > 0
        return samples

    _until(calls_counted)


def test_dispatcher_metrics_show_jobs_workers_readers_and_progress(metered_service):
    dispatcher, worker = metered_service
    idle = scrape(dispatcher.metrics_url)
    assert total(idle, "tensorwire_data_jobs", state="active") == 0
    assert total(idle, "tensorwire_data_workers", state="alive") == 1
    assert total(idle, "tensorwire_data_datasets") == 0
    dataset = distribute(tw.data.Dataset.range(300), dispatcher, "distributed_epoch")
    iterator = iter(dataset.as_numpy_iterator())
    for _ in range(30):
        next(iterator)

    def reported():
        samples = scrape(dispatcher.metrics_url)
        assert total(samples, "tensorwire_data_client_elements_total") >= 30
        assert total(samples, "tensorwire_data_job_elements_produced_total") >= 30
        return samples

    running = _until(reported)
    assert total(running, "tensorwire_data_datasets") == 1
    # (A reader that prefetched everything may have finished the job already.)
    assert (
        total(running, "tensorwire_data_jobs", state="active")
        + total(running, "tensorwire_data_jobs", state="finished")
        == 1
    )
    assert total(running, "tensorwire_data_clients") == 1
    assert total(running, "tensorwire_data_job_clients") == 1
    assert total(running, "tensorwire_data_job_splits_total") >= 1
    assert total(running, "tensorwire_data_client_wait_seconds_total") >= 0
    assert total(running, "tensorwire_data_worker_buffer_capacity_elements") >= 2
    assert (
        total(
            running, "tensorwire_calls_total", method="/tensorwire.data.Dispatcher/WorkerHeartbeat"
        )
        >= 1
    )
    assert total(running, "tensorwire_data_workers_lost_total") == 0
    list(iterator)

    def finished():
        samples = scrape(dispatcher.metrics_url)
        assert total(samples, "tensorwire_data_job_splits_exhausted") == 1
        return samples

    done = _until(finished)
    assert total(done, "tensorwire_data_job_splits_total") >= total(
        running, "tensorwire_data_job_splits_total"
    )


def test_dispatcher_counts_workers_it_lost(service_factory):
    dispatcher, [worker] = service_factory(
        1, metrics_port=0, worker_timeout_ms=300, worker_config={"heartbeat_interval_ms": 100}
    )
    worker.stop()

    def lost():
        samples = scrape(dispatcher.metrics_url)
        assert total(samples, "tensorwire_data_workers_lost_total") == 1
        assert total(samples, "tensorwire_data_workers", state="alive") == 0

    _until(lost)


def test_fault_tolerant_dispatcher_reports_its_journal(service_factory, tmp_path):
    dispatcher, _ = service_factory(
        1, metrics_port=0, work_dir=str(tmp_path), fault_tolerant_mode=True
    )
    tw.data.service.register_dataset(dispatcher.target, tw.data.Dataset.range(3))
    samples = scrape(dispatcher.metrics_url)
    assert total(samples, "tensorwire_data_journal_bytes") > 0
    status = dispatcher.status()
    assert status.fault_tolerant and status.journal_bytes > 0


def test_the_commands_announce_and_serve_their_metrics_port(cross_process_protocol):
    args = ["--protocol", cross_process_protocol, "--metrics_port", "0"]
    dispatcher = DataServiceProcess("dispatcher", args)
    worker = None
    try:
        dispatcher.start()
        worker = DataServiceProcess(
            "worker", [*args, "--dispatcher_address", dispatcher.address]
        ).start()
        urls = [
            p.wait_for_line("metrics at").split("metrics at ", 1)[1] for p in (dispatcher, worker)
        ]
        assert all(url.startswith("http://127.0.0.1:") for url in urls)
        assert total(scrape(urls[0]), "tensorwire_data_workers", state="alive") == 1
        assert total(scrape(urls[1]), "tensorwire_data_worker_tasks") == 0
    finally:
        for process in (worker, dispatcher):
            if process is not None:
                process.kill()
