"""The grpc listener: serves tensorwire services through raw-bytes gRPC method handlers.

Each tensorwire method ``M`` of service ``S`` is registered under three gRPC paths, one per
way a caller may reach it (the caller picks by message size, see ``framing``):

- ``/S/M``          unary-unary: a small request, a unary call.
- ``/S/M:stream``   unary-stream: a small request, a server-streaming call.
- ``/S/M:chunked``  stream-stream: a large request sent in chunks; a flag in its manifest
  says whether the caller wants one response or a stream.

Each path checks that the method has the arity the caller asked for. Handlers run through
``tensorwire.transport.invoke`` / ``iterate`` (token check and
error mapping); an ``OpError`` ends the call with its code and message.

Memory before authentication. gRPC Python reads a unary request whole before it runs the
handler, so a caller without the token could make the server hold any request it sent
(four 256 MiB requests took a server from 53 MiB to 2.3 GiB). So every path is registered
request-streaming here, whatever the caller uses (the wire is the same): the handler checks
the token first and only then asks gRPC for the request, and a call that fails the check is
ended without its body ever being read. Besides, the server accepts no single gRPC message
larger than ``options.server_receive_bytes`` (about 5 MiB by default: the largest inline
message or chunk a peer sends, plus a manifest), and gRPC refuses a larger one from its
length prefix, before receiving it. Together: a call holds at most one message of that size
before it is authenticated, only while it waits for its thread, and calls at once are
bounded by ``grpc_max_workers`` (see below).

A unary response too large to send inline is parked in the listener's ticket store
(``pending``, a ``tensorwire.transport.kit.tickets.TicketStore``) and the caller fetches
it as a chunk stream from ``/tensorwire.grpc.Pending/Fetch``. This keeps small calls on the
cheap unary path (a server-streaming call costs about twice as much per call) while large
responses still stream. Handlers must not change the buffers they return until
the call is over; the transport reads them while sending.

With the bulk side channel on (``bulk``; not with TLS) the listener also serves
``/tensorwire.grpc.Bulk/Hello``, which tells a channel the side port. Requests may then
arrive as BULK descriptors (their frames pushed over TCP just before), and a caller that
sets FLAG_BULK_OK gets every response of at least ``bulk_tcp_threshold_bytes`` parked as
PENDING, to fetch over TCP (``kit.routes.choose_response_route`` decides each response's
route); in a stream the next message is produced only once the
previous parked one was fetched, so a slow reader holds at most one message here.
Whole unary calls that came over the side channel (CALL, and LEAN for small ones) run
through ``_serve_mover_call`` and the same ``invoke``, on the side channel's connection
threads; they count against ``grpc_max_workers`` together with the gRPC calls (``admit``).

With the shared-memory mover on (``shm_mover``; under TLS only with a token) the listener
also runs a shared-memory listener and offers it in the Hello answer beside the side port:
callers on this host make their large unary calls and their streams whole through it and
fetch parked responses through it.

A plugin that wraps this transport adds its own mover to the same Hello with
``GrpcListener.offer_mover`` (``kit.handshake.OffersMovers``: ``grpc+verbs`` offers
``verbs``); the Hello offers it to the callers that ask for it.

Every call and stream runs on a thread of its own from a
``DaemonThreadPool`` (started on demand, retired when
idle), so calls that wait (a stream, a ``recv``) never keep others from starting. At most
``grpc_max_workers`` run at once (``options``); the next one is refused at once with
``ResourceExhaustedError`` saying so and naming the option. The pool has
``REFUSAL_THREADS`` more threads than that to run those refusals on, and gRPC's own
``maximum_concurrent_rpcs`` is set to the pool's size, so that even a flood of refusals
never leaves a call queued for a thread: gRPC refuses it first ("Concurrent RPC limit
exceeded!", which ``status`` explains the same way). gRPC counts a call until its handler
has returned, a stream until its last message was sent: the same span the pool counts.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc
from tensorwire import errors
from tensorwire.lifecycle import forget, stop_at_exit
from tensorwire.transport.base import (
    CallContext,
    Frames,
    Listener,
    Method,
    Service,
    TransportOptions,
    invoke,
    iterate,
    split_address,
)
from tensorwire.transport.kit import framing, handshake
from tensorwire.transport.kit.address import join_host_port
from tensorwire.transport.kit.routes import ResponseRoute, RouteLimits, choose_response_route
from tensorwire.transport.kit.tickets import TicketStore
from tensorwire.transport.threads import DaemonThreadPool, join_threads

from . import bulk, forking, shm_mover, status
from . import options as opts

__all__ = [
    "GrpcListener",
    "PENDING_SERVICE",
    "FETCH_METHOD",
    "FETCH_PATH",
    "BULK_SERVICE",
    "HELLO_METHOD",
    "HELLO_PATH",
]

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tensorwire.observe import CallMeter

T = TypeVar("T")

PENDING_SERVICE = "tensorwire.grpc.Pending"
FETCH_METHOD = "Fetch"
BULK_SERVICE = "tensorwire.grpc.Bulk"
HELLO_METHOD = "Hello"
FETCH_PATH = f"/{PENDING_SERVICE}/{FETCH_METHOD}"
HELLO_PATH = f"/{BULK_SERVICE}/{HELLO_METHOD}"
STREAM_SUFFIX = ":stream"
CHUNKED_SUFFIX = ":chunked"
#: How long a parked large response waits for its caller to fetch it.
PENDING_TTL_SECONDS = 60.0
#: Threads beyond ``grpc_max_workers`` on which calls past that limit are refused.
REFUSAL_THREADS = 64
#: The call meter's path (``tensorwire.observe.CALL_PATHS``) of a call whose payload went,
#: all or part of it, over the TCP side channel; of one the shared-memory mover carried.
SIDE_CHANNEL_PATH = "side_channel"
SHM_PATH = "shm"
#: The movers this transport runs itself (``offer_mover`` refuses them).
_OWN_MOVERS = frozenset((handshake.TCP, shm_mover.MOVER))
# gRPC reports "no deadline" as a remaining time of centuries.
_NO_DEADLINE_SECONDS = 1e9
#: How long ``stop()`` waits, beyond the grace period, for the calls' threads (and gRPC's
#: own) to end.
STOP_JOIN_SECONDS = 5.0
#: gRPC's Python server starts threads of its own: one polling its completion queue
#: (``start()``) and, for ``stop(grace)``, one cancelling the calls left after the grace.
#: Both end by themselves soon after the server stopped; ``stop()`` waits for them so that
#: no thread of a stopped listener remains. They are known by the function each runs, which
#: Python puts in the name of a thread given no name ("Thread-7 (_serve)"): a gRPC that
#: names them otherwise leaves them unjoined, not the stop broken.
_GRPC_THREAD_FUNCTIONS = ("(_serve)", "(cancel_all_calls_after_grace)")


def _noting_grpc_threads(action: Callable[[], T]) -> tuple[T, list[threading.Thread]]:
    """``action()``'s result and the gRPC server threads (above) that appeared meanwhile."""
    before = set(threading.enumerate())
    result = action()
    started = [
        t
        for t in threading.enumerate()
        if t not in before and t.name.endswith(_GRPC_THREAD_FUNCTIONS)
    ]
    return result, started


