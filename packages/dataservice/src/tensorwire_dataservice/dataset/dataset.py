"""``Dataset``: the public pipeline API (``tf.data.Dataset`` with NumPy elements).

Sources are static methods (``Dataset.range(10)``); transforms return new datasets
(``ds.map(f).batch(32)``). Datasets are immutable descriptions: iterating one
(``iter(ds)``, ``ds.as_numpy_iterator()``) creates a fresh :class:`DatasetIterator` that owns
all the work. Functions given to ``map``/``filter``/``flat_map``/``interleave`` receive the
element unpacked like TensorFlow does: a plain tuple element is passed as ``*args``; a dict,
a namedtuple or a single value as one argument.

Element specs of function outputs are inferred the way TensorFlow traces a function: the
function is called on placeholder values (ones) built from the input spec, twice with
different sizes for unknown dimensions; if that fails, on the first real element.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from . import structure
from .base import AUTOTUNE, DatasetBase, DatasetIterator
from .structure import STRING, TensorSpec

__all__ = ["Dataset", "UnaryDataset", "call_with_element", "trace_function_spec", "make_iterator"]

logger = logging.getLogger(__name__)


def call_with_element(fn: Callable[..., Any], element: Any) -> Any:
    """Call ``fn`` with ``element`` unpacked as TensorFlow does (plain tuples as ``*args``)."""
    if type(element) is tuple:
        return fn(*element)
    return fn(element)


def _placeholder(spec: Any, fill: int) -> Any:
    """Values matching ``spec``: unknown dims of size ``fill``, every entry ``fill``."""

    def leaf(s: TensorSpec) -> Any:
        if s.shape is None:
            raise ValueError("unknown rank")
        shape = tuple(fill if d is None else d for d in s.shape)
        if s.dtype == STRING:
            text = b"x" * fill
            if not shape:
                return text
            out = np.empty(shape, dtype=object)
            out[...] = text
            return out
        value = np.full(shape, fill, dtype=s.dtype)
        return value[()] if not shape else value

    return structure.map_structure(leaf, spec)


def _first_element(dataset: DatasetBase) -> Any:
    with DatasetIterator(dataset) as it:
        for element in it:
            return element
    raise TypeError(
        f"Could not infer the element_spec of {type(dataset).__name__}: calling its function "
        "on placeholder values failed and the dataset is empty."
    )


def trace_function_outputs(fn: Callable[..., Any], input_spec: Any) -> tuple[Any, Any]:
    """``fn``'s outputs on placeholders of ones and of twos (unknown dims 1 and 2).

    Two different placeholders let sizes that depend on the input show up as unknown.
    """
    with np.errstate(all="ignore"):
        first = call_with_element(fn, _placeholder(input_spec, 1))
        second = call_with_element(fn, _placeholder(input_spec, 2))
    return first, second


def trace_function_spec(dataset: DatasetBase, fn: Callable[..., Any], input_spec: Any) -> Any:
    """The element spec of ``fn``'s outputs (``dataset`` is the node applying ``fn``)."""
    try:
        first, second = trace_function_outputs(fn, input_spec)
        a = structure.spec_from_value(structure.normalize_function_output(first))
        b = structure.spec_from_value(structure.normalize_function_output(second))
        return structure.merge_specs(a, b)
    except Exception:  # noqa: BLE001 - any failure means: look at a real element instead
        logger.debug(
            "Tracing %r on placeholders failed; using the first element", fn, exc_info=True
        )
    return structure.spec_from_value(_first_element(dataset))


def make_iterator(dataset: DatasetBase, split_provider: Any = None) -> DatasetIterator:
    """An iterator over ``dataset``; with ``split_provider``, its source reads only those splits.

    This is how a data-service worker iterates under dynamic sharding. Raises
    ``UnimplementedError`` when the dataset has no splittable source.
    """
    return DatasetIterator(dataset, split_provider)


def _parallelism(num_parallel_calls: Any) -> int | None:
    if num_parallel_calls is None:
        return None
    n = int(num_parallel_calls)
    if n == AUTOTUNE:
        return max(1, os.cpu_count() or 1)
    if n <= 0:
        from tensorwire import errors

        raise errors.InvalidArgumentError("num_parallel_calls must be greater than zero.")
    return n


