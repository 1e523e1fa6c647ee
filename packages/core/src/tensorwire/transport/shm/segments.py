"""Shared-memory segments: anonymous memfds, sealed against shrinking, mapped shared.

A segment is a ``memfd_create`` file: it has no name in any file system, so nothing outlives
the processes that hold it (a ``kill -9`` included: the kernel drops the dead process's
descriptors and mappings, and frees the memory once the last of them is gone). ``/dev/shm``
names would survive a crash and need a cleaner.

The creator seals the size (``F_SEAL_SHRINK | F_SEAL_GROW``, then ``F_SEAL_SEAL``) before the
descriptor leaves the process. A receiver maps a peer's segment only after checking those
seals and the size: a peer that could shrink a file another process has mapped would make
that process's next read of the lost pages die of SIGBUS.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import sys
from typing import Any

from ... import errors

__all__ = ["MEMFD_NAME", "Segment", "map_peer_segment", "memfd_mappings", "memfd_descriptors"]

log = logging.getLogger(__name__)

#: The name every segment carries in ``/proc/PID/maps`` and ``/proc/PID/fd``
#: (``/memfd:tensorwire-shm (deleted)``), so leaks can be counted.
MEMFD_NAME = "tensorwire-shm"
#: Seals a segment carries before it is passed to a peer.
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
#: MFD_NOEXEC_SEAL (Linux 6.3): says the segment is never executable, which newer kernels
#: log a warning about when left unsaid. Older kernels refuse the flag; then it is left out.
_MFD_NOEXEC_SEAL = 0x0008
_noexec_flag = [_MFD_NOEXEC_SEAL]
#: ``mmap`` keeps a duplicate of the descriptor unless told not to (Python 3.13+): one more
#: descriptor per segment on older Pythons, closed with the mapping.
_MMAP_OPTIONS: dict[str, Any] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def _memfd(size: int) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    while True:
        try:
            fd = os.memfd_create(MEMFD_NAME, flags | _noexec_flag[0])
            break
        except OSError:
            if not _noexec_flag[0]:
                raise
            _noexec_flag[0] = 0
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _advise_huge_pages(mapping: mmap.mmap) -> None:
    """Ask for transparent huge pages where the kernel gives them to shared memory
    (``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` = advise or within_size): NumPy
    asks for them on its large arrays, and copies between 4 KiB pages ran about 20% slower
    than memcpy between NumPy's arrays here (16 MiB, shmem huge pages off)."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or len(mapping) < (2 << 20):
        return
    try:
        mapping.madvise(advice)
    except OSError:
        pass  # not for this kernel or file: 4 KiB pages it is


class Segment:
    """A segment this process created: its memory, mapped read-write, and (until it has
    been passed to the peer) its descriptor.

    Args:
      segment_id: the number the peer knows it by (unique on one connection).
      size: its size in bytes (more than 0).

    Raises:
      ResourceExhaustedError: the kernel would not create or map it (out of memory, or of
        descriptors), with its reason.
    """

    def __init__(self, segment_id: int, size: int) -> None:
        self.id = segment_id
        self.size = size
        self._mapping: mmap.mmap | None = None
        self.view: memoryview | None = None
        try:
            self.fd: int | None = _memfd(size)
        except OSError as exc:
            raise errors.ResourceExhaustedError(
                f"could not create a shared-memory segment of {size} bytes: {exc}"
            ) from exc
        try:
            self._mapping = mmap.mmap(self.fd, size, mmap.MAP_SHARED, **_MMAP_OPTIONS)
        except OSError as exc:
            self.close()
            raise errors.ResourceExhaustedError(
                f"could not map a shared-memory segment of {size} bytes: {exc}"
            ) from exc
        _advise_huge_pages(self._mapping)
        self.view = memoryview(self._mapping)

    def drop_descriptor(self) -> None:
        """Close the descriptor once the peer has its own; the mapping keeps the memory."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Unmap and close this process's hold on the segment (the peer's mapping, if any,
        keeps the memory until the peer drops it too)."""
        self.drop_descriptor()
        view, mapping = self.view, self._mapping
        self.view = self._mapping = None
        try:
            if view is not None:
                view.release()
            if mapping is not None:
                mapping.close()
        except BufferError:
            # A view of it is still alive somewhere (a send interrupted mid-copy): the
            # mapping goes when that view does.
            log.debug("segment %d unmapped later: a view of it is still alive", self.id)

    def __repr__(self) -> str:
        return f"Segment(id={self.id}, size={self.size})"


def map_peer_segment(fd: int, size: int, limit: int) -> mmap.mmap:
    """Map a segment a peer passed, after checking it; closes ``fd`` whatever happens.

    Args:
      fd: the descriptor received over the Unix socket.
      size: the size the peer announced.
      limit: the most bytes this segment may have: what is left of this side's
        ``max_mapped_bytes`` (checked before anything is mapped).

    Returns:
      A shared, read-write mapping of ``size`` bytes.

    Raises:
      ResourceExhaustedError: the announced size is over ``limit``, or mapping failed.
      DataLossError: the descriptor is not a sealed memfd of exactly ``size`` bytes.
    """
    try:
        if not 0 < size <= limit:
            raise errors.ResourceExhaustedError(
                f"the peer offered a shared-memory segment of {size} bytes; this side has "
                f"room for {max(limit, 0)} more bytes of the peer's segments "
                "(ShmLimits.max_mapped_bytes)"
            )
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise errors.DataLossError(
                f"the peer passed a descriptor that is not a sealable memfd ({exc})"
            ) from None
        if seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) != (
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        ):
            raise errors.DataLossError(
                f"the peer passed a segment whose size is not sealed (seals {seals:#x}); "
                "mapping it would let the peer shrink it under this process"
            )
        actual = os.fstat(fd).st_size
        if actual != size:
            raise errors.DataLossError(
                f"the peer announced a segment of {size} bytes but passed one of {actual}"
            )
        try:
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, **_MMAP_OPTIONS)
            _advise_huge_pages(mapping)
            return mapping
        except OSError as exc:
            raise errors.ResourceExhaustedError(
                f"could not map the peer's shared-memory segment of {size} bytes: {exc}"
            ) from exc
    finally:
        os.close(fd)


def _is_segment(text: str) -> bool:
    return text.startswith(f"/memfd:{MEMFD_NAME}")


def memfd_descriptors(pid: int | str = "self") -> int:
    """How many descriptors of process ``pid`` are segments (for leak checks).

    Args:
      pid: a process id, or "self".

    Returns:
      The count of ``/proc/PID/fd`` entries naming a segment memfd.

    Examples:
        >>> from tensorwire.transport.shm import memfd_descriptors
        >>> from tensorwire.transport.shm.segments import Segment
        >>> before = memfd_descriptors()
        >>> segment = Segment(1, 4096)
        >>> memfd_descriptors() - before >= 1
        True
        >>> segment.close()
        >>> memfd_descriptors() == before
        True
    """
    count = 0
    base = f"/proc/{pid}/fd"
    for entry in os.listdir(base):
        try:
            if _is_segment(os.readlink(f"{base}/{entry}")):
                count += 1
        except OSError:
            continue  # closed while listing
    return count


def memfd_mappings(pid: int | str = "self") -> int:
    """How many mappings of process ``pid`` are segments (for leak checks).

    Args:
      pid: a process id, or "self".

    Returns:
      The count of ``/proc/PID/maps`` lines mapping a segment memfd.

    Examples:
        >>> from tensorwire.transport.shm import memfd_mappings
        >>> from tensorwire.transport.shm.segments import Segment
        >>> before = memfd_mappings()
        >>> segment = Segment(1, 4096)
        >>> memfd_mappings() - before
        1
        >>> segment.close()
        >>> memfd_mappings() == before
        True
    """
    return len(mapped_ranges(pid))


def mapped_ranges(pid: int | str = "self") -> list[tuple[int, int]]:
    """The address ranges ``[start, end)`` at which process ``pid`` maps segments (to check
    that decoded arrays lie inside one: zero copy).

    Args:
      pid: a process id, or "self".

    Returns:
      One ``(start, end)`` per ``/proc/PID/maps`` line mapping a segment memfd.
    """
    ranges = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if f"/memfd:{MEMFD_NAME}" in line:
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges
