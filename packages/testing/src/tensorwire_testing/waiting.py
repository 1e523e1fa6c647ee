"""Bounded waiting for tests: retry an action while the cluster recovers, and stretch every
test deadline on slow machines.

``TENSORWIRE_TEST_TIMEOUT_SCALE`` (a positive number, default 1) multiplies the deadlines the
testing helpers use. The RDMA harness sets it inside its emulated guest, where processes start
several times slower than on the host; the deadlines stay finite there, only longer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from tensorwire import errors

__all__ = ["eventually", "scaled", "timeout_scale"]

TIMEOUT_SCALE_ENV = "TENSORWIRE_TEST_TIMEOUT_SCALE"

T = TypeVar("T")


def timeout_scale() -> float:
    """The factor from ``TENSORWIRE_TEST_TIMEOUT_SCALE`` (1.0 when unset)."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be a positive number, got {raw!r}") from None
    if not scale > 0 or scale == float("inf"):
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be a positive number, got {raw!r}")
    return scale


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ``timeout_scale``."""
    return seconds * timeout_scale()


def eventually(
    action: Callable[[], T],
    timeout: float = 15.0,
    retry_on: tuple[type[BaseException], ...] = (errors.UnavailableError,),
    interval: float = 0.1,
) -> T:
    """``action()``'s result, retrying while it raises one of ``retry_on``.

    After ``timeout`` seconds (stretched by ``timeout_scale``) the last error
    propagates, so a test never waits forever for a task that does not come back.

    Args:
      action: what to try, e.g. a call to a task that is restarting.
      timeout: seconds before giving up (scaled by ``TENSORWIRE_TEST_TIMEOUT_SCALE``).
      retry_on: the exception classes that mean "not yet".
      interval: seconds between tries.

    Raises:
      Exception: the last error of ``action`` once ``timeout`` has passed, or at once any
        error not in ``retry_on``.

    Examples:
        >>> task.restart()                                                  # doctest: +SKIP
        >>> value = tw.test.eventually(lambda: sess.variable("w").read())   # doctest: +SKIP
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            return action()
        except retry_on:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)