class _GrpcCallContext(CallContext):
    """A ``CallContext`` that asks gRPC for the peer, the metadata and the deadline only
    when a handler (or the token check) first looks: each is a call into gRPC's C core,
    together a few microseconds that most small calls never need."""

    def __init__(self, gctx: grpc.ServicerContext) -> None:  # no super(): fields are lazy
        self._gctx = gctx
        self._peer: str | None = None
        self._metadata: dict[str, str] | None = None
        self._deadline_known = False
        self._deadline: float | None = None

    @property
    def peer(self) -> str:  # type: ignore[override]
        if self._peer is None:
            self._peer = self._gctx.peer()
        return self._peer

    @property
    def metadata(self) -> dict[str, str]:  # type: ignore[override]
        if self._metadata is None:
            pairs = self._gctx.invocation_metadata()
            self._metadata = dict(pairs) if pairs else {}
        return self._metadata

    @property
    def deadline(self) -> float | None:  # type: ignore[override]
        if not self._deadline_known:
            remaining = self._gctx.time_remaining()
            if remaining is not None and remaining < _NO_DEADLINE_SECONDS:
                self._deadline = time.monotonic() + remaining
            self._deadline_known = True
        return self._deadline


def _context(gctx: grpc.ServicerContext) -> CallContext:
    return _GrpcCallContext(gctx)


