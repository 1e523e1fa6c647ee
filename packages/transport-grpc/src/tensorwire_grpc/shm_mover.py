"""The shared-memory mover (``shm`` of ``tensorwire.transport.kit.handshake``): large calls
between two processes on one host through ``tensorwire.transport.shm``.

A server with the mover on runs a ``ShmListener`` beside gRPC (``ShmMoverServer``) and its
Hello answer offers ``shm`` with the listener's abstract name as the offer's ``detail``.
A channel that wants it connects (``shm.connect``, which proves the cluster token both
ways); only a process on the same host, in the same network namespace, can reach the name
at all, so nothing is guessed from addresses. A connect that fails leaves the channel with
the next mover offered (``tcp``), then gRPC.

Requests over a connection, one at a time per connection (the client keeps a few, one per
call in flight); each is one shared-memory message whose tag says what it is::

    CALL     u8 1, u32 timeout ms (0: none), u16 name length, u32 metadata length,
             name, metadata ("key\\0value\\0" ...); the frames: the request
    FETCH    u8 2, the ticket of a parked response; no frames
    STREAM   as CALL with u8 3: a streaming call, answered by messages as below, each a
             message of the stream, then END or an error
    MORE     u8 4, no frames: (during a STREAM) the caller took a message; the server sends
             at most ``STREAM_WINDOW`` messages beyond those it was told were taken

and the answer, one message (a stream's: one per message, then the last)::

    u8 0 (ok); the frames: the response
    u8 PARKED, ticket            the response did not fit this connection's shared memory
                                 now: fetch it under the ticket another way
    u8 END                       (a stream) no more messages
    u8 status code, message      an ``OpError``

A stream holds its connection until it ends; a caller that stops early closes it, which
ends the handler's generator on the server at its next message.

The frames are read in place on both sides: a request's arrays live in the caller's
segment until the handler lets go of them, a response's in the server's until the caller
does. A sender that finds no room in its pool at once (the peer holds earlier messages)
never waits for it: a caller moves its request another way (nothing was sent), a server
parks the response (``PARKED``). A peer that dies closes the connection; a call waiting on
it raises ``UnavailableError`` at once.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterator, Sequence

from tensorwire import errors
from tensorwire.transport import shm
from tensorwire.transport.base import TOKEN_METADATA_KEY
from tensorwire.transport.kit import copying, framing

from . import idle
from .connection_server import (
    CLOSE_JOIN_SECONDS,
    CallsInFlight,
    ConnectionServer,
    with_server_token,
)
from .mover_calls import ParkResponse, ServeCall, ServeStream, TakeResponse

__all__ = ["MOVER", "ShmMoverServer", "ShmPeer", "ShmUnavailable", "Parked"]

log = logging.getLogger(__name__)

#: The mover's name in the handshake.
MOVER = "shm"
OP_CALL = 1
OP_FETCH = 2
OP_STREAM = 3
OP_MORE = 4
#: Messages of a stream the server sends ahead of those the caller took.
STREAM_WINDOW = 4
#: Answer status of a stream's end (not an ``errors.Code``).
STATUS_END = 254
STATUS_OK = 0
#: Answer status of a response parked instead of sent (not an ``errors.Code``).
STATUS_PARKED = 255
CALL_HEAD = struct.Struct("<BIHI")
#: Connections a server serves at once. More are not accepted until one ends: they wait in
#: the listener's backlog, their handshake times out (``CONNECT_SECONDS`` at most) and their
#: callers use another way meanwhile. (Accepting and then closing one would look to its
#: caller like a server that died during its call.)
MAX_SERVER_CONNECTIONS = 256
#: Connections a client keeps per server (one per call in flight); more calls go another way.
MAX_CLIENT_CONNECTIONS = 16
#: A client closes a connection idle this long: each one holds two threads, a socket and
#: its segments on the server (and a connect costs well under a millisecond).
CLIENT_IDLE_SECONDS = 10.0
#: How long the server's accept loop waits before looking whether it was closed.
ACCEPT_POLL_SECONDS = 0.5
#: Longest a connect (the handshake included) may take when the call sets no deadline.
CONNECT_SECONDS = 2.0
#: After a failed connect, the channel uses other movers for this long.
RETRY_SECONDS = 5.0
#: An answer an error message carries at most this many bytes of.
MAX_MESSAGE_BYTES = 4096


class ShmUnavailable(Exception):
    """The mover cannot take this call now and nothing was sent: use another route."""


class Parked(Exception):
    """The server parked the response under ``ticket`` for another route to fetch."""

    def __init__(self, ticket: bytes) -> None:
        super().__init__("response parked")
        self.ticket = ticket


def _error_tag(error: errors.OpError) -> bytes:
    return bytes((int(error.code),)) + error.message.encode()[:MAX_MESSAGE_BYTES]


def _limits() -> shm.ShmLimits:
    # No message limit on the connection: a message over it would end the connection
    # without a word to the caller. Each side checks ``max_message_bytes`` per call
    # instead (``framing.check_size``, the words of every other path) and answers.
    return shm.ShmLimits()


# ---- server ---------------------------------------------------------------------------


class ShmMoverServer:
    """The shared-memory listener of a grpc server and a thread per connection (the accept
    loop, the threads and the stop are ``connection_server``'s).

    Args:
      token: the cluster token callers prove (None: any local process may connect).
      max_bytes: ``max_message_bytes`` of the server (None: no limit).
      take_response: takes a parked response by ticket (FETCH).
      park_response: parks a response that found no room (``PARKED``).
      serve_call: runs a unary method (CALL).
      serve_stream: runs a streaming method (STREAM).
      name: what log lines call this server.
    """

    def __init__(
        self,
        token: str | None,
        max_bytes: int | None,
        take_response: TakeResponse,
        park_response: ParkResponse,
        serve_call: ServeCall,
        serve_stream: ServeStream,
        name: str,
        spin_seconds: float = 0.0,
    ) -> None:
        self._listener = shm.ShmListener(token, _limits())
        #: How long a connection waits for its next request awake (``kit.spinning``).
        self.spin_seconds = spin_seconds
        self._max_bytes = max_bytes
        #: The abstract socket name callers connect to (the offer's ``detail``).
        self.address = self._listener.address
        self._token = token
        self._take_response = take_response
        self._park_response = park_response
        self._serve_call = serve_call
        self._serve_stream = serve_stream
        self._name = name
        #: Calls running; refused once the listener stops, and waited for.
        self.calls = CallsInFlight()
        self.connections: ConnectionServer[shm.ShmConnection] = ConnectionServer(
            f"shared-memory mover of {name}",
            accept=self._accept,
            serve=self._serve,
            refuse=_drop,
            shut=shm.ShmConnection.close,
            stop_listening=self._listener.close,
            max_connections=MAX_SERVER_CONNECTIONS,
            kind="shared-memory",
            # A caller cannot hear a refusal: see MAX_SERVER_CONNECTIONS.
            wait_when_full=True,
            accept_thread_name=f"tensorwire-shm-accept-{name}",
            connection_thread_name=f"tensorwire-shm-{name}",
            log=log,
        )
        self.connections.start()

    def _accept(self) -> shm.ShmConnection | None:
        """The next connection whose peer proved the token, or None after a poll (so that
        the loop looks whether it was closed: the listener's socket cannot wake it)."""
        try:
            return self._listener.accept(time.monotonic() + ACCEPT_POLL_SECONDS)
        except errors.DeadlineExceededError:
            return None  # nobody came, or a peer's handshake timed out
        except errors.UnavailableError:
            return None  # the peer left mid-handshake, or the listener was closed
        except errors.OpError as exc:
            log.info("shared-memory peer of %s refused: %s", self._name, exc.message)
            return None

    def _serve(self, connection: shm.ShmConnection) -> None:
        connection.spinner.seconds = self.spin_seconds
        try:
            while True:
                try:
                    message = connection.receive()
                except errors.OpError:
                    return  # closed: the peer left, or this server stops
                if message.tag == bytes((OP_MORE,)):
                    continue  # late word of a stream that ended: nothing to answer
                try:
                    self._answer(connection, message)
                except errors.OpError as exc:
                    log.debug("shared-memory connection of %s ends: %s", self._name, exc.message)
                    return
                del message
        finally:
            connection.close()

    def _answer(self, connection: shm.ShmConnection, message: shm.ShmMessage) -> None:
        """Serve one request, counted in flight until it is answered (``drain`` waits for
        it); raises an ``OpError`` only when the connection is unusable."""
        try:
            self.calls.begin(self._name)
        except errors.UnavailableError as refused:
            connection.send([], tag=_error_tag(refused), deadline=_answer_deadline(None))
            return
        try:
            self._answer_counted(connection, message)
        finally:
            self.calls.end()

    def _answer_counted(self, connection: shm.ShmConnection, message: shm.ShmMessage) -> None:
        tag = message.tag
        op = tag[:1]
        deadline: float | None = None
        views: list[memoryview] = []
        total = 0
        try:
            if op == bytes((OP_STREAM,)):
                name, frames, metadata, deadline = self._read_call(message)
                messages = self._serve_stream(name, frames, metadata, deadline, "shm")
                del frames
            elif op == bytes((OP_FETCH,)):
                if len(tag) != 1 + framing.TICKET_BYTES or any(len(f) for f in message.frames):
                    raise errors.DataLossError("malformed shared-memory fetch")
                views, total = self._take_response(bytes(tag[1:]))
            elif op == bytes((OP_CALL,)):
                name, frames, metadata, deadline = self._read_call(message)
                del message
                views, total = self._serve_call(name, frames, metadata, deadline, "shm")
                del frames
            else:
                raise errors.DataLossError(f"unknown shared-memory request {op!r}")
        except errors.OpError as exc:
            connection.send([], tag=_error_tag(exc), deadline=_answer_deadline(None))
            return
        if op == bytes((OP_STREAM,)):
            del message
            self._stream(connection, messages, deadline)
            return
        try:
            self._send_or_park(connection, views, total, deadline, share_copy=True)
        except errors.OpError as exc:
            if connection.closed:
                raise
            connection.send([], tag=_error_tag(exc), deadline=_answer_deadline(None))

    def _send_or_park(
        self,
        connection: shm.ShmConnection,
        views: list[memoryview],
        total: int,
        deadline: float | None,
        *,
        share_copy: bool,
    ) -> None:
        """Send one response; parked instead when the pool has no room for it now.
        ``share_copy``: a unary answer, whose caller waits idle meanwhile, may share its
        copy with the copy helpers; a stream's message may not (its reader is busy)."""
        try:
            # No waiting for room: a caller holding earlier responses gets this one another way.
            connection.send(
                views, tag=bytes((STATUS_OK,)), deadline=time.monotonic(), share_copy=share_copy
            )
            return
        except (errors.DeadlineExceededError, errors.ResourceExhaustedError) as exc:
            if connection.closed:
                raise
            log.debug("%s: response of %d bytes parked: %s", self._name, total, exc.message)
        ticket = self._park_response(views, total, deadline)
        connection.send(
            [], tag=bytes((STATUS_PARKED,)) + ticket, deadline=_answer_deadline(deadline)
        )

    def _stream(
        self,
        connection: shm.ShmConnection,
        messages: Iterator[tuple[list[memoryview], int]],
        deadline: float | None,
    ) -> None:
        """Send a stream's messages as the caller takes them (``STREAM_WINDOW`` ahead),
        then END or the error that ended it. A connection that fails (the caller stopped
        early or died) closes the handler's generator and ends the connection."""
        credit = STREAM_WINDOW
        try:
            try:
                for views, total in messages:
                    while credit == 0:
                        more = connection.receive()
                        if more.tag != bytes((OP_MORE,)) or more.frames:
                            raise errors.DataLossError("a stream's caller sent something else")
                        credit += 1
                    self._send_or_park(connection, views, total, deadline, share_copy=False)
                    credit -= 1
                    del views
            except errors.OpError as exc:
                if connection.closed:
                    raise
                connection.send([], tag=_error_tag(exc), deadline=_answer_deadline(None))
                return
            connection.send([], tag=bytes((STATUS_END,)), deadline=_answer_deadline(None))
        finally:
            close = getattr(messages, "close", None)
            if close is not None:
                close()
        # The caller's MOREs for the last messages may still come: ``_serve`` drops them.

    def _read_call(
        self, message: shm.ShmMessage
    ) -> tuple[str, list[memoryview], dict[str, str], float | None]:
        """The method, frames, metadata and deadline of a CALL or STREAM request."""
        tag = message.tag
        if len(tag) < CALL_HEAD.size:
            raise errors.DataLossError("malformed shared-memory call")
        _, timeout_ms, name_size, md_size = CALL_HEAD.unpack_from(tag)
        if len(tag) != CALL_HEAD.size + name_size + md_size:
            raise errors.DataLossError("malformed shared-memory call")
        name = tag[CALL_HEAD.size : CALL_HEAD.size + name_size].decode(errors="replace")
        metadata = (
            framing.decode_metadata(tag[CALL_HEAD.size + name_size :], "a shared-memory call")
            if md_size
            else {}
        )
        with_server_token(metadata, self._token)
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        lengths = [len(frame) for frame in message.frames]
        framing.check_size(lengths, self._max_bytes, f"{name}: request")
        return name, message.frames, metadata, deadline

    def close(self, timeout: float = CLOSE_JOIN_SECONDS) -> None:
        """Stop listening, close every connection and wait up to ``timeout`` for the
        threads: afterwards the server holds no socket, segment or thread."""
        self.connections.close(timeout)


def _drop(connection: shm.ShmConnection, reason: str) -> None:
    """Close a connection the server will not serve. Its caller hears no reason (the
    protocol has no refusal; see ``MAX_SERVER_CONNECTIONS``): it finds the connection
    closed. Only while the server stops, or when no thread can be started for it."""
    connection.close()


def _answer_deadline(deadline: float | None) -> float:
    """How long an answer without frames may wait for the socket (it never needs room)."""
    limit = time.monotonic() + CONNECT_SECONDS
    return limit if deadline is None else max(limit, deadline)


# ---- client ---------------------------------------------------------------------------


class ShmPeer:
    """Connections to one server's shared-memory listener, for one token.

    Args:
      address: the listener's abstract name (the offer's ``detail``).
      token: the cluster token.
      max_bytes: the channel's ``max_message_bytes``.
    """

    def __init__(
        self, address: str, token: str | None, max_bytes: int | None, spin_seconds: float = 0.0
    ) -> None:
        self.address = address
        #: How long a connection waits for an answer awake (``kit.spinning``).
        self.spin_seconds = spin_seconds
        self._token = token
        self._limits = _limits()
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        #: Idle connections and since when (monotonic), most recent last.
        self._idle: list[tuple[shm.ShmConnection, float]] = []
        self._busy = 0
        self._closed = False
        #: Until when connecting is not tried again (it failed; 0: it did not).
        self.failed_until = 0.0
        idle.watch(self)

    def stale(self) -> bool:
        """Whether connecting failed and the retry period is over: time to ask the server
        for its listener again (a restarted server has a new one)."""
        return bool(self.failed_until) and time.monotonic() >= self.failed_until

    def connect(self, deadline: float | None) -> shm.ShmConnection:
        """A new connection (the handshake proved the token both ways).

        Raises:
          ShmUnavailable: the listener cannot be reached from here (another host or
            network namespace, or gone) or refused this side.
        """
        end = time.monotonic() + CONNECT_SECONDS
        if deadline is not None:
            end = min(end, deadline)
        try:
            connection = shm.connect(self.address, self._token, limits=self._limits, deadline=end)
        except (errors.OpError, OSError) as exc:
            self.failed_until = time.monotonic() + RETRY_SECONDS
            message = exc.message if isinstance(exc, errors.OpError) else str(exc)
            log.info("shared-memory mover %s unusable, another way: %s", self.address, message)
            raise ShmUnavailable(message) from None
        self.failed_until = 0.0
        connection.spinner.seconds = self.spin_seconds
        return connection

    def put_idle(self, connection: shm.ShmConnection) -> None:
        """Keep a connection (the first, made when the server offered the mover)."""
        with self._lock:
            keep = not self._closed
            if keep:
                self._keep_idle(connection)
        if not keep:
            connection.close()

    def _keep_idle(self, connection: shm.ShmConnection) -> None:
        """(Under the lock.) Keep ``connection`` for the next call; ``reap`` closes it once
        idle for ``CLIENT_IDLE_SECONDS``."""
        self._idle.append((connection, time.monotonic()))

    def reap(self) -> None:
        """Close the connections idle for ``CLIENT_IDLE_SECONDS``, or that their server
        closed (called by ``idle``'s housekeeper)."""
        now = time.monotonic()
        with self._lock:
            keep: list[tuple[shm.ShmConnection, float]] = []
            drop: list[shm.ShmConnection] = []
            for connection, since in self._idle:
                # poll: nobody reads an idle connection, so its server's end waits there.
                fresh = now - since < CLIENT_IDLE_SECONDS and connection.poll()
                if fresh:
                    keep.append((connection, since))
                else:
                    drop.append(connection)
            self._idle = keep
        for connection in drop:
            connection.close()

    def _acquire(self, deadline: float | None) -> shm.ShmConnection:
        with self._lock:
            while self._idle:
                connection, _ = self._idle.pop()
                if connection.poll():  # what came while it was idle, its server's end too
                    self._busy += 1
                    return connection
                connection.close()
            if self._closed or self._busy >= MAX_CLIENT_CONNECTIONS:
                raise ShmUnavailable("every shared-memory connection is busy")
            if time.monotonic() < self.failed_until:
                raise ShmUnavailable("a recent connect failed")
            self._busy += 1
        try:
            return self.connect(deadline)
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise

    def _release(self, connection: shm.ShmConnection, reusable: bool) -> None:
        with self._lock:
            self._busy -= 1
            keep = reusable and not self._closed and not connection.closed
            if keep:
                self._keep_idle(connection)
        if not keep:
            connection.close()

    def _exchange(
        self,
        frames: Sequence[memoryview],
        tag: bytes,
        deadline: float | None,
        what: str,
        spin: bool = True,
    ) -> list[memoryview]:
        """Send one request and return the response's frames (views into the server's
        segment). ``ShmUnavailable`` when nothing was sent; ``Parked`` when the server
        parked the response."""
        connection = self._acquire(deadline)
        reusable = False
        try:
            try:
                # No waiting for room: a server holding earlier requests gets this one
                # another way (nothing is sent then).
                connection.send(frames, tag=tag, deadline=time.monotonic())
            except (errors.DeadlineExceededError, errors.ResourceExhaustedError) as exc:
                if connection.closed:
                    raise _unavailable(exc, what) from None
                reusable = True
                raise ShmUnavailable(exc.message) from None
            except errors.UnavailableError as exc:
                raise _unavailable(exc, what) from None
            answer = _receive(connection, deadline, what, "response", spin=spin)
            reusable = True
        finally:
            self._release(connection, reusable)
        status = answer.tag[:1]
        if status == bytes((STATUS_OK,)):
            framing.check_size(
                [len(f) for f in answer.frames], self._max_bytes, f"{what}: response"
            )
            return answer.frames
        if status == bytes((STATUS_PARKED,)):
            raise Parked(bytes(answer.tag[1:]))
        if not status:
            raise errors.DataLossError(f"{what}: an empty shared-memory answer")
        text = bytes(answer.tag[1:]).decode(errors="replace")
        raise errors.from_code(answer.tag[0], text)

    def call(
        self,
        name: str,
        views: Sequence[memoryview],
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
        expected_bytes: int = 0,
    ) -> list[memoryview]:
        """A whole unary call; see ``_exchange`` for what it raises besides ``OpError``.
        ``expected_bytes``: the response's size, when the caller announced it."""
        tag = _call_tag(OP_CALL, name, metadata, deadline)
        # An exchange that copies a large payload (the request here, or the answer on the
        # server) takes longer than a spin, with copy helpers that want every CPU: wait for
        # its answer asleep. (A 16 MiB read spun out in vain, its first copy slowed.)
        large = max(sum(len(v) for v in views), expected_bytes) >= copying.PARALLEL_BYTES
        return self._exchange(views, tag, deadline, name, spin=not large)

    def open_stream(
        self,
        name: str,
        views: Sequence[memoryview],
        metadata: Sequence[tuple[str, str]],
        deadline: float | None,
    ) -> Iterator[list[memoryview] | Parked]:
        """Start a streaming call; its messages (``Parked`` for one to fetch another way).

        Raises:
          ShmUnavailable: (here, not while iterating) nothing was sent: use another route.
        """
        tag = _call_tag(OP_STREAM, name, metadata, deadline)
        connection = self._acquire(deadline)
        try:
            connection.send(views, tag=tag, deadline=time.monotonic())
        except (errors.DeadlineExceededError, errors.ResourceExhaustedError) as exc:
            self._release(connection, not connection.closed)
            if connection.closed:
                raise _unavailable(exc, name) from None
            raise ShmUnavailable(exc.message) from None
        except BaseException as exc:
            self._release(connection, False)
            if isinstance(exc, errors.OpError):
                raise _unavailable(exc, name) from None
            raise
        return self._stream_messages(connection, deadline, name)

    def _stream_messages(
        self, connection: shm.ShmConnection, deadline: float | None, what: str
    ) -> Iterator[list[memoryview] | Parked]:
        """The messages of a stream whose request was sent on ``connection``; the
        connection is kept for the next call only when the stream ended cleanly.

        Only the wait for the first message spins (it follows the request, like a call's
        answer). A later wait is for a producer slower than its reader, long next to the
        wake-up a spin saves: spinning through it held a core for nothing (a data-service
        reader of 1 MiB elements, interleaved A/B: 75-130 us of CPU an element spinning,
        45-60 asleep, at 9.6 and 9.4 GB/s median of 9 rounds each, within the spread of
        7.4-11), a core its trainer, or on one host the worker, wants."""
        reusable = False
        spin = True
        try:
            while True:
                answer = _receive(connection, deadline, what, "stream message", spin=spin)
                spin = False
                status = answer.tag[:1]
                if status == bytes((STATUS_END,)):
                    reusable = True
                    return
                if status == bytes((STATUS_OK,)):
                    item: list[memoryview] | Parked = answer.frames
                    lengths = [len(f) for f in answer.frames]
                    framing.check_size(lengths, self._max_bytes, f"{what}: stream message")
                elif status == bytes((STATUS_PARKED,)):
                    item = Parked(bytes(answer.tag[1:]))
                elif not status:
                    raise errors.DataLossError(f"{what}: an empty shared-memory answer")
                else:
                    # An error ends the stream cleanly: the connection is in step.
                    reusable = True
                    text = bytes(answer.tag[1:]).decode(errors="replace")
                    raise errors.from_code(answer.tag[0], text)
                del answer
                # Taken: the server may send one more ahead.
                connection.send([], tag=bytes((OP_MORE,)), deadline=_answer_deadline(deadline))
                yield item
                del item
        finally:
            # A caller that stopped early, or a failure: the connection is closed, which
            # ends the handler on the server.
            self._release(connection, reusable)

    def fetch(self, ticket: bytes, deadline: float | None, what: str) -> list[memoryview]:
        """The response parked under ``ticket``."""
        return self._exchange([], bytes((OP_FETCH,)) + ticket, deadline, what)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()


def _call_tag(
    op: int, name: str, metadata: Sequence[tuple[str, str]], deadline: float | None
) -> bytes:
    """The tag of a CALL or STREAM request."""
    timeout_ms = 0
    if deadline is not None:
        timeout_ms = max(1, min(0xFFFFFFFF, int((deadline - time.monotonic()) * 1000)))
    name_bytes = name.encode()
    md = framing.encode_metadata([(k, v) for k, v in metadata if k != TOKEN_METADATA_KEY])
    if len(name_bytes) > 0xFFFF:
        raise ShmUnavailable("method name too long")
    return CALL_HEAD.pack(op, timeout_ms, len(name_bytes), len(md)) + name_bytes + md


def _receive(
    connection: shm.ShmConnection,
    deadline: float | None,
    what: str,
    expected: str,
    *,
    spin: bool = True,
) -> shm.ShmMessage:
    """The peer's next message on ``connection``, failures named as the call's (``what``)."""
    try:
        return connection.receive(deadline, spin=spin)
    except errors.DeadlineExceededError:
        raise errors.DeadlineExceededError(
            f"{what}: no {expected} through shared memory before the deadline"
        ) from None
    except errors.UnavailableError as exc:
        raise _unavailable(exc, what) from None


def _unavailable(exc: errors.OpError, what: str) -> errors.OpError:
    """A failed connection as the call's error (the peer died: ``UnavailableError``)."""
    return type(exc)(f"{what}: {exc.message}")
