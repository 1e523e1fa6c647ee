"""Source datasets: ``range``, ``from_tensor_slices``, ``from_tensors``, ``from_generator``,
``list_files``.

``range``, ``from_tensor_slices`` and ``list_files`` are splittable for dynamic sharding
(splits are ``(begin, end)`` element positions); see ``sharding``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from tensorwire import errors

from . import structure
from .base import IterationContext, integer_argument
from .checkpoint import NodeIterator, counter, position, remaining
from .dataset import Dataset
from .sharding import IndexSplitProvider, SplitProvider, default_split_size
from .structure import STRING, TensorSpec

__all__ = [
    "RangeDataset",
    "TensorSliceDataset",
    "TensorDataset",
    "GeneratorDataset",
    "ListFilesDataset",
    "CounterDataset",
    "RandomDataset",
    "epoch_seed",
]


def epoch_seed(seed: int | None, epoch: int) -> np.random.Generator:
    """The random generator for one epoch: reproducible per (seed, epoch) when seeded."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, epoch])


def claim_epoch(dataset: Any, counts: bool = True) -> int:
    """The epoch number of a new iteration of ``dataset`` (its transient ``_epochs``
    counter, advanced here); always 0 when ``counts`` is False (same order every time)."""
    epoch = dataset._epochs if counts else 0
    dataset._epochs += 1
    return int(epoch)


def resume_epoch(dataset: Any, epoch: int) -> None:
    """After restoring an iteration of epoch ``epoch``: later iterations of ``dataset`` in
    this process continue the count, as they would have without the restart."""
    dataset._epochs = max(dataset._epochs, int(epoch) + 1)


class IndexedSource(Dataset):
    """A source of ``n`` elements addressable by position; splittable by index ranges."""

    def _num_elements(self) -> int:
        raise NotImplementedError

    def _elements(self, begin: int, end: int) -> tuple[Iterator[Any], Iterator[Any]]:
        """The elements ``[begin, end)``, and an iterator whose ``remaining`` count says how
        many of them are still to come (the position a checkpoint saves)."""
        raise NotImplementedError

    def _cardinality(self) -> int:
        return self._num_elements()

    def _make_split_provider(self, split_size: int | None) -> SplitProvider:
        n = self._num_elements()
        return IndexSplitProvider(n, split_size or default_split_size(n))

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        if ctx.split_provider_for(self) is None:
            return _IndexedIterator(self, ctx)
        return self._split_iterator(ctx)

    def _split_iterator(self, ctx: IterationContext) -> Iterator[Any]:
        provider = ctx.split_provider_for(self)
        assert provider is not None
        n = self._num_elements()
        while not ctx.closed.is_set():
            split = provider.get_next()
            if split is None:
                return
            if not isinstance(split, (tuple, list)) or len(split) != 2:
                raise errors.InvalidArgumentError(
                    f"{self._op_name} expects (begin, end) splits, got {split!r}"
                )
            begin, end = int(split[0]), int(split[1])
            if not (0 <= begin <= end <= n):
                raise errors.InvalidArgumentError(
                    f"Split {split!r} is outside {self._op_name} of {n} elements"
                )
            yield from self._elements(begin, end)[0]


