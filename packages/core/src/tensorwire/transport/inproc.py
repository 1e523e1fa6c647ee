"""``inproc``: the reference transport, within one process and without sockets.

Listeners live in a process-wide table keyed by "host:port"; a channel looks its listener
up at each call. Frames are copied once on the way in, as a wire would, so a server never
holds a view into memory the caller may change afterwards. Handlers run on the listener's
own threads so that deadlines, stop(grace) and errors behave as they do over a network.

Those threads are a ``DaemonThreadPool`` per listener:
a thread per call or stream in flight, started on demand and retired when idle, up to
``TransportOptions.extra["inproc_max_workers"]`` (default
``DEFAULT_MAX_THREADS``). A call past that is refused at
once with ``ResourceExhaustedError``, never queued behind calls that may be waiting.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import queue
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence

from .. import errors
from . import hookimpl
from .base import (
    CallContext,
    Channel,
    Frames,
    Listener,
    Service,
    Transport,
    TransportOptions,
    invoke,
    iterate,
    split_address,
)
from .kit import handshake
from .kit.framing import check_size
from .threads import DEFAULT_MAX_THREADS, DaemonThreadPool

PROTOCOL = "inproc"
#: ``TransportOptions.extra`` key: calls and streams one listener serves at once.
MAX_WORKERS_OPTION = "inproc_max_workers"
#: How long ``stop()`` waits, after the grace period, for the threads of calls to end.
STOP_JOIN_SECONDS = 5.0

# Re-entrant: a server's __del__ may stop its listener from inside serve(), when the garbage
# collector runs while serve() holds the lock (that hung a test run with a plain Lock).
_table_lock = threading.RLock()
_listeners: dict[str, InprocListener] = {}
# Virtual ports for port 0; high enough to read as ports, never bound on the OS.
_next_port = itertools.count(40000)
#: In a forked child: the parent's listeners, which cannot be reached from here.
_parent_listeners: dict[str, InprocListener] = {}


def _forget_listeners_after_fork() -> None:
    # The listeners' threads stayed in the parent: a call to one would never be served.
    global _table_lock
    _table_lock = threading.RLock()
    _parent_listeners.update(_listeners)
    _listeners.clear()


os.register_at_fork(after_in_child=_forget_listeners_after_fork)


_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "0.0.0.0", "::", "::1"}


def _key(address: str) -> str:
    """One spelling per address, so "127.0.0.1:5" and "localhost:5" meet."""
    host, port = split_address(address)
    return f"{'localhost' if host in _LOCAL_HOSTS else host}:{port}"


def _copy_frames(frames: Frames, max_bytes: int | None = None) -> list[memoryview]:
    """Private copies of ``frames``, after the size check every transport applies
    (``kit.framing.check_size``), before anything is copied."""
    views = [memoryview(f).cast("B") for f in frames]
    check_size([v.nbytes for v in views], max_bytes)
    return [memoryview(bytearray(v)) for v in views]


def _copy_output(frames: Frames, name: str, max_bytes: int | None) -> list[memoryview]:
    """A handler's result as the caller receives it; a bad result is the handler's bug."""
    try:
        return _copy_frames(frames, max_bytes)
    except TypeError as exc:
        raise errors.InternalError(f"{name} returned an invalid message: {exc}") from None


def _max_workers(options: TransportOptions) -> int:
    value = options.extra.get(MAX_WORKERS_OPTION, DEFAULT_MAX_THREADS)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise errors.InvalidArgumentError(
            f"TransportOptions.extra[{MAX_WORKERS_OPTION!r}] must be a positive int, got {value!r}"
        )
    return value


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class InprocListener(Listener):
    def __init__(self, address: str, services: Sequence[Service], options: TransportOptions):
        self.address = address
        self.port = split_address(address)[1]
        self.options = options
        self._services = {s.name: s for s in services}
        self._started = threading.Event()
        self._stopped = threading.Event()
        # Set once the grace period of stop() is over: streams still running end then.
        self.cancelled = threading.Event()
        self._pool = DaemonThreadPool(
            _max_workers(options),
            f"inproc server {address}",
            limit_hint=f"Raise the limit with TransportOptions.extra[{MAX_WORKERS_OPTION!r}] "
            "on the server, or make fewer calls wait at once.",
        )
        self._inflight: set[concurrent.futures.Future[object]] = set()
        self._inflight_lock = threading.Lock()
        #: Plugins' movers (``kit.handshake.OffersMovers``); inproc has none of its own.
        self._movers: dict[str, handshake.MakeOffers] = {}

    def offer_mover(self, mover: str, offers: handshake.MakeOffers) -> None:
        """Offer a plugin's mover to channels that ask for it (``kit.handshake``)."""
        handshake.check_mover_name(mover)
        if mover in self._movers:
            raise errors.InvalidArgumentError(f"the mover {mover!r} is offered already")
        self._movers[mover] = offers

    def offers_to(self, wants: Collection[str]) -> list[handshake.MoverOffer]:
        """The plugins' offers to a channel that wants ``wants``."""
        return [
            offer
            for mover, make in list(self._movers.items())
            if mover in wants
            for offer in make()
            if offer.mover == mover
        ]

    def start(self) -> None:
        if self._stopped.is_set():
            raise errors.FailedPreconditionError("inproc listener was stopped")
        self._started.set()

    def stop(self, grace: float | None = None) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        with _table_lock:
            if _listeners.get(self.address) is self:
                del _listeners[self.address]
        with self._inflight_lock:
            pending = list(self._inflight)
        if pending and grace:
            concurrent.futures.wait(pending, timeout=grace)
        self.cancelled.set()
        for fut in pending:
            fut.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Calls still running past the grace see ``cancelled``; their threads are waited
        # for (bounded), so that nothing this listener started outlives its stop().
        self._pool.join(STOP_JOIN_SECONDS)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _method(self, service: str, method: str):
        if self._stopped.is_set() or not self._started.is_set():
            raise errors.UnavailableError(f"inproc server {self.address} is not serving")
        svc = self._services.get(service)
        if svc is None or method not in svc.methods:
            raise errors.UnimplementedError(f"method /{service}/{method} is not served here")
        return svc.methods[method]

    def submit(self, fn, *args):
        """Run ``fn`` on a thread of this listener; ``ResourceExhaustedError`` at once when
        every thread it may start is busy."""
        try:
            fut = self._pool.submit_now(fn, *args)
        except RuntimeError:
            raise errors.UnavailableError(
                f"inproc server {self.address} is shutting down"
            ) from None
        with self._inflight_lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: concurrent.futures.Future[object]) -> None:
        with self._inflight_lock:
            self._inflight.discard(fut)


