"""A worker busy serving many readers: its readers see every element of their epoch once,
even when its heartbeats fall behind and the dispatcher drops it for a while."""

from __future__ import annotations

import threading

import tensorwire as tw

from .helpers import distribute

Dataset = tw.data.Dataset

READERS = 80


def test_80_readers_with_open_iterators_each_get_their_epoch_once(service_factory):
    # A short worker timeout: should the heartbeats of the busy worker fall behind, the
    # dispatcher drops it, and the worker's tasks must carry on when it is back.
    dispatcher, _ = service_factory(
        1, worker_timeout_ms=1000, worker_config={"heartbeat_interval_ms": 50}
    )
    n = 300
    # Endless epochs: every reader's stream stays open while the others read.
    iterators = [
        iter(distribute(Dataset.range(10**9), dispatcher, "parallel_epochs"))
        for _ in range(READERS)
    ]
    results: list[list[int] | BaseException | None] = [None] * READERS
    everyone_read = threading.Barrier(READERS, timeout=120)

    def read(i: int) -> None:
        try:
            results[i] = [int(next(iterators[i])) for _ in range(n)]
            everyone_read.wait()  # hold the iterator open until every reader has its share
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    # One reader's failure breaks the barrier for the others: show the cause first.
    errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
    assert not errors, errors[:3]
    wrong = [i for i, r in enumerate(results) if r != list(range(n))]
    if wrong:
        first = results[wrong[0]]
        at = next(
            (i for i, (a, b) in enumerate(zip(first, range(n), strict=False)) if a != b),
            min(len(first), n),
        )
        raise AssertionError(
            f"{len(wrong)} readers saw elements lost or repeated, e.g. "
            f"{first[max(0, at - 3) : at + 5]} at position {at}"
        )
    for it in iterators:
        it.close()
