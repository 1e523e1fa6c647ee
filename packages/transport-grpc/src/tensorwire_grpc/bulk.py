"""The bulk side channel: large calls over plain TCP beside the gRPC channel.

gRPC Python moves about 1 GB/s on loopback while a plain socket moves three times that, and
one gRPC round trip (about 300 us) costs as much as moving a whole MiB over TCP. So a unary
call whose request or expected response has at least ``bulk_tcp_threshold_bytes`` does not
travel through gRPC at all: the whole call (method, metadata, deadline, request, then status
and response) goes over a pooled TCP connection between the same two processes (CALL).
Large messages of calls that stay on gRPC (streams, older peers) still skip gRPC's body
path: their frames are pushed or fetched over TCP and the gRPC call carries only a
descriptor (a random 16-byte ticket and the frame lengths). gRPC stays the control plane:
it finds the side port, carries every small call and stream, and is the fallback whenever
the side channel cannot be used; handlers run through the same ``invoke`` either way.

The listener opens one extra listening socket on its host (port 0) and tells channels its
port through ``/tensorwire.grpc.Bulk/Hello`` (a unary gRPC call, token-checked like every
call). A channel asks once, when it first has something large to move, and falls back to
the chunked gRPC path by itself when the server has no side channel (an older peer, the
feature off, TLS) or the port cannot be reached.

Connections are always opened by the channel and pooled per peer (``BulkPeer``). Each
connection starts with a handshake that proves the cluster token: the server sends
``MAGIC`` and a random nonce, the client answers ``MAGIC`` and ``HMAC-SHA256(token, nonce)``,
the server answers one zero byte, or a status (u8 code, u32 length, message) and closes the
connection before any request is read. A server at its connection limit sends
``REFUSED_MAGIC`` and a status instead of its nonce. Then, one at a time, requests on the
connection::

    PUSH   u8 op=1, 16-byte ticket, u32 ttl ms (0 = none), u32 n, n x u64 lengths, payload
           -> u8 status (0 = ok, else an error code), u32 message length, message
    FETCH  u8 op=2, 16-byte ticket
           -> u8 status; ok: u32 n, n x u64 lengths, payload; else u32 length, message
    CALL   u8 op=3, u16 name length, u32 metadata length, u32 timeout ms (0 = none),
           name ("/service/method"), metadata (utf-8 "key\0value\0..."), u32 n,
           n x u64 lengths, payload
           -> u8 status; ok: u32 n, n x u64 lengths, payload; else u32 length, message

A payload is its frames in order, each frame of ``ALIGNED_FRAME_BYTES`` or more preceded
by the zero bytes that make it start a multiple of ``FRAME_ALIGNMENT`` bytes after the
first byte of its message (both sides compute them from the lengths). The kernel copies a
message into its socket memory starting afresh at a page boundary, and copies between
buffers at unlucky relative offsets run at half speed: a 1 MiB response after a 73-byte
header took 450 us instead of 180 us on loopback here, for exactly the same bytes.

Refusals: a request the server will not take (more than ``framing.MAX_FRAMES`` frames, more
bytes than ``max_message_bytes`` with ``framing.FRAME_OVERHEAD_BYTES`` counted per frame, no
room for a push, an oversized name or metadata block, an unknown op, memory that cannot be
allocated) is answered at once, from its header, with a status and a message saying which
limit it exceeded; then the server closes the connection without reading the payload (the
caller, still sending, reads the status after its send fails; see ``_send_request``). So a
request announcing 2**40 bytes costs the server one header, not a wait for bytes that
never come. Errors of the handler a CALL ran keep the connection, which is in step.

The accept loop survives failures (EMFILE in a burst of connections, a thread that cannot
start): it logs, backs off up to ``ACCEPT_RETRY_MAX_SECONDS`` and accepts again; the
connections waiting in the backlog are served once it can.

CALL runs the unary method on the connection's thread, through the listener's
``serve_call`` (token, arity and error mapping as for gRPC calls); its status codes are
those of ``tensorwire.errors``, so the caller raises the handler's class and message.

PUSH is a large request: the server receives it into aligned, pooled memory (the receive
buffers of ``framing``) and keeps it by ticket (``Arrivals``) until the gRPC call that
names the ticket takes it, or the caller's deadline passes. FETCH takes a large response the
server parked in ``server.PendingResponses`` (the same tickets the gRPC ``Fetch`` uses).
Senders hand a header and the frames' memoryviews to one gathered ``sendmsg`` (no joins,
no copies); receivers read the small fields from a read-ahead buffer and ``recv_into`` the
final memory (``wire``). Lengths are announced first and checked, every socket
operation has a timeout from the call's deadline, and a peer dying mid-transfer surfaces as
``UnavailableError`` (``DeadlineExceededError`` when the deadline passes first).

With TLS configured the side channel is not used at all (neither side opens or uses it):
it would have to repeat the same certificate rules over ``ssl``, and TLS caps throughput
anyway. Tokens are proved, never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from tensorwire import errors
from tensorwire.transport.base import TOKEN_METADATA_KEY
from tensorwire.transport.threads import join_threads

from . import framing
from .wire import Wire

__all__ = ["Arrivals", "BulkServer", "BulkPeer", "BulkUnavailable", "push", "fetch", "call"]

log = logging.getLogger(__name__)

#: Changes with the wire format: a peer speaking another version fails the handshake and
#: its calls use gRPC. TWB2 added the frame alignment.
MAGIC = b"TWB2"
#: Sent instead of MAGIC by a server that will not serve the connection, then a status.
REFUSED_MAGIC = b"TWB!"
NONCE_BYTES = 16
MAC_BYTES = 32
OP_PUSH = 1
OP_FETCH = 2
OP_CALL = 3
#: Frames this large start at a multiple of FRAME_ALIGNMENT bytes into their message.
ALIGNED_FRAME_BYTES = 64 * 1024
FRAME_ALIGNMENT = 4096
_ZEROS = memoryview(bytes(FRAME_ALIGNMENT))
#: Feature bits a server announces in its Hello answer (after the port).
FEATURE_CALL = 1
#: How long an unclaimed pushed request is kept when the caller set no deadline.
ARRIVAL_TTL_SECONDS = 60.0
#: Unclaimed pushed requests kept at most (bytes); a push beyond it is refused.
MAX_ARRIVAL_BYTES = 4 << 30
#: Server connections at most; more are refused at once (the client falls back to gRPC).
MAX_SERVER_CONNECTIONS = 256
#: Refused connections (failed handshakes, the connection limit) are logged as a warning at
#: most this often per server, with the count since; the rest at debug level, so a port
#: scan or a misconfigured client cannot flood the log.
REFUSAL_LOG_SECONDS = 60.0
#: A server connection with no request for this long is closed.
IDLE_SECONDS = 300.0
#: Clients reuse a connection idle at most this long, well inside the server's limit, so
#: a request never races the server closing it.
CLIENT_IDLE_SECONDS = 60.0
#: After a failed accept(), wait this long before the next, doubling per failure up to the
#: max: the failure (EMFILE, ENOMEM) usually lasts until other connections end.
ACCEPT_RETRY_SECONDS = 0.01
ACCEPT_RETRY_MAX_SECONDS = 1.0
#: Longest a pushed request may take to arrive or wait, whatever deadline the caller set.
MAX_TTL_SECONDS = 600.0
#: Client connections per peer in use at once; more calls fall back to gRPC chunks.
MAX_CLIENT_CONNECTIONS = 16
#: Idle client connections kept per peer.
MAX_IDLE_CONNECTIONS = 8
#: Timeout of the handshake (and of small control reads on a connection).
CONNECT_SECONDS = 5.0
#: How long ``BulkServer.close`` waits for its threads to end (they are woken at once).
CLOSE_JOIN_SECONDS = 5.0
#: Timeout of connecting (also at most a quarter of the call's time left), short so that
#: a side port dropped by a firewall leaves time to fall back to gRPC.
TCP_CONNECT_SECONDS = 1.0
#: After a failed connect, gRPC is used for this long, doubling per failure up to the max.
RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0

_PUSH_HEAD = struct.Struct("<16sII")
_U32 = struct.Struct("<I")
_STATUS = struct.Struct("<BI")
_CALL_HEAD = struct.Struct("<HII")
#: Longest method name and metadata block a CALL may announce.
MAX_CALL_NAME_BYTES = 1024
MAX_CALL_METADATA_BYTES = 64 * 1024


class BulkUnavailable(Exception):
    """The side channel cannot be used for this call; nothing was sent: use gRPC."""


def _mac(token: str | None, nonce: bytes) -> bytes:
    if token is None:
        return bytes(MAC_BYTES)
    return hmac.new(token.encode(), nonce, hashlib.sha256).digest()


def _lengths(wire: Wire, deadline: float | None, n: int | None = None) -> tuple[int, ...]:
    """The frame lengths that follow the frame count ``n`` (read first when not given);
    ``ResourceExhaustedError`` before reading them when there are too many."""
    if n is None:
        (n,) = _U32.unpack(wire.read(4, deadline))
    framing.check_frames(n)
    return struct.unpack(f"<{n}Q", wire.read(8 * n, deadline)) if n else ()


def _padding(offset: int, length: int) -> int:
    """Zero bytes before a frame of ``length`` that would start ``offset`` bytes into its
    message (see the module docstring)."""
    return (-offset) % FRAME_ALIGNMENT if length >= ALIGNED_FRAME_BYTES else 0


def _message(head: bytes, views: Sequence[memoryview]) -> list[bytes | memoryview]:
    """``head`` then the frames, each large one after its padding: parts for ``Wire.send``."""
    parts: list[bytes | memoryview] = [head]
    offset = len(head)
    for view in views:
        pad = _padding(offset, view.nbytes)
        if pad:
            parts.append(_ZEROS[:pad])
        parts.append(view)
        offset += pad + view.nbytes
    return parts


def _receive_frames(
    wire: Wire, lengths: Sequence[int], offset: int, deadline: float | None
) -> list[memoryview]:
    """The payload's frames, whose first starts ``offset`` bytes into the message."""
    frames = framing.allocate(lengths)
    for frame in frames:
        pad = _padding(offset, len(frame))
        if pad:
            wire.skip(pad, deadline)
        wire.read_into(frame, deadline)
        offset += pad + len(frame)
    return frames


