"""``tw.Server``: an in-process server for one task of a cluster (``tf.distribute.Server``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import errors
from .._version import __version__
from ..cluster import ClusterSpec, make_server_def, validate_server_def
from ..lifecycle import forget, stop_at_exit
from ..protos import ConfigProto, ServerDef
from ..transport import Listener, get_transport
from ..transport.kit.address import join_host_port
from ..transport.security import check_listen, is_loopback
from .options import allow_code_from_wire, bind_host, transport_options
from .task import TaskInfo
from .worker_service import WorkerState, make_worker_service

if TYPE_CHECKING:
    from ..observe import MetricFamily, MetricsEndpoint, TaskServerStatus

__all__ = ["Server"]

log = logging.getLogger(__name__)


class Server:
    """An in-process server that serves one task of a cluster.

    Behaves as ``tf.distribute.Server``: ``Server(server_or_cluster_def, job_name=None,
    task_index=None, protocol=None, config=None, start=True)``. Beyond TensorFlow it can be
    stopped (``stop()``, or use it as a context manager), after which ``join()`` returns.

    A port of 0 in the task's address binds a free port; ``target`` and ``server_def``
    carry the bound port.

    Args:
      server_or_cluster_def: a ``ServerDef``, a ``ClusterSpec``, a ``ClusterDef`` or a dict
        of job -> addresses (TensorFlow's own objects are accepted too).
      job_name: this task's job; may be left out when the cluster has one job (or the
        ``ServerDef`` says).
      task_index: this task's index in its job; may be left out when the job has one task.
      protocol: the transport, default ``"grpc"``; ``"inproc"`` for one process.
      config: a ``ConfigProto`` (``operation_timeout_in_ms``, ``tensorwire.cluster_token``,
        ``tensorwire.tls``, ``tensorwire.registered_functions_only`` ...).
      start: start serving at once (otherwise call ``start``).
      insecure: allow listening beyond loopback without authentication (logged as a
        warning).
      metrics_port: serve Prometheus metrics at ``http://<metrics_host>:<port>/metrics``
        (0 picks a free port, see ``metrics_url``); None (the default) serves none.
      metrics_host: the interface the metrics port binds: loopback unless you choose
        another (the metrics hold no secrets).

    Raises:
      TypeError: ``server_or_cluster_def`` cannot be read as a cluster.
      ValueError: ``job_name`` / ``task_index`` missing where they cannot be inferred.
      InvalidArgumentError: the job or task is not in the cluster, or the address has no
        valid port.
      FailedPreconditionError: the server would listen beyond loopback without
        authentication (mutual TLS, or a token over TLS), and ``insecure`` is not set.
      UnavailableError: the port cannot be bound (for example, it is in use).
      NotFoundError: no transport is installed for ``protocol``.

    Examples:
        >>> import tensorwire as tw
        >>> with tw.Server({"local": ["localhost:0"]}, job_name="local", task_index=0) as server:
        ...     print(server.target.startswith("grpc://localhost:"))
        True
    """

    def __init__(
        self,
        server_or_cluster_def: Any,
        job_name: str | None = None,
        task_index: int | None = None,
        protocol: str | None = None,
        config: ConfigProto | None = None,
        start: bool = True,
        *,
        insecure: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self._created = time.monotonic()
        self._server_def: ServerDef = make_server_def(
            server_or_cluster_def, job_name, task_index, protocol, config
        )
        self._lock = threading.RLock()
        self._started = False
        self._stopped = False
        host, port = validate_server_def(self._server_def)
        job, index = self._server_def.job_name, int(self._server_def.task_index)
        self._options = transport_options(self._server_def.default_session_config, insecure)
        bind = bind_host(self._server_def.default_session_config)
        if bind is None:
            # TensorFlow binds every interface; a loopback address binds loopback only.
            # "localhost" binds 127.0.0.1 alone: binding the name would take whichever of
            # ::1 / 127.0.0.1 is free and hide a port that is already in use.
            bind = (
                "0.0.0.0"
                if not is_loopback(host)
                else ("127.0.0.1" if host in ("localhost", "ip6-localhost") else host)
            )
        check_listen(f"tensorwire server {self.task_name}", bind, self._options)
        self._transport = get_transport(self._server_def.protocol)
        self._state = WorkerState(
            self, allow_code_from_wire(self._server_def.default_session_config)
        )
        from ..observe import CallMeter, status_service

        if metrics_port is not None:
            self._options.call_meter = CallMeter()
        self._listener: Listener = self._transport.serve(
            join_host_port(bind, port),
            [make_worker_service(self._state), status_service(self.status)],
            self._options,
        )
        bound = join_host_port(host, self._listener.port)
        if self.cluster_spec.task_address(job, index) != bound:
            # Port 0 (or ServerDef.port) was asked for: the cluster carries the real one.
            self._set_task_address(job, index, bound)
        self._task_info = TaskInfo(job, index, lambda: self.cluster_spec, self._make_session)
        self._metrics: MetricsEndpoint | None = None
        if metrics_port is not None:
            from ..observe import MetricsEndpoint

            try:
                self._metrics = MetricsEndpoint(
                    self._collect_metrics,
                    metrics_port,
                    metrics_host,
                    f"server {self.task_name}",
                    status=self.status,
                )
            except BaseException:
                self._listener.stop(0)
                raise
        stop_at_exit(self)  # transports may run threads that would keep the process alive
        if start:
            self.start()

    # -- TensorFlow's API ------------------------------------------------------------------
    def start(self) -> None:
        """Start serving. Idempotent.

        Raises:
          FailedPreconditionError: the server was stopped.
        """
        with self._lock:
            if self._stopped:
                raise errors.FailedPreconditionError(
                    "Server cannot be started after it has been stopped"
                )
            if not self._started:
                self._listener.start()
                self._started = True

    def join(self, timeout: float | None = None) -> bool:
        """Block until the server stops (returns True), or ``timeout`` seconds (False)."""
        return self._listener.wait(timeout)

    @property
    def server_def(self) -> ServerDef:
        """The ``ServerDef`` of this server, with the bound port in its cluster."""
        return self._server_def

    @property
    def target(self) -> str:
        """``"<protocol>://localhost:<port>"``, the address a ``Session`` connects to."""
        return f"{self._server_def.protocol}://localhost:{self._listener.port}"

    @staticmethod
    def create_local_server(config: ConfigProto | None = None, start: bool = True) -> Server:
        """A single-task server on a free loopback port, in job ``localhost`` as in TF.

        Examples:
            >>> server = tw.Server.create_local_server()      # doctest: +SKIP
            >>> server.target                                 # doctest: +SKIP
            'grpc://localhost:41234'
        """
        return Server({"localhost": ["localhost:0"]}, protocol="grpc", config=config, start=start)

    # -- beyond TensorFlow -----------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in flight get ``grace`` seconds to finish. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        forget(self)
        self._state.rendezvous.close()
        self._listener.stop(grace)
        self._task_info.close()
        if self._metrics is not None:
            self._metrics.stop()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def cluster_spec(self) -> ClusterSpec:
        return ClusterSpec(self._server_def.cluster)

    @property
    def task_name(self) -> str:
        return f"/job:{self._server_def.job_name}/task:{self._server_def.task_index}"

    @property
    def task_info(self) -> TaskInfo:
        return self._task_info

    @property
    def state(self) -> WorkerState:
        """The task's variables and rendezvous (for tests and embedding)."""
        return self._state

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` when the server has a metrics port, else None."""
        return self._metrics.url if self._metrics is not None else None

    def status(self) -> TaskServerStatus:
        """A snapshot of what this task holds and serves.

        Returns:
          A ``tensorwire.observe.TaskServerStatus``: the task, its target, its
          variables (name, shape, dtype, bytes), tensors sent to it and not yet received,
          and, with a metrics port, the calls served per method and path. Also served to
          other processes (``tensorwire status <target>``).

        Examples:
            >>> with tw.Server({"local": ["localhost:0"]}, job_name="local") as server:
            ...     print(server.status().task)
            /job:local/task:0
        """
        from ..observe import TaskServerStatus, VariableStatus

        meter = self._options.call_meter
        variables = tuple(
            VariableStatus(name, tuple(var.value.shape), var.value.dtype.name, var.value.nbytes)
            for name, var in sorted(list(self._state.variables.items()))
        )
        return TaskServerStatus(
            kind="task_server",
            task=self.task_name,
            target=self.target,
            protocol=self._server_def.protocol,
            version=__version__,
            pid=os.getpid(),
            uptime_seconds=time.monotonic() - self._created,
            cluster=self.cluster_spec.as_dict(),
            variables=variables,
            pending_sends=self._state.rendezvous.pending(),
            calls=tuple(meter.snapshot()) if meter is not None else (),
        )

    def _collect_metrics(self) -> list[MetricFamily]:
        from ..observe import MetricFamily, call_families

        status = self.status()
        labels = ("task",)
        task = (status.task,)
        count = MetricFamily(
            "tensorwire_task_variables", "gauge", "Variables held by the task.", labels
        )
        count.add(task, len(status.variables))
        size = MetricFamily(
            "tensorwire_task_variable_bytes",
            "gauge",
            "Bytes of each variable held by the task.",
            ("task", "variable"),
        )
        for var in status.variables:
            size.add((status.task, var.name), var.nbytes)
        pending = MetricFamily(
            "tensorwire_task_pending_sends",
            "gauge",
            "Tensors sent to the task and not received yet.",
            labels,
        )
        pending.add(task, status.pending_sends)
        info = MetricFamily(
            "tensorwire_server_info",
            "gauge",
            "Always 1; the labels say what the server is.",
            ("kind", "name", "protocol", "version"),
        )
        info.add(("task_server", status.task, status.protocol, status.version), 1)
        uptime = MetricFamily(
            "tensorwire_server_uptime_seconds", "gauge", "Seconds since the server was made."
        )
        uptime.add((), status.uptime_seconds)
        return [info, uptime, count, size, pending, *call_families(list(status.calls))]

    def __repr__(self) -> str:
        status = "stopped" if self._stopped else ("serving" if self._started else "bound")
        return f"<tw.Server {self.task_name} {self.target} {status}>"

    # -- internals -------------------------------------------------------------------------
    def _set_task_address(self, job: str, index: int, address: str) -> None:
        for job_def in self._server_def.cluster.job:
            if job_def.name == job:
                job_def.tasks[index] = address

    def _set_cluster(self, cluster: Any) -> None:
        """Replace the cluster this task knows (used by local-cluster helpers after every
        task bound its port). The task's own address must not change."""
        own = self.cluster_spec.task_address(self._server_def.job_name, self._server_def.task_index)
        new = ClusterSpec(cluster)
        if new.task_address(self._server_def.job_name, self._server_def.task_index) != own:
            raise errors.InvalidArgumentError(
                f"the new cluster gives {self.task_name} a different address than {own!s}"
            )
        self._server_def.cluster.CopyFrom(new.as_cluster_def())

    def _make_session(self) -> Any:
        from .session import Session

        return Session(self.target, config=self._server_def.default_session_config)
