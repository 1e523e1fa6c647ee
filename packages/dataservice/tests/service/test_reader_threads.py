"""A reader's per-task threads: each reads the generation it was started for, and whatever
ends one unexpectedly fails the reader instead of leaving its consumer waiting forever.

Found by the chaos test on a slow machine: a task replayed while its worker was lost is
listed without an address until a worker takes it; a thread started for the task's older
generation that had not run yet read the task's state only then, found the replay and no
address, and died on it. Nothing read the task any more and the consumer waited for it
forever (the test timed out after 300 s).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import tensorwire as tw

from .helpers import distribute

Dataset = tw.data.Dataset

#: Bound on every wait here.
DEADLINE = 60.0
#: A task id the dispatcher never hands out in these tests.
STRAY_TASK = 10**6


class _HeldLock:
    """A lock the test can hold across calls that take it themselves (re-entrant for the
    test's thread), standing in for the reader's own while the test orders two replies
    before a thread the first one starts can run."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()


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
        held = _HeldLock()
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
