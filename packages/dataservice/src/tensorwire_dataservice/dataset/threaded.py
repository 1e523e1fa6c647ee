"""Transforms that run work in background threads: parallel ``map`` and ``prefetch``.

Ownership: every thread is started through ``IterationContext.start_thread``, so the
iterator that owns the iteration joins it on close. Each thread polls a stop event every
``POLL_INTERVAL`` seconds while it waits, and stops when its consumer generator is closed
(its ``finally`` sets the stop event) or when the whole iterator is closed (``ctx.closed``).
A user function that blocks forever can keep one daemon thread busy; it cannot block close.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tensorwire import errors

from . import structure
from .base import AUTOTUNE, POLL_INTERVAL, THREAD_JOIN_TIMEOUT, DatasetBase, IterationContext
from .dataset import UnaryDataset, trace_function_spec

__all__ = ["ParallelMapDataset", "PrefetchDataset", "DEFAULT_PREFETCH_BUFFER"]

#: Elements ``prefetch(AUTOTUNE)`` keeps ready.
DEFAULT_PREFETCH_BUFFER = 16


class _Task:
    """A run of consecutive input elements mapped by one worker thread."""

    __slots__ = ("elements", "values", "error", "done", "seconds")

    def __init__(self, elements: list[Any]) -> None:
        self.elements = elements
        self.values: list[Any] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.seconds = 0.0


#: Tasks carry more elements while the function takes less than this per element ...
_CHEAP_SECONDS = 20e-6
#: ... and fewer once it takes more than this, so slow functions still spread over threads.
_COSTLY_SECONDS = 500e-6
_MAX_TASK_ELEMENTS = 128


class ParallelMapDataset(UnaryDataset):
    """``map(fn, num_parallel_calls=n)``: ``n`` threads apply ``fn``.

    The consumer's thread reads the input and keeps up to ``2 * n`` tasks in flight. A task
    is a run of consecutive elements whose length adapts to the cost of ``fn`` (1 for slow
    functions, up to 128 for cheap ones), so hand-over between threads does not dominate.
    ``deterministic`` (default True) yields results in input order; False yields each task
    as soon as it is ready. An exception from ``fn`` is raised to the consumer in order.
    """

    _op_name = "ParallelMapDataset"

    def __init__(
        self,
        input_dataset: DatasetBase,
        fn: Callable[..., Any],
        num_parallel_calls: int,
        deterministic: bool | None = None,
    ) -> None:
        super().__init__(input_dataset)
        if not callable(fn):
            raise TypeError(f"`map_func` must be callable, got {fn!r}")
        self._fn = fn
        self._parallelism = int(num_parallel_calls)
        # None: decided per iteration by Options.deterministic (default True), as in TF.
        self._deterministic = None if deterministic is None else bool(deterministic)

    def _compute_element_spec(self) -> Any:
        return trace_function_spec(self, self._fn, self._input.element_spec)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        fn = self._fn
        normalize = structure.normalize_function_output
        todo: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        finished: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        stop = threading.Event()
        closed = ctx.closed

        def work() -> None:
            while not stop.is_set() and not closed.is_set():
                try:
                    task = todo.get(timeout=POLL_INTERVAL)
                except queue.Empty:
                    continue
                if task is None:
                    return
                started = time.perf_counter()
                try:
                    for element in task.elements:
                        if type(element) is tuple:
                            task.values.append(normalize(fn(*element)))
                        else:
                            task.values.append(normalize(fn(element)))
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer in order
                    task.error = exc
                task.seconds = time.perf_counter() - started
                task.elements = []
                task.done.set()
                finished.put(task)

        threads = [ctx.start_thread(work, f"tw-data-map-{i}") for i in range(self._parallelism)]
        deterministic = self._deterministic
        if deterministic is None and ctx.options is not None:
            deterministic = ctx.options.effective_deterministic()
        deterministic = True if deterministic is None else bool(deterministic)
        pending: collections.deque[_Task] = collections.deque()
        window = 2 * self._parallelism
        task_size = 1
        source = self._input._iterator(ctx)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    elements = list(itertools.islice(source, task_size))
                    if len(elements) < task_size:
                        exhausted = True
                    if not elements:
                        break
                    task = _Task(elements)
                    pending.append(task)
                    todo.put(task)
                if not pending:
                    return
                if deterministic:
                    task = pending[0]
                    while not task.done.wait(POLL_INTERVAL):
                        if closed.is_set():
                            return
                    pending.popleft()
                else:
                    while True:
                        try:
                            task = finished.get(timeout=POLL_INTERVAL)
                            break
                        except queue.Empty:
                            if closed.is_set():
                                return
                    pending.remove(task)
                yield from task.values
                if task.error is not None:
                    raise task.error
                per_element = task.seconds / max(1, len(task.values))
                if per_element < _CHEAP_SECONDS:
                    task_size = min(_MAX_TASK_ELEMENTS, task_size * 2)
                elif per_element > _COSTLY_SECONDS:
                    task_size = max(1, task_size // 2)
        finally:
            stop.set()
            for _ in threads:
                todo.put(None)
            close = getattr(source, "close", None)
            if close is not None:
                close()
            # When the whole iterator is closing, ctx.close() joins every thread under one
            # shared deadline; otherwise (e.g. take() ended early) wait for ours here.
            if not closed.is_set():
                deadline = time.monotonic() + THREAD_JOIN_TIMEOUT
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))


_VALUE, _END, _ERROR = 0, 1, 2


class _Buffer:
    """A bounded FIFO between one producer and one consumer thread.

    Waiters are woken with hysteresis (the producer only once the buffer is half empty) so
    the two threads hand over runs of elements instead of trading the GIL per element.
    Every wait is bounded by ``POLL_INTERVAL`` and gives up when a stop event is set.
    """

    def __init__(self, capacity: int, *stops: threading.Event) -> None:
        self._items: collections.deque[tuple[int, Any]] = collections.deque()
        self._capacity = capacity
        self._low = capacity // 2
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._consumer_waiting = False
        self._producer_waiting = False
        self._stops = stops

    def _stopped(self) -> bool:
        return any(e.is_set() for e in self._stops)

    def put(self, item: tuple[int, Any]) -> bool:
        """Append ``item``; False if a stop event was set while waiting for space."""
        with self._not_full:
            while len(self._items) >= self._capacity:
                if self._stopped():
                    return False
                self._producer_waiting = True
                self._not_full.wait(POLL_INTERVAL)
                self._producer_waiting = False
            self._items.append(item)
            if self._consumer_waiting:
                self._not_empty.notify()
        return True

    def get(self) -> tuple[int, Any] | None:
        """The oldest item, or None after ``POLL_INTERVAL`` without one."""
        with self._not_empty:
            if not self._items:
                self._consumer_waiting = True
                self._not_empty.wait(POLL_INTERVAL)
                self._consumer_waiting = False
                if not self._items:
                    return None
            item = self._items.popleft()
            if self._producer_waiting and len(self._items) <= self._low:
                self._not_full.notify()
            return item


class PrefetchDataset(UnaryDataset):
    """``prefetch(buffer_size)``: one background thread runs the input into a bounded buffer.

    ``buffer_size`` 0 passes elements straight through; ``AUTOTUNE`` uses
    :data:`DEFAULT_PREFETCH_BUFFER`.
    """

    _op_name = "PrefetchDataset"

    def __init__(self, input_dataset: DatasetBase, buffer_size: int) -> None:
        super().__init__(input_dataset)
        buffer_size = int(buffer_size)
        if buffer_size < AUTOTUNE:
            raise errors.InvalidArgumentError(
                f"buffer_size must be >= -1 (AUTOTUNE), got {buffer_size}"
            )
        self._buffer_size = DEFAULT_PREFETCH_BUFFER if buffer_size == AUTOTUNE else buffer_size

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        # The thread starts with the first next(), as TensorFlow's prefetch.
        yield from self.started_iterator(ctx)

    def started_iterator(self, ctx: IterationContext) -> Iterator[Any]:
        """An iterator whose thread is producing already (a parallel interleave opens all
        its inputs at once). Closing it before its first next() leaves the thread to
        ``ctx``, which stops and joins it when the whole iteration ends."""
        if self._buffer_size == 0:
            return self._input._iterator(ctx)
        stop = threading.Event()
        closed = ctx.closed
        buf = _Buffer(self._buffer_size, stop, closed)
        source = self._input._iterator(ctx)

        def produce() -> None:
            try:
                for element in source:
                    if not buf.put((_VALUE, element)):
                        return
                buf.put((_END, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                buf.put((_ERROR, exc))
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001 - the consumer has the real outcome
                        pass

        thread = ctx.start_thread(produce, "tw-data-prefetch")
        return _drain(buf, stop, closed, thread)


def _drain(
    buf: _Buffer, stop: threading.Event, closed: threading.Event, thread: threading.Thread
) -> Iterator[Any]:
    """The elements a prefetch thread puts into ``buf``, until its end or its error."""
    try:
        while True:
            item = buf.get()
            if item is None:
                if closed.is_set():
                    return
                if not thread.is_alive():
                    item = buf.get()
                    if item is None:
                        raise errors.InternalError("The prefetch thread ended without a result")
                else:
                    continue
            kind, value = item
            if kind == _VALUE:
                yield value
            elif kind == _END:
                return
            else:
                raise value
    finally:
        stop.set()
        if not closed.is_set():  # otherwise ctx.close() joins under its own deadline
            thread.join(THREAD_JOIN_TIMEOUT)
