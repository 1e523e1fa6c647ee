"""Byte I/O of one side-channel connection (``bulk``): few system calls per message.

A side-channel exchange is a handful of small fields (an op byte, a header, lengths, a
status) around large frames. Read one ``recv`` at a time, each field costs a system call and,
with a timeout set, a ``poll`` as well: on loopback that was about 150 us per large call,
half the time TCP needs to move a whole MiB. So ``Wire`` reads ahead into a small
buffer, from which the fields come without further calls, and receives large frames straight
into their final memory (after the bytes already read ahead); and it writes a header and all
its frames with one ``sendmsg`` (gather I/O) instead of one ``sendall`` each.

Reading ahead is safe because the protocol is strictly request/response on a connection:
neither side sends before it has the other's answer, so what is read ahead always belongs
to the message being read. A pooled connection that holds unread bytes is out of step and
is not reused (``Wire.clean``).

The socket is non-blocking and waits are ``poll`` s with the time left: a read polls, then
receives; a send is tried at once and polls only when the socket buffer is full. (A socket
timeout would cost an ``ioctl`` per call to set it, and a ``poll`` before every send: with
the small calls of the side channel that was half of the system calls of an exchange.)

A wire may *spin* before it waits (``spin_seconds``, ``kit.spinning``): a read tries
``recv`` without blocking for that long before it sleeps in ``poll``. A wire whose bytes
are already there pays nothing for it; ``recv`` releases the GIL, so other threads run
meanwhile. Over a link (a peer not on loopback) only the first bytes of a frame and the rest
of a small one (under ``SPIN_BODY_BYTES``) are spun for: the rest of a large frame arrives
piece by piece at the link's speed, and a receiver spinning for each piece takes the CPU that
the sender and the network stack need to deliver it (between two network namespaces on two
cores, ``benchmarks/across_hosts.py``: a 1 MiB read 0.9-1.0 ms spinning, 0.56-0.62 ms not;
4 MiB 0.59-0.94x of raw TCP, 0.88-1.07x; six runs each, see the design document). On
loopback the sender's own system call copies the bytes in at memory speed, and spinning
for them still pays (1 MiB read 0.33 ms, 0.42 ms without).

Every call takes an absolute deadline on the ``time.monotonic()`` clock (or None); passing
it raises ``TimeoutError``. A peer that closes early raises ``ConnectionError``.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Sequence

from tensorwire.transport.kit.spinning import Spinner
from tensorwire.transport.security import is_loopback

__all__ = ["Wire"]

#: Bytes read ahead at most per ``recv``; large frames bypass the buffer.
READ_AHEAD_BYTES = 16 * 1024
#: Over a link, the rest of a frame at least this large is waited for asleep, not spun for
#: (module docstring).
SPIN_BODY_BYTES = 64 * 1024
#: Buffers handed to one ``sendmsg`` at most (Linux's IOV_MAX is 1024).
MAX_GATHER = 512


def _on_loopback(sock: socket.socket) -> bool:
    """Whether ``sock``'s peer is this host's loopback (False when that cannot be told)."""
    try:
        peer = sock.getpeername()
    except OSError:
        return False
    return isinstance(peer, tuple) and is_loopback(str(peer[0]))


def _bytes_view(part: bytes | memoryview) -> memoryview:
    """A flat unsigned-byte view, so that partial sends can be resumed at a byte offset."""
    view = memoryview(part)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Wire:
    """A connected socket with read-ahead and gathered writes. Not thread safe: one
    exchange at a time, as the side channel uses its connections."""

    def __init__(self, sock: socket.socket, spin_seconds: float = 0.0) -> None:
        self.sock = sock
        #: How a read tries ``recv`` before it sleeps in ``poll`` (module docstring).
        self.spinner = Spinner(spin_seconds)
        #: Whether the rest of a large frame is spun for too (``read_into``).
        self.spins_for_bodies = _on_loopback(sock)
        sock.setblocking(False)
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._polling = select.POLLIN
        self._buffer = bytearray(READ_AHEAD_BYTES)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def close(self) -> None:
        self.sock.close()

    def shutdown(self) -> None:
        """Wake whoever waits on this connection (it will see it closed)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- reading -------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Bytes read ahead and not consumed yet."""
        return self._end - self._start

    def _wait(self, events: int, deadline: float | None) -> None:
        """Until the socket is ready for ``events`` (or closed); ``TimeoutError`` when the
        deadline passes first."""
        timeout = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            timeout = math.ceil(remaining * 1000)
        if events != self._polling:
            self._poller.modify(self.sock, events)
            self._polling = events
        if not self._poller.poll(timeout):
            raise TimeoutError("deadline passed")

    def _recv_into(self, view: memoryview, deadline: float | None, spin: bool = True) -> int:
        if spin and self.spinner.seconds:
            recv_into = self.sock.recv_into

            def attempt() -> int | None:
                try:
                    return recv_into(view)
                except BlockingIOError:
                    return None

            got = self.spinner.spin(attempt)
            if got is not None:
                return got
        while True:
            self._wait(select.POLLIN, deadline)
            try:
                got = self.sock.recv_into(view)
            except BlockingIOError:  # a spurious wake-up
                continue
            self.spinner.woke()
            return got

    def _fill(self, deadline: float | None) -> None:
        """Read more into the buffer (at least one byte)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            size = self._end - self._start
            self._view[:size] = self._view[self._start : self._end]
            self._start, self._end = 0, size
        n = self._recv_into(self._view[self._end :], deadline)
        if n == 0:
            raise ConnectionError("the peer closed the connection")
        self._end += n

    def read(self, size: int, deadline: float | None) -> bytes:
        """Exactly ``size`` bytes."""
        if size > len(self._buffer):
            large = bytearray(size)
            self.read_into(memoryview(large), deadline)
            return bytes(large)
        while self._end - self._start < size:
            if self._start + size > len(self._buffer):
                # Not enough room after the unread bytes: move them to the front first.
                unread = self._end - self._start
                self._view[:unread] = self._view[self._start : self._end]
                self._start, self._end = 0, unread
            self._fill(deadline)
        out = bytes(self._view[self._start : self._start + size])
        self._start += size
        return out

    def read_into(self, view: memoryview, deadline: float | None) -> None:
        """Fill ``view`` exactly: bytes read ahead first, then straight from the socket."""
        have = min(self._end - self._start, len(view))
        if have:
            view[:have] = self._view[self._start : self._start + have]
            self._start += have
        got = have
        size = len(view)
        while got < size:
            spin = got == 0 or self.spins_for_bodies or size - got < SPIN_BODY_BYTES
            n = self._recv_into(view[got:], deadline, spin)
            if n == 0:
                raise ConnectionError(f"the peer closed the connection {size - got} bytes early")
            got += n

    def skip(self, size: int, deadline: float | None) -> None:
        """Read and drop ``size`` bytes (padding, or a refused message, to stay in step)."""
        have = min(self._end - self._start, size)
        self._start += have
        size -= have
        if size <= 0:
            return
        scratch = memoryview(bytearray(min(size, 1 << 20)))
        while size > 0:
            chunk = scratch[: min(size, len(scratch))]
            self.read_into(chunk, deadline)
            size -= len(chunk)

    # -- writing -------------------------------------------------------------------------
    def send(self, parts: Sequence[bytes | memoryview], deadline: float | None) -> None:
        """Send every part, in order, with as few ``sendmsg`` calls as the kernel allows."""
        pending = [_bytes_view(p) for p in parts]
        pending = [p for p in pending if p.nbytes]
        if deadline is not None and deadline <= time.monotonic():
            raise TimeoutError("deadline passed")
        i = 0
        while i < len(pending):
            try:
                sent = self.sock.sendmsg(pending[i : i + MAX_GATHER])
            except BlockingIOError:  # the socket buffer is full: wait for room
                self._wait(select.POLLOUT, deadline)
                continue
            while sent:
                first = pending[i]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    i += 1
                else:
                    pending[i] = first[sent:]
                    sent = 0

    # -- pooling -------------------------------------------------------------------------
    def clean(self) -> bool:
        """Whether an idle connection can serve the next exchange: nothing unread, and the
        peer neither closed it (idle timeout, restart) nor sent anything unexpected —
        either would make it readable."""
        if self.buffered:
            return False
        try:
            if self._polling != select.POLLIN:
                self._poller.modify(self.sock, select.POLLIN)
                self._polling = select.POLLIN
            return not self._poller.poll(0)
        except (OSError, ValueError):
            return False
