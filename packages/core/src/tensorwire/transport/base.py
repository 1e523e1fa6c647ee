"""The transport contract: what a protocol plugin provides and what the core gives it.

A *message* is a list of frames: buffer-protocol objects (``bytes``, ``bytearray``,
``memoryview``, a uint8 NumPy array). By convention frame 0 is a small header and the rest
are tensor payloads, exactly as ``tensorwire.codec.encode`` produces them, but a transport
treats every frame as opaque bytes and may move each one however it likes (gRPC chunks,
RDMA writes, a reference in-process). Frames arrive on the other side as ``memoryview`` s,
each of the length that was sent.

Services are plain Python: a name and a table of methods. A unary method takes
``(frames, context)`` and returns frames; a streaming method returns an iterator of messages
(server streaming). Methods raise ``tensorwire.errors.OpError`` subclasses to fail a
call; the transport carries ``(code, message)`` to the caller, whose channel raises the same
class. Transports run handlers through ``invoke`` so that authentication and error
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
from .kit.address import split_address
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
    """The response-size hint in ``metadata`` (0 when absent or not a number).

    Args:
      metadata: a call's metadata (``CallContext.metadata``, or what a channel was given);
        None is read as empty.

    Returns:
      The number of bytes the caller announced under ``RESPONSE_BYTES_METADATA_KEY``,
      or 0 when it announced none, or something that is not a non-negative integer. Never
      raises.

    Examples:
        >>> from tensorwire.transport.base import expected_response_bytes
        >>> expected_response_bytes({"tensorwire-response-bytes": "1048576"})
        1048576
        >>> expected_response_bytes({"tensorwire-response-bytes": "lots"})
        0
    """
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
    """What a method handler knows about the call it serves.

    A transport builds one per call and passes it to the handler (through ``invoke`` /
    ``iterate``) as the handler's second argument.

    Args:
      peer: who called, in the transport's own notation (``"ipv4:127.0.0.1:5123"`` for
        gRPC); informational only.
      metadata: the call's metadata: the cluster token under ``TOKEN_METADATA_KEY``,
        hints such as ``RESPONSE_BYTES_METADATA_KEY``, and whatever the caller passed as
        ``metadata=``.
      deadline: the caller's absolute deadline on the ``time.monotonic()`` clock, or None.
      payload_path: set by a layer that moved the call's payload itself, to the path it
        took (one of ``tensorwire.observe.CALL_PATHS``: the ``grpc+verbs`` plugin sets
        ``"rdma"``); the transport's call meter then counts the call under it.
      payload_bytes_in: request bytes that layer moved itself (beside what crossed the
        transport, which the transport counts); added to the call's request bytes.
      payload_bytes_out: the same for the response.

    Examples:
        >>> import time
        >>> from tensorwire.transport import CallContext
        >>> context = CallContext(peer="inproc", deadline=time.monotonic() + 5)
        >>> 0 < context.time_remaining() <= 5
        True
        >>> CallContext().time_remaining() is None
        True
    """

    peer: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Absolute deadline on the ``time.monotonic()`` clock, or None for no deadline.
    deadline: float | None = None
    #: The path the call's payload took, when a layer above the transport moved it.
    payload_path: str | None = None
    #: Request / response bytes that layer moved itself (not through the transport).
    payload_bytes_in: int = 0
    payload_bytes_out: int = 0

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None when it set none.

        Returns:
          The seconds left (0.0 once the deadline has passed, never negative), or None
          when the call has no deadline.
        """
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


