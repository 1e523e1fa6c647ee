"""Settings of a server or session, read from ``ConfigProto`` and the environment.

TensorFlow's own fields (``operation_timeout_in_ms``, ``rpc_options``) keep their meaning;
tensorwire's security options live in the ``ConfigProto`` extension message
``tensorwire`` (field numbers far from TensorFlow's) and may also come from environment
variables, documented here, so separate processes of one cluster agree without code.
"""

from __future__ import annotations

import os
from typing import Any

from ..transport import TransportOptions
from ..transport.security import INSECURE_ENV, insecure_from_env

__all__ = [
    "CLUSTER_TOKEN_ENV",
    "TLS_ENV",
    "security_environment",
    "transport_options",
    "security_options",
    "allow_code_from_wire",
    "operation_timeout",
    "connect_timeout",
    "bind_host",
]

#: The cluster token when the config sets none.
CLUSTER_TOKEN_ENV = "TENSORWIRE_CLUSTER_TOKEN"
#: TLS settings when the config sets none, by ``TLSOptions`` field: what lets processes that
#: are configured by no code (data-service readers, launched tasks) use the cluster's TLS.
TLS_ENV = {
    "certificate_chain_file": "TENSORWIRE_TLS_CERT",
    "private_key_file": "TENSORWIRE_TLS_KEY",
    "root_certificates_file": "TENSORWIRE_TLS_ROOT_CA",
    "server_name_override": "TENSORWIRE_TLS_SERVER_NAME",
    "require_client_auth": "TENSORWIRE_TLS_REQUIRE_CLIENT_AUTH",
}
_TRUE = ("1", "true", "yes", "on")
_SECURITY_ENV = (CLUSTER_TOKEN_ENV, *TLS_ENV.values(), INSECURE_ENV)


def security_environment() -> tuple[str | None, ...]:
    """The environment variables ``security_options`` reads, as they are now: a cheap
    key for reusing options built from them (building them costs tens of microseconds)."""
    return tuple(os.environ.get(name) for name in _SECURITY_ENV)


def _ours(config: Any) -> Any:
    """The tensorwire options message inside ``config``, or None."""
    if config is None:
        return None
    try:
        if config.HasField("tensorwire"):
            return config.tensorwire
    except (ValueError, AttributeError):
        return None
    return None


def _tls_setting(tls: Any, field: str) -> Any:
    """A ``TLSOptions`` field from the config, else from its environment variable."""
    value = getattr(tls, field) if tls is not None else None
    if value:
        return value
    text = os.environ.get(TLS_ENV[field], "").strip()
    if field == "require_client_auth":
        return text.lower() in _TRUE
    return text or None


def security_options(ours: Any, insecure: bool = False) -> TransportOptions:
    """Token, TLS and the insecure opt-out from a ``TensorwireOptions`` message (or None),
    each falling back to its environment variable; the one place both ``tw.Server`` and
    the data service turn security settings into ``TransportOptions``."""
    token = (ours.cluster_token if ours is not None else "") or os.environ.get(CLUSTER_TOKEN_ENV)
    tls = ours.tls if ours is not None and ours.HasField("tls") else None
    options = TransportOptions(token=token or None)
    options.tls_cert = _tls_setting(tls, "certificate_chain_file")
    options.tls_key = _tls_setting(tls, "private_key_file")
    options.tls_root_ca = _tls_setting(tls, "root_certificates_file")
    if _tls_setting(tls, "require_client_auth"):
        options.tls_client_ca = options.tls_root_ca
    options.tls_server_name = _tls_setting(tls, "server_name_override")
    options.insecure = bool(insecure) or insecure_from_env()
    return options


def transport_options(config: Any, insecure: bool = False) -> TransportOptions:
    ours = _ours(config)
    options = security_options(ours, insecure)
    if ours is not None:
        if ours.max_message_bytes:
            options.max_message_bytes = int(ours.max_message_bytes)
        if ours.keepalive_time_ms:
            options.keepalive_ms = int(ours.keepalive_time_ms)
        if ours.stream_chunk_bytes:
            options.extra["stream_chunk_bytes"] = int(ours.stream_chunk_bytes)
        if ours.rdma_threshold_bytes:
            options.extra["rdma_threshold_bytes"] = int(ours.rdma_threshold_bytes)
    if config is not None:
        try:
            algorithm = config.rpc_options.compression_algorithm
        except AttributeError:
            algorithm = ""
        if algorithm in ("gzip", "deflate"):
            options.compression = "gzip"
    return options


def allow_code_from_wire(config: Any) -> bool:
    ours = _ours(config)
    return not (ours is not None and ours.registered_functions_only)


def bind_host(config: Any) -> str | None:
    ours = _ours(config)
    return (ours.bind_host or None) if ours is not None else None


def connect_timeout(config: Any, default: float) -> float:
    """Seconds a session waits for the first answer of the server it connects to."""
    ours = _ours(config)
    if ours is not None and ours.connect_timeout_ms > 0:
        return ours.connect_timeout_ms / 1000.0
    return operation_timeout(config) or default


def operation_timeout(config: Any) -> float | None:
    """``operation_timeout_in_ms`` in seconds; None when unset (TensorFlow: no timeout)."""
    if config is None:
        return None
    ms = int(getattr(config, "operation_timeout_in_ms", 0) or 0)
    return ms / 1000.0 if ms > 0 else None
