"""Registered memory kept off the hot path: a pinned buffer pool and a registration cache.

Registering memory with a NIC pins its pages and costs about as much as copying it, so it
must not happen per transfer:

* ``BufferPool`` hands out registered receive buffers ("slabs", sized in powers of
  two). A slab given to the user as a received frame comes back to the pool by itself when
  the last object viewing it is gone, so each large tensor owns its own buffer (one live
  array never pins a whole message) and the next transfer of that size registers nothing.
* ``RegistrationCache`` registers a sender's own memory in place (zero copy) and keeps
  the registration, and a reference to the memory, for the next send of the same buffer:
  holding the reference is what makes a cache hit safe, since memory we keep alive cannot be
  freed and reused at the same address behind a stale registration.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import weakref
from typing import Any

import numpy as np

from .verbs import Device

log = logging.getLogger(__name__)

MIN_SLAB = 64 * 1024


def address_of(buf: memoryview) -> int:
    """The address of a C-contiguous buffer's first byte (works for read-only buffers)."""
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf.nbytes else 0


def _size_class(nbytes: int) -> int:
    return max(MIN_SLAB, 1 << (max(nbytes, 1) - 1).bit_length())


class Slab:
    """A registered, pool-owned buffer."""

    __slots__ = ("array", "mr", "addr", "lkey", "rkey", "capacity", "__weakref__")

    def __init__(self, device: Device, capacity: int) -> None:
        import pyverbs.enums as e
        from pyverbs.mr import MR

        self.array = np.empty(capacity, dtype=np.uint8)
        self.capacity = capacity
        self.addr = int(self.array.ctypes.data)
        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_REMOTE_WRITE
        self.mr = MR(device.pd, capacity, access, address=self.addr)
        self.lkey = int(self.mr.lkey)
        self.rkey = int(self.mr.rkey)

    def close(self) -> None:
        try:
            self.mr.close()
        except Exception:  # noqa: BLE001
            log.debug("deregistering a slab failed", exc_info=True)


class BufferPool:
    """Registered slabs by size class; keeps at most ``keep_bytes`` of idle ones."""

    def __init__(self, device: Device, keep_bytes: int = 512 << 20) -> None:
        self.device = device
        self.keep_bytes = keep_bytes
        self._lock = threading.Lock()
        self._free: dict[int, list[Slab]] = collections.defaultdict(list)
        self._idle = 0
        self.registrations = 0  # slabs ever registered: a test can see reuse

    def take(self, nbytes: int) -> Slab:
        size = _size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._idle -= size
                return free.pop()
        self.registrations += 1
        return Slab(self.device, size)

    def give_back(self, slab: Slab) -> None:
        with self._lock:
            if self._idle + slab.capacity <= self.keep_bytes:
                self._free[slab.capacity].append(slab)
                self._idle += slab.capacity
                return
        slab.close()

    def discard(self, slab: Slab) -> None:
        """A slab a failed transfer may still write into: deregister it, never reuse it."""
        slab.close()

    def hand_out(self, slab: Slab, nbytes: int) -> memoryview:
        """``nbytes`` of ``slab`` as a frame for the user; the slab returns to the pool when
        nothing views it any more."""
        view = slab.array[:nbytes]
        # Objects built from the memoryview (NumPy arrays included) keep it, and through it
        # ``view``, alive; ``slab`` itself is reachable only from here and the pool.
        weakref.finalize(view, self.give_back, slab)
        return memoryview(view)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            slabs = [s for free in self._free.values() for s in free]
            self._free.clear()
            self._idle = 0
        for s in slabs:
            s.close()


class RegistrationCache:
    """Memory regions over callers' own buffers, reused while the buffer is the same.

    An entry holds a reference to the buffer; entries in use by a transfer are never evicted;
    idle ones go least recently used first once more than ``max_bytes`` are registered.
    """

    def __init__(self, device: Device, max_bytes: int = 1 << 30) -> None:
        self.device = device
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[int, int], list[Any]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def acquire(self, buf: memoryview) -> tuple[int, int, int]:
        """(addr, lkey, rkey) of ``buf``, registered; pair with ``release``."""
        import pyverbs.enums as e
        from pyverbs.mr import MR

        addr = address_of(buf)
        key = (addr, buf.nbytes)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry[2] += 1
                self.hits += 1
                mr = entry[1]
                return addr, int(mr.lkey), int(mr.rkey)
        # The peer only reads this memory: REMOTE_READ alone lets read-only buffers
        # (``bytes``) register too.
        mr = MR(self.device.pd, buf.nbytes, e.IBV_ACCESS_REMOTE_READ, address=addr)
        with self._lock:
            self.misses += 1
            raced = self._entries.get(key)
            if raced is not None:  # another thread registered the same buffer meanwhile
                raced[2] += 1
                mr.close()
                return addr, int(raced[1].lkey), int(raced[1].rkey)
            self._entries[key] = [buf, mr, 1]
            self._bytes += buf.nbytes
            evict = self._evict_locked()
        for old in evict:
            old.close()
        return addr, int(mr.lkey), int(mr.rkey)

    def release(self, buf: memoryview) -> None:
        key = (address_of(buf), buf.nbytes)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[2] -= 1
            evict = self._evict_locked()
        for old in evict:
            old.close()

    def forget(self, buf: memoryview) -> None:
        """Drop a registration a failed transfer used (the peer may still be reading)."""
        key = (address_of(buf), buf.nbytes)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry[0].nbytes
        if entry is not None:
            entry[1].close()

    def _evict_locked(self) -> list[Any]:
        out: list[Any] = []
        if self._bytes <= self.max_bytes:
            return out
        for key in list(self._entries):
            if self._bytes <= self.max_bytes:
                break
            buf, mr, users = self._entries[key]
            if users > 0:
                continue
            del self._entries[key]
            self._bytes -= buf.nbytes
            out.append(mr)
        return out

    def close(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self._bytes = 0
        for entry in entries:
            entry[1].close()


_ids = itertools.count(1)


def next_id() -> int:
    return next(_ids)