UnaryHandler = Callable[[list[memoryview], CallContext], Frames]
StreamHandler = Callable[[list[memoryview], CallContext], Iterable[Frames]]


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of a ``Service``: its name, its handler, and whether it streams.

    Made by ``Service.add`` (or the ``Service.unary`` / ``Service.stream``
    decorators) and found in ``Service.methods``; a transport looks the method of a call
    up there and runs it with ``invoke`` (unary) or ``iterate`` (streaming).

    Args:
      name: the method's name within its service (the call's ``method`` argument).
      handler: ``handler(frames, context)``; returns frames (unary) or an iterable of
        messages (streaming).
      streaming: True for a server-streaming method.

    Examples:
        >>> from tensorwire.transport import Service
        >>> svc = Service("Echo")
        >>> svc.add("Echo", lambda frames, context: frames)
        >>> method = svc.methods["Echo"]
        >>> method.name, method.streaming
        ('Echo', False)
    """

    name: str
    handler: Callable[[list[memoryview], CallContext], Any]
    streaming: bool = False


class Service:
    """A named table of methods that a listener serves.

    A call names a service and a method (``channel.call("Echo", "Echo", frames)``); the
    listener finds the ``Method`` in ``methods`` of the service of that name. Handlers
    receive the request frames as ``memoryview`` s and a ``CallContext``, and fail a
    call by raising a ``tensorwire.errors.OpError`` subclass (any other exception
    reaches the caller as ``UnknownError``).

    Args:
      name: the service's name; non-empty, without ``"/"``.

    Raises:
      ValueError: ``name`` is empty or contains ``"/"``.

    Examples:
        >>> from tensorwire.transport import Service
        >>> svc = Service("Echo")
        >>> @svc.unary("Echo")
        ... def echo(frames, context):
        ...     return [bytes(f) for f in frames]
        >>> @svc.stream("Count")
        ... def count(frames, context):
        ...     for i in range(int(bytes(frames[0]))):
        ...         yield [str(i).encode()]
        >>> svc
        Service('Echo', methods=['Count', 'Echo'])
    """

    def __init__(self, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"service name must be non-empty and contain no '/': {name!r}")
        self.name = name
        self.methods: dict[str, Method] = {}

    def add(self, name: str, handler: Callable[..., Any], *, streaming: bool = False) -> None:
        """Add the method ``name`` served by ``handler``.

        Args:
          name: the method's name, unique within this service.
          handler: ``handler(frames, context)`` returning frames, or, when ``streaming``,
            an iterable of messages (each a list of frames).
          streaming: whether the method is server streaming.

        Raises:
          ValueError: the service already has a method ``name``.

        Examples:
            >>> svc = Service("Echo")
            >>> svc.add("Echo", lambda frames, context: frames)
            >>> svc.add("Echo", lambda frames, context: frames)
            Traceback (most recent call last):
            ValueError: service 'Echo' already has a method 'Echo'
        """
        if name in self.methods:
            raise ValueError(f"service {self.name!r} already has a method {name!r}")
        self.methods[name] = Method(name, handler, streaming)

    def unary(self, name: str) -> Callable[[UnaryHandler], UnaryHandler]:
        """Decorator: add the decorated function as the unary method ``name``.

        Args:
          name: the method's name.

        Returns:
          A decorator that adds the function (see ``add``) and returns it unchanged.

        Raises:
          ValueError: (when the decorator is applied) the service already has ``name``.

        Examples:
            >>> svc = Service("Echo")
            >>> @svc.unary("Echo")
            ... def echo(frames, context):
            ...     return frames
        """

        def register(fn: UnaryHandler) -> UnaryHandler:
            self.add(name, fn)
            return fn

        return register

    def stream(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        """Decorator: add the decorated function as the server-streaming method ``name``.

        The function returns (or, as a generator, yields) the response messages, each a list
        of frames; raising an ``OpError`` part way ends the stream with that error after the
        messages already yielded.

        Args:
          name: the method's name.

        Returns:
          A decorator that adds the function (see ``add``) and returns it unchanged.

        Raises:
          ValueError: (when the decorator is applied) the service already has ``name``.

        Examples:
            >>> svc = Service("Numbers")
            >>> @svc.stream("Count")
            ... def count(frames, context):
            ...     for i in range(3):
            ...         yield [str(i).encode()]
        """

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
    same names. The same options go to ``Transport.serve`` (server side) and to
    ``Transport.connect`` (client side); each field says which side reads it.

    Args:
      token: shared secret every call must carry; ``invoke`` / ``iterate`` check it
        on the server, channels send it under ``TOKEN_METADATA_KEY``. None disables.
      tls_cert: PEM certificate chain. A server with ``tls_cert`` and ``tls_key`` serves
        TLS; a channel presents them as its client certificate.
      tls_key: PEM private key of ``tls_cert``.
      tls_root_ca: PEM roots a channel verifies the server against (a channel with it uses
        TLS).
      tls_client_ca: PEM roots a server verifies client certificates against; setting it
        demands client certificates (mutual TLS).
      tls_server_name: the name a channel expects in the server's certificate, when it is
        not the host of the address.
      max_message_bytes: largest message (sum of frame sizes) accepted or sent; a bigger one
        fails with ``ResourceExhaustedError``. None means unlimited.
      keepalive_ms: keepalive ping interval of idle connections in milliseconds; 0
        disables.
      compression: ``"none"`` or ``"gzip"``, where the transport supports it.
      insecure: explicit opt-out of the secure-by-default rules of
        ``tensorwire.transport.security``.
      extra: transport-specific settings, e.g. ``{"rdma_device": "rxe0"}`` or
        ``{"inproc_max_workers": 8}``.
      call_meter: (server side) a ``tensorwire.observe.CallMeter`` the listener
        records every call it serves in (method, path, bytes, duration, failure), once
        per call when it ends; None (the default) records nothing.

    Examples:
        >>> from tensorwire.transport import TransportOptions
        >>> options = TransportOptions(token="s3cret", max_message_bytes=64 << 20)
        >>> options.tls_enabled
        False
        >>> TransportOptions(tls_root_ca="ca.pem").tls_enabled
        True
    """

    #: Shared secret every call must carry (checked by ``invoke``); None disables.
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
    #: Explicit opt-out of the secure-by-default rules of ``tensorwire.transport.security``
    #: (listen beyond loopback without authentication, send a token in plaintext).
    insecure: bool = False
    #: Anything transport specific (e.g. {"rdma_device": "rxe0"}).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Server side: where the listener counts the calls it serves (a
    #: ``tensorwire.observe.CallMeter``); None records nothing.
    call_meter: Any = None

    @property
    def tls_enabled(self) -> bool:
        """Whether TLS is configured: a certificate (server) or root CA (channel) is set."""
        return bool(self.tls_cert or self.tls_root_ca)


