"""The transport contract: what a protocol plugin provides and what the core gives it.

A *message* is a list of frames: buffer-protocol objects (``bytes``, ``bytearray``,
``memoryview``, a uint8 NumPy array). By convention frame 0 is a small header and the rest
are tensor payloads, exactly as ``tensorwire.codec.encode`` produces them, but a transport
treats every frame as opaque bytes and may move each one however it likes (gRPC chunks,
RDMA writes, a reference in-process). Frames arrive on the other side as ``memoryview`` s,
each of the length that was sent.

Services are plain Python: a name and a table of methods. A unary method takes
``(frames, context)`` and returns frames; a streaming method returns an iterator of messages
(server streaming). Methods raise :class:`tensorwire.errors.OpError` subclasses to fail a
call; the transport carries ``(code, message)`` to the caller, whose channel raises the same
class. Transports run handlers through :func:`invoke` so that authentication and error
mapping are the same everywhere. A transport may read the buffers a handler returns (or
yields) until that call or stream is over, so handlers must not change them afterwards.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import hmac
import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

from .. import errors
from .threads import background

__all__ = [
    "Buffer",
    "Frames",
    "CallContext",
    "Method",
    "Service",
    "TransportOptions",
    "Listener",
    "Channel",
    "Transport",
    "invoke",
    "iterate",
    "TOKEN_METADATA_KEY",
    "RESPONSE_BYTES_METADATA_KEY",
    "expected_response_bytes",
    "split_address",
]

log = logging.getLogger(__name__)

Buffer = Union[bytes, bytearray, memoryview, Any]  # noqa: UP007 - anything with the buffer protocol
Frames = Sequence[Buffer]

#: Metadata key that carries the cluster token on every call.
TOKEN_METADATA_KEY = "tensorwire-token"
#: Metadata key of an advisory hint: the caller expects a response of about this many bytes
#: (a decimal string). A transport may use it to pick the path a large response takes
#: before the response exists; it must not trust it for anything else (nor handlers).
RESPONSE_BYTES_METADATA_KEY = "tensorwire-response-bytes"


def expected_response_bytes(metadata: Mapping[str, str] | None) -> int:
    """The response-size hint in ``metadata`` (0 when absent or not a number)."""
    if not metadata:
        return 0
    raw = metadata.get(RESPONSE_BYTES_METADATA_KEY)
    if raw is None:
        return 0
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0


@dataclasses.dataclass
class CallContext:
    """What a method handler knows about the call it serves."""

    peer: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Absolute deadline on the ``time.monotonic()`` clock, or None for no deadline.
    deadline: float | None = None

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None when it set none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


UnaryHandler = Callable[[list[memoryview], CallContext], Frames]
StreamHandler = Callable[[list[memoryview], CallContext], Iterable[Frames]]


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    handler: Callable[[list[memoryview], CallContext], Any]
    streaming: bool = False


class Service:
    """A named table of methods that a listener serves.

    >>> svc = Service("Echo")
    >>> @svc.unary("Echo")
    ... def echo(frames, context):
    ...     return frames
    """

    def __init__(self, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"service name must be non-empty and contain no '/': {name!r}")
        self.name = name
        self.methods: dict[str, Method] = {}

    def add(self, name: str, handler: Callable[..., Any], *, streaming: bool = False) -> None:
        if name in self.methods:
            raise ValueError(f"service {self.name!r} already has a method {name!r}")
        self.methods[name] = Method(name, handler, streaming)

    def unary(self, name: str) -> Callable[[UnaryHandler], UnaryHandler]:
        def register(fn: UnaryHandler) -> UnaryHandler:
            self.add(name, fn)
            return fn

        return register

    def stream(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        def register(fn: StreamHandler) -> StreamHandler:
            self.add(name, fn, streaming=True)
            return fn

        return register

    def __repr__(self) -> str:
        return f"Service({self.name!r}, methods={sorted(self.methods)})"


@dataclasses.dataclass
class TransportOptions:
    """Settings a transport honours; ones it does not understand it ignores.

    Built by the core from ``ConfigProto`` / server arguments, so every transport sees the
    same names.
    """

    #: Shared secret every call must carry (checked by :func:`invoke`); None disables.
    token: str | None = None
    #: PEM file paths. A server with cert+key serves TLS; with ``tls_client_ca`` as well it
    #: demands client certificates (mutual TLS). A channel with ``tls_root_ca`` uses TLS and
    #: presents cert+key as its client certificate when both are given.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_root_ca: str | None = None
    tls_client_ca: str | None = None
    tls_server_name: str | None = None
    #: Largest message (sum of frame sizes) accepted; None means unlimited.
    max_message_bytes: int | None = None
    #: Keepalive ping interval for idle connections, milliseconds; 0 disables.
    keepalive_ms: int = 30_000
    #: "none" or "gzip": wire compression where the transport supports it.
    compression: str = "none"
    #: Explicit opt-out of the secure-by-default rules of :mod:`tensorwire.transport.security`
    #: (listen beyond loopback without authentication, send a token in plaintext).
    insecure: bool = False
    #: Anything transport specific (e.g. {"rdma_device": "rxe0"}).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert or self.tls_root_ca)


class Listener(abc.ABC):
    """A bound (not necessarily started) server for a set of services."""

    #: "host:port" actually bound (port resolved when 0 was asked for).
    address: str
    port: int

    @abc.abstractmethod
    def start(self) -> None:
        """Begin serving. Idempotent."""

    @abc.abstractmethod
    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls; let calls in flight finish for ``grace`` seconds. Idempotent."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped or ``timeout`` passes; True when stopped."""


