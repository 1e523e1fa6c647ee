"""Small helpers shared by the data-service tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import tensorwire as tw

#: Seconds (scaled by the processes' start()) a killed data-service process of a chaos test
#: may take to serve again: a dispatcher replays its journal first, and a CI machine running
#: a heavy test beside one was seen to need more than 30.
RESTART_TIMEOUT = 90


def values(dataset: Any) -> list[Any]:
    """The elements of ``dataset`` as Python values (ints stay ints)."""
    out = []
    for x in dataset.as_numpy_iterator():
        out.append(x.item() if hasattr(x, "item") and getattr(x, "ndim", 1) == 0 else x)
    return out


def distribute(dataset: Any, dispatcher: Any, mode: str = "parallel_epochs", **kwargs: Any) -> Any:
    return dataset.apply(tw.data.service.distribute(mode, dispatcher.target, **kwargs))


def assert_exactly_once(got: list[int], n: int) -> None:
    """``got`` holds each of ``range(n)`` once: says what was lost, what came twice, and the
    order read (what a failure seen once in CI needs to be understood)."""
    counts = Counter(got)
    repeated = sorted(x for x, c in counts.items() if c > 1)
    lost = sorted(set(range(n)) - set(counts))
    assert not repeated and not lost, (
        f"{len(lost)} lost: {lost[:20]}; {len(repeated)} twice: {repeated[:20]}; "
        f"in the order read: {got}"
    )
