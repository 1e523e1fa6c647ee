"""Tasks as real processes: start, kill -9, restart on the same port.

Each task runs ``python -m tensorwire server ...``; the launcher waits (with a deadline) for
the line the command prints once it serves. Ports are bound by the task itself, so a
cluster of processes is given fixed ports picked up front; a task restarted after a kill
binds the same port again (retrying while the old socket is released).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .child import ChildProcess

__all__ = ["TaskProcess", "start_process_cluster", "stop_all"]

_READY_PREFIX = "tensorwire server "


class TaskProcess(ChildProcess):
    """One task of a cluster running as ``tensorwire server`` in a child process.

    For fault tests: the task can be killed with SIGKILL (``kill``), stopped cleanly
    (``terminate``) and restarted on the same port (``restart``), which an
    in-process server cannot. Nothing runs until ``start`` (or ``launch``); as a
    context manager it kills the child on exit. The ports are the ones in ``cluster``
    (fixed up front, so peers know them); see ``start_process_cluster`` for a whole
    cluster on free ports.

    Once it serves, ``target`` is ``"grpc://localhost:<port>"`` (what ``tw.Session``
    takes); ``address`` is its ``"host:port"`` in the cluster, ``device`` its
    ``/job:<job>/task:<i>``, ``pid`` its process id and ``output`` everything it printed.

    Args:
      cluster: job name -> list of ``"host:port"``, every task of the cluster.
      job_name: this task's job.
      task_index: this task's index in the job.
      protocol: the transport, ``"grpc"`` by default.
      extra_args: more options for ``tensorwire server`` (say ``["--token", "s3cret"]``).
      env: the child's environment; default this process's.

    Examples:
        >>> import portpicker
        >>> from tensorwire_testing import TaskProcess
        >>> port = portpicker.pick_unused_port()
        >>> with TaskProcess({"worker": [f"localhost:{port}"]}, "worker", 0) as task:
        ...     _ = task.start(timeout=60)
        ...     with tw.Session(task.target) as sess:
        ...         print(sess.run(np.add, 1, 2))
        ...     _ = task.restart(timeout=60)      # kill -9, then serve the same port again
        ...     print(task.target == f"grpc://localhost:{port}")
        3
        True
    """

    def __init__(
        self,
        cluster: Mapping[str, Sequence[str]],
        job_name: str,
        task_index: int,
        protocol: str = "grpc",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(env)
        self.cluster = {job: list(addresses) for job, addresses in cluster.items()}
        self.job_name = job_name
        self.task_index = task_index
        self.protocol = protocol
        self.extra_args = list(extra_args)
        self.target: str | None = None

    @property
    def address(self) -> str:
        """This task's ``"host:port"`` in the cluster."""
        return self.cluster[self.job_name][self.task_index]

    @property
    def device(self) -> str:
        """``/job:<job>/task:<index>``, for ``device=`` arguments."""
        return f"/job:{self.job_name}/task:{self.task_index}"

    @property
    def name(self) -> str:
        """Same as ``device``; how messages name this task."""
        return self.device

    def command(self) -> list[str]:
        """``server --cluster_spec ... --job_name ... --task_index ... --protocol ...``."""
        return [
            "server",
            "--cluster_spec",
            json.dumps(self.cluster),
            "--job_name",
            self.job_name,
            "--task_index",
            str(self.task_index),
            "--protocol",
            self.protocol,
            *self.extra_args,
        ]

    def is_ready_line(self, line: str) -> bool:
        """Whether ``line`` is the ``tensorwire server ... serving <target>`` line."""
        return line.startswith(_READY_PREFIX) and " serving " in line

    def on_ready(self, line: str) -> None:
        """Set ``target`` from the ready line."""
        self.target = line.rsplit(" ", 1)[-1]


def start_process_cluster(
    num_workers: int,
    num_ps: int,
    protocol: str = "grpc",
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> dict[str, list[TaskProcess]]:
    """Every task of a ``worker``/``ps`` cluster in its own process, on loopback.

    Ports are picked free up front; the ps tasks start first, then the workers, each
    waited for until it serves. If one fails to start, the ones started are killed.

    Args:
      num_workers: tasks of job ``worker``.
      num_ps: tasks of job ``ps``.
      protocol: the transport, ``"grpc"`` by default.
      extra_args: more options for every ``tensorwire server``.
      timeout: seconds (scaled by ``TENSORWIRE_TEST_TIMEOUT_SCALE``) each task may take to
        serve.

    Returns:
      ``{"worker": [TaskProcess, ...], "ps": [TaskProcess, ...]}``, all serving.

    Raises:
      FailedPreconditionError: a task exited before serving (its output is quoted).
      DeadlineExceededError: a task did not serve within ``timeout``.

    Examples:
        >>> from tensorwire_testing import start_process_cluster, stop_all
        >>> tasks = start_process_cluster(num_workers=2, num_ps=1)
        >>> try:
        ...     with tw.Session(tasks["worker"][0].target) as sess:
        ...         print(sorted(sess.cluster_spec.jobs))
        ... finally:
        ...     stop_all(tasks)
        ['ps', 'worker']
    """
    import portpicker

    cluster = {
        "worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(num_workers)],
        "ps": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(num_ps)],
    }
    tasks: dict[str, list[TaskProcess]] = {"worker": [], "ps": []}
    try:
        for job in ("ps", "worker"):
            for index in range(len(cluster[job])):
                task = TaskProcess(cluster, job, index, protocol, extra_args)
                tasks[job].append(task)
                task.start(timeout=timeout)
    except BaseException:
        stop_all(tasks)
        raise
    return tasks


def stop_all(tasks: Mapping[str, Sequence[TaskProcess]] | Sequence[TaskProcess]) -> None:
    """Kill every task given (a job -> tasks mapping or a flat list).

    Sends SIGKILL to each child still running and reaps it; tasks already dead are
    skipped, so it is safe in a ``finally``.

    Args:
      tasks: what ``start_process_cluster`` returned, or any list of tasks.

    Examples:
        >>> tasks = start_process_cluster(num_workers=1, num_ps=1)    # doctest: +SKIP
        >>> stop_all(tasks)                                           # doctest: +SKIP
    """
    flat: list[Any] = (
        [t for ts in tasks.values() for t in ts] if isinstance(tasks, Mapping) else list(tasks)
    )
    for task in flat:
        task.kill()
