"""The sender's segments on one connection: reused once the receiver gives them back.

Ownership rule: a segment is either *free* (this side may write it, reuse it or retire it)
or *lent* (the receiver may be reading it: from the send that used it until the receiver's
RELEASE). Only free segments are ever written or retired, so the receiver never sees a
segment change under arrays it holds.

The pool keeps at most ``max_bytes`` of segments, free and lent together. A message that
needs room takes the smallest free segment that fits without wasting more than its own size
again; otherwise it makes a new one, retiring free segments (largest first) to stay under
the bound; otherwise it waits for a release until its deadline.

Every pool also draws on a ``ShmBudget`` shared by all the pools of a process (by default
``PROCESS_BUDGET``), so that many connections cannot add up to more shared memory than the
process may use. A pool that finds the budget spent retires its own free segments; if that
is not enough it refuses at once (``ResourceExhaustedError``): the caller moves the message
another way rather than wait for other connections. Other pools' free segments stay theirs
until their connections retire them or end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ... import errors
from .segments import Segment

__all__ = ["PROCESS_BUDGET", "ShmBudget", "SegmentPool", "segment_size"]

#: Segments are made in multiples of this (so that slightly different sizes share them).
GRANULE_BYTES = 1 << 20
#: Smaller messages get a segment of this size.
MIN_SEGMENT_BYTES = 64 << 10


def segment_size(nbytes: int) -> int:
    """The size of a new segment for a message of ``nbytes``.

    Examples:
        >>> from tensorwire.transport.shm.pool import segment_size
        >>> segment_size(100), segment_size(3 << 20)
        (65536, 3145728)
    """
    if nbytes <= MIN_SEGMENT_BYTES:
        return MIN_SEGMENT_BYTES
    return -(-nbytes // GRANULE_BYTES) * GRANULE_BYTES


class ShmBudget:
    """The bytes of segments all the pools sharing it may keep at once.

    Args:
      max_bytes: the limit.

    Examples:
        >>> from tensorwire.transport.shm import ShmBudget
        >>> budget = ShmBudget(1 << 20)
        >>> budget.take(600_000), budget.take(600_000), budget.used
        (True, False, 600000)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes taken now."""
        return self._used

    def take(self, nbytes: int) -> bool:
        """Take ``nbytes`` if they fit; False (nothing taken) if not."""
        with self._lock:
            if self._used + nbytes > self.max_bytes:
                return False
            self._used += nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Give back bytes taken before."""
        with self._lock:
            self._used -= nbytes


#: Bytes of segments one process keeps at most, over all its connections (unless they
#: are given a budget of their own).
PROCESS_BUDGET_BYTES = 4 << 30
PROCESS_BUDGET = ShmBudget(PROCESS_BUDGET_BYTES)


