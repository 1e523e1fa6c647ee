"""Status snapshots of the dispatcher and the workers, from their totals and reports.

The dispatcher and worker modules keep plain totals (a worker's task counts what it
produced and served, a reader what it received and how long it waited) and hand them on in
the heartbeats they already send: a worker reports its tasks' totals (``stats``), a reader
its wait, element count and reading time (``wait_s``, ``elements``, ``read_s``). The
dispatcher keeps the latest report of each, so its status shows every job with its
workers, readers, rates and backlog. Everything here runs when a status is asked for or
``/metrics`` is scraped, never per element. The snapshot types are the core's
(``tensorwire.observe``); the metric families built from them are in ``metrics``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from tensorwire._version import __version__
from tensorwire.observe import (
    DataJobStatus,
    DataTaskStatus,
    DataWorkerStatus,
    DispatcherStatus,
    WorkerStatus,
)

from .journal import snapshot_file
from .protocol import ShardingPolicy

if TYPE_CHECKING:
    from .dispatcher import DispatchServer, _Dispatcher
    from .worker import WorkerServer, _Task, _Worker

__all__ = [
    "TaskReport",
    "ClientReport",
    "task_stats",
    "task_reports",
    "client_report",
    "worker_status",
    "dispatcher_status",
]


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """A task's totals as its worker last reported them."""

    elements_produced: int = 0
    elements_served: int = 0
    bytes_produced: int = 0
    bytes_served: int = 0
    buffered: int = 0
    buffer_capacity: int = 0
    elements_per_second: float = 0.0


@dataclasses.dataclass(frozen=True)
class ClientReport:
    """A reader's totals as its last heartbeat reported them."""

    job_id: int
    wait_seconds: float
    elements: int
    reading_seconds: float = 0.0


# -- worker side ---------------------------------------------------------------------------


def _report_of(task: _Task, now: float) -> TaskReport:
    # Bytes are estimated from the size of the task's first element: sizing every element
    # (or message) would cost the hot path more than the rest of this together; the call
    # metrics count the bytes actually sent.
    produced, served = task.elements_produced, task.elements_served
    return TaskReport(
        elements_produced=produced,
        elements_served=served,
        bytes_produced=produced * task.element_bytes,
        bytes_served=served * task.element_bytes,
        buffered=len(task.buffer),
        buffer_capacity=task.capacity,
        elements_per_second=produced / max(now - task.started, 1e-3),
    )


_REPORT_FIELDS = [f.name for f in dataclasses.fields(TaskReport)]


def task_stats(tasks: list[_Task]) -> list[list[Any]]:
    """The ``stats`` a worker's heartbeat carries: per task ``[task_id, *TaskReport]``."""
    now = time.monotonic()
    return [[t.task_id, *dataclasses.astuple(_report_of(t, now))] for t in tasks]


def task_reports(stats: Any) -> dict[int, TaskReport]:
    """A heartbeat's ``stats`` read back (absent from older workers: none).

    Raises:
      ValueError: a row that is not ``[task_id, *TaskReport fields]`` of numbers.
    """
    reports: dict[int, TaskReport] = {}
    for row in stats or ():
        if len(row) != 1 + len(_REPORT_FIELDS):
            raise ValueError(f"a task's stats have {len(_REPORT_FIELDS) + 1} numbers: {row!r}")
        task_id, produced, served, bytes_produced, bytes_served, buffered, capacity = (
            int(v) for v in row[:-1]
        )
        reports[task_id] = TaskReport(
            produced, served, bytes_produced, bytes_served, buffered, capacity, float(row[-1])
        )
    return reports


def client_report(job_id: int, request: dict[str, Any]) -> ClientReport:
    """What a reader's heartbeat says it waited, received and how long it has been reading
    (0 from older readers)."""
    return ClientReport(
        job_id,
        float(request.get("wait_s", 0.0)),
        int(request.get("elements", 0)),
        float(request.get("read_s", 0.0)),
    )


def _task_status(
    task_id: int,
    job_id: int,
    worker: str,
    finished: bool,
    report: TaskReport,
    unconfirmed: tuple[int, int] = (0, 0),
) -> DataTaskStatus:
    return DataTaskStatus(
        task_id,
        job_id,
        worker,
        finished,
        **dataclasses.asdict(report),  # (the same field names)
        unconfirmed_bytes=unconfirmed[0],
        unconfirmed_readers=unconfirmed[1],
    )


