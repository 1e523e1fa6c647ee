"""The bulk side channel's client: pooled connections to one server, and the three
requests a channel makes (``push``, ``fetch``, ``call``).

See ``bulk.protocol`` for the wire format.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from tensorwire import errors
from tensorwire.transport import security
from tensorwire.transport.base import TOKEN_METADATA_KEY
from tensorwire.transport.kit import framing
from tensorwire.transport.kit.tickets import new_ticket

from .. import idle
from ..wire import Wire
from . import protocol
from .protocol import BulkUnavailable

__all__ = ["BulkPeer", "call", "fetch", "lean_call", "push"]

log = logging.getLogger(__name__)

#: Clients reuse a connection idle at most this long, well inside the server's limit, so
#: a request never races the server closing it.
CLIENT_IDLE_SECONDS = 60.0
#: Client connections per peer in use at once; more calls fall back to gRPC chunks.
MAX_CLIENT_CONNECTIONS = 16
#: Idle client connections kept per peer.
MAX_IDLE_CONNECTIONS = 8
#: Timeout of connecting (also at most a quarter of the call's time left), short so that
#: a side port dropped by a firewall leaves time to fall back to gRPC.
TCP_CONNECT_SECONDS = 1.0
#: After a failed connect, gRPC is used for this long, doubling per failure up to the max.
RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0


class BulkPeer:
    """Pooled side-channel connections to one server, for one token."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str | None,
        failures: int = 0,
        spin_seconds: float = 0.0,
    ) -> None:
        self.host = host
        #: How long its connections spin before they sleep (``wire``).
        self.spin_seconds = spin_seconds
        #: Connect failures in a row (carried over when the port is asked for again).
        self.failures = failures
        self.port = port
        self._token = token
        self._lock = threading.Lock()
        self._idle: list[tuple[Wire, float]] = []
        self._closed = False
        #: Connections checked out now (at most MAX_CLIENT_CONNECTIONS), shut down by close()
        #: so that calls on them end at once.
        self._busy: set[Wire] = set()
        #: Set when connecting failed: use gRPC until then, then ask the server again.
        self.failed_until = 0.0
        #: Whether the server serves whole calls (CALL), from its Hello answer.
        self.calls = False
        #: Whether it serves small calls too (LEAN, ``protocol``), from its Hello answer.
        self.lean = False
        #: Calls the server answered LEAN_BUSY (made over gRPC instead).
        self.lean_busy = 0
        idle.watch(self)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self, deadline: float | None) -> Wire:
        timeout = TCP_CONNECT_SECONDS
        if deadline is not None:
            timeout = min(timeout, max(0.001, (deadline - time.monotonic()) / 4))
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        wire = Wire(sock, self.spin_seconds)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            end = time.monotonic() + protocol.CONNECT_SECONDS
            if deadline is not None:
                end = min(end, deadline)
            magic = wire.read(len(protocol.MAGIC), end)
            if magic == protocol.REFUSED_MAGIC:
                wire.read(1, end)  # the status code: the client falls back to gRPC anyway
                raise ConnectionError(f"the server refused the connection: {_reason(wire, end)}")
            if magic != protocol.MAGIC:
                raise ConnectionError("not a tensorwire bulk port")
            nonce = wire.read(protocol.NONCE_BYTES, end)
            wire.send([protocol.MAGIC + security.token_proof(self._token, nonce)], end)
            if wire.read(1, end) != b"\x00":
                raise ConnectionError(f"the server refused the connection: {_reason(wire, end)}")
        except BaseException:
            sock.close()
            raise
        return wire

    def acquire(self, deadline: float | None) -> Wire:
        """A connected, authenticated connection; ``BulkUnavailable`` when there is none."""
        if self.failed_until and time.monotonic() < self.failed_until:
            raise BulkUnavailable("recent connect failure")
        busy = self._busy
        while True:
            with self._lock:
                if self._closed:
                    raise BulkUnavailable("the channel is closed")
                if len(busy) >= MAX_CLIENT_CONNECTIONS:
                    raise BulkUnavailable("all bulk connections busy")
                if not self._idle:
                    break
                wire, since = self._idle.pop()
                busy.add(wire)
            # A connection the server closed (idle timeout, restart) is readable: not reused.
            if time.monotonic() - since < CLIENT_IDLE_SECONDS and wire.clean():
                return wire
            self._forget(wire)
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
        with self._lock:
            if self._closed or len(busy) >= MAX_CLIENT_CONNECTIONS:
                wire.close()
                raise BulkUnavailable("the channel is closed or all bulk connections busy")
            busy.add(wire)
        return wire

    def _forget(self, wire: Wire) -> None:
        with self._lock:
            self._busy.discard(wire)

    def release(self, wire: Wire, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(wire)
            if reusable and not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((wire, time.monotonic()))
                return
        wire.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def reap(self) -> None:
        """Close the idle connections the server closed, or that were idle too long."""
        now = time.monotonic()
        with self._lock:
            keep: list[tuple[Wire, float]] = []
            drop: list[tuple[Wire, float]] = []
            for wire, since in self._idle:
                fresh = now - since < CLIENT_IDLE_SECONDS and wire.clean()
                (keep if fresh else drop).append((wire, since))
            self._idle = keep
        for wire, _ in drop:
            wire.close()

    def close(self) -> None:
        """Close the idle connections and wake the calls in flight (``CancelledError``)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for wire, _ in idle:
            wire.close()
        for wire in busy:
            wire.shutdown()  # its caller closes it

    def close_inherited(self) -> None:
        """In a forked child: close this process's copies of the idle connections.

        Lock-free (a parent thread may have held the lock at the fork) and without
        ``shutdown``, so the parent's connections stay up.
        """
        self._lock = threading.Lock()
        self._closed = True
        self._busy = set()
        idle, self._idle = self._idle, []
        for wire, _ in idle:
            wire.close()


def _reason(wire: Wire, deadline: float) -> str:
    """The message of a refusal's status (its code byte already read), or why there is
    none."""
    try:
        return protocol.read_message(wire, deadline)
    except (OSError, ConnectionError, struct.error):
        return "no reason given (a server older than this client)"


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
    code, size = protocol.STATUS.unpack(wire.read(protocol.STATUS.size, deadline))
    message = wire.read(size, deadline).decode(errors="replace") if size else ""
    if code:
        raise _Answered(errors.from_code(code, message))


def _read_response(
    wire: Wire, deadline: float | None, max_bytes: int | None, what: str
) -> list[memoryview]:
    """The answer to a FETCH or CALL: the response frames, or the server's error raised."""
    status = wire.read(1, deadline)[0]
    if status:
        raise _Answered(errors.from_code(status, protocol.read_message(wire, deadline)))
    # Raised before reading the frames: the connection is out of step and is closed.
    lengths = protocol.read_lengths(wire, deadline)
    framing.check_size(lengths, max_bytes, f"{what}: response")
    return protocol.receive_frames(wire, lengths, 1 + 4 + 8 * len(lengths), deadline)


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
    ticket = new_ticket()
    ttl_ms = 0
    if deadline is not None:
        ttl_ms = max(1, min(2**32 - 1, int((deadline - time.monotonic()) * 1000) + 1000))
    head = (
        bytes([protocol.OP_PUSH])
        + protocol.PUSH_HEAD.pack(ticket, ttl_ms, len(views))
        + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    )

    def request(wire: Wire) -> bytes:
        _send_request(wire, protocol.message_parts(head, views), deadline)
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
        wire.send([bytes([protocol.OP_FETCH]) + ticket], deadline)
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
    # Never the token: the connection proved it (see connection_server.with_server_token).
    encoded_metadata = framing.encode_metadata(
        [(k, v) for k, v in metadata if k != TOKEN_METADATA_KEY]
    )
    head = (
        bytes([protocol.OP_CALL])
        + protocol.CALL_HEAD.pack(len(encoded_name), len(encoded_metadata), timeout_ms)
        + encoded_name
        + encoded_metadata
        + protocol.encode_lengths(views)
    )

    def request(wire: Wire) -> list[memoryview]:
        _send_request(wire, protocol.message_parts(head, views), deadline)
        return _read_response(wire, deadline, max_bytes, name)

    return _exchange(peer, request, deadline, name)


def lean_call(
    peer: BulkPeer,
    name: bytes,
    views: list[memoryview],
    total: int,
    deadline: float | None,
    max_bytes: int | None,
) -> list[memoryview]:
    """Make the small unary call ``name`` (``b"/service/method"``) as a LEAN request on a
    pooled connection, on the calling thread; its response frames.

    Raises:
      BulkUnavailable: no connection could be had, or the server was busy: nothing ran,
        make the call over gRPC.
      OpError: the handler's error; ``DeadlineExceededError`` when ``deadline`` passed;
        ``UnavailableError`` when the connection failed (the call may have run);
        ``CancelledError`` when the channel was closed meanwhile.
    """
    timeout_ms = 0
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.DeadlineExceededError(
                f"{name.decode(errors='replace')}: deadline exceeded before sending"
            )
        timeout_ms = max(1, min(2**32 - 1, int(remaining * 1000)))
    n = len(views)
    head = protocol.LEAN_REQUEST.pack(protocol.OP_LEAN, len(name), n, timeout_ms, total)
    parts = protocol.message_parts(
        head + name + protocol.u32_lengths(n).pack(*map(len, views)), views
    )
    wire = peer.acquire(deadline)
    reusable = False
    try:
        wire.send(parts, deadline)
        status, count, size = protocol.LEAN_ANSWER.unpack(
            wire.read(protocol.LEAN_ANSWER.size, deadline)
        )
        if status:
            message = wire.read(size, deadline).decode(errors="replace") if size else ""
            reusable = wire.buffered == 0
            if status == protocol.LEAN_BUSY:
                peer.lean_busy += 1
                raise BulkUnavailable("the server is at its bound of side-channel calls")
            raise errors.from_code(status, message)
        lengths = protocol.u32_lengths(count).unpack(wire.read(4 * count, deadline))
        if sum(lengths) != size:
            raise errors.DataLossError(
                f"{name.decode(errors='replace')}: lean answer frame lengths do not add up"
            )
        # Raised before reading the frames: the connection is out of step and is closed.
        framing.check_size(lengths, max_bytes, f"{name.decode(errors='replace')}: response")
        offset = protocol.LEAN_ANSWER.size + 4 * count
        frames = protocol.receive_frames(wire, lengths, offset, deadline)
        reusable = True
        return frames
    except (OSError, struct.error) as exc:
        what = name.decode(errors="replace")
        if peer.closed:
            raise errors.CancelledError(f"{what}: the channel was closed") from None
        raise _wire_error(exc, what, peer.address) from None
    finally:
        peer.release(wire, reusable)