class Dataset(DatasetBase):
    """A pipeline of NumPy elements, as ``tf.data.Dataset``."""

    # -- sources ---------------------------------------------------------------------------

    @staticmethod
    def range(
        *args: int, dtype: Any = np.int64, output_type: Any = None, name: str | None = None
    ) -> Dataset:
        """``range(stop)``, ``range(start, stop[, step])``: NumPy scalars of ``dtype``.

        ``output_type`` is TensorFlow's name for ``dtype`` and wins when given.
        """
        return _sources.RangeDataset(*args, dtype=dtype if output_type is None else output_type)

    @staticmethod
    def from_tensor_slices(tensors: Any, name: str | None = None) -> Dataset:
        """One element per slice along axis 0 of every component (lengths must match)."""
        return _sources.TensorSliceDataset(tensors)

    @staticmethod
    def from_tensors(tensors: Any, name: str | None = None) -> Dataset:
        """A dataset with ``tensors`` as its only element."""
        return _sources.TensorDataset(tensors)

    @staticmethod
    def from_generator(
        generator: Callable[..., Any],
        output_types: Any = None,
        output_shapes: Any = None,
        args: Any = None,
        output_signature: Any = None,
        name: str | None = None,
    ) -> Dataset:
        """Elements of ``generator(*args)``, checked against the declared signature."""
        return _sources.GeneratorDataset(
            generator, output_types, output_shapes, args, output_signature
        )

    @staticmethod
    def list_files(
        file_pattern: Any,
        shuffle: bool | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> Dataset:
        """File names matching ``file_pattern`` (a glob or list of globs), as bytes."""
        return _sources.ListFilesDataset(file_pattern, shuffle, seed)

    @staticmethod
    def counter(
        start: int = 0, step: int = 1, dtype: Any = np.int64, name: str | None = None
    ) -> Dataset:
        """``start, start + step, ...`` forever."""
        return _sources.CounterDataset(start, step, dtype)

    @staticmethod
    def random(
        seed: int | None = None,
        rerandomize_each_iteration: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Uniform random int64 values forever (reproducible with a ``seed``)."""
        return _sources.RandomDataset(seed, rerandomize_each_iteration)

    @staticmethod
    def sample_from_datasets(
        datasets: Any,
        weights: Any = None,
        seed: int | None = None,
        stop_on_empty_dataset: bool = False,
        rerandomize_each_iteration: bool | None = None,
    ) -> Dataset:
        """Each element from a dataset picked at random with probability ``weights``."""
        return _mixing.SampleDataset(
            datasets, weights, seed, stop_on_empty_dataset, rerandomize_each_iteration
        )

    @staticmethod
    def choose_from_datasets(
        datasets: Any, choice_dataset: Any, stop_on_empty_dataset: bool = True
    ) -> Dataset:
        """Each element from ``datasets[i]`` where ``i`` is the next of ``choice_dataset``."""
        return _mixing.ChooseDataset(datasets, choice_dataset, stop_on_empty_dataset)

    @staticmethod
    def zip(*args: Any, datasets: Any = None, name: str | None = None) -> Dataset:
        """``zip(a, b)`` or ``zip((a, b))`` or ``zip({"x": a})``: lockstep elements."""
        if datasets is not None and args:
            raise TypeError("Both `*args` and `datasets` cannot be set.")
        if datasets is None:
            if not args:
                raise TypeError("Must pass at least one dataset to `zip`.")
            datasets = args[0] if len(args) == 1 else tuple(args)
        return _transforms.ZipDataset(datasets)

    # -- transforms ------------------------------------------------------------------------

    def map(
        self,
        map_func: Callable[..., Any],
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Apply ``map_func`` to each element; in ``num_parallel_calls`` threads if given."""
        n = _parallelism(num_parallel_calls)
        if n is None:
            return _transforms.MapDataset(self, map_func)
        return _threaded.ParallelMapDataset(self, map_func, n, deterministic)

    def filter(self, predicate: Callable[..., Any], name: str | None = None) -> Dataset:
        """Keep the elements for which ``predicate`` returns a true scalar bool."""
        return _transforms.FilterDataset(self, predicate)

    def batch(
        self,
        batch_size: int,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Stack ``batch_size`` consecutive elements (the last one may be smaller)."""
        _parallelism(num_parallel_calls)
        return _batching.BatchDataset(self, batch_size, drop_remainder)

    def padded_batch(
        self,
        batch_size: int,
        padded_shapes: Any = None,
        padding_values: Any = None,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Batch elements of different shapes, padding each component."""
        return _batching.PaddedBatchDataset(
            self, batch_size, padded_shapes, padding_values, drop_remainder
        )

    def shuffle(
        self,
        buffer_size: int,
        seed: int | None = None,
        reshuffle_each_iteration: bool = True,
        name: str | None = None,
    ) -> Dataset:
        """Randomly shuffle with a buffer of ``buffer_size`` elements."""
        return _transforms.ShuffleDataset(self, buffer_size, seed, reshuffle_each_iteration)

    def repeat(self, count: int | None = None, name: str | None = None) -> Dataset:
        """Repeat ``count`` times (forever when ``None`` or -1)."""
        return _transforms.RepeatDataset(self, count)

    def take(self, count: int, name: str | None = None) -> Dataset:
        """At most the first ``count`` elements (-1: all)."""
        return _transforms.TakeDataset(self, count)

    def skip(self, count: int, name: str | None = None) -> Dataset:
        """Drop the first ``count`` elements (-1: all)."""
        return _transforms.SkipDataset(self, count)

    def shard(self, num_shards: int, index: int, name: str | None = None) -> Dataset:
        """Every ``num_shards``-th element starting at ``index``."""
        return _transforms.ShardDataset(self, num_shards, index)

    def interleave(
        self,
        map_func: Callable[..., Any],
        cycle_length: int | None = None,
        block_length: int | None = None,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Interleave the datasets ``map_func`` returns, ``block_length`` at a time.

        With ``num_parallel_calls`` each open dataset is read ahead by its own thread; the
        output order stays TensorFlow's deterministic order.
        """
        parallel = _parallelism(num_parallel_calls)
        return _nested.InterleaveDataset(
            self, map_func, cycle_length, block_length, parallel=parallel is not None
        )

    def flat_map(self, map_func: Callable[..., Any], name: str | None = None) -> Dataset:
        """Concatenate the datasets ``map_func`` returns for each element."""
        return _nested.FlatMapDataset(self, map_func)

    def prefetch(self, buffer_size: int, name: str | None = None) -> Dataset:
        """Produce up to ``buffer_size`` elements ahead in a background thread."""
        return _threaded.PrefetchDataset(self, buffer_size)

    def enumerate(self, start: int = 0, name: str | None = None) -> Dataset:
        """``(index, element)`` pairs, indices from ``start`` (np.int64)."""
        return _transforms.EnumerateDataset(self, start)

    def concatenate(self, dataset: Dataset, name: str | None = None) -> Dataset:
        """This dataset's elements followed by ``dataset``'s."""
        return _transforms.ConcatenateDataset(self, dataset)

    def window(
        self,
        size: int,
        shift: int | None = None,
        stride: int = 1,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Windows of ``size`` elements every ``shift``, as nested finite datasets."""
        return _batching.WindowDataset(self, size, shift, stride, drop_remainder)

    def unbatch(self, name: str | None = None) -> Dataset:
        """Split every element along axis 0 into separate elements."""
        return _batching.UnbatchDataset(self)

    def unique(self, name: str | None = None) -> Dataset:
        """Drop repeated elements (scalar ints or strings)."""
        return _transforms.UniqueDataset(self)

    def cache(self, filename: str = "", name: str | None = None) -> Dataset:
        """Remember the elements of the first full iteration (in memory, or in ``filename``)."""
        return _cache.CacheDataset(self, filename)

    def apply(self, transformation_func: Callable[[Dataset], Dataset]) -> Dataset:
        """``transformation_func(self)``, which must return a Dataset."""
        dataset = transformation_func(self)
        if not isinstance(dataset, DatasetBase):
            raise TypeError(
                f"`transformation_func` must return a `tf.data.Dataset` object. Got {dataset!r}."
            )
        return dataset

    def with_options(self, options: Any, name: str | None = None) -> Dataset:
        """This dataset with ``options`` (a ``tf.data.Options``) merged into its options."""
        return _transforms.OptionsDataset(self, options)

    def take_while(self, predicate: Callable[..., Any], name: str | None = None) -> Dataset:
        """Elements up to (not including) the first for which ``predicate`` is false."""
        return _transforms.TakeWhileDataset(self, predicate)

    def scan(
        self, initial_state: Any, scan_func: Callable[[Any, Any], Any], name: str | None = None
    ) -> Dataset:
        """``scan_func(state, element) -> (new_state, output)`` carried across elements."""
        return _transforms.ScanDataset(self, initial_state, scan_func)

    def get_single_element(self, name: str | None = None) -> Any:
        """The only element; ``InvalidArgumentError`` if there are none or several."""
        from tensorwire import errors

        with DatasetIterator(self) as it:
            for element in it:
                for _ in it:
                    raise errors.InvalidArgumentError("Dataset had more than one element.")
                return element
        raise errors.InvalidArgumentError("Dataset was empty.")

    def reduce(self, initial_state: Any, reduce_func: Callable[[Any, Any], Any]) -> Any:
        """Fold the elements into ``initial_state`` with ``reduce_func(state, element)``."""
        state = structure.normalize_element(initial_state)
        with DatasetIterator(self) as it:
            for element in it:
                state = structure.normalize_function_output(reduce_func(state, element))
        return state


class UnaryDataset(Dataset):
    """A transform with one input; dynamic-sharding splits pass through to the input."""

    _passes_splits = True

    def __init__(self, input_dataset: DatasetBase) -> None:
        if not isinstance(input_dataset, DatasetBase):
            raise TypeError(f"Expected a Dataset, got {type(input_dataset).__name__}")
        self._input_datasets = (input_dataset,)

    @property
    def _input(self) -> DatasetBase:
        return self._input_datasets[0]

    def _compute_element_spec(self) -> Any:
        return self._input.element_spec

    def _cardinality(self) -> int:
        return self._input._cardinality()


# The node modules subclass Dataset, so they are imported after it is defined.
from . import batching as _batching  # noqa: E402
from . import cache as _cache  # noqa: E402
from . import mixing as _mixing  # noqa: E402
from . import nested as _nested  # noqa: E402
from . import sources as _sources  # noqa: E402
from . import threaded as _threaded  # noqa: E402
from . import transforms as _transforms  # noqa: E402
