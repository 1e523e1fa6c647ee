"""Exactly-once ``distributed_epoch`` through worker failures (deterministic pipelines), and
at most once, said in the log, for the others.

A lost worker's tasks are replayed: a worker (the restarted one, or another) runs each task's
splits again in the order it was given them; every element keeps its position (task, index
in the task's output) and the ones some reader already received are left out, as the
readers reported them. See ``service/positions.py``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import pipeline
from tensorwire_dataservice.service.config import DispatcherConfig
from tensorwire_dataservice.service.dispatcher import _Dispatcher
from tensorwire_dataservice.service.protocol import ShardingPolicy
from tensorwire_dataservice.service.worker import _Task

from .helpers import assert_exactly_once

Dataset = tw.data.Dataset
service = tw.data.service


def test_elements_taken_by_a_worker_that_dies_before_sending_them_are_not_lost(
    protocol, monkeypatch
):
    """The worker takes a message's elements from its buffer and dies before they reach
    the reader (a kill -9 with the response in flight). A new worker process at the same
    address replays the task; the reader gets those elements from it, and nothing twice."""
    n = 500
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    first = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
    port = int(first._address.rsplit(":", 1)[1])
    taken: list[list[int]] = []
    dead = threading.Event()
    take_chunk = _Task.take_chunk

    def dies_with_a_message_in_flight(self: _Task, *args: Any, **kwargs: Any) -> Any:
        out, eos, index = take_chunk(self, *args, **kwargs)
        if out and self.worker is first._core and len(taken) == 3:
            taken.append([int(x) for x in out])
            dead.set()  # these never leave the worker
            raise errors.UnavailableError("worker killed with a response in flight")
        if out and self.worker is first._core:
            taken.append([int(x) for x in out])
        return out, eos, index

    monkeypatch.setattr(_Task, "take_chunk", dies_with_a_message_in_flight)
    second = None
    try:
        it = iter(
            Dataset.range(n).apply(service.distribute("distributed_epoch", dispatcher.target))
        )
        got = []
        while not dead.is_set():
            got.append(int(next(it)))
        first.stop()
        second = service.WorkerServer(
            service.WorkerConfig(dispatcher._address, protocol=protocol, port=port)
        )
        got.extend(int(x) for x in it)
        assert taken[3], "the message lost in flight held elements"
        assert_exactly_once(got, n)
    finally:
        for server in (second, first, dispatcher):
            if server is not None:
                server.stop()


def test_a_worker_dropped_for_good_has_its_tasks_replayed_on_another(protocol):
    """A worker that stops for good is dropped after worker_timeout_ms; its task moves to
    the other worker, which replays its splits: nothing lost, nothing twice."""
    n = 600
    dispatcher = service.DispatchServer(
        service.DispatcherConfig(protocol=protocol, worker_timeout_ms=500)
    )
    workers = [
        service.WorkerServer(
            service.WorkerConfig(dispatcher._address, protocol=protocol, heartbeat_interval_ms=50)
        )
        for _ in range(2)
    ]
    try:
        it = iter(
            Dataset.range(n).apply(service.distribute("distributed_epoch", dispatcher.target))
        )
        got = [int(next(it)) for _ in range(150)]
        workers[1].stop()  # (every task of the job has been given splits by now)
        got.extend(int(x) for x in it)
        assert_exactly_once(got, n)
    finally:
        for server in (*workers, dispatcher):
            server.stop()


# -- the dispatcher's side, record by record ----------------------------------------------

WORKER = "localhost:7001"


def _exact_job(work_dir: Any) -> tuple[_Dispatcher, int, int, list[int]]:
    """A fault-tolerant dispatcher core with an exact job read by two clients, its task on
    WORKER (process "p1") and six splits handed to it."""
    core = _Dispatcher(DispatcherConfig(work_dir=str(work_dir), fault_tolerant_mode=True))
    core.worker_heartbeat({"worker_address": WORKER, "incarnation": "p1", "tasks": []})
    dataset_id = core.get_or_register_dataset(
        {"dataset_def": pipeline.serialize(Dataset.range(100)), "metadata": {}, "dataset_id": ""}
    )["dataset_id"]
    job = core.get_or_create_job(
        {
            "dataset_id": dataset_id,
            "job_name": "j",
            "policy": int(ShardingPolicy.DYNAMIC),
            "acquire": True,
        }
    )
    clients = [job["client_id"], core.acquire_client({"job_id": job["job_id"]})["client_id"]]
    (task,) = core.state.tasks_for_worker(WORKER)
    ask = {
        "job_id": job["job_id"],
        "task_id": task.task_id,
        "max": 6,
        "position": 0,
        "worker": "p1",
        "worker_address": WORKER,
        "generation": 0,
    }
    assert len(core.get_splits(ask)["splits"]) == 6
    return core, job["job_id"], task.task_id, clients


def test_a_replay_survives_a_dispatcher_restart_in_the_middle_of_recovery(tmp_path):
    """The worker restarts; one reader reports what it received, then the dispatcher
    restarts. The restarted dispatcher still waits for the other reader only, keeps the
    first report, and then hands the replay the same six splits and both readers' elements
    to leave out."""
    core, job_id, task_id, (c1, c2) = _exact_job(tmp_path)
    recorded = core.get_splits(
        {
            "job_id": job_id,
            "task_id": task_id,
            "max": 6,
            "position": 0,
            "worker": "p1",
            "worker_address": WORKER,
            "generation": 0,
        }
    )["splits"]
    core.worker_heartbeat({"worker_address": WORKER, "incarnation": "p2", "tasks": []})
    view = core.client_heartbeat({"client_id": c1})
    (entry,) = view["tasks"]
    assert entry["generation"] == 1 and view["report"] == [entry["task_id"]]
    core.client_heartbeat(
        {"client_id": c1, "delivered": [{"task_id": task_id, "generation": 1, "ranges": [[0, 5]]}]}
    )
    replay = {
        "job_id": job_id,
        "task_id": task_id,
        "max": 6,
        "position": 0,
        "worker": "p2",
        "worker_address": WORKER,
        "generation": 1,
    }
    assert core.get_splits(replay).get("wait"), "replayed before every reader reported"
    assert core.journal is not None
    core.journal.close()  # the dispatcher dies here

    again = _Dispatcher(DispatcherConfig(work_dir=str(tmp_path), fault_tolerant_mode=True))
    task = again.state.tasks[task_id]
    assert (task.generation, task.awaiting, task.delivered) == (1, {c2}, [[0, 5]])
    assert again.get_splits(replay).get("wait")
    again.client_heartbeat(
        {
            "client_id": c2,
            "delivered": [{"task_id": task_id, "generation": 1, "ranges": [[5, 9], [20, 22]]}],
        }
    )
    reply = again.get_splits(replay)
    assert reply["splits"] == recorded  # the same splits, in the same order
    assert reply["skip"] == [[0, 9], [20, 22]]


def test_a_nondeterministic_pipeline_keeps_at_most_once_and_says_so(protocol, caplog):
    """An unseeded shuffle is not replayed (a rerun would order elements differently):
    a restarted worker's lost elements stay lost, none is delivered twice, and the
    dispatcher says so when it creates the job."""
    n = 2000
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    first = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
    port = int(first._address.rsplit(":", 1)[1])
    second = None
    try:
        with caplog.at_level(logging.WARNING):
            it = iter(
                Dataset.range(n)
                .shuffle(50)
                .apply(service.distribute("distributed_epoch", dispatcher.target))
            )
            got = [int(next(it)) for _ in range(100)]
        assert any(
            "ShuffleDataset without a seed" in r.getMessage() and "at most once" in r.getMessage()
            for r in caplog.records
        )
        (job,) = dispatcher._core.state.jobs.values()
        assert not job.exact
        first.stop()
        second = service.WorkerServer(
            service.WorkerConfig(dispatcher._address, protocol=protocol, port=port)
        )
        got.extend(int(x) for x in it)
        assert max(Counter(got).values()) == 1
        assert set(got) <= set(range(n))
    finally:
        for server in (second, first, dispatcher):
            if server is not None:
                server.stop()
