"""Element-wise and ordering transforms: map, filter, shuffle, repeat, take, skip, shard,
enumerate, zip, concatenate, unique, take_while, scan, with_options.

Batching transforms (``batch``, ``padded_batch``, ``unbatch``, ``window``) live in
``batching``; threaded ones (parallel ``map``, ``prefetch``) in ``threaded``; those
that open nested datasets (``flat_map``, ``interleave``) in ``nested``; ``cache`` in
``cache``; ``sample_from_datasets``/``choose_from_datasets`` in ``mixing``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from tensorwire import errors

from . import structure
from .base import INFINITE, UNKNOWN, DatasetBase, IterationContext, integer_argument
from .checkpoint import (
    MultiInputIterator,
    NodeIterator,
    UnaryIterator,
    close_iterator,
    counter,
    position,
    remaining,
    restore_iterator,
    save_iterator,
)
from .dataset import Dataset, UnaryDataset, call_with_element, trace_function_spec
from .sharding import SHARD_HINT
from .sources import claim_epoch, resume_epoch
from .structure import STRING, TensorSpec

__all__ = [
    "MapDataset",
    "FilterDataset",
    "ShuffleDataset",
    "RepeatDataset",
    "TakeDataset",
    "SkipDataset",
    "ShardDataset",
    "EnumerateDataset",
    "ZipDataset",
    "ConcatenateDataset",
    "UniqueDataset",
    "OptionsDataset",
    "TakeWhileDataset",
    "ScanDataset",
]


class MapDataset(UnaryDataset):
    """``map(fn)`` run on the consumer's thread (see ``threaded.ParallelMapDataset``)."""

    _op_name = "MapDataset"

    def __init__(self, input_dataset: DatasetBase, fn: Callable[..., Any]) -> None:
        super().__init__(input_dataset)
        if not callable(fn):
            raise TypeError(f"`map_func` must be callable, got {fn!r}")
        self._fn = fn

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return UnaryIterator(self, ctx, self._map)

    def _map(self, source: Iterator[Any]) -> Iterator[Any]:
        fn = self._fn
        normalize = structure.normalize_function_output
        ready = structure.NUMPY_LEAVES
        for element in source:
            value = fn(*element) if type(element) is tuple else fn(element)
            # Most functions return NumPy values: skip the normalizing call for those.
            yield value if isinstance(value, ready) else normalize(value)

    def _compute_element_spec(self) -> Any:
        return trace_function_spec(self, self._fn, self._input.element_spec)


class FilterDataset(UnaryDataset):
    """``filter(predicate)``: keeps elements for which the predicate is a true scalar bool."""

    _op_name = "FilterDataset"

    def __init__(self, input_dataset: DatasetBase, predicate: Callable[..., Any]) -> None:
        super().__init__(input_dataset)
        if not callable(predicate):
            raise TypeError(f"`predicate` must be callable, got {predicate!r}")
        self._predicate = predicate

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return UnaryIterator(self, ctx, self._filter)

    def _filter(self, source: Iterator[Any]) -> Iterator[Any]:
        predicate = self._predicate
        for element in source:
            keep = call_with_element(predicate, element)
            if keep is True or keep is False:
                if keep:
                    yield element
                continue
            if (
                isinstance(keep, (np.bool_, np.ndarray))
                and np.shape(keep) == ()
                and (np.asarray(keep).dtype == np.bool_)
            ):
                if keep:
                    yield element
                continue
            raise ValueError(
                "Invalid `predicate`. `predicate` must return a `tf.bool` scalar tensor, but its "
                f"return value was {keep!r}."
            )

    def _cardinality(self) -> int:
        return UNKNOWN


