"""The bulk side channel's server: the listening socket and a thread per connection.

See ``bulk.protocol`` for the wire format and the rules this side enforces, and
``connection_server`` for the accept loop, the connection threads and the stop it shares
with the shared-memory mover's server.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable

from tensorwire import errors
from tensorwire.transport import security
from tensorwire.transport.kit import framing
from tensorwire.transport.kit.address import socket_peer_name
from tensorwire.transport.kit.tickets import TicketStore

from ..connection_server import (
    CLOSE_JOIN_SECONDS,
    CallsInFlight,
    ConnectionServer,
    with_server_token,
)
from ..mover_calls import ServeCall, TakeResponse
from ..wire import Wire
from . import protocol

__all__ = ["BulkServer"]

log = logging.getLogger(__name__)

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
#: Small calls (LEAN) run at once at most; more are made over gRPC by their callers.
MAX_LEAN_CALLS = 64
#: A server connection with no request for this long is closed.
IDLE_SECONDS = 300.0
#: Longest a pushed request may take to arrive or wait, whatever deadline the caller set.
MAX_TTL_SECONDS = 600.0


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


def take_arrival(arrivals: TicketStore[list[memoryview]], ticket: bytes) -> list[memoryview]:
    """The frames of the request pushed under ``ticket``, taken.

    Raises:
      DataLossError: there are none (expired, taken, or never pushed).
    """
    frames = arrivals.take(ticket)
    if frames is None:
        raise errors.DataLossError(
            "the large request sent over the bulk channel is gone (expired or taken)"
        )
    return frames


@dataclasses.dataclass(frozen=True, eq=False)
class _Accepted:
    """A side-channel connection and its peer's address, as ``accept()`` gave them."""

    sock: socket.socket
    peer: object


