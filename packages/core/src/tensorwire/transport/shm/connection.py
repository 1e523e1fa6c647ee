"""One shared-memory connection: a Unix socket that passes segments, and both ends of it.

``ShmListener`` listens on an abstract Unix socket with an unguessable name; ``connect``
reaches it; both return a ``ShmConnection`` once the handshake proved the cluster token in
both directions. Each side of a connection can send messages (frames written into segments
of its own ``SegmentPool``) and receive the peer's (views into the peer's segments, mapped
once and kept until the peer retires them).
"""

from __future__ import annotations

import array
import dataclasses
import logging
import mmap
import os
import queue
import select
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import errors
from ..kit import copying
from ..kit.spinning import Spinner
from . import protocol as p
from .pool import PROCESS_BUDGET, SegmentPool, ShmBudget
from .segments import Segment, map_peer_segment

__all__ = ["ShmLimits", "ShmMessage", "ShmConnection"]

log = logging.getLogger(__name__)

#: Longest a handshake may take, whatever deadline the caller gave.
HANDSHAKE_SECONDS = 5.0
#: How long ``close`` waits for a thread reading the connection (it is woken at once).
CLOSE_JOIN_SECONDS = 5.0
#: How long a sender waiting for a segment to come back sleeps at most between looks.
ROOM_POLL_SECONDS = 0.05
#: Sockets of this process's connections and listeners, let go of in a forked child.
_SOCKETS: weakref.WeakSet[socket.socket] = weakref.WeakSet()
_CONNECTIONS: weakref.WeakSet[ShmConnection] = weakref.WeakSet()
#: Each thread's buffer to read packets into (``_read_buffer``).
_THREAD = threading.local()


def _forget_after_fork() -> None:
    """In a forked child: close the child's copies of every connection's and listener's
    socket. Otherwise a child (a DataLoader worker, a subprocess made by fork) would keep
    the socket open after its parent died, and the peer would never see the end of the
    connection; and a child has no thread waiting on it anyway."""
    for connection in list(_CONNECTIONS):
        connection._failure = errors.UnavailableError(
            "this shared-memory connection belongs to the process this one was forked from"
        )
    for sock in list(_SOCKETS):
        try:
            os.close(sock.detach())
        except OSError:
            pass


os.register_at_fork(after_in_child=_forget_after_fork)


def track_socket(sock: socket.socket) -> None:
    """Let go of ``sock`` in forked children (see ``_forget_after_fork``)."""
    _SOCKETS.add(sock)


@dataclasses.dataclass(frozen=True)
class ShmLimits:
    """What one side of a connection accepts and keeps.

    Attributes:
      max_message_bytes: the most bytes (frames together) of one message, sent or received
        (``TransportOptions.max_message_bytes``, the same limit as every other path); None
        means no limit beyond the pool's.
      max_frames: the most frames in one message (their offsets travel in one packet).
      max_tag_bytes: the longest tag a message may carry.
      max_pool_bytes: the most bytes of segments this side lends the peer at once.
      max_mapped_bytes: the most bytes of the peer's segments this side maps at once; told
        to the peer in the handshake, which keeps its pool under it.
      max_queued_messages: the most messages received but not yet taken by ``receive``; a
        peer that sends more has its connection failed (``ResourceExhaustedError``), so a
        flood of small messages cannot grow this side's memory without bound.

    Examples:
        >>> from tensorwire.transport.shm import ShmLimits
        >>> ShmLimits(max_pool_bytes=64 << 20).max_pool_bytes
        67108864
    """

    max_message_bytes: int | None = None
    max_frames: int = 4096
    max_tag_bytes: int = 64 << 10
    max_pool_bytes: int = 1 << 30
    max_mapped_bytes: int = 1 << 30
    max_queued_messages: int = 1024

    def packet_bytes(self) -> int:
        """The longest MESSAGE packet these limits admit (the reader's receive size)."""
        return p.MESSAGE.size + self.max_frames * p.FRAME.size + self.max_tag_bytes


