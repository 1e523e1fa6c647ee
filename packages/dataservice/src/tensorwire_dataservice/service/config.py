"""DispatcherConfig and WorkerConfig, field for field as tf.data service's.

Both are namedtuples with TensorFlow's field names, order and defaults. Time fields follow
TensorFlow's convention: ``None`` means "the runtime chooses" (stored as 0) and an explicit 0
means "as small as possible" (stored as 1). The servers also accept the
``DispatcherConfig`` / ``WorkerConfig`` protos of ``tensorwire.protos`` (TensorFlow's
``service_config.proto``), converted by ``dispatcher_config_from`` /
``worker_config_from``.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Mapping
from typing import Any

from tensorwire.observe import DEFAULT_METRICS_HOST
from tensorwire.protos import TensorwireOptions
from tensorwire.runtime.options import security_environment, security_options
from tensorwire.transport import TransportOptions
from tensorwire.transport.security import check_listen

__all__ = [
    "DEFAULT_PROTOCOL",
    "DispatcherConfig",
    "WorkerConfig",
    "dispatcher_config_from",
    "worker_config_from",
    "DEFAULT_JOB_GC_CHECK_INTERVAL_MS",
    "DEFAULT_JOB_GC_TIMEOUT_MS",
    "DEFAULT_WORKER_TIMEOUT_MS",
    "DEFAULT_HEARTBEAT_INTERVAL_MS",
    "DEFAULT_DISPATCHER_TIMEOUT_MS",
    "DEFAULT_CLIENT_TIMEOUT_MS",
    "DEFAULT_CROSS_TRAINER_CACHE_SIZE_BYTES",
    "BIND_HOST_ENV",
    "bind_host",
    "configured_bind_host",
    "transport_options_of",
    "configure_client",
    "client_transport_options",
]

#: Like TensorFlow, the data service speaks gRPC unless told otherwise.
DEFAULT_PROTOCOL = "grpc"

# The runtime defaults TensorFlow's C++ servers pick for fields left at 0.
DEFAULT_JOB_GC_CHECK_INTERVAL_MS = 10 * 60 * 1000
DEFAULT_JOB_GC_TIMEOUT_MS = 5 * 60 * 1000
DEFAULT_WORKER_TIMEOUT_MS = 60 * 60 * 1000 // 6  # 10 minutes
DEFAULT_HEARTBEAT_INTERVAL_MS = 30 * 1000
DEFAULT_DISPATCHER_TIMEOUT_MS = 60 * 60 * 1000
DEFAULT_CLIENT_TIMEOUT_MS = 5 * 60 * 1000
#: TensorFlow's default memory budget of a worker's cross-trainer cache (per task): 10 GiB.
DEFAULT_CROSS_TRAINER_CACHE_SIZE_BYTES = 10 << 30


#: Environment variable naming the interface servers bind (default loopback only). The
#: ``tensorwire dispatcher|worker --host`` option sets it; see ``bind_host``.
BIND_HOST_ENV = "TENSORWIRE_DATA_BIND_HOST"


def configured_bind_host() -> str:
    """The interface servers bind, unbracketed: ``TENSORWIRE_DATA_BIND_HOST`` or loopback."""
    return os.environ.get(BIND_HOST_ENV, "").strip() or "127.0.0.1"


def bind_host(kind: str, options: TransportOptions) -> str:
    """The host a server binds: loopback unless ``TENSORWIRE_DATA_BIND_HOST`` says otherwise.

    A server reachable beyond loopback runs code it is sent (dataset definitions), so it
    refuses to bind there without authentication (``tensorwire.transport.security.
    check_listen``), unless its config says ``insecure=True``.
    """
    host = configured_bind_host()
    check_listen(f"tf.data service {kind}", host, options)
    return f"[{host}]" if ":" in host else host


def _security_message(cluster_token: str | None, tls: Any) -> TensorwireOptions:
    """``cluster_token`` and ``tls`` (a ``TLSOptions`` proto or a mapping of its field names)
    as the ``TensorwireOptions`` message ``tw.Server`` reads its own from."""
    message = TensorwireOptions()
    if cluster_token:
        message.cluster_token = str(cluster_token)
    if tls is None:
        return message
    if isinstance(tls, Mapping):
        unknown = set(tls) - set(message.tls.DESCRIPTOR.fields_by_name)
        if unknown:
            raise ValueError(
                f"unknown TLS option(s) {sorted(unknown)}; the fields are "
                f"{sorted(message.tls.DESCRIPTOR.fields_by_name)}"
            )
        for name, value in tls.items():
            if value is not None:
                setattr(message.tls, name, value)
    elif getattr(getattr(tls, "DESCRIPTOR", None), "name", None) == "TLSOptions":
        message.tls.CopyFrom(tls)
    else:
        raise TypeError(
            "tls must be a tensorwire.protos.TLSOptions or a dict of its fields, "
            f"got {type(tls).__name__}"
        )
    return message


def transport_options_of(config: Any) -> TransportOptions:
    """The token, TLS and insecure settings of a dispatcher or worker config, each falling
    back to its environment variable exactly as for ``tw.Server``."""
    return security_options(
        _security_message(config.cluster_token, config.tls), bool(config.insecure)
    )


_client_lock = threading.Lock()
_client_security: tuple[str | None, Any, bool] | None = None
#: ((_client_security, security_environment()), the options built from them).
_client_options: tuple[tuple[Any, ...], TransportOptions] | None = None


def configure_client(
    cluster_token: str | None = None, tls: Any = None, insecure: bool = False
) -> None:
    """The token and TLS settings this process's data-service clients use (``distribute``,
    ``from_dataset_id``, ``register_dataset`` ...). Without a call, the environment variables
    (``TENSORWIRE_CLUSTER_TOKEN``, ``TENSORWIRE_TLS_*``) decide, which is also how processes
    started by spawn (DataLoader workers) get them. ``configure_client()`` with no
    arguments returns to the environment.

    Args:
      cluster_token: the token every call to the service carries.
      tls: a ``tensorwire.protos.TLSOptions`` or a dict of its fields
        (``certificate_chain_file``, ``private_key_file`` for a client certificate,
        ``root_certificates_file``, ``server_name_override``).
      insecure: allow sending the token in plaintext beyond loopback.

    Raises:
      ValueError: ``tls`` names a field that does not exist.
      TypeError: ``tls`` is neither a ``TLSOptions`` nor a dict.

    Examples:
        >>> tw.data.service.configure_client(cluster_token="secret", tls={
        ...     "root_certificates_file": "ca.pem"})                   # doctest: +SKIP
    """
    global _client_security
    _security_message(cluster_token, tls)  # validate now, where the mistake is
    chosen = (cluster_token, tls, bool(insecure))
    with _client_lock:
        # All defaults: back to the environment.
        _client_security = None if chosen == (None, None, False) else chosen


def client_transport_options() -> TransportOptions:
    """The options of data-service client channels (see ``configure_client``).

    Asked on every client call, so the options built last are reused while neither the
    configuration nor the environment changed; callers must not modify them."""
    global _client_options
    key = (_client_security, security_environment())
    cached = _client_options
    if cached is not None and cached[0] == key:
        return cached[1]
    chosen = key[0]
    if chosen is None:
        options = security_options(None)
    else:
        token, tls, insecure = chosen
        options = security_options(_security_message(token, tls), insecure)
    _client_options = (key, options)
    return options


def _time_or_placeholder(value: int | None) -> int:
    # None -> 0 ("runtime default"), 0 -> 1 ("as small as possible"), as TensorFlow does.
    if value is None:
        return 0
    if value == 0:
        return 1
    return int(value)


class DispatcherConfig(
    collections.namedtuple(
        "DispatcherConfig",
        [
            "port",
            "protocol",
            "work_dir",
            "fault_tolerant_mode",
            "worker_addresses",
            "job_gc_check_interval_ms",
            "job_gc_timeout_ms",
            "worker_timeout_ms",
            "worker_max_concurrent_snapshots",
            "cluster_token",
            "tls",
            "insecure",
            "registered_pipelines_only",
            "metrics_port",
            "metrics_host",
        ],
    )
):
    """Configuration of a ``DispatchServer`` (TensorFlow's fields and defaults).

    Fields:
      port: port to bind; 0 picks a free one.
      protocol: transport protocol, default ``"grpc"``.
      work_dir: directory for the journal; needed to recover from restarts.
      fault_tolerant_mode: journal every state change before replying (needs ``work_dir``).
      worker_addresses: the fixed worker list that static sharding needs; entries are
        ``"host"`` or ``"host:port"`` where port may be ``%port%`` (any port).
      job_gc_check_interval_ms: how often unused jobs are looked for (None: 10 minutes).
      job_gc_timeout_ms: how long a job must be unused before it is collected; -1 never
        (None: 5 minutes).
      worker_timeout_ms: how long without a heartbeat before a worker is dropped
        (None: 10 minutes).
      worker_max_concurrent_snapshots: accepted for compatibility; snapshots are not
        implemented.
      cluster_token: (tensorwire) the token every call to and from it must carry;
        default ``TENSORWIRE_CLUSTER_TOKEN``.
      tls: (tensorwire) a ``tensorwire.protos.TLSOptions`` or a dict of its fields
        (``certificate_chain_file``, ``private_key_file``, ``root_certificates_file``,
        ``require_client_auth``, ``server_name_override``); default the ``TENSORWIRE_TLS_*``
        variables. As for ``tw.Server``: the certificate serves TLS and is presented to
        the servers it calls, the root CA verifies them (and, with
        ``require_client_auth``, its callers).
      insecure: (tensorwire) allow listening beyond loopback without authentication;
        logged as a warning. Never needed on loopback.
      registered_pipelines_only: (tensorwire) run only pipelines registered by name
        (``register_pipeline`` / ``registered_pipeline``); a dataset sent as code is
        refused with PermissionDeniedError, so nothing this server runs came from the
        network.
      metrics_port: (tensorwire) serve Prometheus metrics at
        ``http://<metrics_host>:<port>/metrics`` (0 picks a free port; the server's
        ``metrics_url`` says which); None serves none.
      metrics_host: (tensorwire) the interface the metrics port binds, loopback by
        default; another one is your explicit choice (the metrics hold no secrets).

    The fields are checked by ``DispatchServer``, which raises ``ValueError`` for an
    invalid one (e.g. ``fault_tolerant_mode`` without ``work_dir``).

    Examples:
        >>> config = DispatcherConfig(port=5050, work_dir="/var/lib/tw-dispatcher",
        ...                           fault_tolerant_mode=True)              # doctest: +SKIP
        >>> dispatcher = DispatchServer(config)                             # doctest: +SKIP
    """

    def __new__(
        cls,
        port: int = 0,
        protocol: str | None = None,
        work_dir: str | None = None,
        fault_tolerant_mode: bool = False,
        worker_addresses: list[str] | None = None,
        job_gc_check_interval_ms: int | None = None,
        job_gc_timeout_ms: int | None = None,
        worker_timeout_ms: int | None = None,
        worker_max_concurrent_snapshots: int = 0,
        cluster_token: str | None = None,
        tls: Any = None,
        insecure: bool = False,
        registered_pipelines_only: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = DEFAULT_METRICS_HOST,
    ) -> DispatcherConfig:
        if protocol is None:
            protocol = DEFAULT_PROTOCOL
        return super().__new__(
            cls,
            port,
            protocol,
            work_dir,
            fault_tolerant_mode,
            worker_addresses,
            _time_or_placeholder(job_gc_check_interval_ms),
            _time_or_placeholder(job_gc_timeout_ms),
            worker_timeout_ms,
            worker_max_concurrent_snapshots,
            cluster_token,
            tls,
            insecure,
            registered_pipelines_only,
            metrics_port,
            metrics_host,
        )


class WorkerConfig(
    collections.namedtuple(
        "WorkerConfig",
        [
            "dispatcher_address",
            "worker_address",
            "port",
            "protocol",
            "heartbeat_interval_ms",
            "dispatcher_timeout_ms",
            "data_transfer_protocol",
            "data_transfer_address",
            "cluster_token",
            "tls",
            "insecure",
            "registered_pipelines_only",
            "cross_trainer_cache_size_bytes",
            "host_id",
            "metrics_port",
            "metrics_host",
        ],
    )
):
    """Configuration of a ``WorkerServer`` (TensorFlow's fields and defaults).

    Fields:
      dispatcher_address: "host:port" of the dispatcher (required).
      worker_address: the address clients use to reach this worker; ``%port%`` is
        replaced by the bound port. Default ``"localhost:%port%"``.
      port: port to bind; 0 picks a free one.
      protocol: protocol to reach the dispatcher and to serve clients, default ``"grpc"``.
      heartbeat_interval_ms: how often to heartbeat to the dispatcher (None: 30 s).
      dispatcher_timeout_ms: how long to retry dispatcher calls before failing (None: 1 h).
      data_transfer_protocol: protocol used to move elements to clients (None: ``protocol``).
      data_transfer_address: accepted for compatibility, default
        ``"localhost:%dts_port%"``.
      cross_trainer_cache_size_bytes: memory budget of the sliding window each task of a
        ``cross_trainer_cache`` job keeps (TensorFlow's ``WorkerConfig`` proto field;
        None: 10 GiB). Elements leave the window oldest first when a new one would not
        fit; a trainer behind the window skips to its oldest element.
      host_id: (tensorwire) the host identity this worker reports, which readers with
        ``target_workers="LOCAL"`` compare with their own (None: this machine's, see
        ``tensorwire_dataservice.service.host.host_id``).
      cluster_token, tls, insecure, registered_pipelines_only, metrics_port,
        metrics_host: (tensorwire) as in ``DispatcherConfig``; the worker uses the
        same token and certificate when it calls the dispatcher.

    The fields are checked by ``WorkerServer``, which raises ``ValueError`` for an
    invalid one (e.g. no ``dispatcher_address``).

    Examples:
        >>> config = WorkerConfig(dispatcher_address="dispatcher-host:5050", port=5051,
        ...                       worker_address="worker-7:%port%")         # doctest: +SKIP
        >>> worker = WorkerServer(config)                                   # doctest: +SKIP
    """

    def __new__(
        cls,
        dispatcher_address: str,
        worker_address: str | None = None,
        port: int = 0,
        protocol: str | None = None,
        heartbeat_interval_ms: int | None = None,
        dispatcher_timeout_ms: int | None = None,
        data_transfer_protocol: str | None = None,
        data_transfer_address: str | None = None,
        cluster_token: str | None = None,
        tls: Any = None,
        insecure: bool = False,
        registered_pipelines_only: bool = False,
        cross_trainer_cache_size_bytes: int | None = None,
        host_id: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = DEFAULT_METRICS_HOST,
    ) -> WorkerConfig:
        if worker_address is None:
            worker_address = "localhost:%port%"
        if protocol is None:
            protocol = DEFAULT_PROTOCOL
        if data_transfer_address is None:
            data_transfer_address = "localhost:%dts_port%"
        return super().__new__(
            cls,
            dispatcher_address,
            worker_address,
            port,
            protocol,
            _time_or_placeholder(heartbeat_interval_ms),
            _time_or_placeholder(dispatcher_timeout_ms),
            data_transfer_protocol,
            data_transfer_address,
            cluster_token,
            tls,
            insecure,
            registered_pipelines_only,
            cross_trainer_cache_size_bytes,
            host_id,
            metrics_port,
            metrics_host,
        )


def _is_proto(config: Any, name: str) -> bool:
    descriptor = getattr(config, "DESCRIPTOR", None)
    return descriptor is not None and getattr(descriptor, "name", None) == name


def dispatcher_config_from(config: Any) -> DispatcherConfig:
    """A ``DispatcherConfig`` from itself, None, or a ``DispatcherConfig`` proto."""
    if config is None:
        return DispatcherConfig()
    if isinstance(config, DispatcherConfig):
        return config
    if _is_proto(config, "DispatcherConfig"):
        # Proto fields already hold the "0 = runtime default" encoding.
        return DispatcherConfig._make(
            [
                int(config.port),
                config.protocol or DEFAULT_PROTOCOL,
                config.work_dir or None,
                bool(config.fault_tolerant_mode),
                list(config.worker_addresses) or None,
                int(config.job_gc_check_interval_ms),
                int(config.job_gc_timeout_ms),
                int(getattr(config, "worker_timeout_ms", 0)) or None,
                int(getattr(config, "worker_max_concurrent_snapshots", 0)),
                None,
                None,
                False,
                False,
                None,
                DEFAULT_METRICS_HOST,
            ]
        )
    raise TypeError(
        "config must be a tw.data.service.DispatcherConfig or a DispatcherConfig proto, "
        f"got {type(config).__name__}"
    )


def worker_config_from(config: Any) -> WorkerConfig:
    """A ``WorkerConfig`` from itself or a ``WorkerConfig`` proto."""
    if isinstance(config, WorkerConfig):
        return config
    if _is_proto(config, "WorkerConfig"):
        return WorkerConfig._make(
            [
                config.dispatcher_address or None,
                config.worker_address or "localhost:%port%",
                int(config.port),
                config.protocol or DEFAULT_PROTOCOL,
                int(config.heartbeat_interval_ms),
                int(config.dispatcher_timeout_ms),
                config.data_transfer_protocol or None,
                config.data_transfer_address or "localhost:%dts_port%",
                None,
                None,
                False,
                False,
                int(getattr(config, "cross_trainer_cache_size_bytes", 0)) or None,
                None,
                None,
                DEFAULT_METRICS_HOST,
            ]
        )
    raise TypeError(
        "config must be a tw.data.service.WorkerConfig or a WorkerConfig proto, "
        f"got {type(config).__name__}"
    )