def _authenticate(context: CallContext, options: TransportOptions) -> None:
    """Check the token before reading the request, through the same ``invoke``."""
    if options.token is not None:
        invoke(_AUTH_ONLY, [], context, options)


_AUTH_ONLY = Method("authenticate", lambda frames, context: ())


def _one_request(requests: Iterator[bytes], name: str) -> bytes:
    """The request of a unary-request path, read only now (see the module docstring)."""
    request = next(requests, None)
    if request is None:
        raise errors.InvalidArgumentError(f"{name}: the call carried no request message")
    return request


class _Tally:
    """What one call moved, for ``TransportOptions.call_meter``: its path is the one a layer
    above set on the call's context (``CallContext.payload_path``: ``rdma``), else ``path``:
    the mover's that carried any of its payload (``SIDE_CHANNEL_PATH``, ``SHM_PATH``), or
    ``grpc``."""

    __slots__ = ("started", "received", "answered", "path", "failed", "context")

    def __init__(self, context: CallContext) -> None:
        self.started = time.monotonic()
        self.received = 0
        self.answered = 0
        self.path = "grpc"
        self.failed = True
        self.context = context

    def record(self, meter: CallMeter, name: str) -> None:
        context = self.context
        path = context.payload_path or self.path
        seconds = time.monotonic() - self.started
        received = self.received + context.payload_bytes_in
        answered = self.answered + context.payload_bytes_out
        meter.record(name, path, received, answered, seconds, self.failed)


