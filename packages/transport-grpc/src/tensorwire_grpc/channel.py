"""The grpc channel: tensorwire calls as raw-bytes gRPC calls (see ``server`` for the paths).

A small request goes as one unary gRPC call (the cheapest thing gRPC Python does); a
large one as a chunk stream. Calls never wait for a peer to come up (``wait_for_ready`` is
off), so a peer that is down fails the call with ``UnavailableError`` at once.

With the bulk side channel on (``bulk``), a unary call whose request, or announced response
(``RESPONSE_BYTES_METADATA_KEY``), has at least ``bulk_tcp_threshold_bytes`` goes whole over
pooled plain TCP connections (CALL). Other large messages take TCP beside a gRPC call: a large
request is pushed first and the gRPC call carries its ticket; once the server's side port is
known every request says so (FLAG_BULK_OK) and large responses come back as tickets fetched
over TCP. ``kit.routes.choose_call_route`` picks the routes to try, in order; this module
only executes them, moving on when the side channel is unavailable. The port is asked for
once per gRPC channel and token (``Bulk/Hello``, the mover handshake of ``kit.handshake``),
when something large first shows up; a server without it, or a port that cannot be reached,
leaves the call on gRPC.

Small calls (issue 15): once the side port is known, a unary call without metadata of the
caller's and with a request of at most ``bulk.protocol.LEAN_MAX_BYTES`` goes over a pooled
side-channel connection in the LEAN framing, on the calling thread (several times cheaper
than a gRPC call from Python). So that steady-state calls find the port known, the first
small call to a server asks for it in the background (``SharedChannel.learn_soon``), at most
once per ``_HELLO_RETRY_SECONDS`` while it fails. gRPC stays the first contact, the fallback
(no port, no connection to be had, the server at its bound of calls) and the only path
under TLS (``options.bulk_small_calls``).

The shared-memory mover (``shm_mover``) comes first when the server offers it and this
side can reach it (same host, same network namespace: proved by connecting, never guessed
from the address): large unary calls and whole streams then move through it, and parked
responses are fetched through it; when it cannot take a call (no connection, no room) the
side channel or gRPC does.

A plugin's mover is agreed on through the same Hello: ``GrpcChannel.mover_offers`` (the
core's ``kit.handshake.AsksMovers``) hands out what the server offered to the movers it
names, from the answer kept per token.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from tensorwire import errors
from tensorwire.transport.base import (
    TOKEN_METADATA_KEY,
    Channel,
    Frames,
    TransportOptions,
    expected_response_bytes,
)
from tensorwire.transport.kit import framing, handshake
from tensorwire.transport.kit.address import split_address
from tensorwire.transport.kit.routes import CallRoute, RouteLimits, choose_call_route
from tensorwire.transport.threads import background

from . import bulk, forking, idle, shm_mover, status
from . import options as opts
from .server import CHUNKED_SUFFIX, FETCH_PATH, HELLO_PATH, STREAM_SUFFIX

if TYPE_CHECKING:
    from .transport import GrpcTransport

__all__ = ["GrpcChannel", "SharedChannel"]

#: After a failed Hello (other than "not served"), ask again after this long.
_HELLO_RETRY_SECONDS = 5.0
#: How long ``mover_offers`` asks again while the first connection is being made, and the
#: pause between two asks.
_CONNECTING_SECONDS = 10.0
_CONNECTING_PAUSE = 0.2
#: How long closing a channel waits for its background Hello (whose timeout is 2 s).
_HELLO_CLOSE_WAIT_SECONDS = 3.0
#: The movers a ``BulkPeer`` stands for (``kit.handshake``; ``shm`` has ``ShmPeer``).
_MOVERS = frozenset((handshake.TCP,))
#: The route of a small call: gRPC's own future carries it, no thread of ours waits.
_INLINE_ONLY = (CallRoute.INLINE,)


@dataclasses.dataclass(frozen=True)
class _Answer:
    """A server's answer to a Hello: the movers it asked for and the offers made to them."""

    asked: frozenset[str]
    offers: list[handshake.MoverOffer]


@dataclasses.dataclass(frozen=True)
class _Later:
    """A Hello that failed: asked again from ``at`` (monotonic; ``math.inf``: never, the
    server does not answer the handshake). ``unreachable``: it found no server."""

    at: float
    unreachable: bool = False
    #: Unreachable yet not refused: the connection was still being made (its attempt timed
    #: out, as a first connection on a loaded or emulated machine can).
    connecting: bool = False


