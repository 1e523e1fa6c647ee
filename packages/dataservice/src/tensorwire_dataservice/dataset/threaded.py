"""Transforms that run work in background threads: parallel ``map`` and ``prefetch``.

Checkpoints: parallel ``map`` runs its input on the consumer's thread, so a checkpoint
saves the input's state plus the tasks in flight: outputs already computed are saved as
they are, inputs still being mapped are saved and mapped again after a restore (``map``
functions are assumed pure). ``prefetch`` pauses its thread at a consistent point (between
two reads of its input) and saves the buffered elements with the input's state.

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
from .base import (
    AUTOTUNE,
    POLL_INTERVAL,
    THREAD_JOIN_TIMEOUT,
    DatasetBase,
    IterationContext,
    integer_argument,
)
from .checkpoint import UnaryIterator, remaining
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
        return _ParallelMapIterator(self, ctx)

    def _parallel_map(self, it: _ParallelMapIterator) -> Iterator[Any]:
        ctx = it._ctx
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
                task.done.set()
                finished.put(task)

        threads = [ctx.start_thread(work, f"tw-data-map-{i}") for i in range(self._parallelism)]
        deterministic = self._deterministic
        if deterministic is None and ctx.options is not None:
            deterministic = ctx.options.effective_deterministic()
        deterministic = True if deterministic is None else bool(deterministic)
        # Tasks in flight, oldest first; a checkpoint reads them (see _ParallelMapIterator).
        pending = it._pending
        for task in it._restored_tasks:
            pending.append(task)
            if not task.done.is_set():
                todo.put(task)
            elif not deterministic:
                finished.put(task)
        it._restored_tasks = []
        window = 2 * self._parallelism
        task_size = 1
        source = iter(it._input)
        exhausted = False
        try:
            if it._restored_values:
                values = it._restored_values
                it._restored_values = []
                rest = iter(values)
                it._current = (values, rest, None)
                yield from rest
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
                rest = iter(task.values)
                it._current = (task.values, rest, task)
                yield from rest
                it._current = None
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


class _ParallelMapIterator(UnaryIterator):
    """Saves the input's state, the outputs of the current task not yet yielded, and the
    tasks in flight in order: their outputs when mapped, else their inputs.

    With ``deterministic=False`` the restored iterator yields the same elements, in an order
    that again depends on timing.
    """

    _dataset: ParallelMapDataset

    def __init__(self, dataset: ParallelMapDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._pending: collections.deque[_Task] = collections.deque()
        # (outputs, iterator over them, their task or None) while yielding a task's outputs.
        self._current: tuple[list[Any], Iterator[Any], _Task | None] | None = None
        self._restored_values: list[Any] = []
        self._restored_tasks: list[_Task] = []

    def _run(self) -> Iterator[Any]:
        return self._dataset._parallel_map(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        ready: list[Any] = list(self._restored_values)
        tasks: list[dict[str, list[Any]]] = [_task_state(t) for t in self._restored_tasks]
        if self._current is not None:
            values, rest, task = self._current
            left = remaining(rest)
            ready = values[len(values) - left :] if left else []
            if task is not None and task.error is not None:
                # Map the failing element again after a restore: it fails again there.
                tasks.append({"elements": task.elements[len(task.values) :]})
        tasks.extend(_task_state(t) for t in self._pending)
        state["ready"] = ready
        state["tasks"] = tasks
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._restored_values = list(state["ready"])
        self._restored_tasks = []
        for saved in state["tasks"]:
            if "values" in saved:
                task = _Task([])
                task.values = list(saved["values"])
                task.done.set()
            else:
                task = _Task(list(saved["elements"]))
            self._restored_tasks.append(task)


def _task_state(task: _Task) -> dict[str, list[Any]]:
    # `done` is set after the worker's last write to the task: read it first.
    if task.done.is_set() and task.error is None:
        return {"values": list(task.values)}
    return {"elements": list(task.elements)}


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
        # Checkpoint hand-shake: the consumer asks (`_pause`), the producer parks where it
        # is between two reads of its input (`_paused`), holding at most one item (`_held`)
        # that did not fit yet.
        self._pause = False
        self._paused = False
        self._held: tuple[int, Any] | None = None
        self._parked = threading.Condition(lock)

    def _stopped(self) -> bool:
        return any(e.is_set() for e in self._stops)

    def put(self, item: tuple[int, Any]) -> bool:
        """Append ``item``; False if a stop event was set while waiting for space."""
        with self._not_full:
            while len(self._items) >= self._capacity:
                if self._stopped():
                    return False
                if self._pause:
                    self._park(item)
                    continue
                self._producer_waiting = True
                self._not_full.wait(POLL_INTERVAL)
                self._producer_waiting = False
            self._items.append(item)
            if self._consumer_waiting:
                self._not_empty.notify()
            if self._pause:
                self._park(None)
        return True

    def _park(self, held: tuple[int, Any] | None) -> None:
        """(Producer, lock held.) Wait while the consumer takes a checkpoint."""
        self._held, self._paused = held, True
        self._parked.notify_all()
        while self._pause and not self._stopped():
            self._parked.wait(POLL_INTERVAL)
        self._held, self._paused = None, False

    def pause(self, producer: threading.Thread) -> list[tuple[int, Any]]:
        """(Consumer.) Park the producer between two reads of its input, or wait for it to
        end, and return the items it has produced and the consumer has not taken."""
        with self._not_full:
            self._pause = True
            self._not_full.notify_all()
            while not self._paused:
                if self._stopped():
                    raise errors.CancelledError("Iterator was closed during a checkpoint")
                if not producer.is_alive():
                    break
                self._parked.wait(POLL_INTERVAL)
            items = list(self._items)
            if self._held is not None:
                items.append(self._held)
            return items

    def resume(self) -> None:
        """(Consumer.) Let the producer go on after ``pause``."""
        with self._not_full:
            self._pause = False
            self._parked.notify_all()

    def preload(self, items: list[tuple[int, Any]]) -> None:
        """Put restored items first, before the producer starts (capacity not enforced)."""
        self._items.extend(items)

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
    ``DEFAULT_PREFETCH_BUFFER``.
    """

    _op_name = "PrefetchDataset"

    def __init__(self, input_dataset: DatasetBase, buffer_size: int) -> None:
        super().__init__(input_dataset)
        buffer_size = integer_argument(buffer_size, "buffer_size")
        if buffer_size < AUTOTUNE:
            raise errors.InvalidArgumentError(
                f"buffer_size must be >= -1 (AUTOTUNE), got {buffer_size}"
            )
        self._buffer_size = DEFAULT_PREFETCH_BUFFER if buffer_size == AUTOTUNE else buffer_size

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        if self._buffer_size == 0:
            return self._input._iterator(ctx)
        # The thread starts with the first next(), as TensorFlow's prefetch.
        return _PrefetchIterator(self, ctx)

    def started_iterator(self, ctx: IterationContext) -> Iterator[Any]:
        """An iterator whose thread is producing already (a parallel interleave opens all
        its inputs at once). Closing it before its first next() leaves the thread to
        ``ctx``, which stops and joins it when the whole iteration ends."""
        it = self._iterator(ctx)
        iter(it)  # starts the thread
        return it

    def _start(self, it: _PrefetchIterator) -> Iterator[Any]:
        ctx = it._ctx
        stop = threading.Event()
        closed = ctx.closed
        buf = _Buffer(self._buffer_size, stop, closed)
        buf.preload([(_VALUE, value) for value in it._restored])
        it._restored = []

        def produce() -> None:
            # Started here, as before checkpoints existed: what starting the input does
            # (its own threads, files) happens on this thread, errors included.
            source: Iterator[Any] = iter(())
            try:
                source = iter(it._input)
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
        it._buffer, it._thread = buf, thread
        return _drain(buf, stop, closed, thread)


class _PrefetchIterator(UnaryIterator):
    """Saves the buffered elements and the input's state, taken while the thread is
    parked between two reads of the input (so the two agree)."""

    _dataset: PrefetchDataset

    def __init__(self, dataset: PrefetchDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._restored: list[Any] = []
        self._buffer: _Buffer | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> Iterator[Any]:
        return self._dataset._start(self)

    def _save(self) -> dict[str, Any]:
        buf, thread = self._buffer, self._thread
        if buf is None or thread is None:
            state = super()._save()
            state["buffer"] = list(self._restored)
            return state
        items = buf.pause(thread)
        try:
            values = []
            for kind, value in items:
                if kind == _ERROR:
                    raise errors.FailedPreconditionError(
                        f"Cannot checkpoint {self._dataset._op_name}: its input failed with "
                        f"{type(value).__name__}: {value} (raised by the next elements)"
                    )
                if kind == _VALUE:
                    values.append(value)
            state = super()._save()
        finally:
            buf.resume()
        state["buffer"] = values
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._restored = list(state["buffer"])


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