@dataclasses.dataclass
class ShmMessage:
    """A received message.

    Attributes:
      tag: the small bytes the sender gave with it (the mover's own header).
      frames: read-write views of the frames in the peer's segment (zero-copy). The segment
        goes back to the sender once these views, and everything made from them (arrays
        that ``tensorwire.codec.decode`` returned), are gone; until then the memory is this
        side's to read and write, and the sender does not touch it.
    """

    tag: bytes
    frames: list[memoryview]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _PeerSegment:
    """A segment the peer passed: its mapping, kept until the peer retires it (messages
    still in use keep the mapping alive after that through their views)."""

    __slots__ = ("mapping", "size")

    def __init__(self, mapping: mmap.mmap, size: int) -> None:
        self.mapping = mapping
        self.size = size


class ShmConnection:
    """One end of a connection whose handshake succeeded (use ``connect`` or
    ``ShmListener.accept`` to make one).

    Sending and receiving are thread-safe. There is no reader thread: the peer's packets
    (segments to map, messages, releases for the pool) are taken by whoever waits for them,
    one thread at a time: ``receive`` until a message is there, ``send`` when its pool has
    no room (and, without waiting, before it looks), ``poll`` whatever is waiting now. A
    receiver spins before it sleeps (``spinner``, ``kit.spinning``) and sleeps in ``poll``
    on the socket itself, so an answer wakes the thread that wants it and no other: with a
    reader thread handing messages over, an empty request and answer took 103 us here,
    82 us without it, 13 us spinning; a 1 MiB answer 326, 217 and 177 us. Releases the peer
    sends while nobody waits stay in the socket until the next wait or ``poll`` (the pool
    then has them).

    When the peer dies (``kill -9`` included) its socket closes: the next wait or ``poll``
    sees it, every segment this side made is unmapped and closed, the peer's are dropped
    (unmapped once the last view of them is gone), and every waiting or later call raises
    ``UnavailableError`` saying so; messages the peer sent before it closed the connection
    are received first (a server that answers and then stops), unless this side closes.
    An owner that keeps idle connections ``poll`` s them now and then to notice.
    """

    def __init__(
        self,
        sock: socket.socket,
        limits: ShmLimits,
        peer_max_mapped: int,
        budget: ShmBudget = PROCESS_BUDGET,
    ) -> None:
        self._sock = sock
        self.limits = limits
        self.pool = SegmentPool(
            min(limits.max_pool_bytes, peer_max_mapped), self._queue_retire, budget
        )
        self._mapped: dict[int, _PeerSegment] = {}
        self._mapped_bytes = 0
        self._inbox: queue.SimpleQueue[ShmMessage | None] = queue.SimpleQueue()
        self._queued = 0  # messages in the inbox (the reader adds, receive takes)
        self._failure: errors.OpError | None = None
        # Reentrant: a release may be sent from a finalizer that runs (garbage collection)
        # on a thread that holds it.
        self._lock = threading.RLock()
        # Control packets (releases, retirements) that could not be sent at once; sent
        # before the next packet, or after the next one read.
        self._pending: list[bytes] = []
        #: Held by the one thread that reads the socket (and maps the peer's segments).
        self._read_lock = threading.RLock()
        self._packet_bytes = limits.packet_bytes()
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        #: How ``receive`` tries the socket before it sleeps on it (``kit.spinning``); off
        #: unless the owner sets ``spinner.seconds``.
        self.spinner = Spinner()
        _CONNECTIONS.add(self)
        track_socket(sock)

    # ---- sending ----------------------------------------------------------------------

    def send(
        self,
        frames: Sequence[Any],
        *,
        tag: bytes = b"",
        deadline: float | None = None,
        share_copy: bool = True,
    ) -> None:
        """Send a message: the frames are copied into one of this side's segments (one
        copy, the only one: the receiver reads them in place), the segment's descriptor is
        passed the first time, and a small packet says where each frame lies.

        Args:
          frames: buffer-protocol objects (C-contiguous), e.g. ``tensorwire.codec.encode``'s.
          tag: small bytes delivered with the message (at most ``max_tag_bytes``).
          deadline: ``time.monotonic()`` value after which waiting (for a free segment or
            room in the socket) stops; None waits as long as it takes.
          share_copy: a large copy may be shared with the process's copy helpers
            (``kit.copying``); False for a stream's messages, whose receiver is busy meanwhile.

        Raises:
          InvalidArgumentError: a frame is not contiguous, or there are more frames than
            ``max_frames``, or the tag is too long.
          ResourceExhaustedError: the message is over ``max_message_bytes`` or the pool, or
            the process's ``ShmBudget`` has no room (at once: move it another way).
          DeadlineExceededError: the deadline passed while waiting.
          UnavailableError: the connection is closed or the peer is gone.
        """
        self._check_open()
        views = [_byte_view(frame) for frame in frames]
        lengths = [v.nbytes for v in views]
        self._check_message(lengths, len(tag), "sending")
        offsets, needed = p.frame_offsets(lengths)
        segment: Segment | None = None
        if needed:
            segment, new = self._acquire_segment(needed, deadline)
            try:
                target = segment.view
                assert target is not None
                _copy_frames(target, offsets, views, share_copy)
                if new:
                    assert segment.fd is not None
                    head = p.SEGMENT.pack(p.OP_SEGMENT, segment.id, segment.size)
                    self._send_packet([head], deadline, fds=[segment.fd])
                    segment.drop_descriptor()
            except BaseException:
                if new:
                    # The peer may or may not have the descriptor: never reuse this one.
                    self._queue_retire(segment)
                    self.pool.discard(segment.id)
                else:
                    self.pool.give_back(segment)
                self._check_open()  # a copy cut short by the peer's death: say so
                raise
        packet = [
            p.MESSAGE.pack(p.OP_MESSAGE, segment.id if segment else 0, len(tag), len(views)),
            b"".join(p.FRAME.pack(o, n) for o, n in zip(offsets, lengths, strict=True)),
            tag,
        ]
        try:
            self._send_packet(packet, deadline)
        except BaseException:
            if segment is not None:
                self.pool.give_back(segment)
            raise

    def _acquire_segment(self, nbytes: int, deadline: float | None) -> tuple[Segment, bool]:
        """A segment from the pool, reading the peer's releases while waiting for one."""
        self.poll()  # releases that came while nobody read
        while True:
            try:
                return self.pool.acquire(nbytes, time.monotonic())
            except errors.DeadlineExceededError:
                left = _remaining(deadline)
                if left == 0:
                    raise
            wait = ROOM_POLL_SECONDS if left is None else min(left, ROOM_POLL_SECONDS)
            if self._read_lock.acquire(blocking=False):
                try:
                    if self._poller.poll(max(1, int(wait * 1000))):
                        self._read_waiting()
                finally:
                    self._read_lock.release()
            else:  # another thread reads: it takes the releases, the pool says so
                self.pool.wait_changed(wait)
            self._check_open()

    def _check_message(self, lengths: list[int], tag_bytes: int, what: str) -> None:
        limits = self.limits
        error = errors.InvalidArgumentError if what == "sending" else errors.DataLossError
        if len(lengths) > limits.max_frames:
            raise error(
                f"a shared-memory message has at most {limits.max_frames} frames "
                f"(ShmLimits.max_frames); {what} one of {len(lengths)}"
            )
        if tag_bytes > limits.max_tag_bytes:
            raise error(
                f"a shared-memory message tag has at most {limits.max_tag_bytes} bytes "
                f"(ShmLimits.max_tag_bytes); {what} one of {tag_bytes}"
            )
        total = sum(lengths)
        if limits.max_message_bytes is not None and total > limits.max_message_bytes:
            raise errors.ResourceExhaustedError(
                f"{what} a message of {total} bytes in {len(lengths)} frames: over the limit "
                f"of {limits.max_message_bytes} bytes (TransportOptions.max_message_bytes)"
            )

    def _send_packet(
        self, parts: list[bytes], deadline: float | None, fds: Sequence[int] = ()
    ) -> None:
        self._flush_pending()
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while True:
            try:
                self._sock.sendmsg(parts, ancillary, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self._fail(f"the peer of the shared-memory connection is gone ({exc})")
                self._check_open()
                raise
            left = _remaining(deadline)
            if left == 0:
                raise errors.DeadlineExceededError(
                    "the peer of the shared-memory connection took no packets before the deadline"
                )
            poller = select.poll()
            poller.register(self._sock, select.POLLOUT)
            poller.poll(None if left is None else max(1, int(left * 1000)))
            self._check_open()

    def _send_control(self, packet: bytes) -> None:
        """Send a release or retirement without ever blocking (it may run in a finalizer,
        on any thread): queued when the socket is full, dropped once it is closed."""
        if self._failure is not None:
            return
        try:
            self._sock.send(packet, socket.MSG_DONTWAIT)
        except BlockingIOError:
            with self._lock:
                self._pending.append(packet)
        except OSError:
            pass  # the reader sees the closed socket and fails the connection

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, []
        for packet in pending:
            self._send_control(packet)

    def _queue_retire(self, segment: Segment) -> None:
        self._send_control(p.SEGMENT_ID.pack(p.OP_RETIRE, segment.id))

    # ---- receiving --------------------------------------------------------------------

    def receive(self, deadline: float | None = None, *, spin: bool = True) -> ShmMessage:
        """The next message from the peer.

        Args:
          deadline: ``time.monotonic()`` value after which to stop waiting; None waits
            until a message comes or the connection fails.
          spin: whether to try awake first (``spinner``); False for a message known to take
            longer than a spin (the answer to a large copy), whose sender's copy helpers
            want the CPU a spinner would hold.

        Returns:
          The message; its frames are views into the peer's segment.

        Raises:
          DeadlineExceededError: no message came before the deadline.
          UnavailableError: the peer is gone or the connection was closed (other
            ``OpError`` s when the peer broke the protocol, saying how). Messages the peer
            sent before it closed the connection are returned first.
        """
        while True:
            message = self._take_received()
            if message is not None:
                return message
            left = _remaining(deadline)
            if not self._read_lock.acquire(timeout=-1 if left is None else left):
                raise errors.DeadlineExceededError(
                    "no message came over the shared-memory connection before the deadline"
                )
            try:
                while self._inbox.empty() and self._failure is None:
                    if not spin or self.spinner.spin(self._read_one_now) is None:
                        self._wait_readable(deadline)
                        self._read_one_now()
                        if spin and not self._inbox.empty():
                            self.spinner.woke()
            finally:
                self._read_lock.release()

    def poll(self) -> bool:
        """Take what the peer sent and nobody read yet (releases, segments, messages for
        ``receive``, the end of the connection), without waiting; whether the connection is
        still open afterwards. Does nothing while another thread reads (it takes them)."""
        if self._read_lock.acquire(blocking=False):
            try:
                self._read_waiting()
            finally:
                self._read_lock.release()
        return self._failure is None

    def _take_received(self) -> ShmMessage | None:
        """The next message read already, or None; raises once the connection ended and
        every message read before that was taken."""
        try:
            message = self._inbox.get_nowait()
        except queue.Empty:
            if self._failure is not None:
                self._check_open()
            return None
        if message is None:
            self._inbox.put(None)  # for the next receiver too
            self._check_open()
            raise errors.UnavailableError("the shared-memory connection is closed")
        with self._lock:
            self._queued -= 1
        return message

    def _wait_readable(self, deadline: float | None) -> None:
        """(Holding the read lock.) Until the socket has a packet, or is closed."""
        left = _remaining(deadline)
        timeout = None if left is None else max(1, int(left * 1000))
        if left == 0 or not self._poller.poll(timeout):
            raise errors.DeadlineExceededError(
                "no message came over the shared-memory connection before the deadline"
            )

    def _read_waiting(self) -> None:
        """(Holding the read lock.) Every packet waiting in the socket."""
        while self._failure is None and self._read_one_now():
            pass

    def _read_one_now(self) -> bool | None:
        """(Holding the read lock.) Take one packet if one is waiting: True when one was
        taken or the connection ended (the inbox then holds its end), None when none was
        there."""
        if self._failure is not None:
            return True
        buffer = _read_buffer(self._packet_bytes)
        try:
            size, ancillary, flags, _ = self._sock.recvmsg_into(
                [buffer], _ANCILLARY_BYTES, socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            return None
        except ConnectionResetError:
            # How a peer's end looks when it closed (or died) with packets of ours unread.
            self._fail("the peer closed the shared-memory connection", keep=True)
            return True
        except OSError as exc:
            self._fail(f"the shared-memory connection failed: {exc}")
            return True
        fds = _take_fds(ancillary)
        try:
            data = bytes(buffer[:size])
            if not data:
                # Messages the peer sent before closing stay to be received (a server
                # that answers and then stops).
                self._fail("the peer closed the shared-memory connection", keep=True)
                return True
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise errors.DataLossError(
                    "the peer sent a shared-memory packet larger than this side's limits allow"
                )
            self._take_packet(data, fds)
        except errors.OpError as exc:
            self._fail(f"the peer broke the shared-memory protocol: {exc.message}", exc)
        except BaseException as exc:  # never leave the connection half-read and open
            self._fail(f"reading the shared-memory connection failed: {exc!r}")
            raise
        finally:
            for fd in fds:
                os.close(fd)
            if self._failure is not None:
                # A segment mapped while another thread failed the connection goes too.
                self._mapped.clear()
                self._mapped_bytes = 0
        self._flush_pending()
        return True

    def _take_packet(self, data: bytes, fds: list[int]) -> None:
        op = data[0]
        if op == p.OP_MESSAGE:
            self._take_message(data)
        elif op == p.OP_SEGMENT and len(data) == p.SEGMENT.size:
            _, segment_id, size = p.SEGMENT.unpack(data)
            if len(fds) != 1:
                raise errors.DataLossError(f"segment {segment_id} came with {len(fds)} descriptors")
            if segment_id in self._mapped or segment_id == 0:
                raise errors.DataLossError(f"segment {segment_id} was passed twice")
            room = self.limits.max_mapped_bytes - self._mapped_bytes
            mapping = map_peer_segment(fds.pop(), size, room)
            self._mapped[segment_id] = _PeerSegment(mapping, size)
            self._mapped_bytes += size
        elif op == p.OP_RELEASE and len(data) == p.SEGMENT_ID.size:
            self.pool.release(p.SEGMENT_ID.unpack(data)[1])
        elif op == p.OP_RETIRE and len(data) == p.SEGMENT_ID.size:
            peer = self._mapped.pop(p.SEGMENT_ID.unpack(data)[1], None)
            if peer is not None:
                self._mapped_bytes -= peer.size
        else:
            raise errors.DataLossError(f"unknown packet (op {op}, {len(data)} bytes)")

    def _take_message(self, data: bytes) -> None:
        if len(data) < p.MESSAGE.size:
            raise errors.DataLossError(f"a message packet of {len(data)} bytes is too short")
        _, segment_id, tag_bytes, count = p.MESSAGE.unpack_from(data)
        if count > self.limits.max_frames:
            raise errors.DataLossError(f"a message announces {count} frames")
        table_end = p.MESSAGE.size + count * p.FRAME.size
        if len(data) != table_end + tag_bytes:
            raise errors.DataLossError(
                f"a message packet of {len(data)} bytes does not hold its {count} frames "
                f"and {tag_bytes}-byte tag"
            )
        spans = [p.FRAME.unpack_from(data, p.MESSAGE.size + i * p.FRAME.size) for i in range(count)]
        self._check_message([n for _, n in spans], tag_bytes, "received")
        tag = data[table_end:]
        if segment_id == 0:
            if any(n for _, n in spans):
                raise errors.DataLossError("a message without a segment has non-empty frames")
            self._deliver(ShmMessage(tag, [memoryview(b"") for _ in spans]))
            return
        peer = self._mapped.get(segment_id)
        if peer is None:
            raise errors.DataLossError(f"a message names segment {segment_id}, never passed")
        for offset, length in spans:
            if offset + length > peer.size:
                raise errors.DataLossError(
                    f"a frame at {offset} of {length} bytes overruns segment {segment_id} "
                    f"of {peer.size} bytes"
                )
        # One holder per message: the frames are views of it, and arrays decoded from them
        # keep it; when the last of them is gone, the segment goes back to the sender.
        holder = np.frombuffer(peer.mapping, dtype=np.uint8)
        weakref.finalize(holder, self._send_control, p.SEGMENT_ID.pack(p.OP_RELEASE, segment_id))
        whole = holder.data
        self._deliver(ShmMessage(tag, [whole[o : o + n] for o, n in spans]))

    def _deliver(self, message: ShmMessage) -> None:
        with self._lock:
            if self._queued >= self.limits.max_queued_messages:
                raise errors.ResourceExhaustedError(
                    f"the peer sent more than {self.limits.max_queued_messages} messages this "
                    "side has not received (ShmLimits.max_queued_messages)"
                )
            self._queued += 1
        self._inbox.put(message)

    # ---- lifetime ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or failed."""
        return self._failure is not None

    def _check_open(self) -> None:
        failure = self._failure
        if failure is not None:
            raise type(failure)(failure.message)

    def _fail(self, reason: str, cause: errors.OpError | None = None, keep: bool = False) -> None:
        with self._lock:
            if self._failure is not None:
                return
            self._failure = cause if cause is not None else errors.UnavailableError(reason)
        log.debug("shared-memory connection ends: %s", reason)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.pool.close(reason)
        self._mapped.clear()
        self._mapped_bytes = 0
        if not keep:
            self._drop_received()
        self._inbox.put(None)  # after any kept messages: receive returns those first

    def _drop_received(self) -> None:
        """Drop messages nobody received (none can be now), so their mappings go with
        them."""
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            self._queued = 0

    def close(self) -> None:
        """Close the connection: this side's segments are unmapped, the peer's dropped
        (messages still in use keep theirs until they go), a thread waiting on it wakes."""
        self._fail("the shared-memory connection was closed by this side")
        # A thread inside ``recvmsg`` or ``poll`` was woken by the shutdown: let it leave
        # before the descriptor is closed (and perhaps reused by another file).
        locked = self._read_lock.acquire(timeout=CLOSE_JOIN_SECONDS)
        try:
            self._drop_received()  # those the peer sent before it closed, too
            self._inbox.put(None)
            self._sock.close()
        finally:
            if locked:
                self._read_lock.release()

    def __enter__(self) -> ShmConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: Frames from this size on are copied by NumPy, which releases the GIL (other threads run
#: meanwhile) and ran 5-10% faster than a memoryview assignment here; together,
#: from ``copying.PARALLEL_BYTES`` on, with the process's copy helpers.
_NUMPY_COPY_BYTES = 64 << 10


def _copy_frames(
    target: memoryview, offsets: list[int], frames: list[memoryview], share: bool
) -> None:
    """Copy each frame into ``target`` at its offset (``share``: see ``send``)."""
    large: list[tuple[np.ndarray, np.ndarray]] = []
    for frame, offset in zip(frames, offsets, strict=True):
        n = frame.nbytes
        if n >= _NUMPY_COPY_BYTES:
            destination = np.frombuffer(target, np.uint8, count=n, offset=offset)
            large.append((destination, np.frombuffer(frame, np.uint8)))
        elif n:
            target[offset : offset + n] = frame
    if large:
        copying.copy_pairs(large, share=share)


def _byte_view(frame: Any) -> memoryview:
    if isinstance(frame, np.ndarray):
        # Some dtypes (bfloat16, float8) cannot export a typed buffer; their bytes can.
        if not frame.flags.c_contiguous:
            raise errors.InvalidArgumentError(
                "a frame sent through shared memory must be C-contiguous (this array is not)"
            )
        return frame.reshape(-1).view(np.uint8).data
    view = memoryview(frame)
    if not view.c_contiguous:
        raise errors.InvalidArgumentError(
            f"a frame sent through shared memory must be C-contiguous ({type(frame).__name__} "
            "is not)"
        )
    if view.format == "B" and view.ndim == 1:
        return view
    if not view.nbytes:
        return memoryview(b"")
    return np.frombuffer(view, dtype=np.uint8).data  # the same memory, as bytes


#: Room for the descriptors of one packet (a SEGMENT passes one; a few more are read and
#: closed, so that a peer passing extra ones cannot leak them here).
_ANCILLARY_BYTES = socket.CMSG_SPACE(4 * 4)


def _read_buffer(nbytes: int) -> memoryview:
    """This thread's buffer to read a packet of up to ``nbytes`` into; the packet is copied
    out at its size before the thread reads again. ``recvmsg`` would allocate the largest
    packet's room (about 130 KiB) for each read, 33 us a read instead of 6 where malloc
    gives those pages back; one buffer per connection would hold it for every idle one.
    Only reads use it, and a read never runs inside another on one thread (finalizers
    only send)."""
    buffer: memoryview | None = getattr(_THREAD, "packet_buffer", None)
    if buffer is None or len(buffer) < nbytes:
        buffer = _THREAD.packet_buffer = memoryview(bytearray(nbytes))
    return buffer


def _take_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    return fds
