"""Frozen segments: arrays kept in sealed, write-protected memfds, lent to peers uncopied.

A process that hands out the same large array many times (a parameter server's variable,
read by every worker between two updates) can ``freeze`` it once: its bytes are copied into
a memfd of their own, which is then sealed against writing (``F_SEAL_WRITE``, checked by
every receiver) and mapped read-only. ``ShmConnection.send`` recognises a frame lying in a
frozen segment and lends it instead of copying it: the descriptor travels to each peer
once, and each message names the bytes. The receiver maps them *privately*
(``MAP_PRIVATE``) for each message, so the arrays it decodes are writable, and what it
writes stays in its own pages (copy on write); what it does not write it reads from the
very pages the sender froze. No side ever copies the bytes again.

The seal is what makes the lending safe: pages of a private mapping that the receiver has
not written would show a later write by the sender, but no process can write a file that
carries ``F_SEAL_WRITE``, so the bytes a receiver got never change under it.

Lifetime: a frozen segment lives as long as the array ``freeze`` returned, or any view of
it, in this process. When the last of them goes, its descriptor is closed and each peer that
got it is told (``RETIRE_FROZEN``) to close its own; arrays peers decoded from it keep their
private mappings, and the kernel frees the memory with the last of them. Like the pool's
segments, a frozen segment has no name anywhere, so no ``kill -9`` leaves it behind.
"""

from __future__ import annotations

import bisect
import fcntl
import itertools
import mmap
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import errors
from .segments import MMAP_OPTIONS, SEALS, SIZE_SEALS, advise_huge_pages, new_memfd

if TYPE_CHECKING:
    from .connection import ShmConnection

__all__ = [
    "FROZEN_SEALS",
    "LEND_BYTES",
    "LENT_SEALS",
    "FrozenSegment",
    "find_frozen",
    "freeze",
    "is_frozen",
    "map_lent",
]

#: Frames from this size on are lent when they lie in a frozen segment; smaller ones are
#: copied (a copy of a few hundred KiB costs less than a mapping per message).
LEND_BYTES = 256 << 10
#: The seals a frozen segment carries: its size and its contents are fixed for good.
FROZEN_SEALS = SEALS | fcntl.F_SEAL_WRITE
#: The seals a receiver checks before it maps a frozen segment a peer lends.
LENT_SEALS = SIZE_SEALS | fcntl.F_SEAL_WRITE

_ids = itertools.count(1)


