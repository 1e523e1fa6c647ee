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


def test_threads_named_first_come_before_more_crowded_places():
    release, parked = threading.Event(), threading.Semaphore(0)
    crowd = [
        threading.Thread(target=_parked_here, args=(release, parked), name=f"crowd-{i}")
        for i in range(4)
    ]
    waited_for = threading.Thread(target=release.wait, args=(60,), name="waited-for")
    for thread in [*crowd, waited_for]:
        thread.start()
    try:
        for _ in crowd:
            assert parked.acquire(timeout=60)
        # groups=1 would show only the crowd's place, the most crowded one.
        text = thread_stacks(groups=1, first=("waited-",))
    finally:
        release.set()
        for thread in [*crowd, waited_for]:
            thread.join(60)
    blocks = text.split("\n- ")
    assert blocks[1].startswith("1 thread(s) (waited-for)"), text
    assert len(blocks) >= 3 and "other places" in blocks[-1], text
