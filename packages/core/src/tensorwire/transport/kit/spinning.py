"""Spinning before sleeping: how a thread that waits for its peer's next bytes avoids
paying for being woken.

On this project's machines (virtual CPUs) a thread asleep in ``poll`` or on a queue costs
about 35 us to wake, on each side of a round trip: two thirds of a tiny side-channel call
(107 us) went to that. A waiter that first *tries* for a while, without sleeping, is found
awake when the answer comes (32 us for the same call). How long to try depends on how soon
the peer answers, which varies with the machine's state: the same call was answered well
within 50 us one hour and mostly not the next (a 50 us spin then gave 145 us, a 200 us one
53 us). A spin that learnt its length from past waits did worse than a fixed bound (its
waits after sleeping include the wake-up, which kept it from spinning), so the bound is
fixed, and generous. Spinning pays only
while the peer answers within the spin, so a spin that runs out turns spinning off for the
next ``SKIPPED_AFTER_MISS`` waits of that waiter: a peer that is slow or idle, or that shares
a CPU with the spinner, costs one spin in that many waits, not one per wait. A skipped wait
that was answered within the bound all the same (the waiter says so with ``woke``) turns
spinning back on: the peer answers promptly again, as a caller's requests do after a pause.

A spinner yields its CPU (``sched_yield``) between attempts. Without that, the peer's
thread it waits for could sit behind it: a Unix or TCP socket wakes its reader with a
*sync* wake-up, which tells the scheduler the waker will sleep soon, so the reader is often
queued on the waker's CPU; a waker that spins instead of sleeping then holds it off until
its spin runs out, while the other CPU idles. Measured in ``benchmarks/peers.py`` (two
virtual CPUs): tiny-call p99 290-600 us without yielding (about the spin bound plus a
wake-up: the answer waited for the spin to end), 130-260 us with it; a 1 MiB read through
shared memory 2.4-2.8 GB/s without, 3.2-3.7 GB/s with it and a 500 us bound (2.7 with a
200 us one).

``Spinner`` holds that policy for one waiter (a connection); the waiter hands it how to try
once. The attempt must release the GIL now and then (a system call does), so that the
thread that delivers what the spinner waits for can run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["SKIPPED_AFTER_MISS", "Spinner"]

T = TypeVar("T")

#: Waits that do not spin after a spin that ran out before its peer answered.
SKIPPED_AFTER_MISS = 16


class Spinner:
    """The spin policy of one waiter.

    Args:
      seconds: how long a wait tries before it gives up and sleeps; 0 never spins.

    Examples:
        >>> from tensorwire.transport.kit.spinning import Spinner
        >>> Spinner(0.001).spin(lambda: "there")
        'there'
        >>> spinner = Spinner(0.0001)
        >>> spinner.spin(lambda: None) is None, spinner.skipping
        (True, 16)
    """

    __slots__ = ("seconds", "skipping", "_skipped_at")

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        #: Waits left that sleep at once (after a spin ran out).
        self.skipping = 0
        #: When the last skipped wait began (``time.perf_counter``; 0: none since ``woke``).
        self._skipped_at = 0.0

    def spin(self, attempt: Callable[[], T | None]) -> T | None:
        """What ``attempt`` returns once it returns something other than None, trying for
        up to ``seconds``; None when the spin ran out (or is skipped): sleep then."""
        if not self.seconds:
            return None
        if self.skipping:
            self.skipping -= 1
            self._skipped_at = time.perf_counter()
            return None
        clock = time.perf_counter
        yield_cpu = os.sched_yield
        until = clock() + self.seconds
        while True:
            got = attempt()
            if got is not None:
                return got
            if clock() >= until:
                self.skipping = SKIPPED_AFTER_MISS
                return None
            yield_cpu()

    def woke(self) -> None:
        """(The waiter got its answer after sleeping.) When this wait was skipped and the
        answer came within the spin's bound anyway, a spin would have caught it: the peer
        answers promptly again (a caller's next request after a pause), so spinning resumes
        at the next wait instead of after the remaining skipped ones."""
        if self._skipped_at and time.perf_counter() - self._skipped_at < self.seconds:
            self.skipping = 0
        self._skipped_at = 0.0