class InprocChannel(Channel):
    def __init__(self, address: str, options: TransportOptions):
        self.address = address
        self._key = _key(address)
        self.options = options
        self._closed = False

    def _listener(self) -> InprocListener:
        if self._closed:
            raise errors.CancelledError("channel is closed")
        with _table_lock:
            listener = _listeners.get(self._key)
        if listener is None:
            if self._key in _parent_listeners:
                raise errors.FailedPreconditionError(
                    f"the inproc server at {self.address} lives in the process this one was "
                    "forked from; inproc cannot cross processes (use grpc)"
                )
            raise errors.UnavailableError(f"no inproc server at {self.address}")
        return listener

    def mover_offers(
        self, wants: Collection[str], *, timeout: float | None = None
    ) -> list[handshake.MoverOffer]:
        """What the server offers to ``wants`` (``kit.handshake.AsksMovers``); empty when
        no server is there now."""
        try:
            return self._listener().offers_to(frozenset(wants))
        except errors.OpError:
            return []

    def _context(self, timeout: float | None, metadata: Mapping[str, str] | None) -> CallContext:
        md = dict(metadata or {})
        if self.options.token is not None:
            md.setdefault("tensorwire-token", self.options.token)
        return CallContext(peer="inproc", metadata=md, deadline=_deadline(timeout))

    def call(self, service, method, frames, *, timeout=None, metadata=None):
        listener = self._listener()
        m = listener._method(service, method)
        if m.streaming:
            raise errors.InvalidArgumentError(f"/{service}/{method} is a streaming method")
        context = self._context(timeout, metadata)
        request = _copy_frames(frames, listener.options.max_message_bytes)
        name = f"/{service}/{method}"

        def run() -> list[memoryview]:
            meter = listener.options.call_meter
            if meter is None:
                result = invoke(m, request, context, listener.options)
                return _copy_output(result, name, self.options.max_message_bytes)
            started, answer = time.monotonic(), None
            try:
                result = invoke(m, request, context, listener.options)
                answer = _copy_output(result, name, self.options.max_message_bytes)
                return answer
            finally:
                meter.record(
                    name,
                    context.payload_path or "inproc",
                    sum(map(len, request)) + context.payload_bytes_in,
                    (0 if answer is None else sum(map(len, answer))) + context.payload_bytes_out,
                    time.monotonic() - started,
                    answer is None,
                )

        fut = listener.submit(run)
        try:
            return fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise errors.DeadlineExceededError(
                f"/{service}/{method} to {self.address} exceeded its {timeout}s deadline"
            ) from None
        except concurrent.futures.CancelledError:
            raise errors.UnavailableError(
                f"inproc server {self.address} stopped during the call"
            ) from None

    def stream(self, service, method, frames, *, timeout=None, metadata=None):
        listener = self._listener()
        m = listener._method(service, method)
        if not m.streaming:
            raise errors.InvalidArgumentError(f"/{service}/{method} is not a streaming method")
        context = self._context(timeout, metadata)
        request = _copy_frames(frames, listener.options.max_message_bytes)
        name = f"/{service}/{method}"
        # Bounded so a slow reader applies back-pressure to the producing handler.
        items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=8)
        cancelled = threading.Event()

        def offer(item: tuple[str, object]) -> bool:
            # Also gives up once the server stopped: a reader that stopped reading must not
            # keep a thread of a stopped server waiting (the reader then sees Unavailable).
            while not cancelled.is_set() and not listener.cancelled.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            meter = listener.options.call_meter
            started, sent, failed = time.monotonic(), 0, True
            try:
                for message in iterate(m, request, context, listener.options):
                    if listener.cancelled.is_set():
                        raise errors.UnavailableError(
                            f"inproc server {self.address} stopped during the stream"
                        )
                    copied = _copy_output(message, name, self.options.max_message_bytes)
                    sent += sum(map(len, copied))
                    if not offer(("item", copied)):
                        return
                failed = False
                offer(("end", None))
            except errors.OpError as exc:
                offer(("error", exc))
            finally:
                if meter is not None:
                    meter.record(
                        name,
                        context.payload_path or "inproc",
                        sum(map(len, request)) + context.payload_bytes_in,
                        sent + context.payload_bytes_out,
                        time.monotonic() - started,
                        failed,
                    )

        listener.submit(produce)
        return self._consume(items, cancelled, context, name, timeout, listener)

    def _consume(
        self, items, cancelled, context, name, timeout, listener
    ) -> Iterator[list[memoryview]]:
        try:
            while True:
                remaining = context.time_remaining()
                wait = 1.0 if remaining is None else min(remaining, 1.0)
                try:
                    kind, value = items.get(timeout=wait)
                except queue.Empty:
                    if remaining is not None and remaining <= wait:
                        raise errors.DeadlineExceededError(
                            f"{name} to {self.address} exceeded its {timeout}s deadline"
                        ) from None
                    if listener.cancelled.is_set():
                        raise errors.UnavailableError(
                            f"inproc server {self.address} stopped during the stream"
                        ) from None
                    continue
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            cancelled.set()

    def close(self) -> None:
        self._closed = True


class InprocTransport(Transport):
    protocols = (PROTOCOL,)

    def serve(self, address, services, options):
        host, port = split_address(_key(address))
        with _table_lock:
            if port == 0:
                while True:
                    port = next(_next_port)
                    if f"{host}:{port}" not in _listeners:
                        break
            bound = f"{host}:{port}"
            if bound in _listeners:
                raise errors.UnavailableError(
                    f"inproc address {bound} is already in use by another server"
                )
            listener = InprocListener(bound, services, options)
            _listeners[bound] = listener
        return listener

    def connect(self, address, options):
        split_address(address)
        return InprocChannel(address, options)


@hookimpl
def tensorwire_register_transports(registry) -> None:
    registry.register(PROTOCOL, InprocTransport, distribution="tensorwire")
