"""The data service's metrics: the families of a dispatcher's and a worker's ``/metrics``,
built from their status snapshots (``status``) at scrape time, and the hookups that
give a server its call meter and metrics endpoint (``tensorwire.observe``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from tensorwire.observe import (
    CallMeter,
    DataJobStatus,
    DispatcherStatus,
    MetricFamily,
    MetricsEndpoint,
    WorkerStatus,
    call_families,
)
from tensorwire.transport import Listener, TransportOptions

__all__ = ["metered", "start_metrics", "worker_families", "dispatcher_families"]


def metered(options: TransportOptions, metrics_port: int | None) -> TransportOptions:
    """The listener's options: ``options`` with a fresh call meter when metrics are served
    (a copy: the channels the server makes keep ``options`` as they are)."""
    if metrics_port is None:
        return options
    return dataclasses.replace(options, call_meter=CallMeter())


def start_metrics(
    config: Any,
    collect: Callable[[], Iterable[MetricFamily]],
    what: str,
    listener: Listener,
    status: Callable[[], Any],
) -> MetricsEndpoint | None:
    """The metrics endpoint ``config.metrics_port`` asks for (with the dashboard of
    ``status``), or None; if it cannot be made the server's ``listener`` is stopped before
    the error propagates."""
    if config.metrics_port is None:
        return None
    try:
        return MetricsEndpoint(
            collect, int(config.metrics_port), config.metrics_host, what, status=status
        )
    except BaseException:
        listener.stop(0)
        raise


# -- metric families -----------------------------------------------------------------------


def _server_families(kind: str, name: str, status: Any) -> list[MetricFamily]:
    info = MetricFamily(
        "tensorwire_server_info",
        "gauge",
        "Always 1; the labels say what the server is.",
        ("kind", "name", "protocol", "version"),
    )
    info.add((kind, name, status.protocol, status.version), 1)
    uptime = MetricFamily(
        "tensorwire_server_uptime_seconds", "gauge", "Seconds since the server was made."
    )
    uptime.add((), status.uptime_seconds)
    return [info, uptime, *call_families(list(status.calls))]


_TASK_COUNTERS = (
    ("elements_produced_total", "Elements produced", "elements_produced"),
    ("elements_served_total", "Elements sent to readers", "elements_served"),
    (
        "produced_bytes_total",
        "Bytes produced (estimated from the size of each task's first element)",
        "bytes_produced",
    ),
    (
        "served_bytes_total",
        "Bytes sent to readers (estimated from the size of each task's first element)",
        "bytes_served",
    ),
)
_TASK_GAUGES = (
    ("buffered_elements", "Elements produced and waiting to be sent (the backlog)", "buffered"),
    ("buffer_capacity_elements", "Elements the buffers may hold now", "buffer_capacity"),
    (
        "elements_per_second",
        "Production rate, elements per second averaged over each task's life",
        "elements_per_second",
    ),
)


def _grouped(
    prefix: str, what: str, labels: tuple[str, ...], rows: list[tuple[tuple[Any, ...], Any]]
) -> list[MetricFamily]:
    """The task counters and gauges summed per label values (a job, a worker, a task)."""
    families = []
    for specs, kind in ((_TASK_COUNTERS, "counter"), (_TASK_GAUGES, "gauge")):
        for suffix, text, field in specs:
            family = MetricFamily(f"{prefix}_{suffix}", kind, f"{text}, per {what}.", labels)
            sums: dict[tuple[Any, ...], float] = {}
            for key, item in rows:
                sums[key] = sums.get(key, 0) + getattr(item, field)
            for key, value in sums.items():
                family.add(key, value)
            families.append(family)
    return families


def worker_families(status: WorkerStatus) -> list[MetricFamily]:
    """The families of a worker's ``/metrics``."""
    tasks = MetricFamily("tensorwire_data_worker_tasks", "gauge", "Tasks the worker runs.")
    tasks.add((), len(status.tasks))
    rows = [((t.job_id, t.task_id), t) for t in status.tasks]
    # Only a worker knows what it keeps for its readers (the dispatcher is not told).
    unconfirmed = MetricFamily(
        "tensorwire_data_task_unconfirmed_bytes",
        "gauge",
        "Bytes of elements sent to readers and kept until they confirm them (resent after "
        "a broken stream), per task.",
        ("job", "task"),
    )
    readers = MetricFamily(
        "tensorwire_data_task_unconfirmed_readers",
        "gauge",
        "Readers the worker keeps sent elements for, per task.",
        ("job", "task"),
    )
    for key, task in rows:
        unconfirmed.add(key, task.unconfirmed_bytes)
        readers.add(key, task.unconfirmed_readers)
    return [
        *_server_families("worker", status.worker_address, status),
        tasks,
        *_grouped("tensorwire_data_task", "task", ("job", "task"), rows),
        unconfirmed,
        readers,
    ]


