"""One housekeeper per process for the movers' pooled client connections.

Side-channel (``bulk.BulkPeer``) and shared-memory (``shm_mover.ShmPeer``) peers keep
idle connections for the next call. Each idle connection holds a descriptor (and, for
shared memory, two threads and segments on the server), so one daemon thread calls
``reap()`` on every live pool each ``REAP_SECONDS``: connections idle too long, or that
their server closed, are closed.

The thread starts with the process's first grpc channel (``start``), not with the first
pool: pools are made by background Hellos at unpredictable moments, and a thread that
appears at such a moment reads as a leak of whatever runs then. Like gRPC's own threads it
is kept for good; a forked child starts its own with its first channel.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol
from weakref import WeakSet

__all__ = ["REAP_SECONDS", "THREAD_NAME", "Reapable", "start", "watch"]

log = logging.getLogger(__name__)

#: How often idle connections are looked at: an idle connection does not hold a descriptor
#: for long after its server went away (a gRPC channel gives its socket up likewise).
REAP_SECONDS = 1.0
#: The housekeeper's thread name.
THREAD_NAME = "tensorwire-idle-reaper"


class Reapable(Protocol):
    def reap(self) -> None:
        """Close the idle connections that are stale; must not block for long."""


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: WeakSet[Reapable] = WeakSet()
        #: The process whose thread runs (0: none yet); a forked child has none.
        self._pid = 0
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # A parent thread may have held the lock at the fork; no reaper runs here yet.
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: idle connections wait for reuse
                log.debug("no reaper for idle mover connections: %s", exc)
                return
            self._pid = os.getpid()

    def watch(self, pool: Reapable) -> None:
        with self._lock:
            self._pools.add(pool)
        self.start()

    def _run(self) -> None:
        tick = threading.Event()
        while not tick.wait(REAP_SECONDS):
            with self._lock:
                pools = list(self._pools)
            for pool in pools:
                try:
                    pool.reap()
                except Exception:  # noqa: BLE001 - the reaper must outlive any one pool
                    log.debug("reaping idle mover connections failed", exc_info=True)
            del pools


_reaper = _Reaper()


def start() -> None:
    """Start this process's housekeeper, if it does not run yet (every channel calls it)."""
    _reaper.start()


def watch(pool: Reapable) -> None:
    """Call ``pool.reap()`` every ``REAP_SECONDS`` for as long as ``pool`` lives."""
    _reaper.watch(pool)