class _MethodHandlers:
    """The three gRPC handlers of one tensorwire method."""

    def __init__(self, listener: GrpcListener, service: str, method: Method) -> None:
        self.listener = listener
        self.method = method
        self.name = f"/{service}/{method.name}"

    def _arity(self, streaming: bool) -> None:
        if streaming and not self.method.streaming:
            raise errors.InvalidArgumentError(f"{self.name} is not a streaming method")
        if not streaming and self.method.streaming:
            raise errors.InvalidArgumentError(f"{self.name} is a streaming method")

    def _views(self, message: Frames) -> tuple[list[memoryview], int]:
        try:
            return framing.as_byte_views(message)
        except (errors.InvalidArgumentError, TypeError) as exc:
            raise errors.InternalError(f"{self.name} returned an invalid message: {exc}") from None

    def _encode(
        self,
        message: Frames,
        flags: int,
        context: CallContext,
        gctx: grpc.ServicerContext,
        tally: _Tally | None,
    ) -> Iterator[bytes]:
        views, total = self._views(message)
        listener = self.listener
        route = choose_response_route(
            total,
            len(views),
            listener.routes,
            caller_fetches_by_mover=bool(flags & framing.FLAG_BULK_OK),
            streaming=True,
        )
        bulk_path = route is ResponseRoute.PARK_FOR_MOVER
        if tally is not None:
            tally.answered += total
            if bulk_path:
                # Parked for a mover: the side channel's path whichever mover fetches it
                # (the caller picks; see ``observe.calls``).
                tally.path = SIDE_CHANNEL_PATH
        if bulk_path:
            pending = listener.pending
            ticket = pending.put((views, total), deadline=context.deadline)
            try:
                yield framing.encode_pending(ticket)
                # Back-pressure: the next message is made once this one was fetched.
                pending.wait_taken(ticket, gctx.is_active)
            finally:
                # A cancelled call closes this generator at the yield: drop the message.
                pending.discard(ticket)
            return
        yield from framing.encode(
            views, total, inline_bytes=listener.inline_bytes, chunk_bytes=listener.chunk_bytes
        )

    def _tally(
        self, frames: list[memoryview], request: bytes | None, context: CallContext
    ) -> _Tally:
        """A call's tally, its request counted (``request``: the gRPC message, when the
        request came in one; a bulk descriptor there means the side channel)."""
        tally = _Tally(context)
        tally.received = sum(map(len, frames))
        if request is not None and request[:1] == bytes((framing.BULK,)):
            tally.path = SIDE_CHANNEL_PATH
        return tally

    def _request(self, request: bytes) -> list[memoryview]:
        listener = self.listener
        if not request or request[0] != framing.BULK:
            return framing.decode_inline(request, listener.options.max_message_bytes)
        _, lengths, ticket = framing.read_bulk(request)
        if listener.bulk is None:
            raise errors.FailedPreconditionError(
                f"{self.name}: a bulk request reached a server without a bulk channel"
            )
        # The caller pushed the frames and had them acknowledged before calling.
        frames = bulk.take_arrival(listener.bulk.arrivals, ticket)
        if tuple(map(len, frames)) != lengths:
            raise errors.DataLossError(
                f"{self.name}: the bulk request's frame lengths do not match its descriptor"
            )
        return frames

    def mover_call(
        self,
        frames: list[memoryview],
        metadata: dict[str, str],
        deadline: float | None,
        peer: str,
        path: str,
    ) -> tuple[list[memoryview], int]:
        """A whole unary call that came through a mover (``bulk`` CALL or LEAN,
        ``shm_mover`` CALL), counted under the mover's ``path``."""
        self._arity(False)
        context = CallContext(peer, metadata, deadline)
        meter = self.listener.options.call_meter
        if meter is None:
            return self._views(invoke(self.method, frames, context, self.listener.options))
        tally = self._tally(frames, None, context)
        tally.path = path
        try:
            views, total = self._views(invoke(self.method, frames, context, self.listener.options))
            tally.answered, tally.failed = total, False
            return views, total
        finally:
            tally.record(meter, self.name)

    def mover_stream(
        self,
        frames: list[memoryview],
        metadata: dict[str, str],
        deadline: float | None,
        peer: str,
        path: str,
    ) -> Iterator[tuple[list[memoryview], int]]:
        """A whole streaming call that came through a mover (``shm_mover`` STREAM): its
        messages as views and sizes, counted under the mover's ``path``. Closing the
        iterator ends the handler."""
        self._arity(True)
        context = CallContext(peer, metadata, deadline)
        listener = self.listener
        meter = listener.options.call_meter
        tally = self._tally(frames, None, context) if meter is not None else None
        if tally is not None:
            tally.path = path
        try:
            for message in iterate(self.method, frames, context, listener.options):
                views, total = self._views(message)
                if tally is not None:
                    tally.answered += total
                yield views, total
            if tally is not None:
                tally.failed = False
        finally:
            if tally is not None and meter is not None:
                tally.record(meter, self.name)

    def _receive(
        self, requests: Iterator[bytes], gctx: grpc.ServicerContext, streaming: bool
    ) -> tuple[CallContext, bytes, list[memoryview]]:
        """The first steps of a call with one request message: admitted, authenticated
        (before the request is read), the arity checked; its context, request and frames."""
        self.listener.admit(self.name)
        context = _context(gctx)
        _authenticate(context, self.listener.options)
        self._arity(streaming)
        request = _one_request(requests, self.name)
        return context, request, self._request(request)

    def unary(self, requests: Iterator[bytes], gctx: grpc.ServicerContext) -> bytes | None:
        listener = self.listener
        meter = listener.options.call_meter
        tally: _Tally | None = None
        try:
            context, request, frames = self._receive(requests, gctx, streaming=False)
            if meter is not None:
                tally = self._tally(frames, request, context)
            views, total = self._views(invoke(self.method, frames, context, listener.options))
            if tally is not None:
                tally.answered, tally.failed = total, False
            route = choose_response_route(
                total,
                len(views),
                listener.routes,
                caller_fetches_by_mover=bool(request[1] & framing.FLAG_BULK_OK),
            )
            if route is ResponseRoute.INLINE:
                return framing.encode_inline(views)
            if route is ResponseRoute.INLINE_WITH_HINT:
                # The hint: this server's side channel would have taken it.
                return framing.encode_inline(views, framing.FLAG_BULK_OK)
            if route is ResponseRoute.PARK_FOR_MOVER and tally is not None:
                # Parked for a mover: the side channel's path whichever mover fetches it
                # (the caller picks, after this call was counted; see ``observe.calls``).
                tally.path = SIDE_CHANNEL_PATH
            ticket = listener.pending.put((views, total), deadline=context.deadline)
            return framing.encode_pending(ticket)
        except errors.OpError as exc:
            status.abort(gctx, exc)
        finally:
            if tally is not None:
                tally.record(meter, self.name)
        return None  # not reached: abort raises

    def stream(self, requests: Iterator[bytes], gctx: grpc.ServicerContext) -> Iterator[bytes]:
        listener = self.listener
        meter = listener.options.call_meter
        tally: _Tally | None = None
        try:
            context, request, frames = self._receive(requests, gctx, streaming=True)
            if meter is not None:
                tally = self._tally(frames, request, context)
            flags = request[1]
            for message in iterate(self.method, frames, context, listener.options):
                yield from self._encode(message, flags, context, gctx, tally)
            if tally is not None:
                tally.failed = False
        except errors.OpError as exc:
            status.abort(gctx, exc)
        finally:
            if tally is not None:
                tally.record(meter, self.name)

    def chunked(self, requests: Iterable[bytes], gctx: grpc.ServicerContext) -> Iterator[bytes]:
        listener = self.listener
        meter = listener.options.call_meter
        tally: _Tally | None = None
        try:
            listener.admit(self.name)
            context = _context(gctx)
            _authenticate(context, listener.options)
            reassembler = framing.Reassembler(listener.options.max_message_bytes)
            frames = None
            for chunk in requests:
                frames = reassembler.feed(chunk)
                if frames is not None:
                    break
            if frames is None:
                reassembler.finish()
                raise errors.DataLossError(f"{self.name}: the request stream carried no message")
            streaming = bool(reassembler.flags & framing.FLAG_STREAM)
            self._arity(streaming)
            flags = reassembler.flags
            if meter is not None:
                tally = self._tally(frames, None, context)
            if streaming:
                for message in iterate(self.method, frames, context, listener.options):
                    yield from self._encode(message, flags, context, gctx, tally)
            else:
                message = invoke(self.method, frames, context, listener.options)
                yield from self._encode(message, flags, context, gctx, tally)
            if tally is not None:
                tally.failed = False
        except errors.OpError as exc:
            status.abort(gctx, exc)
        finally:
            if tally is not None:
                tally.record(meter, self.name)

    def grpc_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        # Request-streaming on every path, so the token is checked before gRPC reads a
        # request (see the module docstring); callers still make unary-request calls.
        return {
            self.method.name: grpc.stream_unary_rpc_method_handler(self.unary),
            self.method.name + STREAM_SUFFIX: grpc.stream_stream_rpc_method_handler(self.stream),
            self.method.name + CHUNKED_SUFFIX: grpc.stream_stream_rpc_method_handler(self.chunked),
        }