def dispatcher_families(status: DispatcherStatus) -> list[MetricFamily]:
    """The families of a dispatcher's ``/metrics``."""

    def gauge(name: str, text: str, value: float, labels: tuple[str, ...] = ()) -> MetricFamily:
        family = MetricFamily(name, "gauge", text, labels)
        if not labels:
            family.add((), value)
        return family

    out = _server_families("dispatcher", status.target, status)
    out.append(gauge("tensorwire_data_datasets", "Datasets registered.", status.datasets))
    jobs = gauge("tensorwire_data_jobs", "Jobs, by state.", 0, ("state",))
    states = {"active": 0, "finished": 0, "garbage_collected": 0}
    for job in status.jobs:
        state = (
            "garbage_collected"
            if job.garbage_collected
            else "finished"
            if job.finished
            else "active"
        )
        states[state] += 1
    for state, count in states.items():
        jobs.add((state,), count)
    out.append(jobs)
    out.append(
        gauge("tensorwire_data_clients", "Readers (iterations) holding a job.", status.clients)
    )
    workers = gauge("tensorwire_data_workers", "Workers, by state.", 0, ("state",))
    workers.add(("alive",), len(status.workers))
    out.append(workers)
    lost = MetricFamily(
        "tensorwire_data_workers_lost_total",
        "counter",
        "Workers dropped for missed heartbeats since the dispatcher started.",
    )
    lost.add((), status.workers_lost)
    out.append(lost)
    job_labels = ("job", "job_name")
    per_job: list[tuple[str, str, str, Callable[[DataJobStatus], float]]] = [
        (
            "tensorwire_data_job_splits_total",
            "counter",
            "Splits handed out (distributed_epoch).",
            lambda j: j.num_splits,
        ),
        (
            "tensorwire_data_job_splits_exhausted",
            "gauge",
            "1 once the job's source has no splits left.",
            lambda j: float(j.splits_exhausted),
        ),
        ("tensorwire_data_job_clients", "gauge", "Readers of the job.", lambda j: len(j.clients)),
        (
            "tensorwire_data_client_wait_seconds_total",
            "counter",
            "Seconds the job's readers waited for elements (as they reported).",
            lambda j: j.client_wait_seconds,
        ),
        (
            "tensorwire_data_client_elements_total",
            "counter",
            "Elements the job's readers received (as they reported).",
            lambda j: j.client_elements,
        ),
    ]
    for name, kind, text, value in per_job:
        family = MetricFamily(name, kind, text, job_labels)
        for job in status.jobs:
            family.add((job.job_id, job.job_name), value(job))
        out.append(family)
    by_job = [((j.job_id, j.job_name), t) for j in status.jobs for t in j.tasks]
    out.extend(_grouped("tensorwire_data_job", "job (as its workers reported)", job_labels, by_job))
    alive = {w.address for w in status.workers}
    by_worker = [
        ((t.worker_address,), t) for j in status.jobs for t in j.tasks if t.worker_address in alive
    ]
    out.extend(
        f
        for f in _grouped(
            "tensorwire_data_worker", "worker (as it reported)", ("worker",), by_worker
        )
        if not f.name.endswith("_bytes_total")
    )
    out.append(
        gauge(
            "tensorwire_data_journal_bytes",
            "Bytes of the journal and its snapshot.",
            status.journal_bytes,
        )
    )
    if status.last_compaction is not None:
        out.append(
            gauge(
                "tensorwire_data_journal_last_compaction_timestamp_seconds",
                "Unix time of the last journal compaction.",
                status.last_compaction,
            )
        )
    return out