class BulkServer:
    """The listening socket of the side channel and a thread per connection."""

    def __init__(
        self,
        host: str,
        token: str | None,
        max_bytes: int | None,
        take_response: TakeResponse,
        serve_call: ServeCall | None = None,
        max_calls: int = 4096,
        busy_elsewhere: Callable[[], int] = lambda: 0,
        spin_seconds: float = 0.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family, backlog=64)
        self.port: int = self._sock.getsockname()[1]
        #: Pushed requests waiting for the gRPC call that names their ticket.
        self.arrivals: TicketStore[list[memoryview]] = TicketStore(
            MAX_TTL_SECONDS,
            max_bytes=MAX_ARRIVAL_BYTES,
            what="pushed requests (bulk.server.MAX_ARRIVAL_BYTES)",
        )
        self._token = token
        self._max_bytes = max_bytes
        self._take_response = take_response
        self._serve_call = serve_call
        #: CALLs and LEANs running; refused once the listener stops (as gRPC refuses new
        #: calls), and waited for.
        self.calls = CallsInFlight()
        #: Calls run at once at most, counting ours (CALLs, LEANs) and ``busy_elsewhere()``
        #: (the listener's gRPC calls): a LEAN past it is answered LEAN_BUSY.
        self.max_calls = max_calls
        self._busy_elsewhere = busy_elsewhere
        #: LEANs run at once at most (each on its connection's thread), whatever room
        #: ``max_calls`` leaves; the next is answered LEAN_BUSY.
        self.max_lean_calls = MAX_LEAN_CALLS
        #: How long its connections spin before they sleep (``wire``).
        self.spin_seconds = spin_seconds
        self._refusals = _ThrottledWarning(f"bulk side channel on port {self.port}")
        self.connections: ConnectionServer[_Accepted] = ConnectionServer(
            f"bulk side channel on port {self.port}",
            accept=self._accept,
            serve=self._serve,
            refuse=self._refuse,
            shut=_shut,
            stop_listening=self._stop_listening,
            max_connections=MAX_SERVER_CONNECTIONS,
            kind="side-channel",
            # The client reads a refusal before its first request (``REFUSED_MAGIC``) and
            # takes gRPC: better than a wait in the backlog.
            wait_when_full=False,
            accept_thread_name=f"tensorwire-bulk-{self.port}",
            connection_thread_name="tensorwire-bulk-conn",
            log=log,
        )
        self.connections.start()

    @property
    def lean_busy(self) -> int:
        """LEAN requests answered LEAN_BUSY (each then made over gRPC by its caller)."""
        return self.calls.refused_busy

    def _accept(self) -> _Accepted:
        sock, peer = self._sock.accept()
        return _Accepted(sock, peer)

    def _stop_listening(self) -> None:
        try:
            # shutdown wakes the thread blocked in accept(); close alone may not.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def _refuse(self, accepted: _Accepted, reason: str) -> None:
        """Close a connection the server will not serve, telling the client why. Runs on
        the accept thread, so it never blocks: a fresh socket's send buffer is empty."""
        refused = errors.UnavailableError(reason)
        try:
            accepted.sock.setblocking(False)
            accepted.sock.send(
                protocol.REFUSED_MAGIC + protocol.status_bytes(int(refused.code), refused.message)
            )
        except OSError:
            pass
        accepted.sock.close()
        self._refusals.note(f"refused a connection from {accepted.peer}: {reason}")

    def _serve(self, accepted: _Accepted) -> None:
        conn, peer = accepted.sock, accepted.peer
        wire = Wire(conn, self.spin_seconds)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._handshake(wire):
                self._refusals.note(f"refused a connection from {peer}: {protocol.NOT_PROVEN}")
                return
            caller = socket_peer_name(peer)
            while True:
                try:
                    op = wire.read(1, time.monotonic() + IDLE_SECONDS)[0]
                except ConnectionError:
                    return  # the client closed its connection between requests
                try:
                    if op == protocol.OP_LEAN and self._serve_call is not None:
                        self._lean(wire, caller)
                    elif op == protocol.OP_PUSH:
                        self._push(wire, peer)
                    elif op == protocol.OP_FETCH:
                        self._fetch(wire, peer)
                    elif op == protocol.OP_CALL and self._serve_call is not None:
                        self._call(wire, peer, caller)
                    else:
                        raise errors.InvalidArgumentError(
                            f"unknown bulk side-channel operation {op}"
                        )
                except errors.OpError as exc:
                    # Refused from its header (see ``protocol``): say why, at once,
                    # and close rather than read a payload that may never end.
                    log.debug("bulk request from %s refused: %s", peer, exc.message)
                    if op == protocol.OP_LEAN:
                        answer = protocol.lean_status(int(exc.code), exc.message)
                    else:
                        answer = protocol.status_bytes(int(exc.code), exc.message)
                    wire.send([answer], time.monotonic() + protocol.CONNECT_SECONDS)
                    return
        except OSError as exc:
            log.debug("bulk connection from %s ended: %s", peer, exc)
        except Exception as exc:
            # A bad peer must not end the thread noisily: one line per failed connection,
            # the traceback only when debugging (-v -v).
            log.warning("bulk connection from %s failed: %s: %s", peer, type(exc).__name__, exc)
            log.debug("bulk connection from %s failed", peer, exc_info=True)
        finally:
            conn.close()

    def _handshake(self, wire: Wire) -> bool:
        deadline = time.monotonic() + protocol.CONNECT_SECONDS
        nonce = secrets.token_bytes(protocol.NONCE_BYTES)
        wire.send([protocol.MAGIC + nonce], deadline)
        answer = wire.read(len(protocol.MAGIC) + protocol.MAC_BYTES, deadline)
        ok = answer[:4] == protocol.MAGIC and (
            self._token is None or security.proves_token(self._token, nonce, answer[4:])
        )
        refused = errors.UnauthenticatedError(protocol.NOT_PROVEN)
        wire.send(
            [b"\x00" if ok else protocol.status_bytes(int(refused.code), refused.message)], deadline
        )
        return ok

    def _push(self, wire: Wire, peer: object) -> None:
        """Receive one pushed request. An ``OpError`` refuses it before its payload."""
        deadline = time.monotonic() + protocol.CONNECT_SECONDS
        ticket, ttl_ms, n = protocol.PUSH_HEAD.unpack(wire.read(protocol.PUSH_HEAD.size, deadline))
        lengths = protocol.read_lengths(wire, deadline, n)
        total = framing.check_size(lengths, self._max_bytes, "pushed request")
        offset = 1 + protocol.PUSH_HEAD.size + 8 * n
        ttl = min(ttl_ms / 1000, MAX_TTL_SECONDS) if ttl_ms else ARRIVAL_TTL_SECONDS
        self.arrivals.reserve(total)
        log.debug("bulk push of %d bytes from %s", total, peer)
        try:
            frames = protocol.receive_frames(wire, lengths, offset, time.monotonic() + ttl)
        except BaseException:
            self.arrivals.release(total)
            raise
        self.arrivals.put(
            frames, ticket=ticket, nbytes=total, deadline=time.monotonic() + ttl, reserved=True
        )
        wire.send([protocol.status_bytes(0)], time.monotonic() + protocol.CONNECT_SECONDS)

    def _call(self, wire: Wire, peer: object, caller: str) -> None:
        """Serve one CALL from ``peer`` (``caller`` as the handler sees it). An ``OpError``
        refuses it before its payload; the handler's own errors are answered here."""
        assert self._serve_call is not None
        head_deadline = time.monotonic() + protocol.CONNECT_SECONDS
        name_size, md_size, timeout_ms = protocol.CALL_HEAD.unpack(
            wire.read(protocol.CALL_HEAD.size, head_deadline)
        )
        if name_size > protocol.MAX_CALL_NAME_BYTES or md_size > protocol.MAX_CALL_METADATA_BYTES:
            raise errors.InvalidArgumentError(
                f"bulk call announces a {name_size}-byte method name and {md_size} bytes of "
                f"metadata; the limits are {protocol.MAX_CALL_NAME_BYTES} and "
                f"{protocol.MAX_CALL_METADATA_BYTES} bytes"
            )
        # The name, the metadata and the frame count: one read from the read-ahead buffer.
        fields = wire.read(name_size + md_size + 4, head_deadline)
        name = fields[:name_size].decode(errors="replace")
        metadata = framing.decode_metadata(fields[name_size:-4], "a bulk call") if md_size else {}
        with_server_token(metadata, self._token)
        (n,) = protocol.U32.unpack_from(fields, name_size + md_size)
        deadline = None
        if timeout_ms:
            deadline = time.monotonic() + timeout_ms / 1000
        receive_deadline = time.monotonic() + MAX_TTL_SECONDS
        if deadline is not None:
            receive_deadline = min(receive_deadline, deadline + 1.0)
        lengths = protocol.read_lengths(wire, head_deadline, n)
        total = framing.check_size(lengths, self._max_bytes, f"{name}: request")
        offset = 1 + protocol.CALL_HEAD.size + len(fields) + 8 * n
        log.debug("bulk call receiving %d bytes", total)
        frames = protocol.receive_frames(wire, lengths, offset, receive_deadline)
        try:
            self.calls.begin(name)
        except errors.UnavailableError as refused:
            # The request was read: the connection is in step and stays open.
            wire.send([protocol.status_bytes(int(refused.code), refused.message)], head_deadline)
            return
        try:  # counted in flight until the response is sent, so that drain() waits for it
            try:
                views, total = self._serve_call(name, frames, metadata, deadline, caller)
            except errors.OpError as exc:
                wire.send(
                    [protocol.status_bytes(int(exc.code), exc.message)],
                    time.monotonic() + protocol.CONNECT_SECONDS,
                )
                return
            del frames
            log.debug("bulk call %s sending %d bytes to %s", name, total, peer)
            wire.send(protocol.answer_parts(views), time.monotonic() + ARRIVAL_TTL_SECONDS)
        finally:
            self.calls.end()

    def _lean(self, wire: Wire, caller: str) -> None:
        """Serve one LEAN call (see ``protocol``). An ``OpError`` refuses it before its
        payload; the handler's own errors, and LEAN_BUSY, are answered here."""
        assert self._serve_call is not None
        head_deadline = time.monotonic() + protocol.CONNECT_SECONDS
        name_size, n, timeout_ms, total = protocol.LEAN_HEAD.unpack(
            wire.read(protocol.LEAN_HEAD.size, head_deadline)
        )
        if total > protocol.LEAN_MAX_BYTES:
            raise errors.InvalidArgumentError(
                f"a lean side-channel call announces {total} bytes; the limit is "
                f"{protocol.LEAN_MAX_BYTES} (larger calls take CALL)"
            )
        # The name and the lengths, then the payload: all in the read-ahead buffer by now.
        fields = wire.read(name_size + 4 * n, head_deadline)
        lengths = protocol.u32_lengths(n).unpack_from(fields, name_size) if n else ()
        name = fields[:name_size].decode(errors="replace")
        if sum(lengths) != total:
            raise errors.DataLossError(f"{name}: lean call frame lengths do not add up")
        framing.check_size(lengths, self._max_bytes, f"{name}: request")
        offset = 1 + protocol.LEAN_HEAD.size + len(fields)
        frames = protocol.receive_frames(wire, lengths, offset, head_deadline)
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        answer: bytes | None = None
        try:
            if not self.calls.begin(name, self._no_room_for_lean):
                answer = protocol.lean_status(protocol.LEAN_BUSY, "busy")
        except errors.UnavailableError as refused:
            answer = protocol.lean_status(int(refused.code), refused.message)
        if answer is not None:
            # The request was read: the connection is in step and stays open.
            wire.send([answer], head_deadline)
            return
        try:  # counted in flight until the response is sent, so that drain() waits for it
            metadata = with_server_token({}, self._token)
            try:
                views, total = self._serve_call(name, frames, metadata, deadline, caller)
            except errors.OpError as exc:
                answer = protocol.lean_status(int(exc.code), exc.message)
                wire.send([answer], time.monotonic() + protocol.CONNECT_SECONDS)
                return
            del frames
            if len(views) > protocol.LEAN_MAX_FRAMES or total >= 1 << 32:
                too_big = errors.ResourceExhaustedError(
                    f"{name}: a response of {total} bytes in {len(views)} frames does not "
                    f"fit a lean side-channel answer (at most {protocol.LEAN_MAX_FRAMES} "
                    "frames and 4 GiB)"
                )
                answer = protocol.lean_status(int(too_big.code), too_big.message)
                wire.send([answer], time.monotonic() + protocol.CONNECT_SECONDS)
                return
            wire.send(protocol.lean_answer(views, total), time.monotonic() + ARRIVAL_TTL_SECONDS)
        finally:
            self.calls.end()

    def _no_room_for_lean(self, in_flight: int) -> bool:
        """Whether a LEAN finds no room beside the ``in_flight`` calls (and gRPC's)."""
        return (
            in_flight >= self.max_lean_calls or in_flight + self._busy_elsewhere() >= self.max_calls
        )

    def _fetch(self, wire: Wire, peer: object) -> None:
        ticket = wire.read(framing.TICKET_BYTES, time.monotonic() + protocol.CONNECT_SECONDS)
        try:
            views, total = self._take_response(ticket)
        except errors.OpError as exc:
            wire.send(
                [protocol.status_bytes(int(exc.code), exc.message)],
                time.monotonic() + protocol.CONNECT_SECONDS,
            )
            return
        log.debug("bulk fetch sending %d bytes to %s", total, peer)
        wire.send(protocol.answer_parts(views), time.monotonic() + ARRIVAL_TTL_SECONDS)

    def close(self, timeout: float = CLOSE_JOIN_SECONDS) -> None:
        """Close the listening socket and every connection, then wait up to ``timeout``
        seconds for the threads that served them to end: once it returns, the side channel
        holds no port, socket or thread (unless a call outlived the wait, which is logged).
        """
        self.connections.close(timeout)
        self.arrivals.clear()


def _shut(accepted: _Accepted) -> None:
    """End a connection being served: its thread's next read fails at once."""
    try:
        accepted.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
