"""What a process holds, to test that servers give it back: open file descriptors and threads.

Linux only (``/proc``). A count taken right after a server stopped may still include
connections the kernel or gRPC closes a moment later, so ``wait_for_release`` polls,
with a deadline, until the counts are back within a tolerance of a baseline, and otherwise
fails saying what is still held.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

from .waiting import scaled

__all__ = ["Resources", "resources", "open_files", "wait_for_release"]


@dataclasses.dataclass(frozen=True)
class Resources:
    """Open file descriptors and OS threads of one process at one moment."""

    fds: int
    threads: int

    def within(self, baseline: Resources, tolerance: int = 0) -> bool:
        """Whether neither count exceeds ``baseline``'s by more than ``tolerance``."""
        return self.fds <= baseline.fds + tolerance and self.threads <= baseline.threads + tolerance

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, int]) -> Resources:
        return cls(fds=int(data["fds"]), threads=int(data["threads"]))


def resources(pid: int | None = None) -> Resources:
    """The counts of process ``pid`` (this process when None), from ``/proc``."""
    where = f"/proc/{'self' if pid is None else pid}"
    return Resources(fds=len(os.listdir(f"{where}/fd")), threads=len(os.listdir(f"{where}/task")))


def open_files(pid: int | None = None) -> dict[int, str]:
    """What each open descriptor of ``pid`` refers to (``socket:[...]``, a path...), for
    failure messages."""
    where = f"/proc/{'self' if pid is None else pid}/fd"
    found: dict[int, str] = {}
    for name in os.listdir(where):
        try:
            found[int(name)] = os.readlink(f"{where}/{name}")
        except OSError:  # closed meanwhile
            pass
    return found


def wait_for_release(
    read: Callable[[], Resources],
    baseline: Resources,
    *,
    tolerance: int = 0,
    timeout: float = 20.0,
    what: str = "the process",
) -> Resources:
    """Poll ``read()`` until it is within ``tolerance`` of ``baseline``; the last reading.

    Raises ``AssertionError`` naming both counts when ``timeout`` seconds (scaled by
    ``TENSORWIRE_TEST_TIMEOUT_SCALE``) pass first.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        now = read()
        if now.within(baseline, tolerance):
            return now
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what} still holds {now} after {scaled(timeout):.0f}s, against {baseline} "
                f"before (tolerance {tolerance})"
            )
        time.sleep(0.02)
