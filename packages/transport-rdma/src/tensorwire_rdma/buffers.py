"""Registered memory kept off the hot path: a pinned buffer pool and a registration cache.

Registering memory with a NIC pins its pages and costs about as much as copying it, so it
must not happen per transfer:

* ``registered_pool`` is the kit's ``BufferPool`` (``tensorwire.transport.kit.pool``) with
  each buffer registered once. A buffer given to the user as a received frame, or lent to
  a peer (a lease in a ``TicketStore``), comes back to the pool by itself when the last
  reference to it is gone, so each large tensor owns its own buffer (one live array never
  pins a whole message) and the next transfer of that size registers nothing.
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
from typing import Any

import numpy as np
from tensorwire.transport.kit.pool import BufferPool

from .verbs import Device

log = logging.getLogger(__name__)


def address_of(buf: memoryview) -> int:
    """The address of a C-contiguous buffer's first byte (works for read-only buffers)."""
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf.nbytes else 0


class _RegisteredBuffers:
    """What the kit's pool calls once per receive buffer it makes: a memory region the
    NIC may write into and the peer may read from."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def __call__(self, array: np.ndarray) -> Any:
        import pyverbs.enums as e
        from pyverbs.mr import MR

        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_REMOTE_WRITE
        return MR(self.device.pd, max(array.nbytes, 1), access, address=int(array.ctypes.data))


def registered_pool(device: Device, keep_bytes: int = 512 << 20) -> BufferPool:
    """The kit's receive-buffer pool, each buffer registered with ``device``: its one
    ownership rule (a buffer is reused once nothing refers to it) holds for RDMA too."""
    return BufferPool(keep_bytes, register=_RegisteredBuffers(device))


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