class Channel(abc.ABC):
    """A client connection to one address. Thread safe; reuse it for many calls."""

    @abc.abstractmethod
    def call(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[memoryview]:
        """Unary call. Raises the ``OpError`` subclass the server (or the wire) produced."""

    def call_async(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> concurrent.futures.Future[list[memoryview]]:
        """Unary call in the background. The default runs :meth:`call` on a thread of the
        shared :func:`~tensorwire.transport.threads.background` pool; raises
        ``ResourceExhaustedError`` at once when that pool is at its limit."""
        return background().submit_now(
            self.call, service, method, frames, timeout=timeout, metadata=metadata
        )

    @abc.abstractmethod
    def stream(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[list[memoryview]]:
        """Server-streaming call: an iterator of messages; ``timeout`` bounds the whole call."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent."""

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport(abc.ABC):
    """One protocol's way to serve services and to reach them."""

    #: The protocol names this transport answers for, e.g. ("grpc",).
    protocols: tuple[str, ...] = ()

    @abc.abstractmethod
    def serve(
        self, address: str, services: Sequence[Service], options: TransportOptions
    ) -> Listener:
        """Bind ``address`` ("host:port", port may be 0) for ``services``; do not start.

        Raises ``UnavailableError`` (or another ``OpError``) when the address cannot be
        bound, e.g. a port already in use.
        """

    def status(self) -> dict[str, Any]:
        """Facts for ``tw.info()`` (e.g. which RDMA devices are present). Must not raise."""
        return {}

    @abc.abstractmethod
    def connect(self, address: str, options: TransportOptions) -> Channel:
        """A channel to ``address``. Connecting is lazy: an unreachable peer fails the
        first call with ``UnavailableError``, within that call's deadline."""


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; IPv6 as ``"[::1]:port"``.

    Raises ``InvalidArgumentError`` naming the address when there is no valid port.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise errors.InvalidArgumentError(
            f"Could not interpret {address!r} as host:port: it has no port"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise errors.InvalidArgumentError(
            f"Could not parse port for address {address!r}: {port_text!r} is not a number"
        ) from None
    if not 0 <= port <= 65535:
        raise errors.InvalidArgumentError(f"port {port} of address {address!r} is out of range")
    return host.strip("[]"), port


def _check_token(context: CallContext, token: str | None) -> None:
    if token is None:
        return
    offered = context.metadata.get(TOKEN_METADATA_KEY)
    if offered is None:
        raise errors.UnauthenticatedError("this server requires a cluster token; none was sent")
    if not hmac.compare_digest(offered.encode(), token.encode()):
        raise errors.PermissionDeniedError("the cluster token sent does not match this server's")


def _as_op_error(exc: BaseException, method: str) -> errors.OpError:
    if isinstance(exc, errors.OpError):
        return exc
    log.debug("method %s raised", method, exc_info=exc)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return errors.UnknownError(f"{method} raised {detail}")


def invoke(
    method: Method, frames: list[memoryview], context: CallContext, options: TransportOptions
) -> Frames:
    """Run a unary handler as every transport must: token checked, errors as ``OpError``."""
    try:
        _check_token(context, options.token)
        return method.handler(frames, context)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a status
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _as_op_error(exc, method.name) from exc


def iterate(
    method: Method, frames: list[memoryview], context: CallContext, options: TransportOptions
) -> Iterator[Frames]:
    """Run a streaming handler as every transport must (see :func:`invoke`)."""
    try:
        _check_token(context, options.token)
        yield from method.handler(frames, context)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _as_op_error(exc, method.name) from exc
