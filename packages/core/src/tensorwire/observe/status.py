"""Status snapshots: what a server is doing, as frozen dataclasses.

``tw.Server.status()``, ``DispatchServer.status()`` and ``WorkerServer.status()`` return
one of ``TaskServerStatus``, ``DispatcherStatus``, ``WorkerStatus``. Each
is a frozen dataclass of plain values (numbers, strings, tuples of smaller snapshots);
``as_dict()`` gives the JSON-ready form, which is also what the ``tensorwire.Status``
service sends (``service``), and ``status_from_dict`` reads it back.

A ``kind`` field tells the three apart: ``"task_server"``, ``"dispatcher"``, ``"worker"``.
Rates are elements per second averaged over the task's life so far (the Prometheus
counters give finer ones with ``rate()``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .calls import CallStats
from .diagnosis import InputDiagnosis, input_diagnosis

__all__ = [
    "CallStats",
    "VariableStatus",
    "TaskServerStatus",
    "DataTaskStatus",
    "DataJobStatus",
    "DataWorkerStatus",
    "DispatcherStatus",
    "WorkerStatus",
    "status_from_dict",
]


class _Snapshot:
    """``as_dict()`` for the snapshot dataclasses."""

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain dicts, lists, strings and numbers (JSON-ready)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class VariableStatus(_Snapshot):
    """One variable held by a task: its name, shape, dtype and size in bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclasses.dataclass(frozen=True)
class TaskServerStatus(_Snapshot):
    """What a ``tw.Server`` holds and serves.

    Args:
      kind: ``"task_server"``.
      task: the task's name, ``/job:<job>/task:<index>``.
      target: the address sessions use, ``"<protocol>://host:port"``.
      protocol: the transport.
      version: tensorwire's version.
      pid: the process id.
      uptime_seconds: seconds since the server was made.
      cluster: job -> task addresses, as ``ClusterSpec.as_dict()``.
      variables: the variables on this task.
      pending_sends: tensors sent to this task and not yet received.
      calls: per method and path, the calls served (empty without a metrics port).
    """

    kind: str
    task: str
    target: str
    protocol: str
    version: str
    pid: int
    uptime_seconds: float
    cluster: dict[str, Any]
    variables: tuple[VariableStatus, ...]
    pending_sends: int
    calls: tuple[CallStats, ...] = ()

    @property
    def variable_bytes(self) -> int:
        """Bytes of all variables together."""
        return sum(v.nbytes for v in self.variables)


@dataclasses.dataclass(frozen=True)
class DataTaskStatus(_Snapshot):
    """One data-service task: a worker producing a job's elements.

    Element and byte counts are what the worker reported (to the dispatcher with its last
    heartbeat). Bytes are estimated from the size of the task's first element (before
    compression); the call metrics count the bytes actually sent.

    Args:
      unconfirmed_bytes: (a worker's own status; 0 in the dispatcher's, which is not told)
        bytes of elements sent to readers and kept until a reader's next request confirms
        them, to send again if the stream broke (jobs whose elements have positions).
      unconfirmed_readers: (the same) readers the worker keeps such a log for.
    """

    task_id: int
    job_id: int
    worker_address: str
    finished: bool
    elements_produced: int
    elements_served: int
    bytes_produced: int
    bytes_served: int
    buffered: int
    buffer_capacity: int
    elements_per_second: float
    unconfirmed_bytes: int = 0
    unconfirmed_readers: int = 0


