"""Local tf.data services for tests: in-process (``create_local_data_service``) or as real
processes (``DataServiceProcess``, for kill -9 / restart fault tests and CLI tests), plus the
plain fixture functions the pytest plugin exposes.

``create_local_data_service(num_workers)`` starts a dispatcher and ``num_workers`` workers in
this process, each bound to a free loopback port, and returns a ``LocalDataService``
(context manager; ``stop()`` ends everything). ``DataServiceProcess`` runs
``tensorwire dispatcher`` / ``tensorwire worker`` in a child process, waits (with a deadline)
for its ready line, and can be killed with SIGKILL and restarted on the same port; its
``launch()`` starts one without waiting (a worker whose dispatcher is not there, a dispatcher
that should fail), to be followed by ``wait_for_line`` / ``wait`` / ``terminate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .child import ChildProcess

__all__ = [
    "LocalDataService",
    "create_local_data_service",
    "DataServiceProcess",
    "data_service_processes",
    "local_data_service_factory",
    "local_data_service",
    "data_service_process_factory",
]


def _service() -> Any:
    try:
        from tensorwire_dataservice import service
    except ImportError as exc:  # pragma: no cover - the extra is missing
        from tensorwire._install import install_command

        raise ImportError(
            "create_local_data_service needs the distribution tensorwire-dataservice, which "
            f"is not installed: {install_command('tensorwire-dataservice')}"
        ) from exc
    return service


class LocalDataService:
    """A dispatcher and its workers, all in this process.

    Returned by ``create_local_data_service`` (not constructed directly). A context
    manager: leaving the block stops every worker, then the dispatcher.

    ``dispatcher`` is the ``DispatchServer`` and ``workers`` the ``WorkerServer`` s, in
    start order; ``target`` is what ``distribute(..., service=)`` takes.

    Args:
      dispatcher: the running ``DispatchServer``.
      workers: its running ``WorkerServer`` s.
      protocol: the transport they use.
      worker_kwargs: ``WorkerConfig`` fields for workers added later.

    Examples:
        >>> with tw.test.create_local_data_service(num_workers=1) as service:
        ...     _ = service.add_worker()
        ...     ds = tw.data.Dataset.range(6).apply(
        ...         tw.data.service.distribute("parallel_epochs", service.target))
        ...     print(len(service.workers), sorted(int(x) for x in ds.as_numpy_iterator()))
        2 [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    """

    def __init__(
        self, dispatcher: Any, workers: list[Any], protocol: str, worker_kwargs: dict[str, Any]
    ) -> None:
        self.dispatcher = dispatcher
        self.workers = workers
        self.protocol = protocol
        self._worker_kwargs = worker_kwargs

    @property
    def target(self) -> str:
        """``"<protocol>://localhost:<port>"`` of the dispatcher (the ``service`` argument)."""
        return self.dispatcher.target

    @property
    def dispatcher_address(self) -> str:
        """``"localhost:<port>"`` of the dispatcher (a worker's ``dispatcher_address``)."""
        return self.dispatcher.target.split("://", 1)[1]

    def add_worker(self, **overrides: Any) -> Any:
        """Start one more worker registered with this dispatcher.

        Args:
          **overrides: ``WorkerConfig`` fields for this worker, over the ``worker_config``
            given to ``create_local_data_service``.

        Returns:
          The new ``WorkerServer`` (also appended to ``workers``).

        Raises:
          TypeError: an override is not a ``WorkerConfig`` field.
          UnavailableError: the worker could not bind a port or reach the dispatcher.

        Examples:
            >>> worker = service.add_worker(heartbeat_interval_ms=100)   # doctest: +SKIP
        """
        service = _service()
        kwargs = {**self._worker_kwargs, **overrides}
        worker = service.WorkerServer(
            service.WorkerConfig(
                dispatcher_address=self.dispatcher_address, protocol=self.protocol, **kwargs
            )
        )
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        """Stop every worker, then the dispatcher. Idempotent."""
        for worker in self.workers:
            worker.stop()
        self.dispatcher.stop()

    def __enter__(self) -> LocalDataService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_local_data_service(
    num_workers: int = 1,
    protocol: str = "grpc",
    dispatcher_config: Any = None,
    worker_config: dict[str, Any] | None = None,
    **dispatcher_kwargs: Any,
) -> LocalDataService:
    """A dispatcher and ``num_workers`` workers in this process, on free loopback ports.

    ``dispatcher_config`` (a ``DispatcherConfig``) or ``dispatcher_kwargs`` (its fields, e.g.
    ``work_dir=..., fault_tolerant_mode=True``) configure the dispatcher; ``worker_config`` is
    a dict of ``WorkerConfig`` fields (other than ``dispatcher_address``) for every worker.
    Returns once every worker is registered.

    Raises:
      ValueError: a negative ``num_workers``, or both ``dispatcher_config`` and dispatcher
        keyword arguments.
      ImportError: tensorwire-dataservice is not installed.

    Examples:
        >>> service = tw.test.create_local_data_service(num_workers=2)
        >>> ds = tw.data.Dataset.range(4).apply(
        ...     tw.data.service.distribute("distributed_epoch", service.target))
        >>> sorted(int(x) for x in ds.as_numpy_iterator())
        [0, 1, 2, 3]
        >>> service.stop()
    """
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    service = _service()
    if dispatcher_config is None:
        dispatcher_config = service.DispatcherConfig(protocol=protocol, **dispatcher_kwargs)
    elif dispatcher_kwargs:
        raise ValueError("pass either dispatcher_config or dispatcher keyword arguments, not both")
    dispatcher = service.DispatchServer(dispatcher_config)
    local = LocalDataService(dispatcher, [], dispatcher_config.protocol, dict(worker_config or {}))
    try:
        for _ in range(num_workers):
            local.add_worker()
    except BaseException:
        local.stop()
        raise
    return local


class DataServiceProcess(ChildProcess):
    """``tensorwire dispatcher`` or ``tensorwire worker`` in a child process.

    ``kind`` is "dispatcher" or "worker"; ``args`` are the command's options. After
    ``start``, ``port`` is the bound port and later restarts reuse it. For kill -9 /
    restart fault tests and CLI tests; the life-cycle methods (``start``, ``launch``,
    ``wait_for_line``, ``wait``, ``kill``, ``terminate``, ``restart``) are those of
    ``TaskProcess``.

    Args:
      kind: ``"dispatcher"`` or ``"worker"``.
      args: more options of the command, e.g. ``["--dispatcher_address", address]`` for a
        worker or ``["--work_dir", path, "--fault_tolerant"]`` for a dispatcher.
      port: the port to bind; 0 picks a free one at the first start.
      env: the child's environment; default this process's.

    Raises:
      ValueError: ``kind`` is neither ``"dispatcher"`` nor ``"worker"``.

    Examples:
        >>> from tensorwire_testing import DataServiceProcess
        >>> dispatcher = DataServiceProcess("dispatcher").start(timeout=60)
        >>> worker = DataServiceProcess(
        ...     "worker", ["--dispatcher_address", dispatcher.address]).start(timeout=60)
        >>> port = dispatcher.port
        >>> _ = dispatcher.restart(timeout=60)          # kill -9 and serve the same port
        >>> dispatcher.port == port
        True
        >>> worker.kill(); dispatcher.kill()
    """

    def __init__(
        self, kind: str, args: Sequence[str] = (), port: int = 0, env: dict[str, str] | None = None
    ) -> None:
        if kind not in ("dispatcher", "worker"):
            raise ValueError(f"kind must be 'dispatcher' or 'worker', got {kind!r}")
        super().__init__(env)
        self.kind = kind
        self.args = list(args)
        self.port = port

    @property
    def address(self) -> str:
        """``"localhost:<port>"``; the port is known after ``start``."""
        return f"localhost:{self.port}"

    @property
    def name(self) -> str:
        """``"the dispatcher process"`` / ``"the worker process"``, for messages."""
        return f"the {self.kind} process"

    def command(self) -> list[str]:
        """``<kind> --port <port> <args>``."""
        return [self.kind, "--port", str(self.port), *self.args]

    def is_ready_line(self, line: str) -> bool:
        """Whether ``line`` is ``tensorwire <kind> serving at ...``."""
        return line.startswith(f"tensorwire {self.kind} serving at ")

    def on_ready(self, line: str) -> None:
        """Set ``port`` from the ready line."""
        target = line.split("serving at ", 1)[1].split()[0]
        self.port = int(target.rsplit(":", 1)[1])


# -- fixture functions (the pytest plugin wraps them with @pytest.fixture) -------------------


def local_data_service_factory(tensorwire_protocol: str) -> Iterator[Callable[..., Any]]:
    """Fixture: ``factory(num_workers=1, **kwargs)`` -> LocalDataService, stopped at the end."""
    made: list[LocalDataService] = []

    def factory(num_workers: int = 1, **kwargs: Any) -> LocalDataService:
        kwargs.setdefault("protocol", tensorwire_protocol)
        service = create_local_data_service(num_workers, **kwargs)
        made.append(service)
        return service

    try:
        yield factory
    finally:
        for service in made:
            service.stop()


def local_data_service(local_data_service_factory: Callable[..., Any]) -> Any:
    """Fixture: a dispatcher with one worker on the chosen protocol."""
    return local_data_service_factory(1)


@contextlib.contextmanager
def data_service_processes(
    num_workers: int = 2,
    *,
    protocol: str = "grpc",
    dispatcher_args: Sequence[str] = (),
    worker_args: Sequence[str] = ("--heartbeat_interval_ms", "100"),
    timeout: float = 30.0,
) -> Iterator[tuple[DataServiceProcess, list[DataServiceProcess]]]:
    """A dispatcher process and ``num_workers`` worker processes registered with it, all
    killed (-9) when the block ends: the cluster of kill -9 and restart tests.

    Args:
      num_workers: worker processes to start after the dispatcher serves.
      protocol: the transport of every process (it must reach across processes).
      dispatcher_args: more ``tensorwire dispatcher`` arguments (e.g. ``--work_dir D
        --fault_tolerant``).
      worker_args: more ``tensorwire worker`` arguments; by default heartbeats every
        100 ms, so that workers come back quickly after a dispatcher restart.
      timeout: seconds (scaled) each process may take to serve.

    Yields:
      (dispatcher, workers), serving.

    Raises:
      DeadlineExceededError: a process did not serve within ``timeout`` (all are killed).
      FailedPreconditionError: a process exited before serving (its output is quoted).

    Examples:
        >>> with data_service_processes(2) as (dispatcher, workers):  # doctest: +SKIP
        ...     workers[0].restart(timeout=60)  # kill -9, then serve the same port again
    """
    dispatcher = DataServiceProcess("dispatcher", ["--protocol", protocol, *dispatcher_args])
    workers: list[DataServiceProcess] = []
    try:
        dispatcher.start(timeout=timeout)
        for _ in range(num_workers):
            worker = DataServiceProcess(
                "worker",
                [
                    "--protocol",
                    protocol,
                    "--dispatcher_address",
                    dispatcher.address,
                    *worker_args,
                ],
            )
            workers.append(worker)
            worker.start(timeout=timeout)
        yield dispatcher, workers
    finally:
        for process in [*workers, dispatcher]:
            process.kill()


def data_service_process_factory() -> Iterator[Callable[..., DataServiceProcess]]:
    """Fixture: ``factory(kind, args=(), port=0)`` -> a started DataServiceProcess, killed
    at the end of the test. ``ready=False`` only launches it (no wait for its ready line)."""
    made: list[DataServiceProcess] = []

    def factory(
        kind: str,
        args: Sequence[str] = (),
        port: int = 0,
        timeout: float = 30.0,
        ready: bool = True,
    ) -> DataServiceProcess:
        process = DataServiceProcess(kind, args, port)
        made.append(process)
        if not ready:
            return process.launch()
        return process.start(timeout=timeout)

    try:
        yield factory
    finally:
        for process in made:
            process.kill()