class SharedChannel:
    """One gRPC channel and its cached multi-callables, shared by equal tensorwire channels."""

    def __init__(self, address: str, options: TransportOptions) -> None:
        self.address = address
        # token -> BulkPeer, or the monotonic time from which to ask the server again.
        self._bulk: dict[str | None, bulk.BulkPeer | float] = {}
        self._bulk_lock = threading.Lock()
        #: Tokens whose side port is being asked for in the background (``learn_soon``).
        self._learning: set[str | None] = set()
        #: Notified when a background Hello ends; ``close`` waits for them (see there).
        self._learned = threading.Condition(self._bulk_lock)
        self._closing = False
        #: token -> the shared-memory mover, when the server offered one this side reached.
        self._shm: dict[str | None, shm_mover.ShmPeer] = {}
        self._max_bytes = options.max_message_bytes
        self._spin_seconds = opts.spin_seconds()
        wants = {handshake.TCP} if opts.bulk_tcp(options) else set()
        if opts.shm(options):
            wants.add(shm_mover.MOVER)
        self._wants = frozenset(wants)
        #: Every mover a Hello of this channel asks for: its own and those plugins asked
        #: about (``mover_offers``); only grows.
        self._asked = self._wants
        self._hello_request = handshake.encode_wants(sorted(wants))
        #: token -> the last Hello's answer, or when to ask again after it failed.
        self._hellos: dict[str | None, _Answer | _Later] = {}
        if wants:
            idle.start()
        credentials = opts.channel_credentials(options)
        arguments = opts.channel_arguments(options)
        compression = opts.compression(options)
        if credentials is None:
            self.grpc_channel = grpc.insecure_channel(address, arguments, compression)
        else:
            self.grpc_channel = grpc.secure_channel(address, credentials, arguments, compression)
        self.references = 0
        #: Set when a call found the server unreachable, cleared by the next call that gets
        #: through. gRPC then backs off before reconnecting (up to
        #: ``grpc.max_reconnect_backoff_ms``) and fails calls at once meanwhile, so a new
        #: caller gets a fresh channel instead (a task restarted on the same port, or a new
        #: server on a reused port, is reached at once).
        self.unreachable = False
        self._lock = threading.Lock()
        self._callables: dict[tuple[str, str], Any] = {}
        #: Set in a forked child: this is the parent's channel, never to be used here.
        self.abandoned = False
        #: Set (under ``_lock``) once the gRPC channel is closed: no method is registered
        #: on it after that.
        self._grpc_closed = False

    def _callable(self, kind: str, path: str) -> Any:
        key = (kind, path)
        found = self._callables.get(key)
        if found is None:
            if self.abandoned:
                raise errors.FailedPreconditionError(
                    f"the channel to {self.address} was opened before this process was "
                    "forked and cannot be used in the child; connect again"
                )
            with self._lock:
                if self._grpc_closed:
                    # gRPC's C core crashes the process (SIGSEGV) registering a method on
                    # a channel closed under it; a call that raced the close ends here.
                    raise errors.CancelledError(f"{path}: the channel to {self.address} is closed")
                factory = getattr(self.grpc_channel, kind)
                # _registered_method=True: the path is registered once with the C core
                # instead of being looked up on every call (public since grpcio 1.62).
                found = factory(path, _registered_method=True)
                self._callables[key] = found
        return found

    def unary_unary(self, path: str) -> grpc.UnaryUnaryMultiCallable:
        return self._callable("unary_unary", path)

    def unary_stream(self, path: str) -> grpc.UnaryStreamMultiCallable:
        return self._callable("unary_stream", path)

    def stream_stream(self, path: str) -> grpc.StreamStreamMultiCallable:
        return self._callable("stream_stream", path)

    def known_bulk_peer(self, token: str | None) -> bulk.BulkPeer | None:
        """The side channel if known and not failing (no Hello asked here)."""
        peer = self._bulk.get(token)
        if isinstance(peer, bulk.BulkPeer) and not peer.failed_until:
            return peer
        return None

    def bulk_peer(
        self,
        token: str | None,
        metadata: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
    ) -> bulk.BulkPeer | None:
        """The server's side channel, asking it once; None when there is none (yet)."""
        known = self.known_bulk_peer(token)
        if known is not None:
            return known
        peer = self._bulk.get(token)
        if isinstance(peer, float) and time.monotonic() < peer:
            return None
        with self._bulk_lock:
            peer = self._bulk.get(token)
            if isinstance(peer, bulk.BulkPeer):
                if not peer.failed_until:
                    return peer
                if time.monotonic() < peer.failed_until:
                    return None
                # Its port failed a while ago (a restarted server has a new one): ask again.
                peer.close()
                del self._bulk[token]
                failures, stale = peer.failures, True
            elif peer is not None and time.monotonic() < peer:
                return None
            else:
                failures, stale = 0, False
            # Asked anew when the side port failed; else a plugin's Hello may have answered.
            answer = self._hello_locked(token, metadata, deadline, self._wants, again=stale)
            found: bulk.BulkPeer | float
            if isinstance(answer, _Later):
                found = answer.at
            else:
                self._reach_shm(token, answer.offers, deadline)
                offer = handshake.choose_mover(self._wants & _MOVERS, answer.offers)
                if offer is not None:
                    host = split_address(self.address)[0]
                    found = bulk.BulkPeer(host, offer.port, token, failures, self._spin_seconds)
                    found.calls = bool(offer.features & handshake.FEATURE_CALL)
                    found.lean = bool(offer.features & handshake.FEATURE_LEAN)
                else:
                    found = math.inf
            self._bulk[token] = found
            return found if isinstance(found, bulk.BulkPeer) else None

    def _hello_locked(
        self,
        token: str | None,
        metadata: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
        wants: frozenset[str],
        *,
        again: bool = False,
        unreachable_again: bool = False,
    ) -> _Answer | _Later:
        """The server's answer to a Hello that asked for at least ``wants``: the one kept
        unless ``again`` (what it said went stale), else asked now; or, when the Hello
        failed, when to ask again. A Hello that found the server unreachable is asked
        again before then with ``unreachable_again`` (it fails at once, as the caller's own
        call would). Under ``_bulk_lock``; the one place this channel asks the handshake."""
        known = self._hellos.get(token)
        if not again:
            if isinstance(known, _Answer) and wants <= known.asked:
                return known
            if (
                isinstance(known, _Later)
                and time.monotonic() < known.at
                and not (unreachable_again and known.unreachable)
            ):
                return known
        if not wants <= self._asked:
            self._asked |= wants
            self._hello_request = handshake.encode_wants(sorted(self._asked))
        # Short, leaving the call time to go by gRPC; a busy server is asked again later.
        timeout = 2.0
        if deadline is not None:
            timeout = min(timeout, max(0.001, (deadline - time.monotonic()) / 4))
        answer: _Answer | _Later
        try:
            reply = self.unary_unary(HELLO_PATH)(
                self._hello_request, timeout=timeout, metadata=metadata
            )
            answer = _Answer(self._asked, handshake.decode_offers(reply))
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                answer = _Later(math.inf)  # an older peer does not serve Hello: never ask
            else:
                unreachable = code == grpc.StatusCode.UNAVAILABLE
                refused = "Connection refused" in str(exc.details() if code else exc)
                answer = _Later(
                    time.monotonic() + _HELLO_RETRY_SECONDS,
                    unreachable=unreachable,
                    connecting=unreachable and not refused,
                )
        except errors.DataLossError:
            answer = _Later(math.inf)
        self._hellos[token] = answer
        return answer

    def mover_offers(
        self,
        token: str | None,
        wants: frozenset[str],
        metadata: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
    ) -> list[handshake.MoverOffer]:
        """The server's offers to ``wants``, from the Hello asked once (with this
        channel's own movers); empty when it offers none, does not serve Hello, or the
        Hello failed lately (asked again after ``_HELLO_RETRY_SECONDS``, or by the next
        caller when it found the server unreachable: a caller that goes on to call would
        otherwise take the control plane for seconds after the server came up). A Hello
        whose connection attempt timed out is asked again right away (see below), as the
        ``grpc+verbs`` plugin retried its own handshake before it joined this one."""
        # While the first connection is still being made the Hello is asked again, within
        # the deadline and _CONNECTING_SECONDS (nothing listening: answered at once).
        give_up = time.monotonic() + _CONNECTING_SECONDS
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            with self._bulk_lock:
                if self._closing or self.abandoned:
                    return []
                answer = self._hello_locked(
                    token, metadata, deadline, wants, unreachable_again=True
                )
            if isinstance(answer, _Answer):
                return [offer for offer in answer.offers if offer.mover in wants]
            if not answer.connecting or time.monotonic() + _CONNECTING_PAUSE >= give_up:
                return []
            time.sleep(_CONNECTING_PAUSE)

    def lean_peer(self, token: str | None) -> bulk.BulkPeer | None:
        """The side channel if known to take small calls and not failing (no Hello asked)."""
        peer = self._bulk.get(token)
        if peer.__class__ is bulk.BulkPeer and peer.lean and not peer.failed_until:
            return peer
        return None

    def learn_soon(self, token: str | None, metadata: tuple[tuple[str, str], ...] | None) -> None:
        """Ask for the side port on a background thread unless known, being asked, or
        failed recently (then the next call after the retry time asks again)."""
        peer = self._bulk.get(token)
        if isinstance(peer, bulk.BulkPeer):
            if not peer.failed_until or time.monotonic() < peer.failed_until:
                return
        elif peer is not None and time.monotonic() < peer:
            return
        with self._bulk_lock:
            if token in self._learning or self.abandoned or self._closing:
                return
            self._learning.add(token)

        def learn() -> None:
            try:
                self.bulk_peer(token, metadata, None)
            except ValueError:  # "Cannot invoke RPC on closed channel!": closed meanwhile
                pass
            finally:
                with self._bulk_lock:
                    self._learning.discard(token)
                    self._learned.notify_all()

        try:
            background().submit_now(learn)
        except errors.OpError:  # no thread to be had now: a later call asks again
            with self._bulk_lock:
                self._learning.discard(token)

    def _reach_shm(
        self, token: str | None, offers: list[handshake.MoverOffer], deadline: float | None
    ) -> None:
        """Connect to the server's shared-memory mover if it offers one this side wants; a
        connection that fails (another host or network namespace) leaves the next mover."""
        if shm_mover.MOVER not in self._wants:
            return
        offer = next((o for o in offers if o.mover == shm_mover.MOVER), None)
        if offer is None:
            return
        try:
            address = offer.detail.decode("ascii")
        except UnicodeDecodeError:
            return
        known = self._shm.get(token)
        if known is not None:
            if known.address == address:
                return
            known.close()  # the server restarted: its listener has a new name
            del self._shm[token]
        peer = shm_mover.ShmPeer(address, token, self._max_bytes, self._spin_seconds)
        try:
            peer.put_idle(peer.connect(deadline))
        except shm_mover.ShmUnavailable:
            return
        self._shm[token] = peer

    def shm_peer(self, token: str | None) -> shm_mover.ShmPeer | None:
        """The shared-memory mover reached for ``token`` (no Hello asked here)."""
        return self._shm.get(token)

    def refresh_shm(
        self,
        token: str | None,
        peer: shm_mover.ShmPeer,
        metadata: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
    ) -> shm_mover.ShmPeer | None:
        """Ask the server again for its shared-memory listener: ``peer``'s could not be
        reached (a server restarted on this address has a new one). Once per retry period;
        the peer to use now, if any."""
        with self._bulk_lock:
            if self._shm.get(token) is not peer or not peer.stale():
                return self._shm.get(token)
            peer.failed_until = time.monotonic() + shm_mover.RETRY_SECONDS
            answer = self._hello_locked(token, metadata, deadline, self._wants, again=True)
            if isinstance(answer, _Answer):
                self._reach_shm(token, answer.offers, deadline)
            # (A failed Hello: asked again after the retry period.)
            return self._shm.get(token)

    def abandon(self) -> None:
        """In a forked child: give up this channel, the parent's, without touching gRPC.

        The gRPC channel is kept alive and never closed here (closing or finalizing it
        would call into the core copied from the parent); the child's copies of idle
        side-channel sockets are closed, which the parent does not notice.
        """
        self.abandoned = True
        self._callables = {}
        self._lock = threading.Lock()
        self._bulk_lock = threading.Lock()
        self._learned = threading.Condition(self._bulk_lock)
        self._learning = set()  # the parent's background Hellos are not ours
        self._hellos = {}
        peers, self._bulk = list(self._bulk.values()), {}
        # (Inherited shared-memory connections were closed at the fork by ``shm``.)
        self._shm = {}
        for peer in peers:
            if isinstance(peer, bulk.BulkPeer):
                peer.close_inherited()
        forking.keep_inherited(self.grpc_channel)

    def wait_for_hellos(self, timeout: float) -> bool:
        """Until no background Hello (``learn_soon``) is in flight, ``timeout`` at most;
        whether none is. (A Hello takes one of the server's gRPC threads meanwhile.)"""
        with self._bulk_lock:
            return self._wait_for_hellos(timeout)

    def _wait_for_hellos(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self._learning and time.monotonic() < end:
            self._learned.wait(max(0.0, end - time.monotonic()))
        return not self._learning

    def close(self) -> None:
        with self._bulk_lock:
            # A background Hello still in flight ends first (within its short timeout):
            # closing a gRPC channel under a call of another thread is what gRPC handles
            # least well, and the Hello was ours, not a caller's.
            self._closing = True
            self._wait_for_hellos(_HELLO_CLOSE_WAIT_SECONDS)
            peers = [p for p in self._bulk.values() if isinstance(p, bulk.BulkPeer)]
            self._bulk.clear()
            self._hellos.clear()
            shm_peers, self._shm = list(self._shm.values()), {}
        for peer in peers:
            peer.close()
        for shm_peer in shm_peers:
            shm_peer.close()
        if not self.abandoned:
            with self._lock:  # never while ``_callable`` registers a method (see there)
                self._grpc_closed = True
                self.grpc_channel.close()


class GrpcChannel(Channel):
    """A tensorwire channel over a (shared) gRPC channel. Thread safe."""

    def __init__(
        self,
        transport: GrpcTransport,
        address: str,
        options: TransportOptions,
        shared: SharedChannel,
    ) -> None:
        self.address = address
        self.options = options
        self._transport = transport
        self._shared = shared
        self._inline_bytes = opts.inline_bytes(options)
        self._chunk_bytes = opts.chunk_bytes(options)
        self._max_bytes = options.max_message_bytes
        self._bulk_on = opts.bulk_tcp(options)
        self._lean_on = opts.bulk_small_calls(options)
        self._shm_on = opts.shm(options)
        self._bulk_threshold = opts.bulk_threshold(options)
        #: Requests up to this size may take the LEAN path (-1: none does).
        self._lean_bytes = (
            min(self._bulk_threshold - 1, bulk.protocol.LEAN_MAX_BYTES) if self._lean_on else -1
        )
        self._routes = RouteLimits(
            inline_bytes=self._inline_bytes,
            mover_threshold_bytes=self._bulk_threshold,
            max_message_bytes=self._max_bytes,
            mover=self._bulk_on or self._shm_on,
        )
        self._token: tuple[tuple[str, str], ...] = (
            ((TOKEN_METADATA_KEY, options.token),) if options.token is not None else ()
        )
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GrpcChannel({self.address!r}{', closed' if self._closed else ''})"

    # -- helpers -------------------------------------------------------------------------
    def _check_open(self, name: str) -> None:
        if self._closed:
            raise errors.CancelledError(f"{name}: the channel to {self.address} is closed")

    def _metadata(self, metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...] | None:
        if not metadata:
            return self._token or None
        items = tuple((str(k).lower(), v) for k, v in metadata.items())
        if self._token and TOKEN_METADATA_KEY not in metadata:
            items += self._token
        return items

    def _bulk_flags(self) -> int:
        """FLAG_BULK_OK once this channel's server side port (or shared memory) is known."""
        if self._bulk_on and self._shared.known_bulk_peer(self.options.token) is not None:
            return framing.FLAG_BULK_OK
        if self._shm_on and self._shared.shm_peer(self.options.token) is not None:
            return framing.FLAG_BULK_OK
        return 0

    def _bulk_peer(
        self, md: tuple[tuple[str, str], ...] | None, deadline: float | None
    ) -> bulk.BulkPeer | None:
        if not (self._bulk_on or self._shm_on):
            return None
        return self._shared.bulk_peer(self.options.token, md, deadline)

    def _shm_peer(
        self, md: tuple[tuple[str, str], ...] | None, deadline: float | None
    ) -> shm_mover.ShmPeer | None:
        """The shared-memory mover, asking the server once (with the side port)."""
        if not self._shm_on:
            return None
        peer = self._shared.shm_peer(self.options.token)
        if peer is None:
            self._bulk_peer(md, deadline)
            peer = self._shared.shm_peer(self.options.token)
        elif peer.stale():
            peer = self._shared.refresh_shm(self.options.token, peer, md, deadline)
        return peer

    def mover_offers(
        self, wants: Collection[str], *, timeout: float | None = None
    ) -> list[handshake.MoverOffer]:
        """What the server offered, in the mover handshake, to the movers in ``wants``
        (``kit.handshake.AsksMovers``: how a plugin's mover, ``verbs``, is agreed on).

        The answer comes from the one Hello this gRPC channel asks (it asks for its own
        movers and every plugin's asked about so far), made now if not yet known: each ask
        takes at most 2 s, and asks are repeated while the first connection is still
        being made, within ``timeout`` and ``_CONNECTING_SECONDS``. Empty when the server
        offers none of ``wants``, does not serve the handshake (an older peer), or could not
        be asked now (asked again by the next caller when nothing answered, else after
        ``_HELLO_RETRY_SECONDS``).
        """
        wanted = frozenset(handshake.check_mover_name(name) for name in wants)
        if not wanted or self._closed:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._shared.mover_offers(self.options.token, wanted, self._token or None, deadline)

    def _call_routes(
        self, views: list[memoryview], total: int, metadata: Mapping[str, str] | None
    ) -> tuple[CallRoute, ...]:
        """The routes to try for a unary call (``kit.routes``)."""
        return choose_call_route(
            total,
            len(views),
            self._routes,
            expected_response_bytes=expected_response_bytes(metadata),
        )

    def _lean_peer(self) -> bulk.BulkPeer | None:
        return self._shared.lean_peer(self.options.token)

    def _bulk_call(
        self,
        name: str,
        views: list[memoryview],
        md: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
    ) -> list[memoryview] | None:
        """The response of the whole call made over a mover, or None: use gRPC."""
        shm_peer = self._shm_peer(md, deadline)
        if shm_peer is not None:
            try:
                expected = expected_response_bytes(dict(md)) if md else 0
                return shm_peer.call(name, views, md or (), deadline, expected)
            except shm_mover.Parked as parked:
                return self._fetch_pending(
                    framing.encode_pending(parked.ticket), name, None, deadline, md, shm=False
                )
            except shm_mover.ShmUnavailable:
                pass  # nothing was sent: the side channel or gRPC takes it
        peer = self._bulk_peer(md, deadline)
        if peer is None or not peer.calls:
            return None
        try:
            return bulk.call(peer, name, views, md or (), deadline, self._max_bytes)
        except bulk.BulkUnavailable:
            return None

    def _push(
        self,
        views: list[memoryview],
        name: str,
        md: tuple[tuple[str, str], ...] | None,
        deadline: float | None,
        flags: int,
    ) -> bytes | None:
        """The BULK descriptor of a large request pushed over TCP, or None: use gRPC."""
        peer = self._bulk_peer(md, deadline)
        if peer is None:
            return None
        try:
            ticket = bulk.push(peer, views, deadline, name)
        except bulk.BulkUnavailable:
            return None
        return framing.encode_bulk(views, ticket, flags | framing.FLAG_BULK_OK)

    def _fetch_pending(
        self,
        message: bytes,
        name: str,
        timeout: float | None,
        deadline: float | None,
        md: tuple[tuple[str, str], ...] | None,
        *,
        shm: bool = True,
    ) -> list[memoryview]:
        """The response parked under a PENDING ticket: through shared memory or over TCP
        if possible, else gRPC."""
        ticket = bytes(message[8 : 8 + framing.TICKET_BYTES])
        if len(ticket) != framing.TICKET_BYTES:
            raise errors.DataLossError(f"{name}: malformed large-response ticket")
        shm_peer = self._shm_peer(md, deadline) if shm else None
        if shm_peer is not None:
            try:
                return shm_peer.fetch(ticket, deadline, name)
            except shm_mover.Parked as parked:
                ticket = parked.ticket  # no room now: parked again, fetched another way
            except shm_mover.ShmUnavailable:
                pass  # nothing was asked: the ticket is still good
        peer = self._bulk_peer(md, deadline) if self._bulk_on else None
        if peer is not None:
            try:
                return bulk.fetch(peer, ticket, deadline, self._max_bytes, name)
            except bulk.BulkUnavailable:
                pass  # nothing was asked: the ticket is still good for gRPC
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        fetch = self._shared.unary_stream(FETCH_PATH)
        try:
            responses = fetch(ticket, timeout=remaining, metadata=md)
        except grpc.RpcError as exc:
            raise self._error(exc, name, timeout) from None
        return self._receive_one(responses, name, timeout)

    def _error(self, exc: grpc.RpcError, name: str, timeout: float | None) -> errors.OpError:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNAVAILABLE:
            self._shared.unreachable = True
        return status.to_op_error(exc, name, self.address, timeout)

    def _receive_one(
        self,
        responses: Iterable[bytes],
        name: str,
        timeout: float | None,
        deadline: float | None = None,
        md: tuple[tuple[str, str], ...] | None = None,
    ) -> list[memoryview]:
        """The single message carried by a stream of gRPC messages."""
        reassembler = framing.Reassembler(self._max_bytes)
        result = None
        try:
            for message in responses:
                if result is not None:
                    raise errors.DataLossError(f"{name}: more than one response message")
                if reassembler.idle and message and message[0] == framing.PENDING:
                    result = self._fetch_pending(message, name, timeout, deadline, md)
                else:
                    result = reassembler.feed(message)
        except grpc.RpcError as exc:
            raise self._error(exc, name, timeout) from None
        reassembler.finish()
        if result is None:
            raise errors.DataLossError(f"{name}: the server sent no response message")
        return result

    def _response(
        self,
        response: bytes,
        name: str,
        timeout: float | None,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...] | None,
    ) -> list[memoryview]:
        if self._shared.unreachable:
            self._shared.unreachable = False
        if not response or response[0] != framing.PENDING:
            if (
                len(response) > 1
                and response[1] & framing.FLAG_BULK_OK
                and (self._bulk_on or self._shm_on)
            ):
                # The server says its side channel would have carried this response: learn
                # its port (once) so that the next large ones take it.
                self._bulk_peer(metadata, None)
            return framing.decode_inline(response, self._max_bytes)
        # A large response: fetch it with the ticket it came with.
        return self._fetch_pending(response, name, timeout, deadline, metadata)

    # -- the Channel interface -------------------------------------------------------------
    def call(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[memoryview]:
        name = f"/{service}/{method}"
        self._check_open(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        views, total = framing.as_byte_views(frames)
        if (
            not metadata
            and total < self._bulk_threshold
            and total + 8 * len(views) <= self._inline_bytes
        ):
            # Most calls: small, without metadata of the caller's, for which
            # choose_call_route answers (INLINE,) (a test holds the two together); asking
            # it costs a dozen more steps, as costly as the rest of the call's Python on a
            # loaded machine.
            md = self._token or None
            if total <= self._lean_bytes and len(views) <= bulk.protocol.LEAN_MAX_FRAMES:
                peer = self._lean_peer()
                if peer is not None:
                    try:
                        return bulk.lean_call(
                            peer, name.encode(), views, total, deadline, self._max_bytes
                        )
                    except bulk.BulkUnavailable:
                        pass  # nothing ran: gRPC
                else:
                    self._shared.learn_soon(self.options.token, md)
            inline = framing.encode_inline(views, self._bulk_flags())
            try:
                reply = self._shared.unary_unary(name)(inline, timeout=timeout, metadata=md)
            except grpc.RpcError as exc:
                raise self._error(exc, name, timeout) from None
            return self._response(reply, name, timeout, deadline, md)
        md = self._metadata(metadata)
        request: bytes | None = None
        for route in self._call_routes(views, total, metadata):
            if route is CallRoute.MOVER_CALL:
                # One TCP round trip instead of a gRPC one plus a TCP one for the body.
                response = self._bulk_call(name, views, md, deadline)
                if response is not None:
                    return response
            elif route is CallRoute.MOVER_PUSH:
                # The request is pushed over the side channel first, then the call names
                # it. (Overlapping the push with the gRPC call measured no faster on two
                # cores.)
                request = self._push(views, name, md, deadline, 0)
            elif route is CallRoute.INLINE:
                request = framing.encode_inline(views, self._bulk_flags())
            if request is not None:
                try:
                    response = self._shared.unary_unary(name)(request, timeout=timeout, metadata=md)
                except grpc.RpcError as exc:
                    raise self._error(exc, name, timeout) from None
                return self._response(response, name, timeout, deadline, md)
        # CallRoute.CHUNKED, always the last route when it is one.
        requests = framing.encode(
            views, total, inline_bytes=0, chunk_bytes=self._chunk_bytes, flags=self._bulk_flags()
        )
        call = self._shared.stream_stream(name + CHUNKED_SUFFIX)
        try:
            responses = call(requests, timeout=timeout, metadata=md)
        except grpc.RpcError as exc:
            raise self._error(exc, name, timeout) from None
        return self._receive_one(responses, name, timeout, deadline, md)

    def call_async(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> concurrent.futures.Future[list[memoryview]]:
        name = f"/{service}/{method}"
        self._check_open(name)
        views, total = framing.as_byte_views(frames)
        lean = not metadata and total <= self._lean_bytes and self._lean_peer() is not None
        if lean or self._call_routes(views, total, metadata) != _INLINE_ONLY:
            # Blocking work (chunks, the side channel) on a thread of the shared pool.
            return background().submit_now(
                self.call, service, method, views, timeout=timeout, metadata=metadata
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        md = self._metadata(metadata)
        if self._lean_on and not metadata:
            self._shared.learn_soon(self.options.token, md)
        result: concurrent.futures.Future[list[memoryview]] = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        # gRPC's own future: no thread of ours waits while the call is in flight.
        call = self._shared.unary_unary(name).future(
            framing.encode_inline(views, self._bulk_flags()), timeout=timeout, metadata=md
        )

        def finish_fetch(response: bytes) -> None:
            try:
                result.set_result(self._response(response, name, timeout, deadline, md))
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                result.set_exception(exc)

        def done(call_future: grpc.Future) -> None:
            try:
                response = call_future.result()
                if response and response[0] == framing.PENDING:
                    # Fetching blocks; never do that on gRPC's callback thread.
                    background().submit_now(finish_fetch, response)
                    return
                result.set_result(framing.decode_inline(response, self._max_bytes))
            except grpc.RpcError as exc:
                result.set_exception(self._error(exc, name, timeout))
            except grpc.FutureCancelledError:
                result.set_exception(errors.CancelledError(f"{name} was cancelled"))
            except BaseException as exc:  # noqa: BLE001 - handed to the future
                result.set_exception(exc)

        call.add_done_callback(done)
        return result

    def stream(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[list[memoryview]]:
        name = f"/{service}/{method}"
        self._check_open(name)
        views, total = framing.as_byte_views(frames)
        md = self._metadata(metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Learn the side port up front: a stream's messages are often the large ones.
        self._bulk_peer(md, deadline)
        shm_peer = self._shm_peer(md, deadline)
        # The whole stream through shared memory (one connection until it ends); a request
        # over the limit takes gRPC, whose size check says so.
        if shm_peer is not None and (self._max_bytes is None or total <= self._max_bytes):
            try:
                opened = shm_peer.open_stream(name, views, md or (), deadline)
            except shm_mover.ShmUnavailable:
                pass  # nothing was sent: gRPC carries the stream
            else:
                return self._shm_messages(opened, name, timeout, deadline, md)
        request: bytes | None = None
        for route in choose_call_route(total, len(views), self._routes, streaming=True):
            if route is CallRoute.MOVER_PUSH:
                request = self._push(views, name, md, deadline, framing.FLAG_STREAM)
            elif route is CallRoute.INLINE:
                request = framing.encode_inline(views, self._bulk_flags())
            if request is not None:
                break
        try:
            if request is not None:
                call = self._shared.unary_stream(name + STREAM_SUFFIX)(
                    request, timeout=timeout, metadata=md
                )
            else:
                requests = framing.encode(
                    views,
                    total,
                    inline_bytes=0,
                    chunk_bytes=self._chunk_bytes,
                    flags=framing.FLAG_STREAM | self._bulk_flags(),
                )
                call = self._shared.stream_stream(name + CHUNKED_SUFFIX)(
                    requests, timeout=timeout, metadata=md
                )
        except grpc.RpcError as exc:
            raise self._error(exc, name, timeout) from None
        return self._messages(call, name, timeout, deadline, md)

    def _shm_messages(
        self,
        opened: Iterator[list[memoryview] | shm_mover.Parked],
        name: str,
        timeout: float | None,
        deadline: float | None,
        md: tuple[tuple[str, str], ...] | None,
    ) -> Iterator[list[memoryview]]:
        """A stream's messages through shared memory (parked ones fetched another way)."""
        try:
            for item in opened:
                if isinstance(item, shm_mover.Parked):
                    ticket = framing.encode_pending(item.ticket)
                    yield self._fetch_pending(ticket, name, timeout, deadline, md, shm=False)
                else:
                    yield item
        finally:
            close = getattr(opened, "close", None)
            if close is not None:
                close()  # a caller that stopped early ends the server's handler

    def _messages(
        self,
        call: Any,
        name: str,
        timeout: float | None,
        deadline: float | None,
        md: tuple[tuple[str, str], ...] | None,
    ) -> Iterator[list[memoryview]]:
        reassembler = framing.Reassembler(self._max_bytes)
        try:
            for message in call:
                if reassembler.idle and message and message[0] == framing.PENDING:
                    yield self._fetch_pending(message, name, timeout, deadline, md)
                    continue
                frames = reassembler.feed(message)
                if frames is not None:
                    yield frames
            reassembler.finish()
        except grpc.RpcError as exc:
            raise self._error(exc, name, timeout) from None
        finally:
            # Ends the server's stream when the caller stops early; a no-op when done.
            call.cancel()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._transport._release(self._shared)
