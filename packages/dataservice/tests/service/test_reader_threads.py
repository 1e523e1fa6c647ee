"""A reader's threads: each task's reads the generation it was started for, whatever ends
one unexpectedly fails the reader instead of leaving its consumer waiting forever, and
closing the iterator from another thread ends a ``next()`` waiting for elements.

Found by the chaos test on a slow machine: a task replayed while its worker was lost is
listed without an address until a worker takes it; a thread started for the task's older
generation that had not run yet read the task's state only then, found the replay and no
address, and died on it. Nothing read the task any more and the consumer waited for it
forever (the test timed out after 300 s).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
import tensorwire as tw

from .helpers import distribute

Dataset = tw.data.Dataset

#: Bound on every wait here.
DEADLINE = 60.0
#: A task id the dispatcher never hands out in these tests.
STRAY_TASK = 10**6
#: Opened by the close test once it is over: the dataset's second element waits for it.
GATE = threading.Event()


def _second_element_waits_for_the_gate(x):
    if x == 1:
        GATE.wait(DEADLINE)
    return x


def _reply(task_id: int, address: str, generation: int, view: str) -> dict[str, Any]:
    return {
        "tasks": [{"task_id": task_id, "worker_address": address, "generation": generation}],
        "view": view,
    }


def test_a_thread_started_for_a_generation_replaced_before_it_ran_ends_quietly(
    service_factory, monkeypatch
):
    escaped: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    dispatcher, [worker] = service_factory(1)
    reader = distribute(Dataset.range(10**9), dispatcher, "distributed_epoch")._read()
    try:
        next(reader)
        # Re-entrant, so that this thread can hold the reader's lock across calls that take
        # it: the two replies are applied before the thread the first one starts can run.
        held = threading.RLock()
        reader._lock = held
        with held:
            # The task is listed at a worker (its thread starts and waits for the lock a
            # moment), then replayed with no worker yet, before that thread ran.
            reader._update_tasks(_reply(STRAY_TASK, worker._address, 0, "test:1"))
            stale = reader._tasks[STRAY_TASK].thread
            assert stale is not None
            reader._update_tasks(_reply(STRAY_TASK, "", 1, "test:2"))
            assert reader._tasks[STRAY_TASK].thread is None  # none for the unplaced replay
        stale.join(DEADLINE)
        assert not stale.is_alive(), "the stale generation's thread did not end"
        assert escaped == [], f"an error escaped the reader thread: {escaped!r}"
        assert reader._error is None, reader._error
    finally:
        reader.close()


def test_an_unexpected_error_in_a_task_thread_fails_the_reader(service_factory, monkeypatch):
    dispatcher, _ = service_factory(1)
    reader = distribute(Dataset.range(10**9), dispatcher, "distributed_epoch")._read()
    try:
        next(reader)

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug in reading")

        monkeypatch.setattr(reader, "_read_task", broken)
        reader._update_tasks(_reply(STRAY_TASK, "localhost:1", 0, "test:1"))
        # The consumer hears of it (drained elements first), within the deadline.
        with pytest.raises(tw.errors.InternalError, match="a bug in reading"):
            for _ in range(10**6):
                next(reader)
    finally:
        reader.close()


def _waiting_in_reader_next(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "__next__" and frame.f_code.co_filename.endswith("client.py"):
            return True
        frame = frame.f_back
    return False


def test_closing_the_iterator_ends_a_next_waiting_in_another_thread(service_factory):
    # The iterator's lock is held by the waiting next(): close() cannot end the reader's
    # generator itself. The reader is closed by the watch on the pipeline's closed event.
    dispatcher, _ = service_factory(1)
    GATE.set()  # registering the dataset calls the map function (for the element spec)
    dataset = distribute(Dataset.range(2).map(_second_element_waits_for_the_gate), dispatcher)
    GATE.clear()
    it = iter(dataset)
    outcome: list[Any] = []

    def wait_for_the_second() -> None:
        try:
            outcome.append(next(it))
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            outcome.append(exc)

    try:
        assert int(next(it)) == 0
        waiting = threading.Thread(target=wait_for_the_second, daemon=True)
        waiting.start()
        deadline = time.monotonic() + DEADLINE
        while not _waiting_in_reader_next(waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _waiting_in_reader_next(waiting), "the thread never waited in next()"
        it.close()
        waiting.join(DEADLINE)
        assert not waiting.is_alive(), "next() still waits after the iterator was closed"
        assert len(outcome) == 1 and isinstance(outcome[0], StopIteration), outcome
        # The reader was released: the dispatcher no longer counts it as a client.
        core = dispatcher._core
        while time.monotonic() < deadline:
            with core.lock:
                if not core.state.clients:
                    break
            time.sleep(0.01)
        with core.lock:
            assert not core.state.clients, core.state.clients
    finally:
        GATE.set()
