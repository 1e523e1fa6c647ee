"""The spin policy (``kit.spinning``): try, then sleep; a spin that runs out is skipped
for the next waits."""

from __future__ import annotations

import time

from tensorwire.transport.kit.spinning import SKIPPED_AFTER_MISS, Spinner


def test_a_spin_returns_what_the_attempt_found() -> None:
    answers = iter([None, None, "bytes"])
    assert Spinner(60.0).spin(lambda: next(answers)) == "bytes"


def test_no_spin_when_off() -> None:
    tried: list[int] = []
    assert Spinner(0.0).spin(lambda: tried.append(1)) is None
    assert tried == []


def test_a_spin_that_runs_out_is_skipped_for_the_next_waits() -> None:
    spinner = Spinner(0.001)
    tried: list[int] = []

    def nothing() -> None:
        tried.append(1)

    assert spinner.spin(nothing) is None
    assert tried  # it did try
    tried.clear()
    for _ in range(SKIPPED_AFTER_MISS):
        assert spinner.spin(lambda: "there") is None  # skipped: sleep at once
    assert spinner.skipping == 0
    assert spinner.spin(lambda: "there") == "there"  # spinning again
    assert tried == []


def test_a_spinner_yields_its_cpu_between_attempts(monkeypatch) -> None:
    # A peer woken onto the spinner's CPU must get to run before the spin ends (see the
    # module's docstring): one yield after each attempt that found nothing, none after the
    # one that found the answer.
    from tensorwire.transport.kit import spinning

    yields: list[int] = []
    monkeypatch.setattr(spinning.os, "sched_yield", lambda: yields.append(1))
    answers = iter([None, None, None, "bytes"])
    assert Spinner(60.0).spin(lambda: next(answers)) == "bytes"
    assert len(yields) == 3


def test_a_skipped_wait_answered_within_the_bound_resumes_spinning() -> None:
    # A caller's next request after a pause: the peer answers promptly again, so spinning
    # need not wait out the remaining skipped waits.
    spinner = Spinner(60.0)
    spinner.skipping = SKIPPED_AFTER_MISS
    assert spinner.spin(lambda: "there") is None  # skipped: the waiter sleeps
    spinner.woke()  # ... and its answer came at once
    assert spinner.skipping == 0
    assert spinner.spin(lambda: "there") == "there"


def test_a_skipped_wait_answered_later_than_the_bound_keeps_skipping() -> None:
    spinner = Spinner(0.0001)
    spinner.skipping = SKIPPED_AFTER_MISS
    assert spinner.spin(lambda: "there") is None
    time.sleep(0.002)  # the answer came after more than the bound: a spin would have missed
    spinner.woke()
    assert spinner.skipping == SKIPPED_AFTER_MISS - 1
    spinner.woke()  # a wake-up without a skipped wait before it changes nothing
    assert spinner.skipping == SKIPPED_AFTER_MISS - 1