class SegmentPool:
    """The segments one connection lends its peer.

    Args:
      max_bytes: the most bytes of segments kept at once (free and lent).
      retire: called with each segment the pool drops to make room (under the pool's lock,
        so it must not block: it queues the RETIRE message for the peer).
      budget: the process-wide budget the pool's segments count against.
    """

    def __init__(
        self,
        max_bytes: int,
        retire: Callable[[Segment], None],
        budget: ShmBudget = PROCESS_BUDGET,
    ) -> None:
        self.max_bytes = max_bytes
        self._retire = retire
        self._budget = budget
        self._free: dict[int, Segment] = {}
        self._lent: dict[int, Segment] = {}
        self._next_id = 1
        self._bytes = 0
        self._closed: str | None = None
        self._changed = threading.Condition()

    @property
    def total_bytes(self) -> int:
        """Bytes of segments kept now (free and lent)."""
        return self._bytes

    @property
    def created(self) -> int:
        """How many segments this pool has made (reuse keeps it low)."""
        return self._next_id - 1

    def acquire(self, nbytes: int, deadline: float | None) -> tuple[Segment, bool]:
        """A free segment of at least ``nbytes``, now lent; and whether it is new (its
        descriptor must go to the peer).

        Raises:
          ResourceExhaustedError: ``nbytes`` is more than the pool may ever hold.
          DeadlineExceededError: no room came free before ``deadline``.
          UnavailableError: the connection closed.
        """
        if segment_size(nbytes) > self.max_bytes:
            raise errors.ResourceExhaustedError(
                f"a message of {nbytes} bytes does not fit in the {self.max_bytes} bytes of "
                "shared memory a connection may use (ShmLimits.max_pool_bytes)"
            )
        with self._changed:
            while True:
                if self._closed is not None:
                    raise errors.UnavailableError(self._closed)
                segment = self._take_free(nbytes)
                if segment is not None:
                    return segment, False
                size = segment_size(nbytes)
                if self._make_room(size):
                    self._take_budget(size)
                    try:
                        segment = Segment(self._next_id, size)
                    except BaseException:
                        self._budget.give(size)
                        raise
                    self._next_id += 1
                    self._bytes += size
                    self._lent[segment.id] = segment
                    return segment, True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise errors.DeadlineExceededError(
                        f"no shared memory came free for a message of {nbytes} bytes before "
                        f"the deadline: the peer holds {len(self._lent)} segments "
                        f"({self._bytes} bytes, ShmLimits.max_pool_bytes={self.max_bytes})"
                    )
                self._changed.wait(left)

    def _take_free(self, nbytes: int) -> Segment | None:
        fits = [s for s in self._free.values() if nbytes <= s.size <= 2 * segment_size(nbytes)]
        if not fits:
            return None
        segment = min(fits, key=lambda s: s.size)
        del self._free[segment.id]
        self._lent[segment.id] = segment
        return segment

    def _make_room(self, size: int) -> bool:
        """Retire free segments, largest first, until ``size`` more bytes fit; False when
        even retiring every free one would not make room (the rest are lent)."""
        lent = sum(s.size for s in self._lent.values())
        if lent + size > self.max_bytes:
            return False
        for segment in sorted(self._free.values(), key=lambda s: -s.size):
            if self._bytes + size <= self.max_bytes:
                break
            self._retire_free(segment)
        return True

    def _take_budget(self, size: int) -> None:
        """Take ``size`` bytes of the process budget, retiring this pool's free segments
        if that makes room; ``ResourceExhaustedError`` at once if it does not."""
        if self._budget.take(size):
            return
        for segment in sorted(self._free.values(), key=lambda s: -s.size):
            self._retire_free(segment)
            if self._budget.take(size):
                return
        raise errors.ResourceExhaustedError(
            f"no room for a shared-memory segment of {size} bytes: this process's "
            f"connections hold {self._budget.used} of the {self._budget.max_bytes} bytes "
            "they may use together (ShmBudget; shm.pool.PROCESS_BUDGET by default)"
        )

    def _retire_free(self, segment: Segment) -> None:
        del self._free[segment.id]
        self._forget(segment)
        self._retire(segment)

    def _forget(self, segment: Segment) -> None:
        self._bytes -= segment.size
        self._budget.give(segment.size)
        segment.close()

    def wait_changed(self, timeout: float) -> None:
        """Until a segment is released or discarded, or the pool closes; ``timeout`` at most."""
        with self._changed:
            self._changed.wait(timeout)

    def give_back(self, segment: Segment) -> None:
        """Put back a segment whose send failed before the peer saw it."""
        self.release(segment.id)

    def release(self, segment_id: int) -> bool:
        """The peer released ``segment_id``: it is free again. False when this pool did not
        lend it (an unknown or repeated release, ignored)."""
        with self._changed:
            segment = self._lent.pop(segment_id, None)
            if segment is None:
                return False
            if self._closed is not None:
                self._forget(segment)
            else:
                self._free[segment_id] = segment
            self._changed.notify_all()
            return True

    def discard(self, segment_id: int) -> None:
        """Drop a lent segment for good (its send failed half-way: the peer may or may not
        know it, so it is never reused)."""
        with self._changed:
            segment = self._lent.pop(segment_id, None)
            if segment is not None:
                self._forget(segment)
                self._changed.notify_all()

    def close(self, reason: str) -> None:
        """Unmap every segment (lent ones too: the peer is gone or going, and its own
        mappings keep what it still reads); waiting senders get ``UnavailableError``."""
        with self._changed:
            if self._closed is None:
                self._closed = reason
            for segment in [*self._free.values(), *self._lent.values()]:
                self._forget(segment)
            self._free.clear()
            self._lent.clear()
            self._changed.notify_all()