class Listener(abc.ABC):
    """A bound (not necessarily started) server for a set of services.

    Returned by ``Transport.serve``. Transports subclass it; users only call its
    methods. ``address`` is the ``"host:port"`` actually bound and ``port`` its port (the
    free port chosen when 0 was asked for), both set before ``serve`` returns.

    Examples:
        >>> from tensorwire.transport import Service, TransportOptions, get_transport
        >>> svc = Service("Echo")
        >>> svc.add("Echo", lambda frames, context: frames)
        >>> listener = get_transport("inproc").serve("localhost:0", [svc], TransportOptions())
        >>> listener.port > 0 and listener.address.endswith(f":{listener.port}")
        True
        >>> listener.start()
        >>> listener.stop(grace=1.0)
        >>> listener.wait(timeout=5)
        True
    """

    #: "host:port" actually bound (port resolved when 0 was asked for).
    address: str
    #: The port bound.
    port: int

    @abc.abstractmethod
    def start(self) -> None:
        """Begin serving. Idempotent.

        Raises:
          FailedPreconditionError: the listener was stopped; a listener does not restart.
        """

    @abc.abstractmethod
    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls; let calls in flight finish for ``grace`` seconds. Idempotent.

        New calls fail with ``UnavailableError`` from then on. Calls and streams still
        running when the grace period ends are ended: their callers get an ``OpError``
        (typically ``CancelledError`` or ``UnavailableError``), never a hang.

        Args:
          grace: seconds calls in flight may take to finish; None or 0 ends them at once.
        """

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped or ``timeout`` passes; True when stopped.

        Args:
          timeout: seconds to wait; None waits until the listener is stopped.

        Returns:
          True once the listener is stopped, False when ``timeout`` passed first.
        """