def _encode_lengths(views: Sequence[memoryview]) -> bytes:
    return _U32.pack(len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))


def _answer(views: Sequence[memoryview]) -> list[bytes | memoryview]:
    """The parts of an ok answer to a FETCH or CALL."""
    return _message(b"\x00" + _encode_lengths(views), views)


def _status(code: int, message: str = "") -> bytes:
    data = message.encode()[:4096]
    return _STATUS.pack(code, len(data)) + data


# -- server side -----------------------------------------------------------------------------
class Arrivals:
    """Pushed requests waiting for the gRPC call that names their ticket, bounded in bytes."""

    def __init__(self, max_bytes: int = MAX_ARRIVAL_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: dict[bytes, tuple[list[memoryview], int, float]] = {}
        self._held = 0

    def _expire(self, now: float) -> None:
        for key in [k for k, item in self._items.items() if item[2] < now]:
            self._held -= self._items.pop(key)[1]

    def reserve(self, nbytes: int) -> None:
        with self._lock:
            self._expire(time.monotonic())
            if self._held + nbytes > self._max_bytes:
                raise errors.ResourceExhaustedError(
                    f"pushed request of {nbytes} bytes refused: {self._held} bytes of pushed "
                    f"requests are waiting already and at most {self._max_bytes} may wait "
                    "(bulk.MAX_ARRIVAL_BYTES)"
                )
            self._held += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes

    def put(self, ticket: bytes, frames: list[memoryview], nbytes: int, ttl: float) -> None:
        with self._lock:
            if ticket in self._items:  # 128 random bits: only a hostile client repeats one
                self._held -= nbytes
                raise errors.AlreadyExistsError("bulk ticket already in use")
            self._items[ticket] = (frames, nbytes, time.monotonic() + ttl)

    def take(self, ticket: bytes) -> list[memoryview]:
        with self._lock:
            item = self._items.pop(ticket, None)
            if item is not None:
                self._held -= item[1]
        if item is None or item[2] < time.monotonic():
            raise errors.DataLossError(
                "the large request sent over the bulk channel is gone (expired or taken)"
            )
        return item[0]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._held = 0


#: ``take(ticket) -> (views, total)`` of a parked response; raises an ``OpError``.
TakeResponse = Callable[[bytes], "tuple[list[memoryview], int]"]
#: ``serve_call(name, frames, metadata, deadline, peer) -> (views, total)``: runs a unary
#: method; raises an ``OpError``.
ServeCall = Callable[
    [str, list[memoryview], dict[str, str], "float | None", str], "tuple[list[memoryview], int]"
]


def _encode_metadata(metadata: Sequence[tuple[str, str]]) -> bytes:
    return "".join(f"{k}\0{v}\0" for k, v in metadata).encode()


def _decode_metadata(data: bytes) -> dict[str, str]:
    try:
        parts = data.decode().split("\0")
    except UnicodeDecodeError as exc:
        raise errors.DataLossError(f"metadata of a bulk call is not UTF-8: {exc}") from None
    if len(parts) % 2 != 1 or parts[-1]:
        raise errors.DataLossError("malformed metadata in a bulk call")
    return dict(zip(parts[0:-1:2], parts[1:-1:2], strict=True))


_NOT_PROVEN = (
    "the connection did not prove the cluster token (wrong token, none, or not a tensorwire "
    "client of this wire version)"
)


class _ThrottledWarning:
    """Logs the first of a kind of event as a warning, then at most one warning every
    ``REFUSAL_LOG_SECONDS`` with how many happened since (the rest at debug level)."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._next_warning = 0.0
        self._unlogged = 0

    def note(self, event: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_warning:
                self._unlogged += 1
                unlogged = -1
            else:
                unlogged, self._unlogged = self._unlogged, 0
                self._next_warning = now + REFUSAL_LOG_SECONDS
        if unlogged < 0:
            log.debug("%s %s", self._source, event)
        elif unlogged:
            log.warning(
                "%s %s (and %d more refusals in the last %.0f s)",
                self._source,
                event,
                unlogged,
                REFUSAL_LOG_SECONDS,
            )
        else:
            log.warning("%s %s", self._source, event)


class BulkServer:
    """The listening socket of the side channel and a thread per connection."""

    def __init__(
        self,
        host: str,
        token: str | None,
        max_bytes: int | None,
        take_response: TakeResponse,
        serve_call: ServeCall | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family, backlog=64)
        self.port: int = self._sock.getsockname()[1]
        self.arrivals = Arrivals()
        self._token = token
        self._max_bytes = max_bytes
        self._take_response = take_response
        self._serve_call = serve_call
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        #: The threads serving connections, joined by close().
        self._connection_threads: set[threading.Thread] = set()
        self._closed = False
        #: Set by close(): ends the accept loop's back-off wait at once.
        self._closing = threading.Event()
        #: Set while the listener stops: CALLs are refused (as gRPC refuses new calls).
        self._draining = False
        self._calls_in_flight = 0
        self._calls_done = threading.Condition(self._lock)
        self._refusals = _ThrottledWarning(f"bulk side channel on port {self.port}")
        self._thread = threading.Thread(
            target=self._accept, name=f"tensorwire-bulk-{self.port}", daemon=True
        )
        self._thread.start()

    def _accept(self) -> None:
        failures = 0
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError as exc:
                if self._closing.is_set():
                    return
                failures += 1
                if not self._back_off(failures, f"cannot accept a connection: {exc}"):
                    return
                continue
            thread = threading.Thread(
                target=self._serve, args=(conn, peer), name="tensorwire-bulk-conn", daemon=True
            )
            with self._lock:
                closed = self._closed
                full = len(self._connections) >= MAX_SERVER_CONNECTIONS
                if not (closed or full):
                    self._connections.add(conn)
                    self._connection_threads.add(thread)
            if closed or full:
                reason = (
                    "the server is stopping"
                    if closed
                    else f"the server serves at most {MAX_SERVER_CONNECTIONS} side-channel "
                    "connections at once; this call uses gRPC"
                )
                self._refuse_connection(conn, peer, reason)
                continue
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                with self._lock:
                    self._connections.discard(conn)
                    self._connection_threads.discard(thread)
                conn.close()
                failures += 1
                if not self._back_off(failures, f"cannot start a connection thread: {exc}"):
                    return
                continue
            if failures:
                log.warning(
                    "bulk side channel on port %d accepts connections again after %d failures",
                    self.port,
                    failures,
                )
                failures = 0

    def _back_off(self, failures: int, reason: str) -> bool:
        """Wait before accepting again after ``failures`` failures in a row; False when
        the server closed meanwhile. Logs the first failure of a run as a warning."""
        delay = min(ACCEPT_RETRY_MAX_SECONDS, ACCEPT_RETRY_SECONDS * 2 ** min(failures, 20))
        if failures == 1:
            log.warning(
                "bulk side channel on port %d %s; retrying every %.0f ms at most, new "
                "side-channel connections wait in the backlog meanwhile",
                self.port,
                reason,
                ACCEPT_RETRY_MAX_SECONDS * 1000,
            )
        else:
            log.debug("bulk side channel on port %d %s (failure %d)", self.port, reason, failures)
        return not self._closing.wait(delay)

    def _refuse_connection(self, conn: socket.socket, peer: object, reason: str) -> None:
        """Close a connection the server will not serve, telling the client why. Runs on
        the accept thread, so it never blocks: a fresh socket's send buffer is empty."""
        refused = errors.UnavailableError(reason)
        try:
            conn.setblocking(False)
            conn.send(REFUSED_MAGIC + _status(int(refused.code), refused.message))
        except OSError:
            pass
        conn.close()
        self._refusals.note(f"refused a connection from {peer}: {reason}")

    def _serve(self, conn: socket.socket, peer: object) -> None:
        wire = Wire(conn)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._handshake(wire):
                self._refusals.note(f"refused a connection from {peer}: {_NOT_PROVEN}")
                return
            caller = _peer_name(peer)
            while True:
                try:
                    op = wire.read(1, time.monotonic() + IDLE_SECONDS)[0]
                except ConnectionError:
                    return  # the client closed its connection between requests
                try:
                    if op == OP_PUSH:
                        self._push(wire, peer)
                    elif op == OP_FETCH:
                        self._fetch(wire, peer)
                    elif op == OP_CALL and self._serve_call is not None:
                        self._call(wire, peer, caller)
                    else:
                        raise errors.InvalidArgumentError(
                            f"unknown bulk side-channel operation {op}"
                        )
                except errors.OpError as exc:
                    # Refused from its header (see the module docstring): say why, at once,
                    # and close rather than read a payload that may never end.
                    log.debug("bulk request from %s refused: %s", peer, exc.message)
                    wire.send(
                        [_status(int(exc.code), exc.message)], time.monotonic() + CONNECT_SECONDS
                    )
                    return
        except OSError as exc:
            log.debug("bulk connection from %s ended: %s", peer, exc)
        except Exception as exc:
            # A bad peer must not end the thread noisily: one line per failed connection,
            # the traceback only when debugging (-v -v).
            log.warning("bulk connection from %s failed: %s: %s", peer, type(exc).__name__, exc)
            log.debug("bulk connection from %s failed", peer, exc_info=True)
        finally:
            with self._lock:
                self._connections.discard(conn)
                self._connection_threads.discard(threading.current_thread())
            conn.close()

    def _handshake(self, wire: Wire) -> bool:
        deadline = time.monotonic() + CONNECT_SECONDS
        nonce = secrets.token_bytes(NONCE_BYTES)
        wire.send([MAGIC + nonce], deadline)
        answer = wire.read(len(MAGIC) + MAC_BYTES, deadline)
        ok = answer[:4] == MAGIC and (
            self._token is None or hmac.compare_digest(answer[4:], _mac(self._token, nonce))
        )
        refused = errors.UnauthenticatedError(_NOT_PROVEN)
        wire.send([b"\x00" if ok else _status(int(refused.code), refused.message)], deadline)
        return ok

    def _push(self, wire: Wire, peer: object) -> None:
        """Receive one pushed request. An ``OpError`` refuses it before its payload."""
        deadline = time.monotonic() + CONNECT_SECONDS
        ticket, ttl_ms, n = _PUSH_HEAD.unpack(wire.read(_PUSH_HEAD.size, deadline))
        lengths = _lengths(wire, deadline, n)
        total = framing.check_size(lengths, self._max_bytes, "pushed request")
        offset = 1 + _PUSH_HEAD.size + 8 * n
        ttl = min(ttl_ms / 1000, MAX_TTL_SECONDS) if ttl_ms else ARRIVAL_TTL_SECONDS
        self.arrivals.reserve(total)
        log.debug("bulk push of %d bytes from %s", total, peer)
        try:
            frames = _receive_frames(wire, lengths, offset, time.monotonic() + ttl)
        except BaseException:
            self.arrivals.release(total)
            raise
        self.arrivals.put(ticket, frames, total, ttl)
        wire.send([_status(0)], time.monotonic() + CONNECT_SECONDS)

    def _call(self, wire: Wire, peer: object, caller: str) -> None:
        """Serve one CALL from ``peer`` (``caller`` as the handler sees it). An ``OpError``
        refuses it before its payload; the handler's own errors are answered here."""
        assert self._serve_call is not None
        head_deadline = time.monotonic() + CONNECT_SECONDS
        name_size, md_size, timeout_ms = _CALL_HEAD.unpack(
            wire.read(_CALL_HEAD.size, head_deadline)
        )
        if name_size > MAX_CALL_NAME_BYTES or md_size > MAX_CALL_METADATA_BYTES:
            raise errors.InvalidArgumentError(
                f"bulk call announces a {name_size}-byte method name and {md_size} bytes of "
                f"metadata; the limits are {MAX_CALL_NAME_BYTES} and "
                f"{MAX_CALL_METADATA_BYTES} bytes"
            )
        # The name, the metadata and the frame count: one read from the read-ahead buffer.
        fields = wire.read(name_size + md_size + 4, head_deadline)
        name = fields[:name_size].decode(errors="replace")
        metadata = _decode_metadata(fields[name_size:-4]) if md_size else {}
        # The token never crosses the side channel: the connection proved it (HMAC of this
        # connection's nonce), so the call carries this server's own for the usual check.
        metadata.pop(TOKEN_METADATA_KEY, None)
        if self._token is not None:
            metadata[TOKEN_METADATA_KEY] = self._token
        (n,) = _U32.unpack_from(fields, name_size + md_size)
        deadline = None
        if timeout_ms:
            deadline = time.monotonic() + timeout_ms / 1000
        receive_deadline = time.monotonic() + MAX_TTL_SECONDS
        if deadline is not None:
            receive_deadline = min(receive_deadline, deadline + 1.0)
        lengths = _lengths(wire, head_deadline, n)
        total = framing.check_size(lengths, self._max_bytes, f"{name}: request")
        offset = 1 + _CALL_HEAD.size + len(fields) + 8 * n
        log.debug("bulk call receiving %d bytes", total)
        frames = _receive_frames(wire, lengths, offset, receive_deadline)
        with self._lock:
            draining = self._draining
            if not draining:
                self._calls_in_flight += 1
        if draining:
            # The request was read: the connection is in step and stays open.
            refused = errors.UnavailableError(f"{name}: the server is stopping")
            wire.send([_status(int(refused.code), refused.message)], head_deadline)
            return
        try:  # counted in flight until the response is sent, so that drain() waits for it
            try:
                views, total = self._serve_call(name, frames, metadata, deadline, caller)
            except errors.OpError as exc:
                wire.send([_status(int(exc.code), exc.message)], time.monotonic() + CONNECT_SECONDS)
                return
            del frames
            log.debug("bulk call %s sending %d bytes to %s", name, total, peer)
            wire.send(_answer(views), time.monotonic() + ARRIVAL_TTL_SECONDS)
        finally:
            with self._lock:
                self._calls_in_flight -= 1
                if self._draining:  # set under this lock before drain() waits
                    self._calls_done.notify_all()

    def drain(self, grace: float) -> None:
        """Refuse new CALLs and wait up to ``grace`` seconds for those running to finish."""
        end = time.monotonic() + grace
        with self._lock:
            self._draining = True
            while self._calls_in_flight and time.monotonic() < end:
                self._calls_done.wait(max(0.0, end - time.monotonic()))

    def _fetch(self, wire: Wire, peer: object) -> None:
        ticket = wire.read(framing.TICKET_BYTES, time.monotonic() + CONNECT_SECONDS)
        try:
            views, total = self._take_response(ticket)
        except errors.OpError as exc:
            wire.send([_status(int(exc.code), exc.message)], time.monotonic() + CONNECT_SECONDS)
            return
        log.debug("bulk fetch sending %d bytes to %s", total, peer)
        wire.send(_answer(views), time.monotonic() + ARRIVAL_TTL_SECONDS)

    def close(self, timeout: float = CLOSE_JOIN_SECONDS) -> None:
        """Close the listening socket and every connection, then wait up to ``timeout``
        seconds for the threads that served them to end: once it returns, the side channel
        holds no port, socket or thread (unless a call outlived the wait, which is logged).
        """
        with self._lock:
            self._closed = True  # from here on no connection (and no thread) is added
            connections = list(self._connections)
        self._closing.set()
        try:
            # shutdown wakes the thread blocked in accept(); close alone may not.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.arrivals.clear()
        with self._lock:
            threads = [self._thread, *self._connection_threads]
        join_threads(threads, time.monotonic() + timeout, f"bulk side channel on port {self.port}")


# -- client side -----------------------------------------------------------------------------
class BulkPeer:
    """Pooled side-channel connections to one server, for one token."""

    def __init__(self, host: str, port: int, token: str | None, failures: int = 0) -> None:
        self.host = host
        #: Connect failures in a row (carried over when the port is asked for again).
        self.failures = failures
        self.port = port
        self._token = token
        self._lock = threading.Lock()
        self._idle: list[tuple[Wire, float]] = []
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_CLIENT_CONNECTIONS)
        #: Set when connecting failed: use gRPC until then, then ask the server again.
        self.failed_until = 0.0
        #: Whether the server serves whole calls (CALL), from its Hello answer.
        self.calls = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self, deadline: float | None) -> Wire:
        timeout = TCP_CONNECT_SECONDS
        if deadline is not None:
            timeout = min(timeout, max(0.001, (deadline - time.monotonic()) / 4))
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        wire = Wire(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            end = time.monotonic() + CONNECT_SECONDS
            if deadline is not None:
                end = min(end, deadline)
            magic = wire.read(len(MAGIC), end)
            if magic == REFUSED_MAGIC:
                wire.read(1, end)  # the status code: the client falls back to gRPC anyway
                raise ConnectionError(f"the server refused the connection: {_reason(wire, end)}")
            if magic != MAGIC:
                raise ConnectionError("not a tensorwire bulk port")
            nonce = wire.read(NONCE_BYTES, end)
            wire.send([MAGIC + _mac(self._token, nonce)], end)
            if wire.read(1, end) != b"\x00":
                raise ConnectionError(f"the server refused the connection: {_reason(wire, end)}")
        except BaseException:
            sock.close()
            raise
        return wire

    def acquire(self, deadline: float | None) -> Wire:
        """A connected, authenticated connection; ``BulkUnavailable`` when there is none."""
        if time.monotonic() < self.failed_until:
            raise BulkUnavailable("recent connect failure")
        if not self._slots.acquire(blocking=False):
            raise BulkUnavailable("all bulk connections busy")
        try:
            while True:
                with self._lock:
                    wire, since = self._idle.pop() if self._idle else (None, 0.0)
                if wire is None:
                    break
                if time.monotonic() - since < CLIENT_IDLE_SECONDS and wire.clean():
                    return wire
                wire.close()
            try:
                wire = self._connect(deadline)
            except (OSError, ConnectionError) as exc:
                backoff = min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** min(self.failures, 10))
                self.failures += 1
                self.failed_until = time.monotonic() + backoff
                log.info("bulk port %s unusable, using gRPC: %s", self.address, exc)
                raise BulkUnavailable(str(exc)) from None
            self.failures = 0
            return wire
        except BaseException:
            self._slots.release()
            raise

    def release(self, wire: Wire, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append((wire, time.monotonic()))
                    wire = None  # type: ignore[assignment]
        if wire is not None:
            wire.close()
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for wire, _ in idle:
            wire.close()

    def close_inherited(self) -> None:
        """In a forked child: close this process's copies of the idle connections.

        Lock-free (a parent thread may have held the lock at the fork) and without
        ``shutdown``, so the parent's connections stay up.
        """
        self._lock = threading.Lock()
        self._closed = True
        idle, self._idle = self._idle, []
        for wire, _ in idle:
            wire.close()


def _read_message(wire: Wire, deadline: float | None) -> str:
    """The message of a status whose code byte was read: u32 length, then utf-8."""
    (size,) = _U32.unpack(wire.read(4, deadline))
    return wire.read(size, deadline).decode(errors="replace")


def _reason(wire: Wire, deadline: float) -> str:
    """The message of a refusal's status (its code byte already read), or why there is
    none."""
    try:
        return _read_message(wire, deadline)
    except (OSError, ConnectionError, struct.error):
        return "no reason given (a server older than this client)"


def _peer_name(peer: object) -> str:
    """A socket address as gRPC names peers (``ipv4:host:port``), for ``CallContext.peer``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return str(peer)


def _wire_error(exc: BaseException, what: str, address: str) -> errors.OpError:
    if isinstance(exc, errors.OpError):
        return exc
    if isinstance(exc, TimeoutError):
        return errors.DeadlineExceededError(f"{what} to {address}: deadline exceeded ({exc})")
    return errors.UnavailableError(f"{what}: the bulk connection to {address} failed: {exc}")


class _Answered(Exception):
    """The server answered with an error: the connection is still in step."""

    def __init__(self, error: errors.OpError) -> None:
        super().__init__(error.message)
        self.error = error


def _read_status(wire: Wire, deadline: float | None) -> None:
    """The answer to a PUSH: nothing on success, else the server's error raised."""
    code, size = _STATUS.unpack(wire.read(_STATUS.size, deadline))
    message = wire.read(size, deadline).decode(errors="replace") if size else ""
    if code:
        raise _Answered(errors.from_code(code, message))


def _read_response(
    wire: Wire, deadline: float | None, max_bytes: int | None, what: str
) -> list[memoryview]:
    """The answer to a FETCH or CALL: the response frames, or the server's error raised."""
    status = wire.read(1, deadline)[0]
    if status:
        raise _Answered(errors.from_code(status, _read_message(wire, deadline)))
    # Raised before reading the frames: the connection is out of step and is closed.
    lengths = _lengths(wire, deadline)
    framing.check_size(lengths, max_bytes, f"{what}: response")
    return _receive_frames(wire, lengths, 1 + 4 + 8 * len(lengths), deadline)


def _send_request(wire: Wire, parts: list[bytes | memoryview], deadline: float | None) -> None:
    try:
        wire.send(parts, deadline)
    except OSError:
        # The server may have refused the request (and closed): its reason, if it sent one.
        try:
            _read_status(wire, time.monotonic() + 0.5)
        except (OSError, ValueError, struct.error):
            pass
        raise


T = TypeVar("T")


def _exchange(peer: BulkPeer, request: Callable[[Wire], T], deadline: float | None, what: str) -> T:
    """``request(wire)`` on a pooled connection, wire failures mapped to ``OpError`` s.

    The connection goes back to the pool when the exchange completed, also when the server
    answered with an error; after any other failure it is closed.
    """
    wire = peer.acquire(deadline)
    ok = False
    try:
        result = request(wire)
        ok = True
        return result
    except _Answered as answered:
        ok = wire.buffered == 0
        raise answered.error from None
    except errors.OpError:
        raise
    except (OSError, struct.error) as exc:
        raise _wire_error(exc, what, peer.address) from None
    finally:
        peer.release(wire, ok)


def push(peer: BulkPeer, views: list[memoryview], deadline: float | None, what: str) -> bytes:
    """Send a large request; its ticket once the server holds it all."""
    ticket = secrets.token_bytes(framing.TICKET_BYTES)
    ttl_ms = 0
    if deadline is not None:
        ttl_ms = max(1, min(2**32 - 1, int((deadline - time.monotonic()) * 1000) + 1000))
    head = (
        bytes([OP_PUSH])
        + _PUSH_HEAD.pack(ticket, ttl_ms, len(views))
        + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    )

    def request(wire: Wire) -> bytes:
        _send_request(wire, _message(head, views), deadline)
        _read_status(wire, deadline)
        return ticket

    return _exchange(peer, request, deadline, what)


def fetch(
    peer: BulkPeer,
    ticket: bytes,
    deadline: float | None,
    max_bytes: int | None,
    what: str,
) -> list[memoryview]:
    """Receive a response the server parked under ``ticket``."""

    def request(wire: Wire) -> list[memoryview]:
        wire.send([bytes([OP_FETCH]) + ticket], deadline)
        return _read_response(wire, deadline, max_bytes, what)

    return _exchange(peer, request, deadline, what)


def call(
    peer: BulkPeer,
    name: str,
    views: list[memoryview],
    metadata: Sequence[tuple[str, str]],
    deadline: float | None,
    max_bytes: int | None,
) -> list[memoryview]:
    """Make the whole unary call ``name`` over the side channel; its response frames.

    ``BulkUnavailable`` when no connection could be had (nothing was sent: use gRPC).
    """
    timeout_ms = 0
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.DeadlineExceededError(f"{name}: deadline exceeded before sending")
        timeout_ms = max(1, min(2**32 - 1, int(remaining * 1000)))
    encoded_name = name.encode()
    # Never the token: the connection proved it (see BulkServer._call).
    encoded_metadata = _encode_metadata([(k, v) for k, v in metadata if k != TOKEN_METADATA_KEY])
    head = (
        bytes([OP_CALL])
        + _CALL_HEAD.pack(len(encoded_name), len(encoded_metadata), timeout_ms)
        + encoded_name
        + encoded_metadata
        + _encode_lengths(views)
    )

    def request(wire: Wire) -> list[memoryview]:
        _send_request(wire, _message(head, views), deadline)
        return _read_response(wire, deadline, max_bytes, name)

    return _exchange(peer, request, deadline, name)
