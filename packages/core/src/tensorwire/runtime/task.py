"""``tw.current_task()``: who am I, for a function running on a task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from ..cluster import ClusterSpec
    from .session import Session

__all__ = ["TaskInfo", "current_task", "running_on"]

_local = threading.local()


class TaskInfo:
    """The task a function runs on: its job, index, device name, cluster and a session.

    Returned by ``current_task`` inside a function that ``Session.run`` runs; one per
    server, made by the server (not constructed by users). ``session`` connects to this
    very task (and through it the whole cluster); it is made on first use and shared by
    every function running on the task. ``storage`` is a dict that lives as long as the
    task: functions keep what must outlast one call there (an input iterator, a cache),
    keyed by names they choose. Both are dropped when the server stops.

    Args:
      job: the task's job name.
      task_index: its index in the job.
      cluster_spec: returns the cluster (with bound ports), read on each access.
      make_session: makes the session to this task, called once on first use.

    Examples:
        >>> def count_calls():
        ...     task = tw.current_task()
        ...     task.storage["calls"] = task.storage.get("calls", 0) + 1
        ...     return task.job, task.task_index, task.storage["calls"]
        >>> workers, ps = tw.test.create_local_cluster(num_workers=1, num_ps=1)
        >>> with tw.Session(workers[0].target) as sess:
        ...     print(sess.run(count_calls, device="/job:worker/task:0"))
        ...     print(sess.run(count_calls, device="/job:worker/task:0"))
        ('worker', 0, 1)
        ('worker', 0, 2)
    """

    def __init__(
        self,
        job: str,
        task_index: int,
        cluster_spec: Callable[[], ClusterSpec],
        make_session: Callable[[], Session],
    ) -> None:
        self.job = job
        self.task_index = task_index
        self._cluster_spec = cluster_spec
        self._make_session = make_session
        self._session: Session | None = None
        self._lock = threading.Lock()
        self.storage: dict[str, Any] = {}

    @property
    def index(self) -> int:
        """Same as ``task_index``."""
        return self.task_index

    @property
    def device(self) -> str:
        """This task's device, ``/job:<job>/replica:0/task:<index>/device:CPU:0``."""
        return f"/job:{self.job}/replica:0/task:{self.task_index}/device:CPU:0"

    @property
    def cluster_spec(self) -> ClusterSpec:
        """The cluster this task belongs to, with the ports actually bound."""
        return self._cluster_spec()

    @property
    def session(self) -> Session:
        """A ``tw.Session`` to this task, made on first use and shared on the task.

        Raises:
          UnavailableError: the session could not reach this task (say, as it stops).
        """
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def close(self) -> None:
        """Close the session and clear ``storage``; the server calls it when it stops."""
        with self._lock:
            session, self._session = self._session, None
            self.storage.clear()
        if session is not None:
            session.close()

    def __repr__(self) -> str:
        return f"TaskInfo(job={self.job!r}, task_index={self.task_index})"


def current_task() -> TaskInfo:
    """The task the calling function runs on (inside ``Session.run``).

    Returns:
      A ``TaskInfo``: ``job``, ``task_index``, ``device``, ``cluster_spec``, a
      ``session`` to this task (and through it the cluster) and ``storage``, a dict that
      lives as long as the task.

    Raises:
      FailedPreconditionError: called outside a function run by a task.

    Examples:
        >>> def where_am_i():
        ...     task = tw.current_task()
        ...     return task.device
        >>> sess.run(where_am_i, device="/job:worker/task:1")      # doctest: +SKIP
        '/job:worker/replica:0/task:1/device:CPU:0'
    """
    info: Any = getattr(_local, "task", None)
    if info is None:
        raise errors.FailedPreconditionError(
            "tw.current_task() is only available inside a function run on a task "
            "(Session.run / run_async)"
        )
    return info


class running_on:  # noqa: N801 - used like the function it replaced
    """``with running_on(info):`` makes ``info`` this thread's current task for the block.

    A class rather than ``contextlib.contextmanager``: it is entered on every ``run``, and a
    generator-based manager costs several times more.
    """

    __slots__ = ("_info", "_previous")

    def __init__(self, info: TaskInfo) -> None:
        self._info = info

    def __enter__(self) -> TaskInfo:
        self._previous = getattr(_local, "task", None)
        _local.task = self._info
        return self._info

    def __exit__(self, *exc: object) -> None:
        _local.task = self._previous