class Channel(abc.ABC):
    """A client connection to one address. Thread safe; reuse it for many calls.

    Returned by ``Transport.connect``; a context manager that closes it on exit. Every
    failure of a call, the server's or the wire's, is raised as a
    ``tensorwire.errors.OpError`` subclass: the class the handler raised, or
    ``UnavailableError`` (peer unreachable or stopped), ``DeadlineExceededError``
    (``timeout`` passed), ``UnimplementedError`` (no such service or method),
    ``ResourceExhaustedError`` (message over ``max_message_bytes``), ``CancelledError``
    (the channel is closed).

    Examples:
        >>> from tensorwire.transport import Service, TransportOptions, get_transport
        >>> svc = Service("Echo")
        >>> svc.add("Echo", lambda frames, context: [bytes(f).upper() for f in frames])
        >>> transport = get_transport("inproc")
        >>> listener = transport.serve("localhost:0", [svc], TransportOptions())
        >>> listener.start()
        >>> with transport.connect(listener.address, TransportOptions()) as channel:
        ...     [bytes(f) for f in channel.call("Echo", "Echo", [b"hi"], timeout=5)]
        [b'HI']
        >>> listener.stop()
    """

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
        """Unary call: send ``frames`` to ``service``/``method`` and return the response.

        Args:
          service: the service's name.
          method: the method's name within it (a unary method).
          frames: the request message, a sequence of buffer-protocol objects.
          timeout: seconds the whole call may take; None for no deadline (an unreachable
            peer still fails promptly with ``UnavailableError``).
          metadata: extra string key/values for the handler's ``CallContext.metadata``.

        Returns:
          The response frames, as ``memoryview`` s.

        Raises:
          OpError: the subclass the handler raised (``UnknownError`` for other exceptions).
          UnavailableError: the peer cannot be reached or stopped serving.
          DeadlineExceededError: ``timeout`` passed.
          UnimplementedError: the server has no such service or method.
          InvalidArgumentError: ``method`` is a streaming method.
          ResourceExhaustedError: the request or response exceeds ``max_message_bytes``.
          CancelledError: the channel is closed.
          UnauthenticatedError: the server requires a token and none was configured
            (``PermissionDeniedError`` for a wrong one).

        Examples:
            >>> reply = channel.call("Echo", "Echo", [b"hi"], timeout=5)   # doctest: +SKIP
            >>> bytes(reply[0])                                             # doctest: +SKIP
            b'HI'
        """

    def call_async(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> concurrent.futures.Future[list[memoryview]]:
        """Unary call in the background. The default runs ``call`` on a thread of the
        shared ``background`` pool; raises
        ``ResourceExhaustedError`` at once when that pool is at its limit.

        Args:
          service: as for ``call``.
          method: as for ``call``.
          frames: as for ``call``.
          timeout: as for ``call``.
          metadata: as for ``call``.

        Returns:
          A ``concurrent.futures.Future`` of the response frames; the errors ``call``
          raises are set on it instead.

        Raises:
          ResourceExhaustedError: no background thread is available for the call.

        Examples:
            >>> future = channel.call_async("Echo", "Echo", [b"hi"], timeout=5)  # doctest: +SKIP
            >>> bytes(future.result()[0])                                         # doctest: +SKIP
            b'HI'
        """
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
        """Server-streaming call: an iterator of messages; ``timeout`` bounds the whole call.

        Args:
          service: the service's name.
          method: the method's name within it (a streaming method).
          frames: the request message.
          timeout: seconds the whole stream may take, from the call to its last message;
            None for no deadline.
          metadata: extra string key/values for the handler's ``CallContext.metadata``.

        Returns:
          An iterator of messages, each a list of ``memoryview`` frames. Closing it
          (``stream.close()``) before the end ends the handler's generator on the server.

        Raises:
          OpError: while iterating: the class the handler raised (after the messages it
            yielded before), or the same wire errors as ``call``
            (``InvalidArgumentError`` when ``method`` is unary).

        Examples:
            >>> for message in channel.stream("Numbers", "Count", [b"3"]):  # doctest: +SKIP
            ...     print(bytes(message[0]))
            b'0'
            b'1'
            b'2'
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection. Idempotent.

        Calls made afterwards fail with ``CancelledError``.
        """

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport(abc.ABC):
    """One protocol's way to serve services and to reach them.

    A plugin subclasses it and registers a factory for it (see
    ``tensorwire.transport.hookspecs``); the core gets the instance with
    ``get_transport`` and calls ``serve`` for each server and ``connect`` for
    each peer it talks to. One instance serves the whole process, so it must be thread
    safe. The conformance suite (``tensorwire_testing.conformance``) checks an
    implementation against this contract.

    Examples:
        >>> from tensorwire.transport import Service, TransportOptions, get_transport
        >>> transport = get_transport("inproc")
        >>> transport.protocols
        ('inproc',)
        >>> svc = Service("Echo")
        >>> svc.add("Echo", lambda frames, context: frames)
        >>> listener = transport.serve("localhost:0", [svc], TransportOptions())
        >>> listener.start()
        >>> with transport.connect(listener.address, TransportOptions()) as channel:
        ...     bytes(channel.call("Echo", "Echo", [b"ping"])[0])
        b'ping'
        >>> listener.stop()
    """

    #: The protocol names this transport answers for, e.g. ("grpc",).
    protocols: tuple[str, ...] = ()

    @abc.abstractmethod
    def serve(
        self, address: str, services: Sequence[Service], options: TransportOptions
    ) -> Listener:
        """Bind ``address`` ("host:port", port may be 0) for ``services``; do not start.

        Args:
          address: ``"host:port"`` to bind (``"[::1]:port"`` for IPv6); port 0 binds a free
            port, reported by the listener's ``port``.
          services: the services to serve; their names must differ.
          options: the server-side settings (token, TLS, message limit ...).

        Returns:
          A ``Listener``, bound but not serving until its ``start()``.

        Raises:
          InvalidArgumentError: ``address`` has no valid port.
          UnavailableError: the address cannot be bound, e.g. a port already in use (the
            message names the port); another ``OpError`` is allowed.

        Examples:
            >>> options = TransportOptions(token="s3cret")                 # doctest: +SKIP
            >>> listener = transport.serve("localhost:0", [svc], options)  # doctest: +SKIP
            >>> listener.start()                                           # doctest: +SKIP
        """

    def status(self) -> dict[str, Any]:
        """Facts for ``tw.info()`` (e.g. which RDMA devices are present). Must not raise.

        Returns:
          A JSON-serialisable dict; the default is empty.
        """
        return {}

    @abc.abstractmethod
    def connect(self, address: str, options: TransportOptions) -> Channel:
        """A channel to ``address``. Connecting is lazy: an unreachable peer fails the
        first call with ``UnavailableError``, within that call's deadline.

        Args:
          address: ``"host:port"`` of the peer.
          options: the client-side settings (token sent, TLS roots, message limit ...).

        Returns:
          A ``Channel``; close it (or use it as a context manager) when done.

        Raises:
          InvalidArgumentError: ``address`` has no valid port.

        Examples:
            >>> options = TransportOptions(token="s3cret")                  # doctest: +SKIP
            >>> with transport.connect("localhost:2222", options) as channel:  # doctest: +SKIP
            ...     reply = channel.call("Echo", "Echo", [b"hi"], timeout=5)
        """


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
    """Run a unary handler as every transport must: token checked, errors as ``OpError``.

    A transport calls this for each unary call instead of calling ``method.handler``
    itself, so that authentication and error mapping are the same on every transport.

    Args:
      method: the method the call names.
      frames: the request frames.
      context: the call's context; its metadata carries the token.
      options: the listener's options; ``options.token`` is the token required.

    Returns:
      The frames the handler returned.

    Raises:
      UnauthenticatedError: a token is required and the call carries none.
      PermissionDeniedError: the call's token is not the one required.
      OpError: the subclass the handler raised; any other exception of the handler becomes
        ``UnknownError`` naming the method and the exception (``KeyboardInterrupt`` and
        ``SystemExit`` propagate unchanged).

    Examples:
        >>> from tensorwire.transport import CallContext, Method, TransportOptions, invoke
        >>> echo = Method("Echo", lambda frames, context: frames)
        >>> invoke(echo, [memoryview(b"hi")], CallContext(), TransportOptions())[0].tobytes()
        b'hi'
        >>> invoke(echo, [], CallContext(), TransportOptions(token="s3cret"))
        Traceback (most recent call last):
        tensorwire.errors.UnauthenticatedError: this server requires a cluster token; none was sent
    """
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
    """Run a streaming handler as every transport must (see ``invoke``).

    Args:
      method: the streaming method the call names.
      frames: the request frames.
      context: the call's context; its metadata carries the token.
      options: the listener's options; ``options.token`` is the token required.

    Returns:
      An iterator of the messages the handler yields. The token is checked, and the
      handler started, on the first ``next()``.

    Raises:
      UnauthenticatedError: (on the first ``next()``) a token is required and none was
        sent.
      PermissionDeniedError: (on the first ``next()``) the token sent is wrong.
      OpError: while iterating, as for ``invoke``.

    Examples:
        >>> from tensorwire.transport import CallContext, Method, TransportOptions, iterate
        >>> def count(frames, context):
        ...     yield [b"0"]
        ...     yield [b"1"]
        >>> method = Method("Count", count, streaming=True)
        >>> [m[0] for m in iterate(method, [], CallContext(), TransportOptions())]
        [b'0', b'1']
    """
    try:
        _check_token(context, options.token)
        yield from method.handler(frames, context)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _as_op_error(exc, method.name) from exc
