"""Transforms whose function returns a dataset per element: ``flat_map`` and ``interleave``.

The nested datasets are iterated with ``ctx.without_splits()``: under dynamic sharding only
the outer pipeline's source reads splits (e.g. the file names fed to ``interleave``), as in
TensorFlow.

Checkpoints save, for every nested dataset open, the input element it was made from and
its iterator's state; a restore calls ``map_func`` on that element again (so ``map_func``
must be deterministic) and restores the nested iterator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from tensorwire import errors

from .base import AUTOTUNE, DatasetBase, IterationContext, integer_argument
from .checkpoint import UnaryIterator, close_iterator, restore_iterator, save_iterator
from .dataset import UnaryDataset, _first_element, call_with_element, trace_function_outputs
from .threaded import PrefetchDataset

__all__ = ["FlatMapDataset", "InterleaveDataset"]


def _dataset_of(fn: Callable[..., Any], element: Any) -> DatasetBase:
    result = call_with_element(fn, element)
    if not isinstance(result, DatasetBase):
        raise TypeError(
            f"The `map_func` argument must return a `Dataset` object. Got {type(result).__name__}."
        )
    return result


_close = close_iterator


class _Open:
    """A nested dataset being read: the input element it came from, the dataset whose
    iterator is read (for a parallel interleave, a prefetch around the nested dataset),
    and that iterator."""

    __slots__ = ("element", "dataset", "iterator")

    def __init__(self, element: Any, dataset: DatasetBase, iterator: Any) -> None:
        self.element = element
        self.dataset = dataset
        self.iterator = iterator

    def save(self) -> dict[str, Any]:
        return {"element": self.element, "state": save_iterator(self.iterator, self.dataset)}


class _NestedDataset(UnaryDataset):
    #: FILE auto-sharding may shard a list of file names feeding this op (see sharding).
    _opens_datasets = True

    def __init__(self, input_dataset: DatasetBase, fn: Callable[..., Any]) -> None:
        super().__init__(input_dataset)
        if not callable(fn):
            raise TypeError(f"`map_func` must be callable, got {fn!r}")
        self._fn = fn

    def _compute_element_spec(self) -> Any:
        from . import structure

        try:
            first, second = trace_function_outputs(self._fn, self._input.element_spec)
            if isinstance(first, DatasetBase) and isinstance(second, DatasetBase):
                return structure.merge_specs(first.element_spec, second.element_spec)
        except Exception:  # noqa: BLE001 - fall back to a real element
            pass
        element = _first_element(self._input)
        return _dataset_of(self._fn, element).element_spec

    def _cardinality(self) -> int:
        from .base import UNKNOWN

        return UNKNOWN


class FlatMapDataset(_NestedDataset):
    """``flat_map(fn)``: the elements of ``fn(e)`` for each input element ``e``, in order."""

    _op_name = "FlatMapDataset"

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _FlatMapIterator(self, ctx)

    def _flat_map(self, it: _FlatMapIterator) -> Iterator[Any]:
        inner_ctx = it._inner_ctx
        if it._open is not None:  # restored inside a nested dataset
            try:
                yield from it._open.iterator
            finally:
                _close(it._open.iterator)
        for element in it._input:
            dataset = _dataset_of(self._fn, element)
            inner = dataset._iterator(inner_ctx)
            it._open = _Open(element, dataset, inner)
            try:
                yield from inner
            finally:
                _close(inner)
        it._open = None


class _FlatMapIterator(UnaryIterator):
    """Saves the input's state and the nested dataset being read (see the module doc)."""

    _dataset: FlatMapDataset

    def __init__(self, dataset: FlatMapDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._inner_ctx = ctx.without_splits()
        self._open: _Open | None = None

    def _run(self) -> Iterator[Any]:
        return self._dataset._flat_map(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["open"] = None if self._open is None else self._open.save()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._open = _reopen(self._dataset._fn, state["open"], self._inner_ctx, None)

    def _close_unstarted(self) -> None:
        super()._close_unstarted()
        if self._open is not None:
            _close(self._open.iterator)


def _reopen(
    fn: Callable[..., Any], saved: Any, ctx: IterationContext, prefetch: int | None
) -> _Open | None:
    """The nested dataset of a checkpoint (``saved`` from ``_Open.save``), restored."""
    if saved is None:
        return None
    element = saved["element"]
    dataset = _dataset_of(fn, element)
    if prefetch is not None:
        dataset = PrefetchDataset(dataset, prefetch)
    return _Open(element, dataset, restore_iterator(dataset, ctx, saved["state"]))


class InterleaveDataset(_NestedDataset):
    """``interleave(fn, cycle_length, block_length)``, in TensorFlow's deterministic order.

    ``cycle_length`` nested iterators are open at once; ``block_length`` consecutive
    elements are taken from each in turn; an exhausted one is replaced by the dataset of the
    next input element. With ``parallel`` (``num_parallel_calls`` given) every open nested
    dataset is read ahead by a thread of its own, ``block_length`` elements deep, as
    TensorFlow's parallel interleave does; the order is unchanged.
    """

    _op_name = "InterleaveDataset"

    def __init__(
        self,
        input_dataset: DatasetBase,
        fn: Callable[..., Any],
        cycle_length: int | None = None,
        block_length: int | None = None,
        parallel: bool = False,
    ) -> None:
        super().__init__(input_dataset, fn)
        self._parallel = bool(parallel)
        if cycle_length is None or integer_argument(cycle_length, "cycle_length") == AUTOTUNE:
            cycle_length = max(1, os.cpu_count() or 1)
        if int(cycle_length) <= 0:
            raise errors.InvalidArgumentError("cycle_length must be greater than zero.")
        block_length = 1 if block_length is None else integer_argument(block_length, "block_length")
        if block_length <= 0:
            raise errors.InvalidArgumentError("block_length must be greater than zero.")
        self._cycle_length = int(cycle_length)
        self._block_length = block_length

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _InterleaveIterator(self, ctx)

    def _interleave(self, it: _InterleaveIterator) -> Iterator[Any]:
        inner_ctx = it._inner_ctx
        source = iter(it._input)
        slots = it._slots  # what a checkpoint saves: element, dataset, iterator per slot
        # The running iterators of the slots (generators), read in the hot loop.
        cycle: list[Iterator[Any] | None] = [None if s is None else iter(s.iterator) for s in slots]
        index, block = it._index, it._block
        num_open = sum(1 for s in slots if s is not None)
        cycle_length, block_length = self._cycle_length, self._block_length

        def open_slot(slot: int) -> bool:
            """Open the dataset of the next input element in ``slot``; False at the end."""
            nonlocal num_open
            try:
                element = next(source)
            except StopIteration:
                it._end_of_input = True
                return False
            inner = _dataset_of(self._fn, element)
            if self._parallel:
                inner = PrefetchDataset(inner, block_length)
                iterator = inner.started_iterator(inner_ctx)
            else:
                iterator = inner._iterator(inner_ctx)
            slots[slot] = _Open(element, inner, iterator)
            cycle[slot] = iter(iterator)
            num_open += 1
            return True

        try:
            if self._parallel and not it._opened:
                # Every slot is read ahead at once, as TensorFlow opens cycle_length inputs
                # together. Filling a slot as soon as it empties gives it the same input
                # element the cycle would give it on its next visit: the order is unchanged.
                for slot in range(cycle_length):
                    if not open_slot(slot):
                        break
            it._opened = True
            while not it._end_of_input or num_open > 0:
                current = cycle[index]
                if current is not None:
                    try:
                        value = next(current)
                    except StopIteration:
                        cycle[index] = slots[index] = None
                        num_open -= 1
                        if self._parallel and not it._end_of_input:
                            open_slot(index)
                        index, block = (index + 1) % cycle_length, 0
                        continue
                    block += 1
                    if block == block_length:
                        index, block = (index + 1) % cycle_length, 0
                    it._index, it._block = index, block
                    yield value
                elif not it._end_of_input:
                    open_slot(index)
                else:
                    index, block = (index + 1) % cycle_length, 0
        finally:
            for running in cycle:
                if running is not None:
                    _close(running)
            _close(source)


class _InterleaveIterator(UnaryIterator):
    """Saves the input's state, each slot's nested dataset (see the module doc; in
    parallel mode with the elements its thread has read ahead) and the cycle position."""

    _dataset: InterleaveDataset

    def __init__(self, dataset: InterleaveDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._inner_ctx = ctx.without_splits()
        self._slots: list[_Open | None] = [None] * dataset._cycle_length
        self._index = 0
        self._block = 0
        self._end_of_input = False
        self._opened = False  # parallel mode: the slots were first filled

    def _run(self) -> Iterator[Any]:
        return self._dataset._interleave(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["slots"] = [None if s is None else s.save() for s in self._slots]
        state["index"], state["block"] = self._index, self._block
        state["end_of_input"] = self._end_of_input
        state["opened"] = self._opened or self._started()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        ds = self._dataset
        if len(state["slots"]) != ds._cycle_length:
            raise errors.InvalidArgumentError(
                f"The checkpoint of InterleaveDataset has {len(state['slots'])} slots, the "
                f"pipeline's cycle_length is {ds._cycle_length}"
            )
        prefetch = ds._block_length if ds._parallel else None
        self._slots = [_reopen(ds._fn, s, self._inner_ctx, prefetch) for s in state["slots"]]
        self._index, self._block = int(state["index"]), int(state["block"])
        self._end_of_input = bool(state["end_of_input"])
        self._opened = bool(state["opened"])

    def _close_unstarted(self) -> None:
        super()._close_unstarted()
        for slot in self._slots:
            if slot is not None:
                _close(slot.iterator)