class FrozenSegment:
    """What this process knows of one frozen segment: its descriptor (for peers that have
    not got it yet), where it is mapped here, and the connections it was lent on."""

    __slots__ = ("id", "fd", "size", "start", "_peers", "_lock", "__weakref__")

    def __init__(self, fd: int, size: int, start: int) -> None:
        self.id = next(_ids)
        self.fd: int | None = fd
        self.size = size
        self.start = start
        self._peers: weakref.WeakSet[ShmConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def lent_to(self, connection: ShmConnection) -> bool:
        """Record that ``connection`` got this segment's descriptor; False when the segment
        is already gone (its descriptor closed: copy instead)."""
        with self._lock:
            if self.fd is None:
                return False
            self._peers.add(connection)
            return True

    def _gone(self) -> None:
        """The last view of it in this process went: close it here, tell its peers."""
        _forget(self)
        with self._lock:
            fd, self.fd = self.fd, None
            peers = list(self._peers)
            self._peers.clear()
        if fd is not None:
            os.close(fd)
        for connection in peers:
            connection.retire_frozen(self.id)


# Frozen segments by where they are mapped here, for ``find_frozen``.
_registry_lock = threading.Lock()
_starts: list[int] = []
_by_start: dict[int, FrozenSegment] = {}


def _remember(segment: FrozenSegment) -> None:
    with _registry_lock:
        bisect.insort(_starts, segment.start)
        _by_start[segment.start] = segment


def _forget(segment: FrozenSegment) -> None:
    with _registry_lock:
        if _by_start.get(segment.start) is segment:
            del _by_start[segment.start]
            _starts.pop(bisect.bisect_left(_starts, segment.start))


def freeze(array: Any) -> np.ndarray:
    """A read-only copy of ``array`` (same dtype and shape) in a frozen segment, lent rather
    than copied whenever it is sent through shared memory.

    Args:
      array: a NumPy array (any dtype whose items NumPy can copy; non-contiguous ones are
        made contiguous), not empty.

    Returns:
      The copy. It is read-only, for the bytes may be lent to peers at any time.

    Raises:
      InvalidArgumentError: the array is empty, or holds Python objects.
      ResourceExhaustedError: the kernel would not create or map the segment.

    Examples:
        >>> import numpy as np
        >>> from tensorwire.transport.shm.frozen import freeze, is_frozen
        >>> value = freeze(np.arange(6.0).reshape(2, 3))
        >>> value.sum(), value.flags.writeable, is_frozen(value)
        (15.0, False, True)
    """
    source = np.ascontiguousarray(array)
    if source.dtype.hasobject or source.nbytes == 0:
        raise errors.InvalidArgumentError(
            f"only non-empty arrays of plain values can be frozen, not {source.dtype} "
            f"{source.shape}"
        )
    size = source.nbytes
    try:
        fd = new_memfd(size, seal=False)
    except OSError as exc:
        raise errors.ResourceExhaustedError(
            f"could not create a frozen shared-memory segment of {size} bytes: {exc}"
        ) from exc
    try:
        _fill(fd, size, source)
        # No writable mapping is left: the write seal takes, and holds for good.
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, FROZEN_SEALS)
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ, **MMAP_OPTIONS)
    except OSError as exc:
        os.close(fd)
        raise errors.ResourceExhaustedError(
            f"could not freeze {size} bytes in shared memory: {exc}"
        ) from exc
    except BaseException:
        os.close(fd)
        raise
    frozen = np.frombuffer(mapping, dtype=source.dtype).reshape(source.shape)
    segment = FrozenSegment(fd, size, frozen.ctypes.data)
    _remember(segment)
    # Every view of the array keeps the mapping, so the mapping's end is the last view's.
    weakref.finalize(mapping, segment._gone)
    return frozen


def _fill(fd: int, size: int, source: np.ndarray) -> None:
    # On this thread alone: the write seal needs every writable mapping gone, and views a
    # copy helper might still hold would keep this one.
    writable = mmap.mmap(fd, size, mmap.MAP_SHARED, **MMAP_OPTIONS)
    try:
        advise_huge_pages(writable)
        target = np.frombuffer(writable, np.uint8)
        np.copyto(target, source.reshape(-1).view(np.uint8))
        del target
    finally:
        writable.close()


def find_frozen(view: memoryview) -> tuple[FrozenSegment, int] | None:
    """The frozen segment ``view`` lies in, with the view's offset in it; None when it lies
    in none (or in more than one segment's end: never lent)."""
    if not _starts:
        return None
    address = np.frombuffer(view, np.uint8).ctypes.data
    with _registry_lock:
        i = bisect.bisect_right(_starts, address) - 1
        if i < 0:
            return None
        segment = _by_start[_starts[i]]
    offset = address - segment.start
    if offset + view.nbytes > segment.size:
        return None
    return segment, offset


def is_frozen(array: np.ndarray) -> bool:
    """Whether ``array``'s bytes lie in a frozen segment (sending it lends them)."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or not array.nbytes:
        return False
    return find_frozen(array.reshape(-1).view(np.uint8).data) is not None


def map_lent(fd: int, offset: int, length: int) -> memoryview:
    """(The receiver.) A writable, private view of ``length`` bytes at ``offset`` of a frozen
    segment a peer lent: its pages are the peer's until this process writes one, which then
    gets a copy of its own. The mapping goes with the last view of it.

    Raises:
      ResourceExhaustedError: the kernel would not map it.
    """
    if not length:
        return memoryview(b"")
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(
            fd,
            offset + length - start,
            mmap.MAP_PRIVATE,
            mmap.PROT_READ | mmap.PROT_WRITE,
            offset=start,
            **MMAP_OPTIONS,
        )
    except OSError as exc:
        raise errors.ResourceExhaustedError(
            f"could not map {length} bytes the peer lent from a frozen segment: {exc}"
        ) from exc
    return memoryview(mapping)[offset - start : offset - start + length]