class ShuffleDataset(UnaryDataset):
    """``shuffle(buffer_size, seed=None, reshuffle_each_iteration=True)``.

    Uniform sampling from a buffer of ``buffer_size`` elements, TensorFlow's algorithm.
    With a seed the sequence of orders is reproducible; without reshuffling, every
    iteration uses the same order.
    """

    _op_name = "ShuffleDataset"
    _epochs = 0  # iterations so far (transient: not pickled)

    def __init__(
        self,
        input_dataset: DatasetBase,
        buffer_size: int,
        seed: int | None = None,
        reshuffle_each_iteration: bool = True,
    ) -> None:
        super().__init__(input_dataset)
        buffer_size = integer_argument(buffer_size, "buffer_size")
        if buffer_size <= 0:
            raise errors.InvalidArgumentError("buffer_size must be greater than zero.")
        self._buffer_size = buffer_size
        self._reshuffle = bool(reshuffle_each_iteration)
        if seed is None and not self._reshuffle:
            # One order for every iteration: draw it once, here.
            seed = random.SystemRandom().getrandbits(63)
        self._seed = seed
        self._epochs = 0

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _ShuffleIterator(self, ctx)

    def _rng(self, epoch: int) -> random.Random:
        # Unseeded: fresh OS randomness per iteration, so copies of the pipeline on different
        # workers shuffle differently.
        return random.Random() if self._seed is None else random.Random(f"{self._seed}/{epoch}")

    def _shuffle(self, source: Iterator[Any], rng: random.Random, buf: list[Any]) -> Iterator[Any]:
        size = self._buffer_size
        randrange = rng.randrange
        for element in source:
            if len(buf) < size:
                buf.append(element)
                continue
            i = randrange(size)
            out, buf[i] = buf[i], element
            yield out
        while buf:
            i = randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()


