"""Batching transforms: ``batch``, ``padded_batch``, ``unbatch`` and ``window``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from tensorwire import errors

from . import structure
from .base import INFINITE, UNKNOWN, DatasetBase, IterationContext, integer_argument
from .checkpoint import NodeIterator, UnaryIterator, remaining
from .dataset import Dataset, UnaryDataset
from .structure import STRING, DatasetSpec, TensorSpec

__all__ = ["BatchDataset", "PaddedBatchDataset", "UnbatchDataset", "WindowDataset"]


def _batched_cardinality(n: int, batch_size: int, drop_remainder: bool) -> int:
    if n in (INFINITE, UNKNOWN):
        return n
    return n // batch_size if drop_remainder else -(-n // batch_size)


def _check_batch_size(batch_size: Any) -> int:
    batch_size = integer_argument(batch_size, "batch_size")
    if batch_size <= 0:
        raise errors.InvalidArgumentError("Batch size must be greater than zero.")
    return batch_size


class BatchDataset(UnaryDataset):
    """``batch(batch_size, drop_remainder=False)``: stacks components along a new axis 0."""

    _op_name = "BatchDataset"

    def __init__(self, input_dataset: DatasetBase, batch_size: int, drop_remainder: bool = False):
        super().__init__(input_dataset)
        self._batch_size = _check_batch_size(batch_size)
        self._drop_remainder = bool(drop_remainder)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        # A batch is complete when it is yielded: between batches the buffer is empty, so
        # the state is the input's alone.
        return UnaryIterator(self, ctx, self._batches)

    def _batches(self, source: Iterator[Any]) -> Iterator[Any]:
        size = self._batch_size
        buf: list[Any] = []
        for element in source:
            buf.append(element)
            if len(buf) == size:
                yield self._stack(buf)
                buf = []
        if buf and not self._drop_remainder:
            yield self._stack(buf)

    @staticmethod
    def _stack(buf: list[Any]) -> Any:
        first = buf[0]
        if isinstance(first, (np.generic, np.ndarray, bytes)):
            return structure.stack_components(buf, 0)
        flats = [structure.flatten(e) for e in buf]
        columns = [
            structure.stack_components([f[i] for f in flats], i) for i in range(len(flats[0]))
        ]
        return structure.pack_sequence_as(first, columns)

    def _cardinality(self) -> int:
        return _batched_cardinality(
            self._input._cardinality(), self._batch_size, self._drop_remainder
        )

    def _compute_element_spec(self) -> Any:
        lead = self._batch_size if self._drop_remainder else None
        return structure.map_structure(
            lambda s: TensorSpec(None if s.shape is None else (lead,) + s.shape, s.dtype),
            self._input.element_spec,
        )


def _default_padding(dtype: np.dtype) -> Any:
    return b"" if dtype == STRING else np.zeros((), dtype)[()]


class PaddedBatchDataset(UnaryDataset):
    """``padded_batch(batch_size, padded_shapes=None, padding_values=None, drop_remainder)``.

    Unknown padded dimensions (``None`` or ``-1``) pad to the largest size in the batch.
    """

    _op_name = "PaddedBatchDataset"

    def __init__(
        self,
        input_dataset: DatasetBase,
        batch_size: int,
        padded_shapes: Any = None,
        padding_values: Any = None,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__(input_dataset)
        self._batch_size = _check_batch_size(batch_size)
        self._drop_remainder = bool(drop_remainder)
        spec = input_dataset.element_spec
        flat_spec = structure.flatten(spec)
        if padded_shapes is None:
            for s in flat_spec:
                if s.shape is None:
                    raise ValueError(
                        "You must provide `padded_shapes` argument because component "
                        f"{s} has unknown rank."
                    )
            # Pad every dimension to the batch's largest: equal to TensorFlow's default for
            # static dims, and robust where a traced spec missed a data-dependent size.
            shapes = [tuple([None] * len(s.shape)) for s in flat_spec]
        else:
            shapes = _flatten_shapes(spec, padded_shapes)
            for s, padded in zip(flat_spec, shapes, strict=False):
                if s.shape is not None and len(s.shape) != len(padded):
                    raise ValueError(
                        f"The padded shape {list(padded)} is not compatible with the shape "
                        f"{list(s.shape)} of the corresponding input component."
                    )
        self._padded_shapes = [
            tuple(None if d is None or d < 0 else int(d) for d in sh) for sh in shapes
        ]
        if padding_values is None:
            values = [_default_padding(s.dtype) for s in flat_spec]
        elif not isinstance(padding_values, (tuple, dict)):
            values = [padding_values] * len(flat_spec)
        else:
            structure.assert_same_structure(spec, padding_values, "padding_values structure")
            values = structure.flatten(padding_values)
        self._padding_values = [
            (v.encode() if isinstance(v, str) else v)
            if s.dtype == STRING
            else np.asarray(v, s.dtype)
            for v, s in zip(values, flat_spec, strict=False)
        ]

    def _pad(self, column: list[Any], component: int) -> np.ndarray:
        target = self._padded_shapes[component]
        shapes = [np.shape(v) for v in column]
        rank = len(target)
        for sh in shapes:
            if len(sh) != rank:
                raise errors.InvalidArgumentError(
                    f"All elements in a batch must have the same rank as the padded shape for "
                    f"component {component}: expected rank {rank} but got an element of shape "
                    f"{list(sh)}."
                )
        dims: list[int] = []
        for axis in range(rank):
            largest = max(int(sh[axis]) for sh in shapes)
            fixed = target[axis]
            if fixed is None:
                dims.append(largest)
            else:
                if largest > fixed:
                    raise errors.InvalidArgumentError(
                        "Attempted to pad to a smaller size than the input element."
                    )
                dims.append(fixed)
        pad_value = self._padding_values[component]
        dtype = object if isinstance(pad_value, bytes) else pad_value.dtype
        out: np.ndarray = np.empty((len(column), *dims), dtype=dtype)
        out[...] = pad_value
        for i, v in enumerate(column):
            index: tuple[Any, ...] = (i, *(slice(0, d) for d in np.shape(v)))
            out[index] = v
        return out

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return UnaryIterator(self, ctx, self._batches)  # as BatchDataset: no state of its own

    def _batches(self, source: Iterator[Any]) -> Iterator[Any]:
        size = self._batch_size
        buf: list[Any] = []
        for element in source:
            buf.append(element)
            if len(buf) == size:
                yield self._batch(buf)
                buf = []
        if buf and not self._drop_remainder:
            yield self._batch(buf)

    def _batch(self, buf: list[Any]) -> Any:
        flats = [structure.flatten(e) for e in buf]
        columns = [self._pad([f[i] for f in flats], i) for i in range(len(flats[0]))]
        return structure.pack_sequence_as(buf[0], columns)

    def _cardinality(self) -> int:
        return _batched_cardinality(
            self._input._cardinality(), self._batch_size, self._drop_remainder
        )

    def _compute_element_spec(self) -> Any:
        lead = self._batch_size if self._drop_remainder else None
        flat = structure.flatten(self._input.element_spec)
        specs = [
            TensorSpec((lead, *sh), s.dtype)
            for s, sh in zip(flat, self._padded_shapes, strict=False)
        ]
        return structure.pack_sequence_as(self._input.element_spec, specs)


def _flatten_shapes(spec: Any, shapes: Any) -> list[tuple[Any, ...]]:
    """Flatten ``padded_shapes`` (shapes are leaves) along the structure of ``spec``."""
    if isinstance(spec, tuple):
        shapes = tuple(shapes)
        if len(shapes) != len(spec):
            raise ValueError("`padded_shapes` must have the same structure as the elements")
        out: list[tuple[Any, ...]] = []
        for s, sh in zip(spec, shapes, strict=False):
            out.extend(_flatten_shapes(s, sh))
        return out
    if isinstance(spec, dict):
        out = []
        for key in sorted(spec):
            out.extend(_flatten_shapes(spec[key], shapes[key]))
        return out
    if isinstance(shapes, (int, np.integer)):
        shapes = (shapes,)
    return [tuple(shapes) if shapes is not None else tuple([None] * len(spec.shape or ()))]


class UnbatchDataset(UnaryDataset):
    """``unbatch()``: splits each element along axis 0 (all components must agree)."""

    _op_name = "UnbatchDataset"

    def __init__(self, input_dataset: DatasetBase) -> None:
        super().__init__(input_dataset)
        for s in structure.flatten(input_dataset.element_spec):
            if s.shape is not None and len(s.shape) == 0:
                raise ValueError("Cannot unbatch an input with scalar components.")

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _UnbatchIterator(self, ctx)

    def _unbatch(self, it: _UnbatchIterator) -> Iterator[Any]:
        if it._rest is not None:  # restored inside an element: its remaining rows first
            rest, it._rest = it._rest, None
            yield from self._rows(it, rest)
        for element in it._input:
            if isinstance(element, np.ndarray) and element.ndim:
                # The common case inline: one generator level per row, as before checkpoints.
                rows = iter(element)
                it._current = (element, rows)
                yield from rows
            else:
                yield from self._rows(it, element)

    def _rows(self, it: _UnbatchIterator, element: Any) -> Iterator[Any]:
        if isinstance(element, np.ndarray):
            if element.ndim == 0:
                raise errors.InvalidArgumentError(
                    "Input element must have a non-scalar value in each component."
                )
            rows = iter(element)
            it._current = (element, rows)
            yield from rows
        else:
            flat = structure.flatten(element)
            if any(np.ndim(c) == 0 for c in flat):
                raise errors.InvalidArgumentError(
                    "Input element must have a non-scalar value in each component."
                )
            sizes = {int(np.shape(c)[0]) for c in flat}
            if len(sizes) != 1:
                raise errors.InvalidArgumentError(
                    "Input element must have the same batch size in each component. Component "
                    f"sizes were {sorted(sizes)}."
                )
            indices = iter(range(sizes.pop()))
            it._current = (element, indices)
            for i in indices:
                yield structure.pack_sequence_as(element, [c[i] for c in flat])

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if n == INFINITE:
            return INFINITE
        if n == UNKNOWN:
            return UNKNOWN
        leads = {
            s.shape[0] if s.shape else None for s in structure.flatten(self._input.element_spec)
        }
        if len(leads) == 1:
            lead = leads.pop()
            if lead is not None:
                return n * lead
        return UNKNOWN

    def _compute_element_spec(self) -> Any:
        return structure.map_structure(
            lambda s: TensorSpec(None if s.shape is None else s.shape[1:], s.dtype),
            self._input.element_spec,
        )


class _UnbatchIterator(UnaryIterator):
    """Saves the rows of the current input element not yet yielded (plus the input)."""

    _dataset: UnbatchDataset

    def __init__(self, dataset: UnbatchDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        # The element being split and the C iterator over its rows (or row indices).
        self._current: tuple[Any, Iterator[Any]] | None = None
        self._rest: Any = None  # restored remaining rows, yielded first

    def _run(self) -> Iterator[Any]:
        return self._dataset._unbatch(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        rest = self._rest
        if self._current is not None:
            element, rows = self._current
            left = remaining(rows)
            rest = None if left == 0 else _last_rows(element, left)
        state["rest"] = rest
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._rest = state["rest"]


def _last_rows(element: Any, count: int) -> Any:
    """``element`` keeping only its last ``count`` rows in every component."""
    if isinstance(element, np.ndarray):
        return element[len(element) - count :]
    flat = structure.flatten(element)
    return structure.pack_sequence_as(element, [c[len(c) - count :] for c in flat])


class _ListDataset(Dataset):
    """A finite dataset over elements held in memory: one component of a window."""

    _op_name = "WindowDataset"

    def __init__(self, elements: list[Any], spec: Any) -> None:
        self._elements = elements
        self._spec = spec

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _ListIterator(self, ctx)

    def _cardinality(self) -> int:
        return len(self._elements)

    def _compute_element_spec(self) -> Any:
        return self._spec


class _ListIterator(NodeIterator):
    """Saves the position in the list (counted by the list iterator itself)."""

    _dataset: _ListDataset

    def __init__(self, dataset: _ListDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._begin = 0
        self._left: Iterator[Any] | None = None

    def _run(self) -> Iterator[Any]:
        self._left = left = iter(self._dataset._elements[self._begin :])
        return left

    def _save(self) -> dict[str, Any]:
        n = len(self._dataset._elements)
        return {"position": self._begin if self._left is None else n - remaining(self._left)}

    def _restore(self, state: dict[str, Any]) -> None:
        self._begin = int(state["position"])


class WindowDataset(UnaryDataset):
    """``window(size, shift=None, stride=1, drop_remainder=False)``.

    Window ``k`` holds input elements ``k*shift + i*stride`` for ``i < size``; each window is
    a structure like the input's whose components are finite datasets (``DatasetSpec``).
    Windows are produced while their first element exists; ``drop_remainder`` drops those
    shorter than ``size``.
    """

    _op_name = "WindowDataset"

    def __init__(
        self,
        input_dataset: DatasetBase,
        size: int,
        shift: int | None = None,
        stride: int = 1,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__(input_dataset)
        size = integer_argument(size, "size")
        shift = size if shift is None else integer_argument(shift, "shift")
        stride = integer_argument(stride, "stride")
        for name, value in (("size", size), ("shift", shift), ("stride", stride)):
            if value <= 0:
                raise errors.InvalidArgumentError(f"Window {name} must be greater than zero.")
        self._size, self._shift, self._stride = size, shift, stride
        self._drop_remainder = bool(drop_remainder)

    def _window(self, items: list[Any]) -> Any:
        spec = self._input.element_spec
        flat_specs = structure.flatten(spec)
        flats = [structure.flatten(e) for e in items]
        columns = [
            _ListDataset([f[i] for f in flats], flat_specs[i]) for i in range(len(flat_specs))
        ]
        return structure.pack_sequence_as(spec, columns)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _WindowIterator(self, ctx)

    def _windows(self, it: _WindowIterator) -> Iterator[Any]:
        size, shift, stride = self._size, self._shift, self._stride
        span = (size - 1) * stride + 1
        source = iter(it._input)
        # Input elements from position `base` on; the next window starts at `start`. Kept
        # on the iterator object between windows, which is what a checkpoint saves.
        buf: list[Any] = it._buf
        base, start, exhausted = it._base, it._start, it._exhausted
        while True:
            while not exhausted and base + len(buf) < start + span:
                try:
                    buf.append(next(source))
                except StopIteration:
                    exhausted = True
            offset = start - base
            if offset >= len(buf):
                return
            items = buf[offset : offset + span : stride]
            if len(items) < size and self._drop_remainder:
                return
            it._start, it._exhausted = start + shift, exhausted
            yield self._window(items)
            start += shift
            drop = min(start - base, len(buf))
            del buf[:drop]
            base += drop
            while base < start and not exhausted:  # shift > span: skip unread elements
                try:
                    next(source)
                    base += 1
                except StopIteration:
                    exhausted = True
            it._base, it._start, it._exhausted = base, start, exhausted

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if n in (INFINITE, UNKNOWN):
            return n
        span = (self._size - 1) * self._stride + 1
        if self._drop_remainder:
            return 0 if n < span else (n - span) // self._shift + 1
        return -(-n // self._shift)

    def _compute_element_spec(self) -> Any:
        return structure.map_structure(DatasetSpec, self._input.element_spec)


class _WindowIterator(UnaryIterator):
    """Saves the buffered input elements the next windows need and their positions.

    At a ``yield`` the buffer still holds the window just delivered; the saved state drops
    what the next window no longer needs, as the generator does when it resumes.
    """

    _dataset: WindowDataset

    def __init__(self, dataset: WindowDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._buf: list[Any] = []
        self._base = 0
        self._start = 0
        self._exhausted = False

    def _run(self) -> Iterator[Any]:
        return self._dataset._windows(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        drop = min(max(0, self._start - self._base), len(self._buf))
        state["buffer"] = self._buf[drop:]
        state["base"] = self._base + drop
        state["start"] = self._start
        state["exhausted"] = self._exhausted
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._buf = list(state["buffer"])
        self._base = int(state["base"])
        self._start = int(state["start"])
        self._exhausted = bool(state["exhausted"])
