"""500 readers of one data-service worker at once: every one is served, and the worker still
answers other calls meanwhile.

Each reader has its own (anonymous) job, hence its own task and element stream on the one
worker. The dataset's second element waits for a gate the test opens only once every reader
has its first element, so all 500 streams are open and waiting on the worker at the same
time. With a fixed pool of N server threads the N+1st stream was queued behind the waiting
ones forever, without an error. Every wait below has a deadline, so that fails instead.

A few threads read many iterators each (first element of each in turn), which needs the
same 500 concurrent streams on the worker as 500 reading threads would.
"""

from __future__ import annotations

import threading

import tensorwire as tw
from tensorwire_dataservice.service import client
from tensorwire_dataservice.service.protocol import WORKER_SERVICE, call
from tensorwire_testing.stacks import thread_stacks

READERS = 500
READING_THREADS = 10
#: Bound on every wait; generous, for a loaded two-core machine. Waiting for readers fails
#: only once none has made progress for this long (a slow machine progresses, a deadlock
#: does not). 60 s was seen to pass without progress in CI while a chaos test beside this
#: one restarted its processes (its own dispatcher also took over 30 s to start).
DEADLINE = 120.0

#: Opened by the test once every reader has its first element.
GATE = threading.Event()


def _second_element_waits_for_the_gate(x):
    if x == 1:
        GATE.wait(DEADLINE * 5)
    return x


class _Readers:
    """The iterators one reading thread owns, and what it read from them."""

    def __init__(self, dataset, count: int) -> None:
        self.dataset = dataset
        self.count = count
        self.first: list[int] = []
        self.rest: list[list[int]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, firsts_read: threading.Semaphore) -> None:
        try:
            iterators = [iter(self.dataset) for _ in range(self.count)]
            for it in iterators:
                self.first.append(int(next(it)))
                firsts_read.release()
            GATE.wait(DEADLINE * 5)
            self.rest = [[int(x) for x in it] for it in iterators]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.done.set()


def test_500_concurrent_readers_of_one_worker_all_complete(service_factory, protocol, monkeypatch):
    # Each reader asks the dispatcher for task changes twice a second: 1000 calls a second
    # that this test (one worker, tasks known from the start) does not need and a loaded
    # two-core machine can barely serve. Less often; a no-op if the setting is renamed.
    monkeypatch.setattr(client, "TASK_REFRESH_INTERVAL", 5.0, raising=False)
    # What is tested is that every reader completes (no reader starves the others), not how
    # soon: 500 readers starting at once on a loaded two-core machine (the dispatcher in this
    # process) can keep calls waiting past the 60 s after which a reader gives up on its
    # dispatcher.
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", 300.0)
    dispatcher, [worker] = service_factory(1)
    GATE.set()  # registering the dataset calls the map function (for the element spec)
    dataset = (
        tw.data.Dataset.range(2)
        .map(_second_element_waits_for_the_gate)
        .apply(tw.data.service.distribute("parallel_epochs", dispatcher.target))
    )
    GATE.clear()
    firsts_read = threading.Semaphore(0)
    groups = [_Readers(dataset, READERS // READING_THREADS) for _ in range(READING_THREADS)]
    threads = [
        threading.Thread(target=g.run, args=(firsts_read,), daemon=True, name=f"reader-{i}")
        for i, g in enumerate(groups)
    ]
    try:
        for thread in threads:
            thread.start()
        got = 0
        while got < READERS and firsts_read.acquire(timeout=DEADLINE):
            got += 1
        errors = [g.error for g in groups if g.error is not None]
        assert not errors, errors[:3]
        assert got == READERS, (
            f"only {got} of {READERS} readers got their first element, none more in "
            f"{DEADLINE:.0f}s: the other streams are queued behind the waiting ones\n"
            # The readers first, then the worker's and dispatcher's own threads: CI logs
            # keep only the start of a long message.
            + thread_stacks(first=("reader-", "tw-data-worker-", "tw-dispatcher-"))
        )
        # The worker answers a quick call while 500 streams wait on it.
        assert call(protocol, worker._address, WORKER_SERVICE, "Nudge", {}, timeout=DEADLINE) == {}
    finally:
        GATE.set()
    for group in groups:
        assert group.done.wait(DEADLINE * 3), "a reader did not finish after the gate opened"
    errors = [g.error for g in groups if g.error is not None]
    assert not errors, errors[:3]
    for group in groups:
        assert group.first == [0] * group.count
        assert group.rest == [[1]] * group.count
