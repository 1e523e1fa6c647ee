"""Element positions for exactly-once ``distributed_epoch``: sets of element indices.

An element's position is (the task that produced it, its index in that task's output
stream). A task of a deterministic pipeline that is run again over the same splits, in the
same order, produces the same elements at the same indices; that is what lets a lost
task be replayed on another worker with the elements its readers already received left out.

``IndexRanges`` is the one representation of "which indices": what a reader received
from a task, what the dispatcher learned every reader received (the replay's skip set),
and what a worker leaves out when it replays. Readers mostly receive a task's elements in
order, so the set is a handful of ranges however long the task runs.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable
from typing import Any

__all__ = ["BufferIndices", "IndexRanges", "SkipCursor"]


class IndexRanges:
    """A set of non-negative integers kept as sorted, disjoint, non-adjacent [start, stop)
    ranges. Not thread safe: its owner locks."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in ranges:
            self.add(int(start), int(stop))

    def add(self, start: int, stop: int) -> None:
        """Add [start, stop), merging with the ranges it touches or overlaps."""
        if stop <= start:
            return
        starts, stops = self._starts, self._stops
        if not stops or start > stops[-1]:  # the common case: past everything so far
            starts.append(start)
            stops.append(stop)
            return
        if start == stops[-1]:
            stops[-1] = max(stops[-1], stop)
            return
        # First range that ends at or after start, last one that starts at or before stop.
        lo = bisect.bisect_left(stops, start)
        hi = bisect.bisect_right(starts, stop)
        if lo < hi:
            start = min(start, starts[lo])
            stop = max(stop, stops[hi - 1])
        starts[lo:hi] = [start]
        stops[lo:hi] = [stop]

    def update(self, other: IndexRanges) -> None:
        for start, stop in other.ranges():
            self.add(start, stop)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        i = bisect.bisect_right(self._starts, index) - 1
        return i >= 0 and index < self._stops[i]

    def overlaps(self, start: int, stop: int) -> bool:
        """Whether any of [start, stop) is in the set."""
        i = bisect.bisect_right(self._starts, stop - 1) - 1
        return i >= 0 and self._stops[i] > start

    def ranges(self) -> list[list[int]]:
        """The ranges as ``[[start, stop], ...]``: plain values for messages and journals."""
        return [[a, b] for a, b in zip(self._starts, self._stops, strict=True)]

    def count(self) -> int:
        return sum(b - a for a, b in zip(self._starts, self._stops, strict=True))

    def __len__(self) -> int:
        """The number of ranges (not of indices: see ``count``)."""
        return len(self._starts)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, IndexRanges) and self.ranges() == other.ranges()

    def __repr__(self) -> str:
        return f"IndexRanges({self.ranges()})"


class SkipCursor:
    """Walks an ascending stream of indices against a skip set, in O(1) per index: a
    replaying worker asks it about every element it produces, in order."""

    __slots__ = ("_ranges", "_i")

    def __init__(self, skip: IndexRanges) -> None:
        self._ranges = skip.ranges()
        self._i = 0

    def skips(self, index: int) -> bool:
        ranges = self._ranges
        while self._i < len(ranges) and ranges[self._i][1] <= index:
            self._i += 1
        return self._i < len(ranges) and ranges[self._i][0] <= index


class BufferIndices:
    """The indices of a FIFO buffer's elements, without storing one per element.

    A producer numbers its output 0, 1, 2, ... and leaves some indices out (a replay skips
    what readers already have); the buffer holds the rest in order, and a consumer takes
    them from the front in runs of consecutive indices (a message names only its first).
    Skips are rare, so only the element right after each skip is recorded, as (its
    sequence number in the buffer, its index); every other element's index follows from
    the last such break before it. Nothing is done per element in the common case. Not
    thread safe: the buffer's owner locks.

    Examples:
        >>> from tensorwire_dataservice.service.positions import BufferIndices
        >>> indices = BufferIndices()  # the buffer holds indices 0, 1, 4, 5, 6
        >>> indices.after_skip(2, 4)  # its third element (sequence number 2) is index 4
        >>> indices.take(5), indices.take(3)  # at most what is buffered
        ((0, 2), (4, 3))
    """

    __slots__ = ("_breaks", "_base", "_taken")

    def __init__(self) -> None:
        self._breaks: collections.deque[tuple[int, int]] = collections.deque()
        self._base = (0, 0)  # the break in force at the buffer's front
        self._taken = 0  # sequence number of the buffer's front

    def after_skip(self, sequence: int, index: int) -> None:
        """The element buffered with ``sequence`` (how many were buffered before it) has
        ``index``, and indices were left out right before it. Elements that follow
        their predecessor's index need no call."""
        self._breaks.append((sequence, index))

    def take(self, n: int) -> tuple[int, int]:
        """The index of the buffer's front, and how many of the next ``n`` (at most what
        is buffered) have consecutive indices from it; those are taken."""
        front = self._taken
        breaks = self._breaks
        while breaks and breaks[0][0] <= front:
            self._base = breaks.popleft()
        if breaks:
            n = min(n, breaks[0][0] - front)
        self._taken = front + n
        base_sequence, base_index = self._base
        return base_index + front - base_sequence, n
