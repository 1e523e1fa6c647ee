"""Element positions' bookkeeping (positions.py): index sets, skip cursors, and the indices
of a worker's buffer, against plain lists."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorwire_dataservice.service.positions import BufferIndices, IndexRanges, SkipCursor

# No deadline: a loaded CI machine must not turn a slow example into a failure.
UNTIMED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@UNTIMED
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=12))
def test_index_ranges_hold_exactly_the_added_indices(added: list[tuple[int, int]]) -> None:
    ranges = IndexRanges()
    expected: set[int] = set()
    for start, stop in added:
        ranges.add(start, stop)
        expected.update(range(start, stop))
    assert [i for i in range(70) if i in ranges] == sorted(expected)
    stops = [stop for _, stop in ranges.ranges()]
    starts = [start for start, _ in ranges.ranges()]
    gaps = zip(stops[:-1], starts[1:], strict=True)
    assert all(stop < start for stop, start in gaps), "touching ranges are merged"


@UNTIMED
@given(st.sets(st.integers(0, 80)))
def test_a_skip_cursor_walks_the_skip_set_in_order(skipped: set[int]) -> None:
    ranges = IndexRanges()
    for index in skipped:
        ranges.add(index, index + 1)
    cursor = SkipCursor(ranges)
    assert [i for i in range(90) if cursor.skips(i)] == sorted(skipped)


@UNTIMED
@given(st.lists(st.booleans(), max_size=200), st.lists(st.integers(1, 9), min_size=1))
def test_buffer_indices_name_each_taken_run_by_its_first_index(
    kept: list[bool], takes: list[int]
) -> None:
    # A producer numbers 0, 1, 2, ... and keeps the indices where ``kept`` is True; a
    # consumer takes up to n at a time and must get runs of consecutive indices that,
    # together, are exactly the kept ones in order.
    indices = BufferIndices()
    buffered: list[int] = []
    previous = -1
    for index, keep in enumerate(kept):
        if keep:
            if index != previous + 1:
                indices.after_skip(len(buffered), index)
            buffered.append(index)
            previous = index
    got: list[int] = []
    step = 0
    while len(got) < len(buffered):
        want = min(takes[step % len(takes)], len(buffered) - len(got))
        first, n = indices.take(want)
        assert 1 <= n <= want
        got.extend(range(first, first + n))
        step += 1
    assert got == buffered


def test_buffer_indices_stop_a_run_at_a_gap() -> None:
    indices = BufferIndices()  # buffered: 0 1 2 | 7 8 | 20
    indices.after_skip(3, 7)
    indices.after_skip(5, 20)
    assert indices.take(10) == (0, 3)
    assert indices.take(1) == (7, 1)
    assert indices.take(2) == (8, 1)
    assert indices.take(1) == (20, 1)  # n is at most what is buffered: the caller says