@dataclasses.dataclass(frozen=True)
class DataJobStatus(_Snapshot):
    """One data-service job: its dataset, mode, readers, tasks and progress.

    Args:
      client_wait_seconds: how long the job's readers waited for elements in all, as
        they reported it in their heartbeats; with ``client_elements`` (elements they
        received) it gives the wait per element.
      client_seconds: how long the same readers have been reading, summed over them (0
        from readers that do not report it); with ``client_wait_seconds`` it gives
        ``diagnosis``.
    """

    job_id: int
    job_name: str
    dataset_id: str
    processing_mode: str
    num_consumers: int
    clients: tuple[int, ...]
    num_splits: int
    splits_exhausted: bool
    finished: bool
    garbage_collected: bool
    tasks: tuple[DataTaskStatus, ...]
    client_wait_seconds: float
    client_elements: int
    client_seconds: float = 0.0

    @property
    def elements_produced(self) -> int:
        return sum(t.elements_produced for t in self.tasks)

    @property
    def elements_served(self) -> int:
        return sum(t.elements_served for t in self.tasks)

    @property
    def buffered(self) -> int:
        """Elements produced and waiting in the workers' buffers (the backlog)."""
        return sum(t.buffered for t in self.tasks)

    @property
    def diagnosis(self) -> InputDiagnosis:
        """Whether the readers are input-bound (``input_diagnosis``)."""
        return input_diagnosis(self.client_wait_seconds, self.client_seconds)


@dataclasses.dataclass(frozen=True)
class DataWorkerStatus(_Snapshot):
    """A worker as the dispatcher sees it: its address, its tasks, its last heartbeat."""

    address: str
    tasks: tuple[int, ...]
    seconds_since_heartbeat: float


@dataclasses.dataclass(frozen=True)
class DispatcherStatus(_Snapshot):
    """What a ``DispatchServer`` knows: datasets, jobs, workers, clients, its journal.

    Args:
      kind: ``"dispatcher"``.
      workers_lost: workers dropped for missed heartbeats since this dispatcher started.
      journal_bytes: bytes of the journal and its snapshot (0 when not fault tolerant).
      last_compaction: Unix time of the last journal compaction, or None.
    """

    kind: str
    target: str
    protocol: str
    version: str
    pid: int
    uptime_seconds: float
    fault_tolerant: bool
    work_dir: str
    datasets: int
    jobs: tuple[DataJobStatus, ...]
    workers: tuple[DataWorkerStatus, ...]
    workers_lost: int
    clients: int
    journal_bytes: int
    last_compaction: float | None
    calls: tuple[CallStats, ...] = ()


@dataclasses.dataclass(frozen=True)
class WorkerStatus(_Snapshot):
    """What a ``WorkerServer`` runs: its tasks and their buffers.

    Args:
      kind: ``"worker"``.
      worker_address: the address clients reach it at.
      registered: whether the dispatcher has answered its heartbeat.
    """

    kind: str
    target: str
    worker_address: str
    dispatcher_address: str
    protocol: str
    version: str
    pid: int
    uptime_seconds: float
    registered: bool
    tasks: tuple[DataTaskStatus, ...]
    calls: tuple[CallStats, ...] = ()


_KINDS: dict[str, type] = {
    "task_server": TaskServerStatus,
    "dispatcher": DispatcherStatus,
    "worker": WorkerStatus,
}


def _build(cls: Any, data: Any) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            values[field.name] = _restore(hints[field.name], data[field.name])
    return cls(**values)


def _restore(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        (item, *rest) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):
            return tuple(_build(item, v) for v in value)
        return tuple(value)
    return value


def status_from_dict(data: dict[str, Any]) -> Any:
    """The snapshot an ``as_dict()`` came from, chosen by its ``kind``.

    Args:
      data: what ``as_dict()`` returned (or the ``tensorwire.Status`` service sent).

    Returns:
      A ``TaskServerStatus``, ``DispatcherStatus`` or ``WorkerStatus``.

    Raises:
      ValueError: ``data`` has no known ``kind``, or lacks a field.

    Examples:
        >>> from tensorwire.observe import status_from_dict
        >>> status_from_dict({"kind": "teapot"})
        Traceback (most recent call last):
        ValueError: unknown status kind 'teapot'; known: dispatcher, task_server, worker
    """
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = _KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown status kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    try:
        return _build(cls, data)
    except TypeError as exc:
        raise ValueError(f"{kind} status is incomplete: {exc}") from None
