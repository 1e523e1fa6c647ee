"""Is a data-service job input-bound? One rule, used by ``tensorwire status`` and the dashboard.

A reader of a job reports how long its ``next()`` calls waited for elements and how long
it has been reading (its heartbeats carry both; the dispatcher adds them up per job). The
share of reading time spent waiting says where the limit is:

- readers wait a large share (``>= INPUT_BOUND_WAIT_FRACTION``): the workers do not keep up,
  so adding workers (or making the dataset cheaper) would help;
- readers wait a small share (``< CLIENT_BOUND_WAIT_FRACTION``): elements are there when
  asked for, so the client (the training step) is the limit and more workers would idle;
- in between: the input keeps up, with little to spare.

The shares are over the readers' lives so far, so the first elements (workers starting,
buffers filling) count too: a short job leans towards "input-bound".
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "INPUT_BOUND_WAIT_FRACTION",
    "CLIENT_BOUND_WAIT_FRACTION",
    "InputDiagnosis",
    "input_diagnosis",
]

#: Readers waiting this share of their time or more: the input is the limit.
INPUT_BOUND_WAIT_FRACTION = 0.20
#: Readers waiting less than this share of their time: the client is the limit.
CLIENT_BOUND_WAIT_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class InputDiagnosis:
    """What ``input_diagnosis`` concluded.

    Args:
      verdict: ``"input_bound"``, ``"balanced"``, ``"client_bound"`` or ``"unknown"``
        (no reader has reported reading time yet).
      wait_fraction: the share of reading time spent waiting, 0 to 1, or None when unknown.
      text: the sentence an operator reads.
    """

    verdict: str
    wait_fraction: float | None
    text: str


def input_diagnosis(wait_seconds: float, reading_seconds: float) -> InputDiagnosis:
    """Whether readers that waited ``wait_seconds`` in ``reading_seconds`` are input-bound.

    Args:
      wait_seconds: the seconds the job's readers waited for elements, summed over readers.
      reading_seconds: the seconds the same readers have been reading, summed over readers.

    Returns:
      The ``InputDiagnosis``; ``"unknown"`` when ``reading_seconds`` is not positive
      (no reader has reported yet, or readers too old to report their reading time).

    Examples:
        >>> from tensorwire.observe import input_diagnosis
        >>> input_diagnosis(30.0, 60.0).text
        'readers wait 50% of the time: adding workers would help'
        >>> input_diagnosis(0.6, 60.0).text
        'readers wait 1% of the time: the client is the limit'
        >>> input_diagnosis(0.0, 0.0).verdict
        'unknown'
    """
    if not reading_seconds > 0:
        return InputDiagnosis("unknown", None, "no reader has reported its reading time yet")
    # A reader's wait is measured inside its reading time; clamping only absorbs the two
    # totals being reported at slightly different moments.
    fraction = min(max(wait_seconds / reading_seconds, 0.0), 1.0)
    share = f"readers wait {100 * fraction:.0f}% of the time"
    if fraction >= INPUT_BOUND_WAIT_FRACTION:
        return InputDiagnosis("input_bound", fraction, f"{share}: adding workers would help")
    if fraction < CLIENT_BOUND_WAIT_FRACTION:
        return InputDiagnosis("client_bound", fraction, f"{share}: the client is the limit")
    return InputDiagnosis(
        "balanced", fraction, f"{share}: the input keeps up, with little to spare"
    )