def _register(
    server: grpc.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]
) -> None:
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:
        register(service, handlers)
    else:  # grpcio older than 1.63
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


class GrpcListener(Listener):
    """A gRPC server bound to one address for a set of tensorwire services."""

    def __init__(
        self, address: str, services: Sequence[Service], options: TransportOptions
    ) -> None:
        host, port = split_address(address)
        names = [s.name for s in services]
        if PENDING_SERVICE in names or BULK_SERVICE in names or len(set(names)) != len(names):
            raise errors.InvalidArgumentError(
                f"service names must be unique and not {PENDING_SERVICE!r} or "
                f"{BULK_SERVICE!r}: {names}"
            )
        self.options = options
        self.inline_bytes = opts.inline_bytes(options)
        self.chunk_bytes = opts.chunk_bytes(options)
        #: How long both movers' connections spin before they sleep (``kit.spinning``).
        self.spin_seconds = opts.spin_seconds()
        #: Large responses waiting to be fetched: ``(views, total)`` by ticket.
        self.pending: TicketStore[tuple[list[memoryview], int]] = TicketStore(
            PENDING_TTL_SECONDS, what="large responses to fetch"
        )
        self._fetch_method = Method(FETCH_METHOD, self._fetch_chunks, streaming=True)
        credentials = opts.server_credentials(options)
        self.bulk_threshold = opts.bulk_threshold(options)
        use_bulk = opts.bulk_tcp(options) and credentials is None
        self.max_calls = opts.max_workers(options)
        self._pool = DaemonThreadPool(self.max_calls + REFUSAL_THREADS, f"tensorwire-grpc-{port}")
        self._server = grpc.server(
            self._pool,
            options=opts.server_arguments(options),
            compression=opts.compression(options),
            maximum_concurrent_rpcs=self._pool.max_threads,
        )
        self._methods: dict[str, _MethodHandlers] = {}
        for service in services:
            handlers: dict[str, grpc.RpcMethodHandler] = {}
            for method in service.methods.values():
                method_handlers = _MethodHandlers(self, service.name, method)
                self._methods[method_handlers.name] = method_handlers
                handlers.update(method_handlers.grpc_handlers())
            _register(self._server, service.name, handlers)
        _register(
            self._server,
            PENDING_SERVICE,
            {FETCH_METHOD: grpc.stream_stream_rpc_method_handler(self._fetch)},
        )
        _register(
            self._server,
            BULK_SERVICE,
            {HELLO_METHOD: grpc.stream_unary_rpc_method_handler(self._hello)},
        )
        target = join_host_port(host, port)
        try:
            if credentials is None:
                bound = self._server.add_insecure_port(target)
            else:
                bound = self._server.add_secure_port(target, credentials)
        except RuntimeError as exc:  # newer grpcio raises, older returns 0
            bound = 0
            reason = str(exc)
        else:
            reason = "gRPC could not bind it"
        if not bound:
            self._server.stop(None)
            self._pool.shutdown(wait=False)
            raise errors.UnavailableError(
                f"cannot listen on {target}: {reason} (is the port already in use, "
                "or the host not an address of this machine?)"
            )
        self.port = bound
        self.address = join_host_port(host, bound)
        self.bulk: bulk.BulkServer | None = None
        if use_bulk:
            try:
                self.bulk = bulk.BulkServer(
                    host or "0.0.0.0",
                    options.token,
                    options.max_message_bytes,
                    self._take,
                    functools.partial(self._serve_mover_call, SIDE_CHANNEL_PATH),
                    max_calls=self.max_calls,
                    busy_elsewhere=lambda: self._pool.busy,
                    spin_seconds=self.spin_seconds,
                )
            except OSError as exc:  # the gRPC path still works; say why it is slower
                log.warning("no bulk side channel on %s: %s", host, exc)
        #: The shared-memory mover (None when off or it could not start).
        self.shm: shm_mover.ShmMoverServer | None = None
        if opts.shm(options):
            self.shm = _start_shm_mover(self, options)
        self.routes = RouteLimits(
            inline_bytes=self.inline_bytes,
            mover_threshold_bytes=self.bulk_threshold,
            max_message_bytes=options.max_message_bytes,
            mover=self.bulk is not None or self.shm is not None,
        )
        self._lock = threading.Lock()
        #: Handshakes being answered (``_hello``), not counted by ``admit``.
        self._hellos = 0
        self._hellos_lock = threading.Lock()
        #: Plugins' movers and their offer makers (``offer_mover``); replaced, never
        #: changed in place, so ``_hello`` reads it without the lock.
        self._movers: dict[str, handshake.MakeOffers] = {}
        self._started = False
        self._stopped = threading.Event()
        #: Set when a listener never started is stopped: it serves no call (see stop()).
        self._refusing = False
        self._grpc_threads: list[threading.Thread] = []
        # At exit: tell clients we are going (GOAWAY) and release gRPC's resources before
        # the interpreter tears down the modules gRPC's callbacks use.
        stop_at_exit(self)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "started" if self._started else "bound"
        return f"GrpcListener({self.address!r}, {state})"

    def admit(self, name: str) -> None:
        """Refuse the call ``name`` when ``max_calls`` others are being served.

        Runs first in every handler, on the call's thread: the pool's count includes it.
        """
        if self._refusing:
            raise errors.UnavailableError(
                f"{name} refused: the server at {self.address} was stopped before it started"
            )
        # This call's thread included; the handshakes not (see ``_hello``).
        busy = self._pool.busy - self._hellos
        if self.bulk is not None:
            busy += self.bulk.calls.count  # small calls over the side channel
        if busy > self.max_calls:
            raise errors.ResourceExhaustedError(
                f"{name} refused: the server at {self.address} is already serving "
                f"{self.max_calls} calls and streams, its limit. Raise it with "
                f"TransportOptions.extra['grpc_max_workers'] or the environment variable "
                f"{opts.MAX_WORKERS_ENV} on the server, or make fewer calls wait at once."
            )

    def _take(self, ticket: bytes) -> tuple[list[memoryview], int]:
        """The parked response ``ticket`` names, taken; ``NotFoundError`` if it is gone."""
        parked = self.pending.take(ticket)
        if parked is None:
            raise errors.NotFoundError(
                "the large response to fetch is gone: it expired or was already fetched"
            )
        return parked

    def _park(self, views: list[memoryview], total: int, deadline: float | None) -> bytes:
        """Park a response for its caller to fetch (a mover found no room for it)."""
        ticket: bytes = self.pending.put((views, total), deadline=deadline)
        return ticket

    def _serve_mover_call(
        self,
        path: str,
        name: str,
        frames: list[memoryview],
        metadata: dict[str, str],
        deadline: float | None,
        peer: str,
    ) -> tuple[list[memoryview], int]:
        """A unary call a mover carried (``mover_calls.ServeCall`` once ``path``, the call
        meter's name for the mover, is bound)."""
        return self._mover_handlers(name).mover_call(frames, metadata, deadline, peer, path)

    def _serve_mover_stream(
        self,
        path: str,
        name: str,
        frames: list[memoryview],
        metadata: dict[str, str],
        deadline: float | None,
        peer: str,
    ) -> Iterator[tuple[list[memoryview], int]]:
        """A streaming call a mover carried (``mover_calls.ServeStream`` once ``path`` is
        bound)."""
        return self._mover_handlers(name).mover_stream(frames, metadata, deadline, peer, path)

    def _mover_handlers(self, name: str) -> _MethodHandlers:
        """The handlers of ``name`` for a call that came by a mover (as gRPC would say it)."""
        handlers = self._methods.get(name)
        if handlers is None:
            raise errors.UnimplementedError(f"method {name} is not served at {self.address}")
        return handlers

    def _hello(self, requests: Iterator[bytes], gctx: grpc.ServicerContext) -> bytes | None:
        """The mover handshake (``kit.handshake``), to a caller that proves the token: the
        movers this server runs among those the caller can use (the side port, the
        shared-memory listener, and plugins' movers added with ``offer_mover``)."""
        # Not counted against ``max_calls``: channels ask in the background after their
        # first call, and a caller's own calls must not be refused because of that (it
        # ends at once; gRPC's own limit still bounds how many run).
        with self._hellos_lock:
            self._hellos += 1
        try:
            if self._refusing:
                self.admit(HELLO_PATH)  # says why
            _authenticate(_context(gctx), self.options)
            wants = handshake.decode_wants(_one_request(requests, HELLO_PATH))
        except errors.OpError as exc:
            status.abort(gctx, exc)
        finally:
            with self._hellos_lock:
                self._hellos -= 1
        offers = self._plugin_offers(wants)
        if self.bulk is not None and handshake.TCP in wants:
            features = handshake.FEATURE_CALL | handshake.FEATURE_LEAN
            offer = handshake.MoverOffer(handshake.TCP, self.bulk.port, features)
            offers.append(offer)
        if self.shm is not None and shm_mover.MOVER in wants:
            detail = self.shm.address.encode()
            offers.append(handshake.MoverOffer(shm_mover.MOVER, 0, handshake.FEATURE_CALL, detail))
        return handshake.encode_offers(offers)

    def offer_mover(self, mover: str, offers: handshake.MakeOffers) -> None:
        """Offer a plugin's mover in the handshake (``kit.handshake.OffersMovers``): each
        Hello whose caller wants ``mover`` carries what ``offers()`` returns then.

        Raises:
          InvalidArgumentError: a bad name, one of this transport's own movers (``tcp``,
            ``shm``), or a mover offered already.
        """
        handshake.check_mover_name(mover)
        if mover in _OWN_MOVERS:
            raise errors.InvalidArgumentError(
                f"the mover {mover!r} is the grpc transport's own; a plugin cannot offer it"
            )
        with self._hellos_lock:
            if mover in self._movers:
                raise errors.InvalidArgumentError(f"the mover {mover!r} is offered already")
            self._movers = {**self._movers, mover: offers}

    def _plugin_offers(self, wants: frozenset[str]) -> list[handshake.MoverOffer]:
        """The plugins' offers to a caller that wants ``wants``. A maker that fails costs
        its own mover only: the caller still gets the others."""
        offers: list[handshake.MoverOffer] = []
        for mover, make in self._movers.items():
            if mover not in wants:
                continue
            try:
                made = list(make())
            except Exception:  # noqa: BLE001 - a plugin's failure leaves its mover out
                log.exception("the offers of the mover %r failed; it is not offered", mover)
                continue
            offers += [offer for offer in made if offer.mover == mover]
        return offers

    def _fetch(self, requests: Iterator[bytes], gctx: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            self.admit(FETCH_PATH)
            context = _context(gctx)
            _authenticate(context, self.options)
            request = _one_request(requests, FETCH_PATH)
            # The fetch "handler" yields gRPC messages (bytes), not tensorwire messages.
            chunks = iterate(self._fetch_method, [memoryview(request)], context, self.options)
            yield from chunks  # type: ignore[misc]
        except errors.OpError as exc:
            status.abort(gctx, exc)

    def _fetch_chunks(self, frames: list[memoryview], context: CallContext) -> Iterator[bytes]:
        views, total = self._take(bytes(frames[0]))
        return framing.encode(views, total, inline_bytes=0, chunk_bytes=self.chunk_bytes)

    def start(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                raise errors.FailedPreconditionError(
                    f"the grpc server at {self.address} was stopped; it cannot start again"
                )
            if not self._started:
                _, threads = _noting_grpc_threads(self._server.start)
                self._grpc_threads += threads
                self._started = True
                forking.serving(self, self.address)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in flight get ``grace`` seconds. Returns once the port, the
        side channel and every thread of the listener are released (threads of calls that
        ignore the stop are waited for at most ``STOP_JOIN_SECONDS`` past the grace).
        """
        with self._lock:
            if self._stopped.is_set():
                return
            deadline = time.monotonic() + (grace or 0) + STOP_JOIN_SECONDS
            if not self._started:
                # gRPC bound the port when it was added and releases it when the server
                # shuts down, which a server never started does not do: it would hold the
                # port until garbage-collected. So start it, refusing every call (one may
                # have connected meanwhile), only to shut it down.
                self._refusing = True
                try:
                    _, threads = _noting_grpc_threads(self._server.start)
                except RuntimeError as exc:
                    # No thread to be had (memory, pid limit): gRPC may count the server
                    # as started with nothing to finish its shutdown, which would never end.
                    log.warning(
                        "grpc server at %s keeps its port until it is garbage-collected:"
                        " it could not be started to be shut down (%s)",
                        self.address,
                        exc,
                    )
                    done = threading.Event()
                    done.set()
                else:
                    self._grpc_threads += threads
                    self._started = True
            if self._started:
                done, threads = _noting_grpc_threads(lambda: self._server.stop(grace or None))
                self._grpc_threads += threads
            if self.bulk is not None:
                # Side-channel calls get the same grace as gRPC's calls in flight.
                self.bulk.calls.drain(grace or 0)
            if self.shm is not None:
                self.shm.calls.drain(grace or 0)
            # stop() returns at once; calls in flight get ``grace`` seconds, then are
            # cancelled. Waiting a little longer than that covers the cancellation.
            if not done.wait(max(0.0, deadline - time.monotonic())):
                log.warning("grpc server at %s did not finish stopping in time", self.address)
            if self.bulk is not None or self.shm is not None:
                # Calls that finished in the grace period may have left responses to
                # fetch through a mover: let their callers take them, within grace.
                end = time.monotonic() + (grace or 0)
                while len(self.pending) and time.monotonic() < end:
                    time.sleep(0.005)
            if self.bulk is not None:
                self.bulk.close(max(0.0, deadline - time.monotonic()))
            if self.shm is not None:
                self.shm.close(max(0.0, deadline - time.monotonic()))
            self.pending.clear()
            self._pool.shutdown(wait=False)
            self._pool.join(max(0.0, deadline - time.monotonic()))
            join_threads(self._grpc_threads, deadline, f"grpc server at {self.address}")
            self._grpc_threads = []
            self._stopped.set()
            forget(self)
            forking.stopped_serving(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def _start_shm_mover(
    listener: GrpcListener, options: TransportOptions
) -> shm_mover.ShmMoverServer | None:
    """The listener's shared-memory mover, or None (logged) when the host has none."""
    try:
        return shm_mover.ShmMoverServer(
            options.token,
            options.max_message_bytes,
            listener._take,
            listener._park,
            functools.partial(listener._serve_mover_call, SHM_PATH),
            functools.partial(listener._serve_mover_stream, SHM_PATH),
            listener.address,
            spin_seconds=listener.spin_seconds,
        )
    except OSError as exc:  # no memfd or abstract sockets here: the other paths still work
        log.warning("no shared-memory mover on %s: %s", listener.address, exc)
        return None
