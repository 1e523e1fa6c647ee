"""The cross-trainer cache: one task's elements shared by several trainers.

TensorFlow's ``CrossTrainerCache``: the readers of a job made with
``distribute(..., job_name=..., cross_trainer_cache=CrossTrainerCache(trainer_id))`` do
not split the job's elements between them, as readers of a shared job do; each *trainer*
(readers with one ``trainer_id`` count as one) reads every element, from a window the
worker keeps per task:

- The window holds the elements most recently produced, at most
  ``WorkerConfig.cross_trainer_cache_size_bytes`` of them (sizes as
  ``elements.element_nbytes`` estimates them). A trainer that has read every element
  in the window makes it move on: the next element is produced, and the oldest ones leave
  until it fits.
- Each trainer has a position (an absolute element index). A trainer seen for the first
  time, or one whose position has left the window (it fell behind), reads from the oldest
  element still in the window: slow trainers skip elements, fast ones never wait for them.
- So every trainer sees a contiguous stream while it keeps within the window, and the
  dataset must be infinite (the end of the sequence is an error, as in TensorFlow).

One trainer at a time produces (``_extending``); the others wait for it on the condition.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from tensorwire import errors

from .elements import element_nbytes

__all__ = ["CrossTrainerCache", "TrainerWindow", "validate_trainer_id"]

#: What a window asks its source for: (up to n elements, wait at most s seconds) ->
#: (elements, end of sequence).
Source = Callable[[int, float], tuple[list[Any], bool]]


def validate_trainer_id(trainer_id: Any) -> str:
    """``trainer_id`` as a string; ValueError (TensorFlow's message) when it is empty."""
    if trainer_id is None or not str(trainer_id):
        raise ValueError("tf.data service cross-trainer cache requires a non-empty trainer ID.")
    return str(trainer_id)


class CrossTrainerCache:
    """Options of the tf.data service cross-trainer cache (TensorFlow's class).

    Pass it to ``distribute`` so that several trainers (e.g. models trained with
    different hyperparameters) read the elements of one job instead of producing them once
    each. The job needs a ``job_name`` and an infinite dataset.

    Args:
      trainer_id: identifies a trainer; readers with the same id share one position in
        the stream (they split it), readers with different ids each read all of it.

    Raises:
      ValueError: ``trainer_id`` is None or empty.

    Examples:
        >>> ds = dataset.repeat().apply(tw.data.experimental.service.distribute(
        ...     "parallel_epochs", service, job_name="shared",
        ...     cross_trainer_cache=tw.data.experimental.service.CrossTrainerCache(
        ...         trainer_id="trainer-a")))                         # doctest: +SKIP
    """

    def __init__(self, trainer_id: str) -> None:
        self.trainer_id = validate_trainer_id(trainer_id)

    def __repr__(self) -> str:
        return f"CrossTrainerCache(trainer_id={self.trainer_id!r})"


class TrainerWindow:
    """A task's sliding window of elements, read by trainers at their own positions.

    Args:
      max_bytes: the window's memory budget.
      source: where new elements come from (the task's buffer).
    """

    def __init__(self, max_bytes: int, source: Source) -> None:
        self._max_bytes = int(max_bytes)
        self._source = source
        self._cond = threading.Condition()
        self._elements: collections.deque[tuple[Any, int]] = collections.deque()
        self._bytes = 0
        self._start = 0  # absolute index of the oldest element in the window
        self._positions: dict[str, int] = {}
        self._extending = False
        self._error: errors.OpError | None = None
        self._element_bytes = 1 << 20  # the last element's size; a guess until the first

    @property
    def start(self) -> int:
        """Absolute index of the oldest element in the window."""
        with self._cond:
            return self._start

    def get(self, trainer_id: str, max_elements: int, timeout: float) -> list[Any]:
        """Up to ``max_elements`` consecutive elements for ``trainer_id``, from its position
        (or the oldest element in the window, if it is behind); [] when none came within
        ``timeout`` seconds.

        Raises:
          InvalidArgumentError: the dataset ended (it must be infinite), or an element is
            larger than the whole window.
          OpError: the task failed (its error, to every trainer from then on).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                while True:
                    if self._error is not None:
                        raise self._error
                    position = max(self._positions.get(trainer_id, 0), self._start)
                    end = self._start + len(self._elements)
                    if position < end:
                        count = min(max_elements, end - position)
                        first = position - self._start
                        out = [self._elements[i][0] for i in range(first, first + count)]
                        self._positions[trainer_id] = position + count
                        return out
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    if not self._extending:
                        self._extending = True
                        break
                    self._cond.wait(remaining)
            self._extend(max_elements, deadline)

    def _extend(self, max_elements: int, deadline: float) -> None:
        """Produce the next elements into the window (outside the lock: it may wait), as
        the one trainer whose turn it is (``_extending``)."""
        # At most half a window at once (by the size of the last element): a batch larger
        # than the window would push its own first elements out before they are read.
        count = max(1, min(max_elements, (self._max_bytes // 2) // self._element_bytes))
        try:
            new, eos = self._source(count, max(0.0, deadline - time.monotonic()))
            sized = [(e, element_nbytes(e)) for e in new]
            failure = self._check(sized, eos)
        except errors.OpError as exc:
            sized, failure = [], exc
        with self._cond:
            self._extending = False
            if failure is not None:
                sized = []
                if self._error is None:
                    self._error = failure
            for element, size in sized:
                self._element_bytes = max(1, size)
                self._make_room(size)
                self._elements.append((element, size))
                self._bytes += size
            self._cond.notify_all()

    def _check(self, sized: list[tuple[Any, int]], eos: bool) -> errors.OpError | None:
        for _, size in sized:
            if size > self._max_bytes:
                return errors.InvalidArgumentError(
                    "tf.data service element size is larger than cache size in bytes. Got "
                    f"element size: {size} and cache size: {self._max_bytes} "
                    "(WorkerConfig.cross_trainer_cache_size_bytes)"
                )
        if eos and not sized:
            return errors.InvalidArgumentError(
                "Cross-trainer caching requires the input dataset to be infinite. However, "
                "it reached the end of sequence."
            )
        return None

    def _make_room(self, size: int) -> None:
        """Drop the oldest elements until ``size`` more bytes fit. Caller holds the lock."""
        while self._elements and self._bytes + size > self._max_bytes:
            _, freed = self._elements.popleft()
            self._bytes -= freed
            self._start += 1

    def cancel(self, error: errors.OpError) -> None:
        """Fail every current and later ``get`` with ``error`` (the task was deleted)."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()