class _IndexedIterator(NodeIterator):
    """Saves the position in ``[0, n)``; the count lives in a C iterator (no per-element
    bookkeeping)."""

    _dataset: IndexedSource

    def __init__(self, dataset: IndexedSource, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._begin = 0
        self._n = dataset._num_elements()
        self._left: Iterator[Any] | None = None

    def _run(self) -> Iterator[Any]:
        # The C-level iterator itself, not a generator around it: a finished one saves
        # position n, which restores to nothing, so "finished" needs no generator state.
        elements, self._left = self._dataset._elements(self._begin, self._n)
        return elements

    def _save(self) -> dict[str, Any]:
        left = self._left
        return {"position": self._begin if left is None else self._n - remaining(left)}

    def _restore(self, state: dict[str, Any]) -> None:
        self._begin = min(int(state["position"]), self._n)


class RangeDataset(IndexedSource):
    """``Dataset.range(start, stop, step, dtype=np.int64)``: NumPy scalars."""

    _op_name = "RangeDataset"

    def __init__(self, *args: int, dtype: Any = np.int64) -> None:
        if not 1 <= len(args) <= 3:
            raise ValueError(f"Invalid arguments to range: {args}")
        if len(args) == 1:
            start, stop, step = 0, args[0], 1
        elif len(args) == 2:
            (start, stop), step = args, 1
        else:
            start, stop, step = args
        start, stop, step = (
            integer_argument(v, name)
            for v, name in ((start, "start"), (stop, "stop"), (step, "step"))
        )
        if step == 0:
            raise errors.InvalidArgumentError("step must be a non-zero integer.")
        self._range = range(start, stop, step)
        self._dtype = np.dtype(dtype)

    def _num_elements(self) -> int:
        return len(self._range)

    def _elements(self, begin: int, end: int) -> tuple[Iterator[Any], Iterator[Any]]:
        values = iter(self._range[begin:end])
        return map(self._dtype.type, values), values

    def _compute_element_spec(self) -> Any:
        return TensorSpec((), self._dtype)


class TensorSliceDataset(IndexedSource):
    """``Dataset.from_tensor_slices(tensors)``: slices along the first axis."""

    _op_name = "TensorSliceDataset"

    def __init__(self, tensors: Any) -> None:
        value = structure.normalize_element(tensors)
        flat = structure.flatten(value)
        if not flat:
            raise ValueError("Invalid `tensors`: an empty structure has nothing to slice")
        arrays = []
        for leaf in flat:
            arr = (
                leaf if isinstance(leaf, np.ndarray) else np.asarray(leaf, dtype=_leaf_dtype(leaf))
            )
            if arr.ndim == 0:
                raise ValueError(
                    "Unbatching a tensor is only supported for rank >= 1: "
                    f"from_tensor_slices got a scalar component {leaf!r}"
                )
            arrays.append(arr)
        n = arrays[0].shape[0]
        for arr in arrays[1:]:
            if arr.shape[0] != n:
                raise ValueError(
                    f"Dimension 0 in all components must be equal, but are {n} and "
                    f"{arr.shape[0]}. Shapes are {list(arrays[0].shape)} and {list(arr.shape)}."
                )
        self._structure = value
        self._arrays = arrays
        self._n = int(n)

    def _num_elements(self) -> int:
        return self._n

    def _num_files(self) -> int:
        return self._n

    def _shard_files(self, num_shards: int, index: int) -> TensorSliceDataset:
        """This source keeping slices ``index::num_shards`` (FILE sharding of file names)."""
        clone = object.__new__(TensorSliceDataset)
        clone.__dict__.update(self.__getstate__())
        clone._arrays = [a[index::num_shards] for a in self._arrays]
        clone._n = len(clone._arrays[0])
        return clone

    def _elements(self, begin: int, end: int) -> tuple[Iterator[Any], Iterator[Any]]:
        arrays = self._arrays
        if len(arrays) == 1 and not isinstance(self._structure, (tuple, dict)):
            slices = iter(arrays[0][begin:end])
            return slices, slices
        pack = structure.pack_sequence_as
        template = self._structure
        indices = iter(range(begin, end))
        return (pack(template, [a[i] for a in arrays]) for i in indices), indices

    def _compute_element_spec(self) -> Any:
        specs = [TensorSpec(a.shape[1:], a.dtype) for a in self._arrays]
        return structure.pack_sequence_as(self._structure, specs)


def _leaf_dtype(leaf: Any) -> Any:
    return STRING if isinstance(leaf, bytes) else None


class TensorDataset(Dataset):
    """``Dataset.from_tensors(tensors)``: one element. Not splittable."""

    _op_name = "TensorDataset"

    def __init__(self, tensors: Any) -> None:
        self._value = structure.normalize_element(tensors)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _OnceIterator(self, ctx)

    def _cardinality(self) -> int:
        return 1

    def _compute_element_spec(self) -> Any:
        return structure.spec_from_value(self._value)


class _OnceIterator(NodeIterator):
    _dataset: TensorDataset

    def __init__(self, dataset: TensorDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._done = False

    def _run(self) -> Iterator[Any]:
        if not self._done:
            self._done = True
            yield self._dataset._value

    def _save(self) -> dict[str, Any]:
        return {"done": self._done}

    def _restore(self, state: dict[str, Any]) -> None:
        self._done = bool(state["done"])


def _spec_of_signature(signature: Any) -> Any:
    """Accept our TensorSpec or anything with ``shape``/``dtype`` (e.g. tf.TensorSpec)."""
    if isinstance(signature, tuple):
        items = [_spec_of_signature(s) for s in signature]
        return type(signature)(*items) if hasattr(type(signature), "_fields") else tuple(items)
    if isinstance(signature, dict):
        return type(signature)((k, _spec_of_signature(v)) for k, v in signature.items())
    if isinstance(signature, TensorSpec):
        return signature
    if hasattr(signature, "shape") and hasattr(signature, "dtype"):
        shape = signature.shape
        shape = None if shape is None else tuple(shape)
        dtype = getattr(signature.dtype, "as_numpy_dtype", signature.dtype)
        return TensorSpec(shape, dtype)
    raise TypeError(
        "`output_signature` must contain objects that are subclass of `tf.TypeSpec` "
        f"(here: TensorSpec) but found {type(signature).__name__} which is not."
    )


def _dtype_of(dtype: Any) -> np.dtype:
    if dtype in (str, bytes) or dtype == "string":
        return STRING
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


class GeneratorDataset(Dataset):
    """``Dataset.from_generator``: elements yielded by a Python callable's generator.

    The callable travels with the dataset (cloudpickle, by value when it is not importable),
    so a worker calls it again on its side. Not splittable.
    """

    _op_name = "GeneratorDataset"

    def __init__(
        self,
        generator: Callable[..., Any],
        output_types: Any = None,
        output_shapes: Any = None,
        args: Any = None,
        output_signature: Any = None,
    ) -> None:
        if not callable(generator):
            raise TypeError("`generator` must be a Python callable.")
        if output_signature is not None:
            if output_types is not None:
                raise TypeError(
                    "The `output_types` argument can not be used together with the "
                    "`output_signature` argument."
                )
            if output_shapes is not None:
                raise TypeError(
                    "The `output_shapes` argument can not be used together with the "
                    "`output_signature` argument."
                )
            spec = _spec_of_signature(output_signature)
        else:
            if output_types is None:
                raise TypeError(
                    "To specify the output signature you need to provide either the "
                    "`output_signature` argument or the `output_types` argument."
                )
            if output_shapes is None:
                spec = structure.map_structure(
                    lambda t: TensorSpec(None, _dtype_of(t)), _as_structure(output_types)
                )
            else:
                types = _as_structure(output_types)
                shapes = _shapes_like(types, output_shapes)
                spec = structure.map_structure(
                    lambda t, s: TensorSpec(s.shape, _dtype_of(t)),
                    types,
                    shapes,
                )
        self._generator = generator
        self._args = tuple(structure.normalize_element(tuple(args))) if args else ()
        self._spec = spec

    def _compute_element_spec(self) -> Any:
        return self._spec

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _GeneratorIterator(self, ctx)

    def _source(self) -> Iterator[Any]:
        return iter(self._generator(*self._args))

    def _checked(self, it: Iterator[Any]) -> Iterator[Any]:
        spec = self._spec
        flat_specs = structure.flatten(spec)
        try:
            for value in it:
                if type(value) is list:
                    value = tuple(value)
                try:
                    structure.assert_same_structure(spec, value, "structures")
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        "`generator` yielded an element that did not match the expected "
                        f"structure. The expected structure was {spec}, but the yielded "
                        f"element was {value!r}."
                    ) from exc
                leaves = [
                    _coerce(leaf, s)
                    for leaf, s in zip(structure.flatten(value), flat_specs, strict=False)
                ]
                yield structure.pack_sequence_as(spec, leaves)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()


class _GeneratorIterator(NodeIterator):
    """Checkpointable only when the callable returns an iterator with ``state_dict()`` and
    ``load_state_dict(state)`` (a Python generator's position cannot be saved)."""

    _dataset: GeneratorDataset

    def __init__(self, dataset: GeneratorDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._it: Iterator[Any] | None = None

    def _run(self) -> Iterator[Any]:
        if self._it is None:
            self._it = self._dataset._source()
        return self._dataset._checked(self._it)

    def _unsupported(self) -> Exception:
        name = getattr(self._dataset._generator, "__qualname__", repr(self._dataset._generator))
        return errors.UnimplementedError(
            f"GeneratorDataset (from_generator) cannot be checkpointed: {name} returned "
            f"{type(self._it).__name__}, whose position cannot be saved; return an iterator "
            "with state_dict() and load_state_dict(state) methods to make it checkpointable"
        )

    def _save(self) -> dict[str, Any]:
        if self._it is None:
            return {"source": None}  # nothing read yet: a restore calls the callable afresh
        if not hasattr(self._it, "state_dict") or not hasattr(self._it, "load_state_dict"):
            raise self._unsupported()
        return {"source": self._it.state_dict()}

    def _restore(self, state: dict[str, Any]) -> None:
        if state["source"] is None:
            return
        self._it = self._dataset._source()
        if not hasattr(self._it, "load_state_dict"):
            raise self._unsupported()
        self._it.load_state_dict(state["source"])


def _as_structure(types: Any) -> Any:
    # A list of dtypes is a tuple structure here (lists of dtypes are not tensors).
    if isinstance(types, list):
        return tuple(_as_structure(t) for t in types)
    return types


def _shapes_like(types: Any, shapes: Any) -> Any:
    """Match ``output_shapes`` to the structure of ``output_types``."""
    if isinstance(types, tuple):
        shapes = tuple(shapes)
        if len(shapes) != len(types):
            raise ValueError("`output_shapes` must have the same structure as `output_types`")
        return tuple(_shapes_like(t, s) for t, s in zip(types, shapes, strict=False))
    if isinstance(types, dict):
        return {k: _shapes_like(types[k], shapes[k]) for k in types}
    return _Shape(shapes)


class _Shape:
    """A leaf wrapper so a shape tuple is not taken for a structure."""

    def __init__(self, shape: Any) -> None:
        self.shape = None if shape is None else tuple(shape)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.shape or ())

    def __bool__(self) -> bool:
        return self.shape is not None


def _coerce(leaf: Any, spec: TensorSpec) -> Any:
    if spec.dtype == STRING:
        value = structure.normalize_element(leaf)
        if isinstance(value, np.ndarray) and value.dtype != object:
            raise errors.InvalidArgumentError(
                f"`generator` yielded an element of type {value.dtype} where an element of "
                "type string was expected."
            )
    else:
        try:
            value = np.asarray(leaf, dtype=spec.dtype)
        except (TypeError, ValueError) as exc:
            raise errors.InvalidArgumentError(
                f"`generator` yielded an element that could not be converted to the expected "
                f"type. The expected type was {spec.dtype.name}, but the yielded element was "
                f"{leaf!r}."
            ) from exc
        if value.ndim == 0:
            value = value[()]
    shape = np.shape(value)
    if spec.shape is not None and (
        len(shape) != len(spec.shape)
        or any(e is not None and e != a for e, a in zip(spec.shape, shape, strict=False))
    ):
        raise errors.InvalidArgumentError(
            f"`generator` yielded an element of shape {shape} where an element of shape "
            f"{spec.shape} was expected."
        )
    return value


class ListFilesDataset(IndexedSource):
    """``Dataset.list_files(file_pattern, shuffle=None, seed=None)``: matching file names.

    The pattern is expanded when the dataset is created (as TensorFlow does eagerly), so the
    list travels with the dataset. Sorted when ``shuffle=False``; reshuffled each iteration
    otherwise (reproducibly for a ``seed``). A file-based source for FILE sharding.
    """

    _op_name = "ListFilesDataset"
    _epochs = 0  # iterations so far (transient: not pickled)
    _is_file_source = True

    def __init__(self, file_pattern: Any, shuffle: bool | None = None, seed: int | None = None):
        patterns = (
            [file_pattern]
            if isinstance(file_pattern, (str, bytes, os.PathLike))
            else list(file_pattern)
        )
        files: set[str] = set()
        for pattern in patterns:
            p = os.fsdecode(pattern)
            files.update(glob.glob(p))
        if not files:
            raise errors.InvalidArgumentError(
                f"Expected 'tf.Tensor(False, shape=(), dtype=bool)' to be true. Summarized "
                f"data: b'No files matched pattern: {', '.join(os.fsdecode(p) for p in patterns)}'"
            )
        self._files = sorted(files)
        self._shuffle = True if shuffle is None else bool(shuffle)
        self._seed = seed
        self._epochs = 0

    def _num_elements(self) -> int:
        return len(self._files)

    def _num_files(self) -> int:
        return len(self._files)

    def _shard_files(self, num_shards: int, index: int) -> ListFilesDataset:
        clone = object.__new__(ListFilesDataset)
        clone.__dict__.update(self.__dict__)
        clone.__dict__.pop("_element_spec_cache", None)
        clone._files = self._files[index::num_shards]
        return clone

    def _order(self) -> tuple[list[str], int]:
        """The file order of a new iteration and its epoch number."""
        if not self._shuffle:
            return self._files, 0
        epoch = claim_epoch(self)
        rng = epoch_seed(self._seed, epoch)
        return [self._files[i] for i in rng.permutation(len(self._files))], epoch

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        if ctx.split_provider_for(self) is not None:
            # Splits are positions in the sorted list; the dispatcher decides the order.
            return super()._iterator(ctx)
        return _ListFilesIterator(self, ctx)

    def _elements(self, begin: int, end: int) -> tuple[Iterator[Any], Iterator[Any]]:
        names = iter(self._files[begin:end])
        return map(os.fsencode, names), names

    def _compute_element_spec(self) -> Any:
        return TensorSpec((), STRING)


class _ListFilesIterator(NodeIterator):
    """Saves the position and, when shuffled, the order drawn for this iteration."""

    _dataset: ListFilesDataset

    def __init__(self, dataset: ListFilesDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._order: list[str] | None = None
        self._epoch = 0
        self._begin = 0
        self._left: Iterator[Any] | None = None

    def _run(self) -> Iterator[Any]:
        if self._order is None:
            self._order, self._epoch = self._dataset._order()
        names = iter(self._order[self._begin :])
        self._left = names
        return map(os.fsencode, names)

    def _save(self) -> dict[str, Any]:
        if self._order is None:
            return {"position": 0, "files": None, "epoch": None}
        left = self._left
        at = self._begin if left is None else len(self._order) - remaining(left)
        shuffled = self._dataset._shuffle
        return {
            "position": at,
            "files": list(self._order) if shuffled else None,
            "epoch": self._epoch if shuffled else None,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self._begin = int(state["position"])
        if state["files"] is not None:
            self._order = list(state["files"])
            self._epoch = int(state["epoch"])
            resume_epoch(self._dataset, self._epoch)
        elif self._begin:
            self._order = self._dataset._files


class CounterDataset(Dataset):
    """``Dataset.counter(start=0, step=1, dtype=np.int64)``: ``start, start + step, ...``
    forever. Not splittable (it has no end to split)."""

    _op_name = "CounterDataset"

    def __init__(self, start: int = 0, step: int = 1, dtype: Any = np.int64) -> None:
        self._start = integer_argument(start, "start")
        self._step = integer_argument(step, "step")
        self._dtype = np.dtype(dtype)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _CounterIterator(self, ctx)

    def _cardinality(self) -> int:
        from .base import INFINITE

        return INFINITE

    def _compute_element_spec(self) -> Any:
        return TensorSpec((), self._dtype)


class _CounterIterator(NodeIterator):
    _dataset: CounterDataset

    def __init__(self, dataset: CounterDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._produced = 0
        self._count: Iterator[int] | None = None

    def _run(self) -> Iterator[Any]:
        count = self._count = counter(self._produced)
        start, step, make = self._dataset._start, self._dataset._step, self._dataset._dtype.type
        for i in count:
            yield make(start + i * step)

    def _save(self) -> dict[str, Any]:
        return {"produced": self._produced if self._count is None else position(self._count)}

    def _restore(self, state: dict[str, Any]) -> None:
        self._produced = int(state["produced"])


class RandomDataset(Dataset):
    """``Dataset.random(seed=None, rerandomize_each_iteration=None)``: uniform int64 values
    in ``[0, 2**63)`` forever; a seed makes the stream reproducible."""

    _op_name = "RandomDataset"
    _epochs = 0  # iterations so far (transient: not pickled)

    def __init__(self, seed: int | None = None, rerandomize_each_iteration: bool | None = None):
        self._seed = seed
        self._rerandomize = bool(rerandomize_each_iteration)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _RandomIterator(self, ctx)

    def _cardinality(self) -> int:
        from .base import INFINITE

        return INFINITE

    def _compute_element_spec(self) -> Any:
        return TensorSpec((), np.int64)


_RANDOM_CHUNK = 1024


class _RandomIterator(NodeIterator):
    """Saves the generator's state before the current chunk of values and the offset in it."""

    _dataset: RandomDataset

    def __init__(self, dataset: RandomDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._epoch: int | None = None
        self._rng_state: Mapping[str, Any] | None = None
        self._offset = 0
        self._chunk: Iterator[Any] | None = None

    def _run(self) -> Iterator[Any]:
        ds = self._dataset
        if self._epoch is None:
            self._epoch = claim_epoch(ds, ds._rerandomize)
        rng = epoch_seed(ds._seed, self._epoch)
        if self._rng_state is not None:
            rng.bit_generator.state = self._rng_state
        skip = self._offset
        while True:
            self._rng_state = rng.bit_generator.state
            chunk = iter(rng.integers(0, 2**63 - 1, size=_RANDOM_CHUNK, dtype=np.int64))
            self._chunk = chunk
            for _ in range(skip):
                next(chunk)
            skip = 0
            yield from chunk

    def _save(self) -> dict[str, Any]:
        chunk = self._chunk
        return {
            "epoch": self._epoch,
            "rng": self._rng_state,
            "offset": self._offset if chunk is None else _RANDOM_CHUNK - remaining(chunk),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self._epoch = None if state["epoch"] is None else int(state["epoch"])
        self._rng_state = state["rng"]
        self._offset = int(state["offset"])
        if self._epoch is not None:
            resume_epoch(self._dataset, self._epoch)