def worker_status(server: WorkerServer, core: _Worker) -> WorkerStatus:
    now = time.monotonic()
    with core.lock:
        tasks = sorted(core.tasks.values(), key=lambda t: t.task_id)
        finished = set(core.finished)
    return WorkerStatus(
        kind="worker",
        target=f"{server._config.protocol}://{server._address}",
        worker_address=core.address,
        dispatcher_address=server._config.dispatcher_address,
        protocol=server._config.protocol,
        version=__version__,
        pid=os.getpid(),
        uptime_seconds=now - server._created,
        registered=server._started,
        tasks=tuple(
            _task_status(
                t.task_id,
                t.job_id,
                core.address,
                t.task_id in finished,
                _report_of(t, now),
                t.unconfirmed(),
            )
            for t in tasks
        ),
        calls=tuple(server._meter.snapshot()) if server._meter is not None else (),
    )


# -- dispatcher side -----------------------------------------------------------------------

_MODES = {ShardingPolicy.OFF: "parallel_epochs", ShardingPolicy.DYNAMIC: "distributed_epoch"}


def _journal_facts(core: _Dispatcher) -> tuple[int, float | None]:
    """Bytes of the journal and its snapshot, and when the snapshot was written (the last
    compaction), read from the files."""
    journal = core.journal
    if journal is None or journal.closed:
        return 0, None
    size = 0
    try:
        size += os.path.getsize(journal.path)
    except OSError:
        pass
    try:
        stat = os.stat(os.path.join(journal.work_dir, snapshot_file(journal.generation)))
    except OSError:
        return size, None
    return size + stat.st_size, stat.st_mtime


def dispatcher_status(server: DispatchServer, core: _Dispatcher) -> DispatcherStatus:
    now = time.monotonic()
    with core.lock:
        state = core.state
        waits: dict[int, list[float]] = {}
        for client in core.client_reports.values():
            total = waits.setdefault(client.job_id, [0.0, 0, 0.0])
            total[0] += client.wait_seconds
            total[1] += client.elements
            total[2] += client.reading_seconds
        jobs = []
        for job in sorted(state.jobs.values(), key=lambda j: j.job_id):
            tasks = tuple(
                _task_status(
                    t.task_id,
                    job.job_id,
                    t.worker_address,
                    t.finished,
                    core.task_reports.get(t.task_id, TaskReport()),
                )
                for t in (state.tasks[i] for i in job.task_ids if i in state.tasks)
            )
            policy = ShardingPolicy(job.policy)
            wait, received, reading = waits.get(job.job_id, (0.0, 0, 0.0))
            jobs.append(
                DataJobStatus(
                    job_id=job.job_id,
                    job_name=job.job_name,
                    dataset_id=job.dataset_id,
                    processing_mode=_MODES.get(policy, policy.name.lower()),
                    num_consumers=job.num_consumers,
                    clients=tuple(sorted(job.clients)),
                    num_splits=job.num_splits,
                    splits_exhausted=job.splits_exhausted,
                    finished=state.job_finished(job),
                    garbage_collected=job.garbage_collected,
                    tasks=tasks,
                    client_wait_seconds=float(wait),
                    client_elements=int(received),
                    client_seconds=float(reading),
                )
            )
        workers = tuple(
            DataWorkerStatus(
                address,
                tuple(t.task_id for t in state.tasks_for_worker(address)),
                max(0.0, now - core.worker_seen.get(address, now)),
            )
            for address in sorted(state.workers)
        )
        datasets, clients, lost = len(state.datasets), len(state.clients), core.workers_lost
    journal_bytes, last_compaction = _journal_facts(core)
    config = server._config
    return DispatcherStatus(
        kind="dispatcher",
        target=server.target,
        protocol=config.protocol,
        version=__version__,
        pid=os.getpid(),
        uptime_seconds=now - core.started,
        fault_tolerant=bool(config.fault_tolerant_mode),
        work_dir=config.work_dir or "",
        datasets=datasets,
        jobs=tuple(jobs),
        workers=workers,
        workers_lost=lost,
        clients=clients,
        journal_bytes=journal_bytes,
        last_compaction=last_compaction,
        calls=tuple(server._meter.snapshot()) if server._meter is not None else (),
    )
