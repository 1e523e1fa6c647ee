"""Receive buffers for large messages, recycled once nothing refers to them any more.

A fresh multi-MiB buffer costs a page fault per page on first touch; on the machines
measured here that halved the throughput of a 256 MiB transfer (benchmarks/transport.py:
about 0.5x raw gRPC streaming with fresh buffers, about 1.0x with recycled ones). So large
receive buffers come from a ``BufferPool``, whatever moved the bytes in (gRPC chunks, the
TCP side channel, RDMA READs).

The ownership rule, the same for every user: **a buffer is handed out again only when the
pool holds the last reference to it.** Every frame, memoryview and NumPy array made from it
must be gone (CPython reference counts tell us exactly that), and so must whatever a
transport keeps it in while a peer may still read it (an RDMA lease in a ``TicketStore``).
Memory is never shared between two live messages, and nobody gives a buffer back by hand.
A buffer that a failed transfer may still write into is ``discard`` ed instead: the pool
forgets it and never hands it out again.

A pool may ``register`` each buffer it makes (RDMA pins it with the NIC, which costs about
as much as copying it): the handle is made once per buffer and closed when the pool drops
the buffer. Such a pool keeps every buffer it handed out (an unregistered one would be
useless to its caller) and trims free ones beyond its budget.

The pool keeps at most ``max_bytes`` bytes (0 turns it off) and drops buffers unused for
``idle_seconds``, like an allocator that grows to its peak and trims when idle.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "BufferPool",
    "DEFAULT_POOL_BYTES",
    "IDLE_SECONDS",
    "MIN_POOLED_BYTES",
    "POOL_BYTES_ENV",
    "Registration",
    "default_pool",
]

log = logging.getLogger(__name__)

#: The budget of ``default_pool`` in bytes (the grpc transport's receive buffers).
POOL_BYTES_ENV = "TENSORWIRE_GRPC_BUFFER_POOL_BYTES"
DEFAULT_POOL_BYTES = 1 << 30
#: Smaller buffers come from malloc's own free lists, already warm.
MIN_POOLED_BYTES = 1 << 20
IDLE_SECONDS = 30.0

#: ``register(array) -> handle``: what a pool does once to each buffer it makes; the
#: handle's ``close()`` is called when the pool drops the buffer.
Registration = Callable[[np.ndarray], Any]

# The entry list and getrefcount's own argument: a free buffer has no other reference.
_FREE_REFCOUNT = 2

_pools: weakref.WeakSet[BufferPool] = weakref.WeakSet()


class BufferPool:
    """Hands out uint8 arrays of at least the size asked for, reusing free ones.

    Args:
      max_bytes: bytes of buffers the pool keeps at most (0: no pooling).
      min_pooled_bytes: smaller requests get a fresh, unpooled array (ignored with
        ``register``: every buffer is pooled then).
      register: called once with each buffer the pool makes; the returned handle is closed
        when the pool drops the buffer (see the module docstring).
      idle_seconds: a free buffer unused this long is dropped at the next ``take``.

    Examples:
        >>> from tensorwire.transport.kit.pool import BufferPool
        >>> pool = BufferPool(max_bytes=8 << 20)
        >>> first = pool.take(2 << 20)
        >>> address = first.ctypes.data
        >>> del first  # nothing refers to it any more: it is free
        >>> pool.take(2 << 20).ctypes.data == address
        True
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_POOL_BYTES,
        *,
        min_pooled_bytes: int = MIN_POOLED_BYTES,
        register: Registration | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.max_bytes = max_bytes
        self._min_pooled = 0 if register is not None else min_pooled_bytes
        self._register = register
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        # [array, last time handed out, registration]; the list holds the pool's only
        # reference to a free array.
        self._entries: list[list[Any]] = []
        self._held = 0
        #: Buffers ever made (a test can see reuse: it does not grow).
        self.made = 0
        _pools.add(self)

    def _reset_after_fork(self) -> None:
        # A parent thread may have held the lock at the fork; the buffers are ours now.
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 array of at least ``nbytes`` bytes that nothing else refers to."""
        if self._register is None and (nbytes < self._min_pooled or self.max_bytes <= 0):
            return np.empty(nbytes, dtype=np.uint8)
        return self._take(nbytes)[0]

    def take_registered(self, nbytes: int) -> tuple[np.ndarray, Any]:
        """Like ``take``, with the buffer's registration handle (``register``'s result)."""
        entry = self._take(nbytes)
        return entry[0], entry[2]

    def _take(self, nbytes: int) -> list[Any]:
        now = time.monotonic()
        largest = nbytes + nbytes // 4 + MIN_POOLED_BYTES  # don't waste a huge one
        with self._lock:
            best: list[Any] | None = None
            for entry in self._entries:
                if sys.getrefcount(entry[0]) != _FREE_REFCOUNT:
                    continue
                size = entry[0].nbytes
                if nbytes <= size <= largest and (best is None or size < best[0].nbytes):
                    best = entry
            if best is not None:
                best[1] = now
                return best
            dropped = self._trim(now, nbytes)
        self._close(dropped)
        array = np.empty(nbytes, dtype=np.uint8)
        handle = self._register(array) if self._register is not None else None
        entry = [array, now, handle]
        with self._lock:
            self.made += 1
            if self._register is not None or self._held + nbytes <= self.max_bytes:
                self._entries.append(entry)
                self._held += nbytes
        return entry

    def _trim(self, now: float, room: int) -> list[list[Any]]:
        """Drop idle free buffers, then free ones oldest first until ``room`` fits; the
        dropped entries, whose registrations the caller closes outside the lock."""
        keep, dropped = [], []
        for entry in sorted(self._entries, key=lambda e: e[1]):
            free = sys.getrefcount(entry[0]) == _FREE_REFCOUNT
            idle = now - entry[1] > self._idle_seconds
            if free and (idle or self._held + room > self.max_bytes):
                self._held -= entry[0].nbytes
                dropped.append(entry)
                continue
            keep.append(entry)
        self._entries = keep
        return dropped

    def discard(self, array: np.ndarray) -> None:
        """Never hand ``array`` out again (a failed transfer may still write into it)."""
        with self._lock:
            found = [e for e in self._entries if e[0] is array]
            self._entries = [e for e in self._entries if e[0] is not array]
            self._held -= sum(e[0].nbytes for e in found)
        self._close(found)

    @staticmethod
    def _close(entries: list[list[Any]]) -> None:
        for entry in entries:
            if entry[2] is None:
                continue
            try:
                entry[2].close()
            except Exception:  # noqa: BLE001 - a buffer the pool drops must not fail a call
                log.debug("closing the registration of a pooled buffer failed", exc_info=True)

    def clear(self) -> None:
        """Forget every buffer and close every registration (buffers still in use live on
        with their users, unregistered)."""
        with self._lock:
            entries, self._entries = self._entries, []
            self._held = 0
        self._close(entries)

    def stats(self) -> dict[str, int]:
        """``buffers`` kept, how many are ``free``, and the ``bytes`` they hold."""
        with self._lock:
            free = sum(1 for e in self._entries if sys.getrefcount(e[0]) == _FREE_REFCOUNT)
            return {"buffers": len(self._entries), "free": free, "bytes": self._held}


def _configured_bytes() -> int:
    text = os.environ.get(POOL_BYTES_ENV, "")
    try:
        return int(text) if text else DEFAULT_POOL_BYTES
    except ValueError:
        return DEFAULT_POOL_BYTES


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

#: The receive buffers of messages received from the network (``framing.allocate``).
default_pool = BufferPool(_configured_bytes())
