"""Transforms whose function returns a dataset per element: ``flat_map`` and ``interleave``.

The nested datasets are iterated with ``ctx.without_splits()``: under dynamic sharding only
the outer pipeline's source reads splits (e.g. the file names fed to ``interleave``), as in
TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from tensorwire import errors

from .base import AUTOTUNE, DatasetBase, IterationContext
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


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


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
        inner_ctx = ctx.without_splits()
        for element in self._input._iterator(ctx):
            inner = _dataset_of(self._fn, element)._iterator(inner_ctx)
            try:
                yield from inner
            finally:
                _close(inner)


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
        if cycle_length is None or int(cycle_length) == AUTOTUNE:
            cycle_length = max(1, os.cpu_count() or 1)
        if int(cycle_length) <= 0:
            raise errors.InvalidArgumentError("cycle_length must be greater than zero.")
        block_length = 1 if block_length is None else int(block_length)
        if block_length <= 0:
            raise errors.InvalidArgumentError("block_length must be greater than zero.")
        self._cycle_length = int(cycle_length)
        self._block_length = block_length

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        inner_ctx = ctx.without_splits()
        source = self._input._iterator(ctx)
        cycle: list[Iterator[Any] | None] = [None] * self._cycle_length
        index = 0
        block = 0
        num_open = 0
        end_of_input = False
        def open_slot(slot: int) -> bool:
            """Open the dataset of the next input element in ``slot``; False at the end."""
            nonlocal end_of_input, num_open
            try:
                element = next(source)
            except StopIteration:
                end_of_input = True
                return False
            inner = _dataset_of(self._fn, element)
            if self._parallel:
                cycle[slot] = PrefetchDataset(inner, self._block_length).started_iterator(
                    inner_ctx
                )
            else:
                cycle[slot] = inner._iterator(inner_ctx)
            num_open += 1
            return True

        try:
            if self._parallel:
                # Every slot is read ahead at once, as TensorFlow opens cycle_length inputs
                # together. Filling a slot as soon as it empties gives it the same input
                # element the cycle would give it on its next visit: the order is unchanged.
                for slot in range(self._cycle_length):
                    if not open_slot(slot):
                        break
            while not end_of_input or num_open > 0:
                current = cycle[index]
                if current is not None:
                    try:
                        value = next(current)
                    except StopIteration:
                        cycle[index] = None
                        num_open -= 1
                        if self._parallel and not end_of_input:
                            open_slot(index)
                        index, block = (index + 1) % self._cycle_length, 0
                        continue
                    block += 1
                    if block == self._block_length:
                        index, block = (index + 1) % self._cycle_length, 0
                    yield value
                elif not end_of_input:
                    open_slot(index)
                else:
                    index, block = (index + 1) % self._cycle_length, 0
        finally:
            for it in cycle:
                if it is not None:
                    _close(it)
            _close(source)
