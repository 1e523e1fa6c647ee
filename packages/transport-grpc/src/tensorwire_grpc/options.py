"""Every knob the grpc transport turns, in one place, built from ``TransportOptions``.

gRPC channel arguments set on both sides (``channel_arguments``, ``server_arguments``):

=========================================== ===================================================
``grpc.max_send_message_length`` /          (channel) -1 (unlimited) unless
``grpc.max_receive_message_length``         ``max_message_bytes`` is set; then that plus room
                                            for a manifest. No single gRPC message is ever
                                            larger than the inline or chunk size, and whole
                                            messages are checked against ``max_message_bytes``
                                            from their manifest.
``grpc.max_receive_message_length``         (server) ``server_receive_bytes``, finite
                                            always (about 5 MiB by default): gRPC refuses a
                                            larger message from its length prefix, before
                                            holding it, whoever sent it.
``grpc.http2.lookahead_bytes``              16 MiB: the initial stream window (see
                                            ``LOOKAHEAD_BYTES``).
``grpc.keepalive_time_ms``                  ``keepalive_ms``: ping idle connections so a dead
                                            peer is noticed; 0 turns keepalive off.
``grpc.keepalive_timeout_ms``               20 s without a ping answer closes the connection.
``grpc.keepalive_permit_without_calls``     1: also ping connections with no call in flight.
``grpc.http2.max_pings_without_data``       0: no limit on pings between data frames.
``grpc.http2.min_ping_interval_without...`` (server) accept pings every ``min(keepalive_ms,
                                            10 s)`` so our own clients are never told off for
                                            pinging too often ("too_many_pings").
``grpc.initial/min/max_reconnect_backoff``  100 ms / 1 s / 2 s: a task restarted on its
                                            port is reachable again within about 2 s instead of
                                            gRPC's default of up to 2 minutes; "min" is also
                                            the shortest connect attempt, so not lower.
``grpc.so_reuseport``                       (server) 0, so binding a port another server holds
                                            fails instead of silently sharing it.
``grpc.use_local_subchannel_pool``          (client) 1: connections belong to their channel,
                                            so a fresh channel to a server that came back does
                                            not inherit an old connection's backoff.
``grpc.ssl_target_name_override``           ``tls_server_name`` when given.
=========================================== ===================================================

Transport-specific settings read from ``TransportOptions.extra``:

- ``grpc_inline_bytes`` (default ``DEFAULT_INLINE_BYTES``): messages up to this size
  travel as one gRPC message; larger ones are chunked.
- ``grpc_chunk_bytes`` (default ``DEFAULT_CHUNK_BYTES``): size of each chunk.
- ``grpc_max_workers`` (default ``DEFAULT_MAX_WORKERS``, 4096): calls and streams a
  server serves at once. Threads are started as calls arrive and end after
  ``threads.IDLE_SECONDS`` idle, so the limit costs nothing until it is used; a call past it
  is refused at once with ``ResourceExhaustedError`` naming this option, never queued
  behind calls that may wait (a stream, a ``recv``). The environment variable
  ``TENSORWIRE_GRPC_MAX_WORKERS`` sets the default for options that do not say (servers
  built from a ``ConfigProto``, data-service workers).
- ``bulk_tcp`` (bool, default ``DEFAULT_BULK_TCP``): make large unary calls whole over
  the plain TCP side channel of ``bulk``, and move the large messages of other calls there
  (gRPC carries a descriptor). Never used with TLS
  (a TLS listener opens no side port and a TLS channel never uses one) nor with
  compression (the side channel sends the bytes as they are). The environment
  variable ``TENSORWIRE_GRPC_BULK_TCP`` (``1``/``0``) sets the default for options that do
  not say.
- ``bulk_tcp_threshold_bytes`` (default ``DEFAULT_BULK_THRESHOLD_BYTES``): a unary call
  whose request has at least this many payload bytes, or whose caller announces a response
  that large (``RESPONSE_BYTES_METADATA_KEY``), goes over the side channel; so does any
  message of at least this size in other calls. Environment variable
  ``TENSORWIRE_GRPC_BULK_TCP_THRESHOLD_BYTES`` sets the default likewise.
- ``bulk_tcp_small_calls`` (bool, default ``DEFAULT_BULK_SMALL_CALLS``): once a channel
  knows its server's side port (asked in the background after the first call), make small
  unary calls over it too (LEAN, ``bulk.protocol``), several times cheaper than a gRPC
  call; calls with metadata of the caller's, and any the side channel cannot take, stay on
  gRPC. A caller-side setting; environment variable
  ``TENSORWIRE_GRPC_BULK_TCP_SMALL_CALLS`` (``1``/``0``).
- ``shm`` (bool, default ``DEFAULT_SHM``): a server runs a shared-memory listener beside
  gRPC and offers it to callers (the mover ``shm``, ``shm_mover``); a channel that reaches
  it (only a process on the same host, in the same network namespace, can) makes its large
  unary calls whole through it and fetches large responses (a stream's included) through
  it, at or above ``bulk_tcp_threshold_bytes``. ``False`` turns it off on either side;
  the environment variable ``TENSORWIRE_GRPC_SHM`` (``1``/``0``) sets the default. Under
  TLS it stays on only when a cluster token is set: the token proof is then what
  authenticates the peer (without a token the abstract socket would be open to every
  local process, which TLS users did not agree to). Off with compression, as the side
  channel.

The environment variable ``TENSORWIRE_GRPC_BUFFER_POOL_BYTES`` bounds the memory kept for
recycling large receive buffers (see ``tensorwire.transport.kit.pool``; default 1 GiB, 0
turns recycling off).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from tensorwire import errors
from tensorwire.transport.base import TransportOptions
from tensorwire.transport.threads import DEFAULT_MAX_THREADS

if TYPE_CHECKING:
    import grpc

#: Messages up to this many bytes (payload plus 8 bytes per frame) go as one gRPC message;
#: larger ones as a stream of chunks. Measured with benchmarks/transport.py on loopback
#: (grpcio 1.85, with LOOKAHEAD_BYTES below): one message beat chunks up to 4 MiB (1 MiB:
#: ~0.65 vs ~0.35 GB/s, since a chunked response costs a second call) and lost clearly at
#: 8 MiB and above (~0.4 vs ~1.1 GB/s). 4 MiB plus room for a codec header.
DEFAULT_INLINE_BYTES = 4 * 1024 * 1024 + 64 * 1024
#: Chunk size of larger messages; 1 MiB chunks measured at or above 4 MiB ones.
DEFAULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_MAX_WORKERS = DEFAULT_MAX_THREADS
MAX_WORKERS_ENV = "TENSORWIRE_GRPC_MAX_WORKERS"
#: Room for a manifest (8 bytes per frame, at most ``framing.MAX_FRAMES`` of them, plus a
#: header and a ticket: 512 KiB and 24 bytes) on top of a message or chunk.
_MANIFEST_ROOM = 1 << 20

#: HTTP/2 stream receive window to start from. gRPC starts at 64 KiB and grows it by
#: probing; a message of a few MiB then waits for window updates. Starting large roughly
#: doubled unary throughput at 1-4 MiB on loopback.
LOOKAHEAD_BYTES = 16 * 1024 * 1024

COMPRESSIONS = ("none", "gzip")

BULK_TCP_ENV = "TENSORWIRE_GRPC_BULK_TCP"
BULK_THRESHOLD_ENV = "TENSORWIRE_GRPC_BULK_TCP_THRESHOLD_BYTES"
DEFAULT_BULK_TCP = True
BULK_SMALL_CALLS_ENV = "TENSORWIRE_GRPC_BULK_TCP_SMALL_CALLS"
DEFAULT_BULK_SMALL_CALLS = True
SHM_ENV = "TENSORWIRE_GRPC_SHM"
DEFAULT_SHM = True
SPIN_ENV = "TENSORWIRE_GRPC_SPIN_US"
#: How long a mover's waiting thread spins before it sleeps (``kit.spinning``). A tiny
#: ``run(identity)`` between two processes (2 virtual CPUs): p50 107 us without spinning,
#: 32 us with 50 us on both sides; an hour later, on the same machine slower, 50 us missed
#: nearly always (145 us) where 200 us gave 53 us. A 1 MiB shared-memory answer takes
#: 150-250 us to come, so 200 us missed often (and a miss turns spinning off for 16 waits):
#: 500 us read 1 MiB at 3.2-3.7 GB/s where 200 us gave 2.7 (``peers.py --quick``, spinners
#: yielding their CPU).
DEFAULT_SPIN_US = 500
#: Payload size from which the side channel is used. Measured with benchmarks/transport.py
#: (--bulk on/off --bulk-threshold 1, 15 rounds, loopback, GB/s down/up): 128 KiB gRPC
#: inline 0.21/0.24 vs side channel 0.16/0.18; 256 KiB 0.27/0.30 vs 0.33/0.35; 512 KiB
#: 0.35/0.37 vs 0.60/0.68; 1 MiB 0.80/0.83 vs 0.97/1.13. The crossover is near 256 KiB.
DEFAULT_BULK_THRESHOLD_BYTES = 256 * 1024


def _positive_int(options: TransportOptions, key: str, default: int) -> int:
    value = options.extra.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise errors.InvalidArgumentError(
            f"TransportOptions.extra[{key!r}] must be a positive int, got {value!r}"
        )
    return value


def inline_bytes(options: TransportOptions) -> int:
    return _positive_int(options, "grpc_inline_bytes", DEFAULT_INLINE_BYTES)


def chunk_bytes(options: TransportOptions) -> int:
    return _positive_int(options, "grpc_chunk_bytes", DEFAULT_CHUNK_BYTES)


def max_workers(options: TransportOptions) -> int:
    """Calls and streams a server serves at once (``grpc_max_workers``)."""
    default = _env_int(MAX_WORKERS_ENV, DEFAULT_MAX_WORKERS)
    return _positive_int(options, "grpc_max_workers", default)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise errors.InvalidArgumentError(f"{name} must be a positive integer, got {text!r}")
    return value


def bulk_tcp(options: TransportOptions) -> bool:
    """Whether the bulk TCP side channel is on for these options (never with TLS)."""
    if options.tls_enabled or options.tls_cert or options.tls_key or options.tls_client_ca:
        return False
    if (options.compression or "none").lower() != "none":
        return False  # the caller asked for compressed bytes on the wire
    return _flag(options, "bulk_tcp", BULK_TCP_ENV, DEFAULT_BULK_TCP)


def _flag(options: TransportOptions, key: str, env: str, default: bool) -> bool:
    value = options.extra.get(key)
    if value is None:
        text = os.environ.get(env, "").strip().lower()
        if text in ("0", "false", "no", "off"):
            return False
        if text in ("1", "true", "yes", "on"):
            return True
        return default
    if not isinstance(value, bool):
        raise errors.InvalidArgumentError(
            f"TransportOptions.extra[{key!r}] must be a bool, got {value!r}"
        )
    return value


def bulk_small_calls(options: TransportOptions) -> bool:
    """Whether small unary calls take the side channel once it is known (needs ``bulk_tcp``)."""
    return bulk_tcp(options) and _flag(
        options, "bulk_tcp_small_calls", BULK_SMALL_CALLS_ENV, DEFAULT_BULK_SMALL_CALLS
    )


def shm(options: TransportOptions) -> bool:
    """Whether the shared-memory mover is on for these options (under TLS only with a
    token, which then proves the peer; never with compression)."""
    tls = options.tls_enabled or options.tls_cert or options.tls_key or options.tls_client_ca
    if tls and options.token is None:
        return False
    if (options.compression or "none").lower() != "none":
        return False
    return _flag(options, "shm", SHM_ENV, DEFAULT_SHM)


def spin_seconds() -> float:
    """How long the side channel's connections spin before they sleep (``wire.Wire``):
    ``TENSORWIRE_GRPC_SPIN_US`` microseconds (0 turns it off), and never on a single CPU,
    where the spinner would only hold back the peer it waits for."""
    text = os.environ.get(SPIN_ENV, "").strip()
    microseconds = DEFAULT_SPIN_US
    if text:
        try:
            microseconds = int(text)
        except ValueError:
            microseconds = -1
        if not 0 <= microseconds <= 1_000_000:
            raise errors.InvalidArgumentError(
                f"{SPIN_ENV} must be a whole number of microseconds from 0 to 1000000, got {text!r}"
            )
    if microseconds == 0 or len(os.sched_getaffinity(0)) < 2:
        return 0.0
    return microseconds / 1e6


def bulk_threshold(options: TransportOptions) -> int:
    default = DEFAULT_BULK_THRESHOLD_BYTES
    text = os.environ.get(BULK_THRESHOLD_ENV, "").strip()
    if text:
        try:
            default = max(1, int(text))
        except ValueError:
            raise errors.InvalidArgumentError(
                f"{BULK_THRESHOLD_ENV} must be a positive integer, got {text!r}"
            ) from None
    return _positive_int(options, "bulk_tcp_threshold_bytes", default)


def compression(options: TransportOptions) -> grpc.Compression | None:
    import grpc

    value = (options.compression or "none").lower()
    if value == "none":
        return None
    if value == "gzip":
        return grpc.Compression.Gzip
    raise errors.InvalidArgumentError(
        f"unsupported compression {options.compression!r}; the grpc transport supports "
        f"{', '.join(COMPRESSIONS)}"
    )


def server_receive_bytes(options: TransportOptions) -> int:
    """The largest single gRPC message a server accepts (``grpc.max_receive_message_length``).

    The largest message a peer sends whole is an inline message or a chunk (larger tensorwire
    messages are chunked or go over the side channel), so: the larger of this server's
    ``grpc_inline_bytes`` and ``grpc_chunk_bytes``, never below their defaults (a peer with
    default options is always served), plus room for a manifest; and no more than
    ``max_message_bytes`` plus that room when it is set. Finite even without
    ``max_message_bytes``: gRPC Python reads a unary request whole before any handler can
    check the token, and refuses a message above this limit from its length prefix.
    """
    largest = max(inline_bytes(options), chunk_bytes(options))
    limit = max(largest, DEFAULT_INLINE_BYTES, DEFAULT_CHUNK_BYTES) + _MANIFEST_ROOM
    if options.max_message_bytes is not None:
        limit = min(limit, options.max_message_bytes + _MANIFEST_ROOM)
    return min(limit, 2**31 - 1)


def _common_arguments(options: TransportOptions) -> list[tuple[str, Any]]:
    if options.max_message_bytes is None:
        limit = -1
    else:
        limit = min(options.max_message_bytes + _MANIFEST_ROOM, 2**31 - 1)
    arguments: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.http2.lookahead_bytes", LOOKAHEAD_BYTES),
    ]
    if options.keepalive_ms > 0:
        arguments += [
            ("grpc.keepalive_time_ms", options.keepalive_ms),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return arguments


def channel_arguments(options: TransportOptions) -> list[tuple[str, Any]]:
    """gRPC arguments of a client channel (see the table in this module's docstring)."""
    arguments = _common_arguments(options) + [
        ("grpc.initial_reconnect_backoff_ms", 100),
        # gRPC also takes this as the shortest time a connection attempt may take: at 100 ms
        # a first connection on a loaded (or emulated) machine timed out before the
        # server's SETTINGS frame arrived.
        ("grpc.min_reconnect_backoff_ms", 1_000),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        # Connections belong to their channel, not to gRPC's process-wide subchannel pool:
        # the transport shares channels itself, and a fresh channel (see
        # GrpcTransport.connect) must not inherit a pooled connection's reconnect backoff.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if options.tls_server_name:
        arguments.append(("grpc.ssl_target_name_override", options.tls_server_name))
    return arguments


def server_arguments(options: TransportOptions) -> list[tuple[str, Any]]:
    """gRPC arguments of a server (see the table in this module's docstring)."""
    receive = ("grpc.max_receive_message_length", server_receive_bytes(options))
    arguments = [
        receive if name == receive[0] else (name, value)
        for name, value in _common_arguments(options)
    ]
    arguments.append(("grpc.so_reuseport", 0))
    if options.keepalive_ms > 0:
        arguments.append(
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                min(options.keepalive_ms, 10_000),
            )
        )
    return arguments


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.InvalidArgumentError(f"cannot read {what} {path!r}: {exc}") from None


def server_credentials(options: TransportOptions) -> grpc.ServerCredentials | None:
    """TLS credentials of a server, or None for plaintext.

    cert+key serve TLS; with ``tls_client_ca`` too, clients must present a certificate
    signed by it (mutual TLS).
    """
    import grpc

    if not (options.tls_cert or options.tls_key or options.tls_client_ca):
        return None
    if not (options.tls_cert and options.tls_key):
        raise errors.InvalidArgumentError(
            "a TLS server needs both tls_cert and tls_key "
            f"(got tls_cert={options.tls_cert!r}, tls_key={options.tls_key!r})"
        )
    cert = _read(options.tls_cert, "TLS certificate")
    key = _read(options.tls_key, "TLS private key")
    client_ca = _read(options.tls_client_ca, "TLS client CA")
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(options: TransportOptions) -> grpc.ChannelCredentials | None:
    """TLS credentials of a channel, or None for plaintext.

    TLS when ``tls_root_ca`` or ``tls_cert`` is set; ``tls_root_ca`` verifies the server
    (the system roots when absent); cert+key are presented as the client certificate.
    """
    import grpc

    if not options.tls_enabled:
        return None
    if bool(options.tls_cert) != bool(options.tls_key):
        raise errors.InvalidArgumentError(
            "a TLS client certificate needs both tls_cert and tls_key "
            f"(got tls_cert={options.tls_cert!r}, tls_key={options.tls_key!r})"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(options.tls_root_ca, "TLS root CA"),
        private_key=_read(options.tls_key, "TLS private key"),
        certificate_chain=_read(options.tls_cert, "TLS certificate"),
    )


def cache_key(options: TransportOptions) -> tuple[Any, ...]:
    """A hashable key for channel reuse: options that build the same gRPC channel share it.

    The token is not part of it: it travels as call metadata, set per tensorwire channel.
    """
    return (
        options.tls_cert,
        options.tls_key,
        options.tls_root_ca,
        options.tls_client_ca,
        options.tls_server_name,
        options.max_message_bytes,
        options.keepalive_ms,
        (options.compression or "none").lower(),
        repr(sorted(options.extra.items())),
    )
