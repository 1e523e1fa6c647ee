"""Receive buffers for large messages, recycled once nothing refers to them any more.

A fresh multi-MiB buffer costs a page fault per page on first touch; on the machines
measured here that halved the throughput of a 256 MiB transfer (benchmarks/transport.py:
about 0.5x raw gRPC streaming with fresh buffers, about 1.0x with recycled ones). So large
receive buffers come from this pool. A buffer is handed out again only when the pool holds
the last reference to it: every frame, memoryview and NumPy array made from it is gone
(CPython reference counts tell us exactly that). Memory is never shared between two
live messages.

The pool keeps at most ``TENSORWIRE_GRPC_BUFFER_POOL_BYTES`` bytes (default 1 GiB; 0 turns
it off) and drops buffers unused for ``IDLE_SECONDS``, like an allocator that grows to
its peak and trims when idle.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from . import forking

__all__ = ["BufferPool", "POOL_BYTES_ENV", "default_pool"]

POOL_BYTES_ENV = "TENSORWIRE_GRPC_BUFFER_POOL_BYTES"
DEFAULT_POOL_BYTES = 1 << 30
#: Smaller buffers come from malloc's own free lists, already warm.
MIN_POOLED_BYTES = 1 << 20
IDLE_SECONDS = 30.0


class BufferPool:
    """Hands out uint8 arrays of at least the size asked for, reusing free ones."""

    def __init__(self, max_bytes: int = DEFAULT_POOL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        forking.after_fork_in_child(self)
        # [array, last time handed out]; the list holds the pool's only reference.
        self._entries: list[list[object]] = []
        self._held = 0

    def _reset_after_fork(self) -> None:
        # A parent thread may have held the lock at the fork; the buffers are ours now.
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        if nbytes < MIN_POOLED_BYTES or self.max_bytes <= 0:
            return np.empty(nbytes, dtype=np.uint8)
        now = time.monotonic()
        largest = nbytes + nbytes // 4 + MIN_POOLED_BYTES  # don't waste a huge one
        with self._lock:
            best: list[object] | None = None
            for entry in self._entries:
                # 2 = the entry list + getrefcount's argument: nobody else holds it.
                if sys.getrefcount(entry[0]) != 2:
                    continue
                size = entry[0].nbytes  # type: ignore[attr-defined]
                if nbytes <= size <= largest and (
                    best is None or size < best[0].nbytes  # type: ignore[attr-defined]
                ):
                    best = entry
            if best is not None:
                best[1] = now
                return best[0]  # type: ignore[return-value]
            self._trim(now, nbytes)
            array = np.empty(nbytes, dtype=np.uint8)
            if self._held + nbytes <= self.max_bytes:
                self._entries.append([array, now])
                self._held += nbytes
            return array

    def _trim(self, now: float, room: int) -> None:
        """Drop idle free buffers, then free ones oldest first until ``room`` fits."""
        keep = []
        for entry in sorted(self._entries, key=lambda e: e[1]):  # type: ignore[arg-type, return-value]
            free = sys.getrefcount(entry[0]) == 2
            idle = now - entry[1] > IDLE_SECONDS  # type: ignore[operator]
            if free and (idle or self._held + room > self.max_bytes):
                self._held -= entry[0].nbytes  # type: ignore[attr-defined]
                continue
            keep.append(entry)
        self._entries = keep

    def clear(self) -> None:
        """Forget every buffer (those still in use live on with their users)."""
        with self._lock:
            self._entries = []
            self._held = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            free = sum(1 for e in self._entries if sys.getrefcount(e[0]) == 2)
            return {"buffers": len(self._entries), "free": free, "bytes": self._held}


def _configured_bytes() -> int:
    text = os.environ.get(POOL_BYTES_ENV, "")
    try:
        return int(text) if text else DEFAULT_POOL_BYTES
    except ValueError:
        return DEFAULT_POOL_BYTES


default_pool = BufferPool(_configured_bytes())