class _ShuffleIterator(UnaryIterator):
    """Saves the random generator's state and the buffer (so an unseeded shuffle resumes
    exactly too, within the iteration it was saved in)."""

    _dataset: ShuffleDataset

    def __init__(self, dataset: ShuffleDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._epoch = 0
        self._random: random.Random | None = None
        self._buffer: list[Any] = []

    def _run(self) -> Iterator[Any]:
        ds = self._dataset
        if self._random is None:
            self._epoch = claim_epoch(ds, ds._reshuffle)
            self._random = ds._rng(self._epoch)
        return ds._shuffle(self._input, self._random, self._buffer)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["epoch"] = self._epoch if self._random is not None else None
        state["rng"] = self._random.getstate() if self._random is not None else None
        state["buffer"] = list(self._buffer)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._buffer = list(state["buffer"])
        if state["rng"] is not None:
            version, internal, gauss = state["rng"]
            self._random = random.Random()
            self._random.setstate((version, tuple(internal), gauss))
            self._epoch = int(state["epoch"])
            resume_epoch(self._dataset, self._epoch)


class RepeatDataset(UnaryDataset):
    """``repeat(count=None)``: ``count`` passes over the input (``None``/-1: forever).

    An infinite repeat of an input that produced nothing in a pass ends, as in TensorFlow.
    Under dynamic sharding the split provider repeats the splits instead.
    """

    _op_name = "RepeatDataset"

    def __init__(self, input_dataset: DatasetBase, count: int | None = None) -> None:
        super().__init__(input_dataset)
        self._count = -1 if count is None else integer_argument(count, "count")

    @property
    def _split_repeat_count(self) -> int:
        return self._count

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _RepeatIterator(self, ctx)

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if self._count < 0:
            return 0 if n == 0 else INFINITE
        if self._count == 0:
            return 0
        if n in (INFINITE, UNKNOWN):
            return n
        return n * self._count


class _RepeatIterator(UnaryIterator):
    """Saves the passes done and the current pass's input iterator."""

    _dataset: RepeatDataset

    def __init__(self, dataset: RepeatDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._done = 0
        self._produced = False  # the current pass has yielded an element

    def _run(self) -> Iterator[Any]:
        count = self._dataset._count
        ctx = self._ctx
        while count < 0 or self._done < count:
            produced = self._produced
            for element in self._input:
                produced = True
                yield element
            self._done += 1
            if not produced and (count < 0 or ctx.split_provider is not None):
                return
            self._produced = False
            self._input = self._input_dataset._iterator(ctx)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["done"] = self._done
        # Suspended means suspended at the yield inside a pass: it has produced.
        state["produced"] = True if self._started() else self._produced
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._done = int(state["done"])
        self._produced = bool(state["produced"])


class TakeDataset(UnaryDataset):
    """``take(count)``: the first ``count`` elements (-1: all)."""

    _op_name = "TakeDataset"

    def __init__(self, input_dataset: DatasetBase, count: int) -> None:
        super().__init__(input_dataset)
        self._count = integer_argument(count, "count")

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _TakeIterator(self, ctx)

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if n == UNKNOWN:
            return UNKNOWN
        if self._count < 0:
            return n
        if n == INFINITE:
            return self._count
        return min(n, self._count)


class _TakeIterator(UnaryIterator):
    """Saves how many elements are left to take; a ``range`` iterator counts them in C."""

    _dataset: TakeDataset

    def __init__(self, dataset: TakeDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._left = dataset._count
        self._counting: Iterator[int] | None = None

    def _run(self) -> Iterator[Any]:
        source = self._input
        if self._left < 0:
            yield from source
            return
        counting = self._counting = iter(range(self._left))
        try:
            # zip asks `counting` first, so the input is not read past the count.
            for _, element in zip(counting, source, strict=False):
                yield element
        finally:
            # Stop upstream work (threads, files) as soon as the count is reached.
            close_iterator(source)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        counting = self._counting
        state["left"] = self._left if counting is None else remaining(counting)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._left = int(state["left"])


class SkipDataset(UnaryDataset):
    """``skip(count)``: all but the first ``count`` elements (-1: skip everything)."""

    _op_name = "SkipDataset"

    def __init__(self, input_dataset: DatasetBase, count: int) -> None:
        super().__init__(input_dataset)
        self._count = integer_argument(count, "count")

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _StrideIterator(self, ctx, self._count, None)

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if n in (INFINITE, UNKNOWN):
            return n
        if self._count < 0:
            return 0
        return max(0, n - self._count)


class _StrideIterator(UnaryIterator):
    """``skip`` and ``shard``: elements ``first, first + step, ...`` of the input (``step``
    None: all from ``first``; ``first`` < 0: none). ``islice`` reads exactly up to each
    element it yields, so at a ``yield`` the node's own state is only how many input
    elements to pass over before the next one: ``first`` before the first, ``step - 1``
    after."""

    def __init__(
        self, dataset: DatasetBase, ctx: IterationContext, first: int, step: int | None
    ) -> None:
        super().__init__(dataset, ctx)
        self._first = first
        self._step = step

    def _run(self) -> Iterator[Any]:
        source = iter(self._input)
        if self._first < 0:
            for _ in source:
                pass
            return
        yield from itertools.islice(source, self._first, None, self._step)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        if not self._started():
            state["first"] = self._first
        else:
            state["first"] = 0 if self._step is None else self._step - 1
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._first = int(state["first"])


class ShardDataset(UnaryDataset):
    """``shard(num_shards, index)``: every ``num_shards``-th element starting at ``index``.

    ``shard(SHARD_HINT, SHARD_HINT)`` is a placeholder that HINT auto-sharding replaces.
    """

    _op_name = "ShardDataset"

    def __init__(self, input_dataset: DatasetBase, num_shards: int, index: int) -> None:
        super().__init__(input_dataset)
        num_shards = integer_argument(num_shards, "num_shards")
        index = integer_argument(index, "index")
        self._is_hint = num_shards == SHARD_HINT or index == SHARD_HINT
        if not self._is_hint:
            if num_shards <= 0:
                raise errors.InvalidArgumentError(
                    "Number of shards must be greater than zero "
                    f"(currently num_shards = {num_shards})."
                )
            if not 0 <= index < num_shards:
                raise errors.InvalidArgumentError(
                    f"Index must be between 0 and {num_shards - 1} (currently index = {index})."
                )
        self._num_shards = num_shards
        self._index = index

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        if self._is_hint:
            raise errors.InvalidArgumentError(
                "shard(SHARD_HINT, SHARD_HINT) must be rewritten by auto-sharding with "
                "ShardingPolicy.HINT before the dataset is iterated "
                f"(currently num_shards = {self._num_shards})."
            )
        return _StrideIterator(self, ctx, self._index, self._num_shards)

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        if n in (INFINITE, UNKNOWN) or self._is_hint:
            return n if not self._is_hint else UNKNOWN
        return n // self._num_shards + (1 if self._index < n % self._num_shards else 0)


class EnumerateDataset(UnaryDataset):
    """``enumerate(start=0)``: ``(np.int64 index, element)`` pairs."""

    _op_name = "EnumerateDataset"

    def __init__(self, input_dataset: DatasetBase, start: int = 0) -> None:
        super().__init__(input_dataset)
        self._start = integer_argument(start, "start")

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _EnumerateIterator(self, ctx)

    def _compute_element_spec(self) -> Any:
        return (TensorSpec((), np.int64), self._input.element_spec)


class _EnumerateIterator(UnaryIterator):
    """Saves the next index; a ``range`` iterator counts in C."""

    _dataset: EnumerateDataset

    def __init__(self, dataset: EnumerateDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._next = dataset._start
        self._indices: Iterator[int] | None = None

    def _run(self) -> Iterator[Any]:
        indices = self._indices = counter(self._next)
        int64 = np.int64
        for i, element in zip(indices, self._input, strict=False):
            yield (int64(i), element)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["next"] = self._next if self._indices is None else position(self._indices)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._next = int(state["next"])


class ZipDataset(Dataset):
    """``Dataset.zip(datasets)``: elements of a nested structure of datasets, in lockstep."""

    _op_name = "ZipDataset"

    def __init__(self, datasets: Any) -> None:
        flat = structure.flatten(datasets)
        if not flat:
            raise ValueError("`datasets` must be a non-empty (nested) structure of datasets")
        for ds in flat:
            if not isinstance(ds, DatasetBase):
                raise TypeError(
                    "Invalid `datasets`. `datasets` is expected to be a (nested) structure of "
                    f"`tf.data.Dataset` objects. Python `list` is not supported and you should "
                    f"use `tuple` instead. Encountered object with type {type(ds).__name__}."
                )
        self._structure = datasets
        self._input_datasets = tuple(flat)

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _ZipIterator(self, ctx)

    def _zip(self, inputs: list[Iterator[Any]]) -> Iterator[Any]:
        its = [iter(it) for it in inputs]
        try:
            while True:
                values = []
                for it in its:
                    try:
                        values.append(next(it))
                    except StopIteration:
                        return
                yield structure.pack_sequence_as(self._structure, values)
        finally:
            for it in its:
                close_iterator(it)

    def _cardinality(self) -> int:
        result = INFINITE
        for ds in self._input_datasets:
            n = ds._cardinality()
            if n == UNKNOWN:
                return UNKNOWN
            if n != INFINITE:
                result = n if result == INFINITE else min(result, n)
        return result

    def _compute_element_spec(self) -> Any:
        return structure.pack_sequence_as(
            self._structure, [ds.element_spec for ds in self._input_datasets]
        )


class _ZipIterator(MultiInputIterator):
    def __init__(self, dataset: ZipDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx, dataset._zip)


class ConcatenateDataset(Dataset):
    """``a.concatenate(b)``: the elements of ``a`` then those of ``b`` (compatible types)."""

    _op_name = "ConcatenateDataset"

    def __init__(self, first: DatasetBase, second: DatasetBase) -> None:
        if not isinstance(second, DatasetBase):
            raise TypeError(f"`dataset` must be a Dataset, got {type(second).__name__}")
        try:
            structure.assert_same_structure(first.element_spec, second.element_spec)
            spec = structure.merge_specs(first.element_spec, second.element_spec)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Incompatible dataset elements:\n  {first.element_spec} vs. "
                f"  {second.element_spec}"
            ) from exc
        self._input_datasets = (first, second)
        self._spec = spec

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _ConcatenateIterator(self, ctx)

    def _cardinality(self) -> int:
        a, b = (ds._cardinality() for ds in self._input_datasets)
        if INFINITE in (a, b):
            return INFINITE
        if UNKNOWN in (a, b):
            return UNKNOWN
        return a + b

    def _compute_element_spec(self) -> Any:
        return structure.merge_specs(*(ds.element_spec for ds in self._input_datasets))


class _ConcatenateIterator(NodeIterator):
    """Saves which input is being read and that input's iterator."""

    def __init__(self, dataset: ConcatenateDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._index = 0
        self._current = dataset._input_datasets[0]._iterator(ctx)

    def _run(self) -> Iterator[Any]:
        inputs = self._dataset._inputs()
        while True:
            yield from self._current
            self._index += 1
            if self._index == len(inputs):
                return
            self._current = inputs[self._index]._iterator(self._ctx)

    def _save(self) -> dict[str, Any]:
        current = self._dataset._inputs()[self._index]
        return {"index": self._index, "input": save_iterator(self._current, current)}

    def _restore(self, state: dict[str, Any]) -> None:
        close_iterator(self._current)
        self._index = int(state["index"])
        dataset = self._dataset._inputs()[self._index]
        self._current = restore_iterator(dataset, self._ctx, state["input"])

    def _close_unstarted(self) -> None:
        close_iterator(self._current)


class UniqueDataset(UnaryDataset):
    """``unique()``: first occurrence of each scalar int or string element."""

    _op_name = "UniqueDataset"

    def __init__(self, input_dataset: DatasetBase) -> None:
        super().__init__(input_dataset)
        spec = input_dataset.element_spec
        if (
            not isinstance(spec, TensorSpec)
            or spec.shape != ()
            or not (spec.dtype == STRING or spec.dtype.kind in "iu")
        ):
            raise TypeError(
                "`tf.data.Dataset.unique` does not support type "
                f"{spec}: only scalar int32, int64 or string elements"
            )

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _UniqueIterator(self, ctx)

    @staticmethod
    def _unique(source: Iterator[Any], seen: set[Any]) -> Iterator[Any]:
        for element in source:
            key = element if isinstance(element, bytes) else int(element)
            if key not in seen:
                seen.add(key)
                yield element

    def _cardinality(self) -> int:
        n = self._input._cardinality()
        return INFINITE if n == INFINITE else UNKNOWN


class _UniqueIterator(UnaryIterator):
    """Saves the keys seen so far."""

    def __init__(self, dataset: UniqueDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._seen: set[Any] = set()

    def _run(self) -> Iterator[Any]:
        return UniqueDataset._unique(self._input, self._seen)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["seen"] = sorted(self._seen)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._seen = set(state["seen"])


class OptionsDataset(UnaryDataset):
    """``with_options(options)``: the input, with ``options`` merged into its options."""

    _op_name = "OptionsDataset"

    def __init__(self, input_dataset: DatasetBase, options: Any) -> None:
        from .options import Options

        super().__init__(input_dataset)
        if not isinstance(options, Options):
            raise TypeError(f"`options` must be a `tf.data.Options`, got {type(options).__name__}")
        self._own_options = options

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return self._input._iterator(ctx)


class TakeWhileDataset(UnaryDataset):
    """``take_while(predicate)``."""

    _op_name = "TakeWhileDataset"

    def __init__(self, input_dataset: DatasetBase, predicate: Callable[..., Any]) -> None:
        super().__init__(input_dataset)
        if not callable(predicate):
            raise TypeError(f"`predicate` must be callable, got {predicate!r}")
        self._predicate = predicate

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return UnaryIterator(self, ctx, self._take_while)

    def _take_while(self, it: Iterator[Any]) -> Iterator[Any]:
        try:
            for element in it:
                keep = call_with_element(self._predicate, element)
                if np.shape(keep) != () or np.asarray(keep).dtype != np.bool_:
                    raise ValueError(
                        "Invalid `predicate`. `predicate` must return a `tf.bool` scalar "
                        f"tensor, but its return value was {keep!r}."
                    )
                if not keep:
                    return
                yield element
        finally:
            close_iterator(it)

    def _cardinality(self) -> int:
        return UNKNOWN


class ScanDataset(UnaryDataset):
    """``scan(initial_state, scan_func)``: ``(state, out) = scan_func(state, element)``."""

    _op_name = "ScanDataset"

    def __init__(
        self, input_dataset: DatasetBase, initial_state: Any, scan_func: Callable[[Any, Any], Any]
    ) -> None:
        super().__init__(input_dataset)
        if not callable(scan_func):
            raise TypeError(f"`scan_func` must be callable, got {scan_func!r}")
        self._initial_state = structure.normalize_element(initial_state)
        self._scan_func = scan_func

    def _step(self, state: Any, element: Any) -> tuple[Any, Any]:
        result = self._scan_func(state, element)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(
                "The scan function must return a pair comprising the new state and the "
                f"output value, got {result!r}."
            )
        new_state = structure.normalize_function_output(result[0])
        try:
            structure.assert_same_structure(self._initial_state, new_state, "states")
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "The element structure of the new state must match the initial state: "
                f"{self._initial_state!r} vs {new_state!r}"
            ) from exc
        return new_state, structure.normalize_function_output(result[1])

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _ScanIterator(self, ctx)

    def _compute_element_spec(self) -> Any:
        from .dataset import _first_element, _placeholder

        spec = self._input.element_spec
        try:
            with np.errstate(all="ignore"):
                a = self._step(self._initial_state, _placeholder(spec, 1))[1]
                b = self._step(self._initial_state, _placeholder(spec, 2))[1]
            return structure.merge_specs(structure.spec_from_value(a), structure.spec_from_value(b))
        except Exception:  # noqa: BLE001 - fall back to a real element
            return structure.spec_from_value(_first_element(self))


class _ScanIterator(UnaryIterator):
    """Saves the carried state (a NumPy structure)."""

    _dataset: ScanDataset

    def __init__(self, dataset: ScanDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._state = dataset._initial_state

    def _run(self) -> Iterator[Any]:
        step = self._dataset._step
        for element in self._input:
            self._state, output = step(self._state, element)
            yield output

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["state"] = self._state
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._state = state["state"]
