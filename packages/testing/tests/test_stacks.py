"""``thread_stacks``: threads waiting at one place are counted there, with their frames."""

from __future__ import annotations

import threading
import time

from tensorwire_testing.stacks import thread_stacks


def _parked_here(release: threading.Event, parked: threading.Semaphore) -> None:
    parked.release()
    release.wait(60)


def test_threads_at_one_place_are_one_group_naming_the_place():
    release, parked = threading.Event(), threading.Semaphore(0)
    threads = [
        threading.Thread(target=_parked_here, args=(release, parked), name=f"parked-{i}")
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in threads:
            assert parked.acquire(timeout=60)
        # Each thread goes on from ``release`` into ``wait``: look until all three are there.
        deadline = time.monotonic() + 60
        text = thread_stacks(groups=50)
        while "3 thread(s) (parked-0" not in text and time.monotonic() < deadline:
            time.sleep(0.01)
            text = thread_stacks(groups=50)
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    group = next(block for block in text.split("\n- ") if "parked-0" in block)
    assert group.startswith("3 thread(s) (parked-0, parked-1, parked-2)"), text
    assert "tests/test_stacks.py:" in group and "_parked_here" in group, text
    assert "threading.py:" in group.splitlines()[1], group  # innermost first: in Event.wait
