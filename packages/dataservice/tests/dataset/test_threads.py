"""Threads started by a pipeline belong to its iterator and stop with it."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tensorwire_dataservice.dataset import Dataset


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tw-data-")]


def wait_for_no_pipeline_threads(timeout: float = 30.0) -> None:
    """Wait until no pipeline thread is left. The deadline is generous on purpose: what is
    tested is that the threads stop, not how fast a loaded machine schedules them."""
    deadline = time.monotonic() + timeout
    while pipeline_threads():
        if time.monotonic() > deadline:
            raise AssertionError(f"threads still alive: {pipeline_threads()}")
        # A stage's generator that ran inside a prefetch thread is released by that thread
        # as it exits, possibly after the test's own gc.collect(); when it sits in a
        # reference cycle only the collector finalizes it (which stops its threads).
        gc.collect()
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_threads_before_and_after() -> Iterator[None]:
    wait_for_no_pipeline_threads()
    yield
    wait_for_no_pipeline_threads()


def make_pipelines() -> dict[str, Any]:
    return {
        "prefetch": Dataset.range(10_000).prefetch(4),
        "parallel_map": Dataset.range(10_000).map(lambda x: x + 1, num_parallel_calls=3),
        "both": Dataset.range(10_000)
        .map(lambda x: x, num_parallel_calls=2)
        .batch(4)
        .prefetch(2)
        .prefetch(2),
    }


@pytest.mark.parametrize("name", ["prefetch", "parallel_map", "both"])
def test_close_stops_the_threads(name: str) -> None:
    it = iter(make_pipelines()[name])
    next(it)
    assert pipeline_threads()
    it.close()
    wait_for_no_pipeline_threads()


@pytest.mark.parametrize("name", ["prefetch", "parallel_map", "both"])
def test_dropping_the_iterator_stops_the_threads(name: str) -> None:
    it = iter(make_pipelines()[name])
    next(it)
    del it
    gc.collect()
    wait_for_no_pipeline_threads()


@pytest.mark.parametrize("name", ["prefetch", "parallel_map", "both"])
def test_exhaustion_stops_the_threads(name: str) -> None:
    it = iter(make_pipelines()[name].take(5))
    assert len(list(it)) == 5
    wait_for_no_pipeline_threads()


def test_with_block_closes() -> None:
    with Dataset.range(100).prefetch(2).as_numpy_iterator() as it:
        next(it)
    wait_for_no_pipeline_threads()


def test_close_does_not_wait_for_a_blocked_producer_beyond_its_deadline() -> None:
    release = threading.Event()

    def gen() -> Iterator[int]:
        yield 1
        release.wait(10)  # a source that blocks; the producer thread cannot see close
        yield 2

    ds = Dataset.from_generator(gen, output_types="int64").prefetch(1)
    it = iter(ds)
    assert int(next(it)) == 1
    start = time.monotonic()
    it.close()
    # The join deadline is 1 s; the source blocks for 10 s: close did not wait for it.
    assert time.monotonic() - start < 8.0
    release.set()  # let the daemon thread finish so the fixture sees it gone


def test_prefetch_passes_errors_through() -> None:
    def fail(x: Any) -> Any:
        if int(x) == 3:
            raise KeyError("element 3")
        return x

    it = iter(Dataset.range(10).map(fail).prefetch(2))
    assert [int(next(it)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="element 3"):
        next(it)
    wait_for_no_pipeline_threads()


def test_prefetch_is_bounded() -> None:
    produced: list[int] = []
    ds = Dataset.range(1000).map(lambda x: produced.append(1) or x).prefetch(5)
    it = iter(ds)
    next(it)
    time.sleep(0.2)
    assert len(produced) <= 1 + 5 + 1  # consumed + buffer + one waiting to be put
    it.close()


def test_prefetch_zero_and_autotune() -> None:
    assert [int(x) for x in Dataset.range(5).prefetch(0)] == list(range(5))
    assert [int(x) for x in Dataset.range(5).prefetch(-1)] == list(range(5))


def test_iterators_are_independent_and_thread_safe() -> None:
    ds = Dataset.range(3000).map(lambda x: x, num_parallel_calls=2).prefetch(8)
    it = iter(ds)
    got: list[int] = []
    lock = threading.Lock()

    def reader() -> None:
        for x in it:
            with lock:
                got.append(int(x))

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(30)
    assert sorted(got) == list(range(3000))
    assert [int(x) for x in ds.take(3)] == [0, 1, 2]


def test_close_from_another_thread_unblocks_a_waiting_next() -> None:
    release = threading.Event()

    def gen() -> Iterator[int]:
        yield 1
        release.wait(10)  # the producer is stuck; the consumer waits for the prefetch buffer

    it = iter(Dataset.from_generator(gen, output_types="int64").prefetch(1))
    assert int(next(it)) == 1
    outcome: list[str] = []

    def consume() -> None:
        try:
            next(it)
            outcome.append("element")
        except StopIteration:
            outcome.append("stopped")

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.1)
    start = time.monotonic()
    it.close()
    consumer.join(30)
    assert outcome == ["stopped"]
    # Seen within POLL_INTERVAL; the source would block 10 s more.
    assert time.monotonic() - start < 8.0
    release.set()
