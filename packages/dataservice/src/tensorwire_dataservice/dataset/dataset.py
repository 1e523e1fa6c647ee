"""``Dataset``: the public pipeline API (``tf.data.Dataset`` with NumPy elements).

Sources are static methods (``Dataset.range(10)``); transforms return new datasets
(``ds.map(f).batch(32)``). Datasets are immutable descriptions: iterating one
(``iter(ds)``, ``ds.as_numpy_iterator()``) creates a fresh ``DatasetIterator`` that owns
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
from .base import AUTOTUNE, DatasetBase, DatasetIterator, integer_argument
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

    This is how a data-service worker iterates under dynamic sharding: the pipeline's
    single splittable source (see ``find_split_source``) reads only the splits it gets
    from ``split_provider``; every other op runs as usual.

    Args:
      dataset: the dataset to iterate.
      split_provider: a ``SplitProvider`` of the dataset's splits, or None to read
        everything (the same as ``iter(dataset)``).

    Returns:
      A new ``DatasetIterator``.

    Raises:
      UnimplementedError: ``split_provider`` is given and the dataset has no splittable
        source; the message names the op in the way.

    Examples:
        >>> ds = tw.data.Dataset.range(10).map(lambda x: x * 10)
        >>> provider = tw.data.IndexSplitProvider(10, split_size=4)
        >>> _ = provider.get_next()  # another worker takes [0, 4)
        >>> [int(x) for x in tw.data.make_iterator(ds, provider)]
        [40, 50, 60, 70, 80, 90]
    """
    return DatasetIterator(dataset, split_provider)


def _parallelism(num_parallel_calls: Any) -> int | None:
    if num_parallel_calls is None:
        return None
    n = integer_argument(num_parallel_calls, "num_parallel_calls")
    if n == AUTOTUNE:
        return max(1, os.cpu_count() or 1)
    if n <= 0:
        from tensorwire import errors

        raise errors.InvalidArgumentError("num_parallel_calls must be greater than zero.")
    return n


class Dataset(DatasetBase):
    """A pipeline of NumPy elements, as ``tf.data.Dataset``.

    A dataset is an immutable description: sources are static methods
    (``range``, ``from_tensor_slices``, ...), transforms return new datasets
    (``ds.map(f).batch(32)``), and iterating (``iter(ds)``, ``as_numpy_iterator``)
    makes a ``DatasetIterator`` that owns all the work. An element is a nested
    structure (tuples, dicts, namedtuples) of NumPy values: arrays, NumPy scalars, and
    ``bytes`` for scalar strings (string tensors are object arrays of ``bytes``).

    Where it differs from ``tf.data``: functions given to ``map``, ``filter`` and
    the like run as plain Python on NumPy values (no graph tracing; the element type is
    inferred by calling them on placeholder values); parallelism is threads; the
    ``name`` arguments are accepted and ignored. Python ints and floats given as values
    become int32/float32, as TensorFlow converts them. An integer argument (``count``,
    ``batch_size``, ...) that is not one raises TypeError, or ValueError for a string that
    is not a number, naming the argument.

    Examples:
        >>> ds = tw.data.Dataset.range(6).filter(lambda x: x % 2 == 0).map(lambda x: x * 10)
        >>> [int(x) for x in ds]
        [0, 20, 40]
        >>> [b.tolist() for b in ds.batch(2)]
        [[0, 20], [40]]
    """

    # -- sources ---------------------------------------------------------------------------

    @staticmethod
    def range(
        *args: int, dtype: Any = np.int64, output_type: Any = None, name: str | None = None
    ) -> Dataset:
        """A dataset of evenly spaced NumPy scalars, like Python's ``range``.

        ``range(stop)``, ``range(start, stop)`` or ``range(start, stop, step)``. The
        result has a known cardinality and is a splittable source (dynamic sharding hands
        out ranges of positions).

        Args:
          *args: ``stop``, ``start, stop`` or ``start, stop, step`` (integers).
          dtype: the NumPy dtype of the elements (default int64).
          output_type: TensorFlow's name for ``dtype``; wins when given.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of scalars of ``dtype``.

        Raises:
          ValueError: not one to three positional arguments.
          InvalidArgumentError: ``step`` is zero.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(1, 8, 3)]
            [1, 4, 7]
            >>> tw.data.Dataset.range(3, dtype=np.float32).element_spec
            TensorSpec(shape=(), dtype=float32, name=None)
        """
        return _sources.RangeDataset(*args, dtype=dtype if output_type is None else output_type)

    @staticmethod
    def from_tensor_slices(tensors: Any, name: str | None = None) -> Dataset:
        """A dataset of the slices of ``tensors`` along their first axis.

        Every component (leaf of the structure) is sliced along axis 0; the element ``i``
        has the structure of ``tensors`` with the ``i``-th slice of each component. Lists
        and Python numbers are converted as TensorFlow converts them (ints to int32,
        floats to float32, strings to ``bytes``). A splittable source.

        Args:
          tensors: an array, or a nested structure (tuple, dict, namedtuple) of arrays,
            all with the same size along axis 0.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset with one element per slice.

        Raises:
          ValueError: ``tensors`` is an empty structure, has a scalar component, or its
            components differ in their first dimension.
          TypeError: a component is None or cannot become a NumPy array.

        Examples:
            >>> ds = tw.data.Dataset.from_tensor_slices({"x": np.arange(3), "y": ["a", "b", "c"]})
            >>> for element in ds:
            ...     print(int(element["x"]), element["y"])
            0 b'a'
            1 b'b'
            2 b'c'
        """
        return _sources.TensorSliceDataset(tensors)

    @staticmethod
    def from_tensors(tensors: Any, name: str | None = None) -> Dataset:
        """A dataset with ``tensors`` as its only element.

        Not splittable: under dynamic sharding use ``from_tensor_slices``.

        Args:
          tensors: a value or a nested structure of values (arrays, numbers, strings).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of one element.

        Raises:
          TypeError: a component is None or cannot become a NumPy array.
          ValueError: a component is a non-rectangular nested list.

        Examples:
            >>> ds = tw.data.Dataset.from_tensors(([1, 2, 3], "a"))
            >>> ds.element_spec
            (TensorSpec(shape=(3,), dtype=int32, name=None),
             TensorSpec(shape=(), dtype=string, name=None))
            >>> ds.cardinality()
            1
        """
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
        """A dataset of the elements a Python generator yields, checked against a signature.

        ``generator(*args)`` is called at the start of each iteration; every value it
        yields is checked against the signature and converted to its dtypes. The callable
        travels with the dataset (cloudpickle), so a data-service worker calls it on its
        side. An iterator over it can be checkpointed only when ``generator`` returns an
        iterator with ``state_dict()`` and ``load_state_dict(state)`` methods. Not
        splittable.

        Args:
          generator: a callable returning an iterable.
          output_types: the dtypes of the components (a nested structure of NumPy dtypes,
            ``str``/``bytes``/``"string"`` for strings); with ``output_shapes``, the
            older way to give the signature.
          output_shapes: the shapes of the components, in the structure of
            ``output_types``; unknown rank when omitted.
          args: a tuple of values passed to ``generator`` (as NumPy values).
          output_signature: a nested structure of ``TensorSpec`` (or of objects with
            ``shape`` and ``dtype``, such as ``tf.TensorSpec``).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of the generated elements.

        Raises:
          TypeError: ``generator`` is not callable; both or neither of
            ``output_signature`` and ``output_types`` are given; ``output_shapes`` is given
            with ``output_signature``; ``output_signature`` holds something without a
            shape and a dtype. While iterating: a yielded value has another structure.
          ValueError: ``output_shapes`` does not have the structure of ``output_types``.
          InvalidArgumentError: while iterating, a yielded value cannot be converted to
            its dtype or has another shape.

        Examples:
            >>> def gen():
            ...     for i in range(3):
            ...         yield i, [i] * i
            >>> spec = (tw.data.TensorSpec((), np.int64), tw.data.TensorSpec((None,), np.int64))
            >>> ds = tw.data.Dataset.from_generator(gen, output_signature=spec)
            >>> [(int(a), b.tolist()) for a, b in ds]
            [(0, []), (1, [1]), (2, [2, 2])]
        """
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
        """A dataset of the names of the files matching one or more glob patterns.

        The patterns are expanded when the dataset is made, as TensorFlow does eagerly, so
        the list travels with the dataset. The names are ``bytes``, sorted when ``shuffle``
        is False and in a new random order every iteration otherwise. A splittable source
        and a file-based source for FILE auto-sharding.

        Args:
          file_pattern: a glob pattern (``str``, ``bytes`` or path) or a list of them.
          shuffle: shuffle the names (default True, as in TensorFlow).
          seed: makes the sequence of orders reproducible.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of scalar strings.

        Raises:
          InvalidArgumentError: no file matches (TensorFlow's message).

        Examples:
            >>> from pathlib import Path
            >>> for file in ("b.txt", "a.txt"):
            ...     _ = Path(file).write_text("x")
            >>> list(tw.data.Dataset.list_files("*.txt", shuffle=False).as_numpy_iterator())
            [b'a.txt', b'b.txt']
        """
        return _sources.ListFilesDataset(file_pattern, shuffle, seed)

    @staticmethod
    def load(
        path: str | os.PathLike[str],
        element_spec: Any = None,
        compression: str | None = None,
        reader_func: Any = None,
        wait: bool = False,
    ) -> Dataset:
        """The elements of a snapshot written by ``save`` or ``distributed_save``.

        Chunks are read in their number order: the order ``save`` wrote (without
        ``shard_func``), and for ``distributed_save`` the order of the source's splits
        (each split's elements in order). The result is a splittable, file-based source
        (one split per chunk): read through the service with ``distributed_epoch``,
        each chunk goes to one worker. Checkpointable like ``TFRecordDataset``.

        Args:
          path: the snapshot directory.
          element_spec: None takes the stored spec; else it must be compatible with it.
          compression: None takes the stored one; else it must be the stored one.
          reader_func: accepted for TensorFlow compatibility; must be None.
          wait: must be False: only finished snapshots are read (``UnimplementedError``).

        Returns:
          A dataset with the snapshot's ``element_spec`` and, after ``save``, its
          cardinality.

        Raises:
          NotFoundError: no snapshot at ``path``.
          FailedPreconditionError: the snapshot is not finished.
          InvalidArgumentError: ``element_spec`` or ``compression`` do not match.
          UnimplementedError: ``wait=True`` or a ``reader_func``.
          DataLossError: a chunk is missing or damaged.

        Examples:
            >>> tw.data.Dataset.range(3).save("saved")
            >>> [int(x) for x in tw.data.Dataset.load("saved")]
            [0, 1, 2]
        """
        if reader_func is not None:
            from tensorwire import errors

            raise errors.UnimplementedError(
                "Dataset.load(reader_func=...) is not supported; chunks are read in order"
            )
        return _snapshot_format.load(path, element_spec, compression, wait)

    @staticmethod
    def counter(
        start: int = 0, step: int = 1, dtype: Any = np.int64, name: str | None = None
    ) -> Dataset:
        """An endless dataset counting ``start, start + step, ...``.

        Args:
          start: the first value.
          step: the difference between consecutive values.
          dtype: the NumPy dtype of the elements (default int64).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          An infinite dataset of scalars of ``dtype``.

        Raises:
          TypeError: ``dtype`` is not a NumPy dtype, or ``start`` or ``step`` is None.
          ValueError: ``start`` or ``step`` is a string that is not an integer.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.counter(10, 5).take(3)]
            [10, 15, 20]
        """
        return _sources.CounterDataset(start, step, dtype)

    @staticmethod
    def random(
        seed: int | None = None,
        rerandomize_each_iteration: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """An endless dataset of uniform random int64 values in ``[0, 2**63 - 1)``.

        With a ``seed`` the stream is reproducible; the values are NumPy's
        (``numpy.random.default_rng``), not TensorFlow's.

        Args:
          seed: the seed; None draws fresh randomness each iteration.
          rerandomize_each_iteration: with a seed, give every iteration another stream
            (default False: every iteration repeats the same values).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          An infinite dataset of int64 scalars.

        Raises:
          TypeError: while iterating, ``seed`` is neither None nor a number.
          ValueError: while iterating, ``seed`` is a string that is not an integer.

        Examples:
            >>> ds = tw.data.Dataset.random(seed=4).take(3)
            >>> [int(x) for x in ds] == [int(x) for x in ds]
            True
        """
        return _sources.RandomDataset(seed, rerandomize_each_iteration)

    @staticmethod
    def sample_from_datasets(
        datasets: Any,
        weights: Any = None,
        seed: int | None = None,
        stop_on_empty_dataset: bool = False,
        rerandomize_each_iteration: bool | None = None,
    ) -> Dataset:
        """A dataset whose every element comes from one of ``datasets``, picked at random.

        When an input is exhausted it is dropped and the weights of the others are
        renormalized, unless ``stop_on_empty_dataset`` ends the whole dataset then. Unlike
        TensorFlow, ``weights`` cannot be a dataset.

        Args:
          datasets: a non-empty list of datasets with compatible element types.
          weights: one non-negative weight per dataset (default: equal weights).
          seed: makes the choices reproducible.
          stop_on_empty_dataset: end when the chosen input is exhausted.
          rerandomize_each_iteration: with a seed, choose differently every iteration
            (default False: every iteration makes the same choices).

        Returns:
          A dataset with the element type of ``datasets``.

        Raises:
          ValueError: ``datasets`` is empty, or ``weights`` has another length.
          TypeError: an entry of ``datasets`` is not a dataset, their element types are
            incompatible, or ``weights`` is a dataset.
          InvalidArgumentError: a weight is negative or not finite, or they sum to zero.

        Examples:
            >>> low, high = tw.data.Dataset.range(0, 3), tw.data.Dataset.range(100, 103)
            >>> ds = tw.data.Dataset.sample_from_datasets([low, high], [0.5, 0.5], seed=1)
            >>> sorted(int(x) for x in ds)
            [0, 1, 2, 100, 101, 102]
        """
        return _mixing.SampleDataset(
            datasets, weights, seed, stop_on_empty_dataset, rerandomize_each_iteration
        )

    @staticmethod
    def choose_from_datasets(
        datasets: Any, choice_dataset: Any, stop_on_empty_dataset: bool = True
    ) -> Dataset:
        """A dataset whose every element comes from the input ``choice_dataset`` names.

        The next element of ``choice_dataset`` (an index ``i``) says that the next element
        is the next one of ``datasets[i]``.

        Args:
          datasets: a non-empty list of datasets with compatible element types.
          choice_dataset: a dataset of scalar int64 indices into ``datasets``.
          stop_on_empty_dataset: end when the chosen input is exhausted (default); when
            False, such a choice is skipped.

        Returns:
          A dataset with the element type of ``datasets``.

        Raises:
          ValueError: ``datasets`` is empty.
          TypeError: an entry of ``datasets`` is not a dataset, their element types are
            incompatible, or ``choice_dataset`` is not a dataset of scalar int64.
          InvalidArgumentError: while iterating, an index is out of range.

        Examples:
            >>> a = tw.data.Dataset.from_tensors(b"a").repeat()
            >>> b = tw.data.Dataset.from_tensors(b"b").repeat()
            >>> choice = tw.data.Dataset.from_tensor_slices(np.array([0, 1, 1, 0], np.int64))
            >>> list(tw.data.Dataset.choose_from_datasets([a, b], choice).as_numpy_iterator())
            [b'a', b'b', b'b', b'a']
        """
        return _mixing.ChooseDataset(datasets, choice_dataset, stop_on_empty_dataset)

    @staticmethod
    def zip(*args: Any, datasets: Any = None, name: str | None = None) -> Dataset:
        """A dataset of the elements of several datasets, taken in lockstep.

        ``zip(a, b)``, ``zip((a, b))`` or ``zip({"x": a, "y": b})``: the elements have the
        structure of the datasets given. It ends with the shortest input.

        Args:
          *args: the datasets, or one (nested) tuple or dict of datasets.
          datasets: the same as a keyword argument (instead of ``*args``).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of structures of elements.

        Raises:
          TypeError: both or neither of ``*args`` and ``datasets`` are given, or a leaf of
            the structure is not a dataset (a list is not a structure here: use a tuple).
          ValueError: the structure is empty.

        Examples:
            >>> ds = tw.data.Dataset.zip(tw.data.Dataset.range(3), tw.data.Dataset.range(10, 12))
            >>> [(int(a), int(b)) for a, b in ds]
            [(0, 10), (1, 11)]
        """
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
        """Apply ``map_func`` to every element.

        ``map_func`` gets the element unpacked as in TensorFlow: a tuple element as
        positional arguments, anything else as one argument. It runs as Python on NumPy
        values (no graph); its output type is found by calling it on placeholder values
        (or on the first element if that fails). With ``num_parallel_calls`` it runs in
        that many threads (``AUTOTUNE``: one per CPU), which pays off when it releases the
        GIL (NumPy, I/O). An exception from ``map_func`` is raised by ``next()``.

        Args:
          map_func: a function from an element to a new element.
          num_parallel_calls: the number of threads, ``AUTOTUNE``, or None to run on the
            consumer's thread.
          deterministic: with threads, keep the input order (default: the pipeline's
            ``Options.deterministic``, True when unset); False yields results as they are
            ready.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The mapped dataset.

        Raises:
          TypeError: ``map_func`` is not callable.
          InvalidArgumentError: ``num_parallel_calls`` is neither positive nor ``AUTOTUNE``.

        Examples:
            >>> ds = tw.data.Dataset.range(4).map(lambda x: x * 2, num_parallel_calls=2)
            >>> [int(x) for x in ds]
            [0, 2, 4, 6]
            >>> pairs = tw.data.Dataset.from_tensor_slices((np.arange(2), np.arange(2) * 10))
            >>> [int(x) for x in pairs.map(lambda a, b: a + b)]
            [0, 11]
        """
        n = _parallelism(num_parallel_calls)
        if n is None:
            return _transforms.MapDataset(self, map_func)
        return _threaded.ParallelMapDataset(self, map_func, n, deterministic)

    def filter(self, predicate: Callable[..., Any], name: str | None = None) -> Dataset:
        """Keep the elements for which ``predicate`` returns True.

        Args:
          predicate: a function from an element (unpacked as for ``map``) to a Python
            bool or a NumPy scalar bool.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The filtered dataset (its cardinality is unknown).

        Raises:
          TypeError: ``predicate`` is not callable.
          ValueError: while iterating, ``predicate`` returned something other than a
            scalar bool.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(6).filter(lambda x: x % 2 == 0)]
            [0, 2, 4]
        """
        return _transforms.FilterDataset(self, predicate)

    def batch(
        self,
        batch_size: int,
        drop_remainder: bool = False,
        num_parallel_calls: int | None = None,
        deterministic: bool | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Stack consecutive elements into batches along a new first axis.

        Every component is stacked separately; the elements of a batch must have equal
        shapes (see ``padded_batch`` otherwise). The last batch may be smaller unless
        ``drop_remainder``. Batching runs on the consumer's thread: ``num_parallel_calls``
        is checked but adds no threads.

        Args:
          batch_size: elements per batch.
          drop_remainder: drop a last, smaller batch (the batch dimension of
            ``element_spec`` is then known).
          num_parallel_calls: accepted for TensorFlow compatibility (checked as in
            ``map``).
          deterministic: accepted for TensorFlow compatibility, unused.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The batched dataset.

        Raises:
          InvalidArgumentError: ``batch_size`` is not positive, or ``num_parallel_calls``
            is neither positive nor ``AUTOTUNE``; while iterating, elements of a batch have
            different shapes.

        Examples:
            >>> [b.tolist() for b in tw.data.Dataset.range(5).batch(2)]
            [[0, 1], [2, 3], [4]]
            >>> tw.data.Dataset.range(5).batch(2, drop_remainder=True).element_spec
            TensorSpec(shape=(2,), dtype=int64, name=None)
        """
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
        """Batch elements of different shapes, padding every component to a common shape.

        Args:
          batch_size: elements per batch.
          padded_shapes: the shape to pad each component to, in the structure of the
            elements; a dimension of None or -1 pads to the largest in the batch. Default:
            every dimension to the largest in the batch.
          padding_values: the value to pad each component with: one value for all, or a
            structure like the elements. Default 0, or ``b""`` for strings.
          drop_remainder: drop a last, smaller batch.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The batched dataset.

        Raises:
          InvalidArgumentError: ``batch_size`` is not positive; while iterating, an element
            has another rank than its padded shape or is larger than it.
          ValueError: a component has unknown rank and no ``padded_shapes`` is given, or a
            padded shape has another rank than its component, or ``padded_shapes`` or
            ``padding_values`` does not have the structure of the elements.
          TypeError: ``padding_values`` is a structure of another kind than the elements
            (a dict for a tuple, ...).

        Examples:
            >>> ds = tw.data.Dataset.range(1, 4).map(lambda n: np.arange(n))
            >>> [b.tolist() for b in ds.padded_batch(2)]
            [[[0, 0], [0, 1]], [[0, 1, 2]]]
            >>> [b.tolist() for b in ds.padded_batch(3, padded_shapes=(4,), padding_values=-1)]
            [[[0, -1, -1, -1], [0, 1, -1, -1], [0, 1, 2, -1]]]
        """
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
        """Shuffle the elements by sampling from a buffer of ``buffer_size`` of them.

        TensorFlow's algorithm: the buffer is filled, then each output is a uniformly
        chosen buffer entry, replaced by the next input. A buffer as large as the dataset
        gives a uniform shuffle. The random numbers are Python's, so a seed gives another
        order than in TensorFlow.

        Args:
          buffer_size: the number of elements in the buffer.
          seed: makes the sequence of orders reproducible.
          reshuffle_each_iteration: a new order every iteration (default); False repeats
            the first order.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The shuffled dataset.

        Raises:
          InvalidArgumentError: ``buffer_size`` is not positive.

        Examples:
            >>> ds = tw.data.Dataset.range(5).shuffle(5, seed=7)
            >>> sorted(int(x) for x in ds)
            [0, 1, 2, 3, 4]
            >>> fixed = tw.data.Dataset.range(5).shuffle(5, reshuffle_each_iteration=False)
            >>> [int(x) for x in fixed] == [int(x) for x in fixed]
            True
        """
        return _transforms.ShuffleDataset(self, buffer_size, seed, reshuffle_each_iteration)

    def repeat(self, count: int | None = None, name: str | None = None) -> Dataset:
        """Repeat the dataset ``count`` times, or forever.

        An endless repeat of a dataset that turns out empty ends instead of spinning, as
        in TensorFlow. Under dynamic sharding the splits are repeated instead.

        Args:
          count: the number of passes; None or -1 repeats forever.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The repeated dataset.

        Raises:
          TypeError: ``count`` is neither a number nor None.
          ValueError: ``count`` is a string that is not an integer.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(2).repeat(3)]
            [0, 1, 0, 1, 0, 1]
            >>> tw.data.Dataset.range(2).repeat().cardinality() == tw.data.INFINITE
            True
        """
        return _transforms.RepeatDataset(self, count)

    def take(self, count: int, name: str | None = None) -> Dataset:
        """At most the first ``count`` elements.

        Args:
          count: the number of elements; -1 takes them all.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The shortened dataset.

        Raises:
          TypeError: ``count`` is not a number.
          ValueError: ``count`` is a string that is not an integer.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(10).take(3)]
            [0, 1, 2]
        """
        return _transforms.TakeDataset(self, count)

    def skip(self, count: int, name: str | None = None) -> Dataset:
        """All but the first ``count`` elements.

        Args:
          count: the number of elements to drop; -1 drops them all.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The dataset without its first ``count`` elements.

        Raises:
          TypeError: ``count`` is not a number.
          ValueError: ``count`` is a string that is not an integer.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(5).skip(3)]
            [3, 4]
        """
        return _transforms.SkipDataset(self, count)

    def shard(self, num_shards: int, index: int, name: str | None = None) -> Dataset:
        """Every ``num_shards``-th element, starting with element ``index``.

        ``shard(tw.data.SHARD_HINT, tw.data.SHARD_HINT)`` marks where HINT auto-sharding
        (``auto_shard``, or the data service with ``ShardingPolicy.HINT``) shards; such
        a placeholder cannot be iterated as it is.

        Args:
          num_shards: the number of shards, or ``SHARD_HINT``.
          index: which shard to keep, from 0, or ``SHARD_HINT``.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The dataset of one shard.

        Raises:
          InvalidArgumentError: ``num_shards`` is not positive or ``index`` is not in
            ``[0, num_shards)``; a ``SHARD_HINT`` placeholder is iterated without being
            rewritten.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(10).shard(3, 1)]
            [1, 4, 7]
        """
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
        """Interleave the datasets ``map_func`` makes of the elements.

        ``cycle_length`` of those datasets are open at once; ``block_length`` consecutive
        elements are taken from each in turn, and an exhausted one is replaced by the
        dataset of the next element. With ``num_parallel_calls`` every open dataset is read
        ahead by a thread of its own; the output order is TensorFlow's deterministic order
        in every case (``deterministic=False`` does not relax it).

        Args:
          map_func: a function from an element (unpacked as for ``map``) to a dataset.
          cycle_length: datasets open at once; None or ``AUTOTUNE``: one per CPU.
          block_length: consecutive elements from each (default 1).
          num_parallel_calls: read the open datasets in threads when given (a positive
            number or ``AUTOTUNE``).
          deterministic: accepted for TensorFlow compatibility; the order is always
            deterministic.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The interleaved dataset.

        Raises:
          TypeError: ``map_func`` is not callable; while iterating, it returned something
            that is not a dataset.
          InvalidArgumentError: ``cycle_length``, ``block_length`` or
            ``num_parallel_calls`` is not positive (and not ``AUTOTUNE``).

        Examples:
            >>> ds = tw.data.Dataset.range(1, 4).interleave(
            ...     lambda x: tw.data.Dataset.from_tensors(x).repeat(2), cycle_length=2)
            >>> [int(x) for x in ds]
            [1, 2, 1, 2, 3, 3]
        """
        parallel = _parallelism(num_parallel_calls)
        return _nested.InterleaveDataset(
            self, map_func, cycle_length, block_length, parallel=parallel is not None
        )

    def flat_map(self, map_func: Callable[..., Any], name: str | None = None) -> Dataset:
        """Concatenate the datasets ``map_func`` makes of the elements.

        Args:
          map_func: a function from an element (unpacked as for ``map``) to a dataset.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The flattened dataset.

        Raises:
          TypeError: ``map_func`` is not callable; while iterating, it returned something
            that is not a dataset.

        Examples:
            >>> ds = tw.data.Dataset.range(1, 4).flat_map(lambda n: tw.data.Dataset.range(n))
            >>> [int(x) for x in ds]
            [0, 0, 1, 0, 1, 2]
        """
        return _nested.FlatMapDataset(self, map_func)

    def prefetch(self, buffer_size: int, name: str | None = None) -> Dataset:
        """Produce elements ahead of the consumer in a background thread.

        The thread starts with the first ``next()`` and stops when the iterator is
        closed. ``buffer_size`` 0 passes elements straight through.

        Args:
          buffer_size: the most elements held ready; ``AUTOTUNE`` chooses a default.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The prefetching dataset.

        Raises:
          InvalidArgumentError: ``buffer_size`` is below -1 (``AUTOTUNE``).

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(3).prefetch(tw.data.AUTOTUNE)]
            [0, 1, 2]
        """
        return _threaded.PrefetchDataset(self, buffer_size)

    def enumerate(self, start: int = 0, name: str | None = None) -> Dataset:
        """Pair every element with its index: ``(index, element)``.

        Args:
          start: the first index.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of ``(int64 index, element)`` tuples.

        Raises:
          TypeError: ``start`` is not a number.
          ValueError: ``start`` is a string that is not an integer.

        Examples:
            >>> ds = tw.data.Dataset.range(10, 13).enumerate(start=1)
            >>> [(int(i), int(x)) for i, x in ds]
            [(1, 10), (2, 11), (3, 12)]
        """
        return _transforms.EnumerateDataset(self, start)

    def concatenate(self, dataset: Dataset, name: str | None = None) -> Dataset:
        """This dataset's elements, followed by those of ``dataset``.

        Args:
          dataset: a dataset with a compatible element type (the same structure and
            dtypes; shapes may differ).
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The concatenated dataset.

        Raises:
          TypeError: ``dataset`` is not a dataset, or its element type is incompatible.

        Examples:
            >>> ds = tw.data.Dataset.range(2).concatenate(tw.data.Dataset.range(5, 7))
            >>> [int(x) for x in ds]
            [0, 1, 5, 6]
        """
        return _transforms.ConcatenateDataset(self, dataset)

    def window(
        self,
        size: int,
        shift: int | None = None,
        stride: int = 1,
        drop_remainder: bool = False,
        name: str | None = None,
    ) -> Dataset:
        """Group elements into windows, each a structure of small finite datasets.

        Window ``k`` holds the input elements ``k * shift + i * stride`` for
        ``i < size``. A window has the structure of the elements, each component a
        dataset (its spec a ``DatasetSpec``); ``flat_map`` with ``batch`` turns them
        into arrays. Windows are made while their first element exists.

        Args:
          size: elements per window.
          shift: the input elements between the starts of two windows (default ``size``).
          stride: the input elements between two elements of a window.
          drop_remainder: drop the windows shorter than ``size`` at the end.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          A dataset of windows.

        Raises:
          InvalidArgumentError: ``size``, ``shift`` or ``stride`` is not positive.

        Examples:
            >>> for window in tw.data.Dataset.range(5).window(3, shift=2):
            ...     print([int(x) for x in window])
            [0, 1, 2]
            [2, 3, 4]
            [4]
        """
        return _batching.WindowDataset(self, size, shift, stride, drop_remainder)

    def unbatch(self, name: str | None = None) -> Dataset:
        """Split every element along its first axis into separate elements.

        Args:
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The unbatched dataset.

        Raises:
          ValueError: a component is a scalar (by its spec).
          InvalidArgumentError: while iterating, a component is a scalar, or the
            components of an element differ in their first dimension.

        Examples:
            >>> ds = tw.data.Dataset.from_tensors(np.array([[1, 2], [3, 4]])).unbatch()
            >>> [row.tolist() for row in ds]
            [[1, 2], [3, 4]]
        """
        return _batching.UnbatchDataset(self)

    def unique(self, name: str | None = None) -> Dataset:
        """Drop the elements seen before: the first occurrence of each is kept.

        Args:
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The dataset of distinct elements.

        Raises:
          TypeError: the elements are not scalar integers or scalar strings.

        Examples:
            >>> ds = tw.data.Dataset.from_tensor_slices([1, 1, 2, 3, 3, 1]).unique()
            >>> [int(x) for x in ds]
            [1, 2, 3]
        """
        return _transforms.UniqueDataset(self)

    def cache(self, filename: str = "", name: str | None = None) -> Dataset:
        """Remember the elements of the first complete iteration for the later ones.

        In memory (``filename=""``) the elements are kept by the dataset object, for
        every later iteration in this process. With a ``filename`` they are written to
        ``<filename>.twcache`` (put in place only once the pass is complete) and read from
        there by later iterations, also in other processes. The file holds pickles, not
        TensorFlow's format: cache only to files you trust. A partial first pass caches
        nothing.

        Args:
          filename: a file name prefix, or ``""`` to cache in memory.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The caching dataset.

        Raises:
          OSError: while iterating, the cache file cannot be written or read.

        Examples:
            >>> ds = tw.data.Dataset.range(3).map(lambda x: x * x).cache("squares")
            >>> [int(x) for x in ds]
            [0, 1, 4]
            >>> import os
            >>> os.path.exists("squares.twcache")
            True
        """
        return _cache.CacheDataset(self, filename)

    def save(
        self,
        path: str | os.PathLike[str],
        compression: str | None = None,
        shard_func: Callable[..., Any] | None = None,
        checkpoint_args: Any = None,
    ) -> None:
        """Write this dataset's elements as a snapshot that ``Dataset.load`` reads.

        The format of ``distributed_save`` (``snapshot_format.py``): chunk files of
        TFRecord-framed elements, the element spec in ``snapshot.metadata``, and a
        ``DONE`` file written last. Without ``shard_func`` a chunk holds 4,096 elements
        in order; with it, an element goes to the chunk of its shard index, and ``load``
        reads shard after shard.

        Args:
          path: a new or empty directory.
          compression: None or ``""`` (none), ``"AUTO"`` (ZLIB level 1: the fastest
            stdlib codec, standing in for TensorFlow's Snappy), ``"GZIP"``, ``"ZLIB"``.
          shard_func: element -> scalar integer shard index, or None.
          checkpoint_args: accepted for TensorFlow compatibility; must be None.

        Raises:
          AlreadyExistsError: ``path`` is not empty (e.g. holds a snapshot).
          InvalidArgumentError: an unknown compression, a bad ``shard_func`` result.
          UnimplementedError: an element spec a snapshot cannot store (a nested dataset),
            or ``checkpoint_args``.
          OSError: the files cannot be written.

        Examples:
            >>> ds = tw.data.Dataset.from_tensor_slices({"x": [1, 2], "y": [3.0, 4.0]})
            >>> ds.save("pairs", compression="GZIP")
            >>> [int(e["x"]) for e in tw.data.Dataset.load("pairs")]
            [1, 2]
        """
        if checkpoint_args is not None:
            from tensorwire import errors

            raise errors.UnimplementedError(
                "Dataset.save(checkpoint_args=...) is not supported: a save runs to the end"
            )
        _snapshot_format.save(self, path, compression, shard_func)

    def apply(self, transformation_func: Callable[[Dataset], Dataset]) -> Dataset:
        """``transformation_func(self)``: apply a function made of transforms.

        Args:
          transformation_func: a function from a dataset to a dataset.

        Returns:
          The dataset ``transformation_func`` returned.

        Raises:
          TypeError: ``transformation_func`` did not return a dataset.

        Examples:
            >>> def evens(ds):
            ...     return ds.filter(lambda x: x % 2 == 0)
            >>> [int(x) for x in tw.data.Dataset.range(5).apply(evens)]
            [0, 2, 4]
        """
        dataset = transformation_func(self)
        if not isinstance(dataset, DatasetBase):
            raise TypeError(
                f"`transformation_func` must return a `tf.data.Dataset` object. Got {dataset!r}."
            )
        return dataset

    def with_options(self, options: Any, name: str | None = None) -> Dataset:
        """This dataset with ``options`` merged into the pipeline's options.

        A field set here wins over the same field set upstream; see ``Options`` for
        which fields have an effect.

        Args:
          options: an ``Options``.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The same elements, with the options attached.

        Raises:
          TypeError: ``options`` is not an ``Options``.

        Examples:
            >>> options = tw.data.Options()
            >>> options.deterministic = False
            >>> tw.data.Dataset.range(3).with_options(options).options().deterministic
            False
        """
        return _transforms.OptionsDataset(self, options)

    def take_while(self, predicate: Callable[..., Any], name: str | None = None) -> Dataset:
        """The elements up to (not including) the first for which ``predicate`` is False.

        Args:
          predicate: a function from an element (unpacked as for ``map``) to a scalar
            bool.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The shortened dataset.

        Raises:
          TypeError: ``predicate`` is not callable.
          ValueError: while iterating, ``predicate`` returned something other than a
            scalar bool.

        Examples:
            >>> [int(x) for x in tw.data.Dataset.range(10).take_while(lambda x: x < 3)]
            [0, 1, 2]
        """
        return _transforms.TakeWhileDataset(self, predicate)

    def scan(
        self, initial_state: Any, scan_func: Callable[[Any, Any], Any], name: str | None = None
    ) -> Dataset:
        """Carry a state across the elements: ``(state, output) = scan_func(state, element)``.

        Args:
          initial_state: the first state (a value or nested structure).
          scan_func: a function of ``(state, element)`` returning ``(new_state, output)``;
            the new state must have the structure of ``initial_state``.
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The dataset of outputs.

        Raises:
          TypeError: ``scan_func`` is not callable; while iterating, it did not return a
            pair, or the new state has another structure.

        Examples:
            >>> ds = tw.data.Dataset.range(5).scan(np.int64(0), lambda s, x: (s + x, s + x))
            >>> [int(x) for x in ds]
            [0, 1, 3, 6, 10]
        """
        return _transforms.ScanDataset(self, initial_state, scan_func)

    def get_single_element(self, name: str | None = None) -> Any:
        """The only element of the dataset.

        Args:
          name: accepted for TensorFlow compatibility, unused.

        Returns:
          The element.

        Raises:
          InvalidArgumentError: the dataset is empty or has more than one element.

        Examples:
            >>> int(tw.data.Dataset.range(5).skip(4).get_single_element())
            4
        """
        from tensorwire import errors

        with DatasetIterator(self) as it:
            for element in it:
                for _ in it:
                    raise errors.InvalidArgumentError("Dataset had more than one element.")
                return element
        raise errors.InvalidArgumentError("Dataset was empty.")

    def reduce(self, initial_state: Any, reduce_func: Callable[[Any, Any], Any]) -> Any:
        """Fold the elements into a state: ``state = reduce_func(state, element)``.

        Iterates the whole dataset (it must be finite).

        Args:
          initial_state: the first state (a value or nested structure).
          reduce_func: a function of ``(state, element)`` returning the new state.

        Returns:
          The final state.

        Raises:
          TypeError: ``initial_state`` or a new state holds None or something that cannot
            become a NumPy value. Whatever iterating the dataset raises.

        Examples:
            >>> int(tw.data.Dataset.range(5).reduce(np.int64(0), lambda s, x: s + x))
            10
        """
        state = structure.normalize_element(initial_state)
        with DatasetIterator(self) as it:
            for element in it:
                state = structure.normalize_function_output(reduce_func(state, element))
        return state


class UnaryDataset(Dataset):
    """The base class of a transform with one input, for datasets of your own.

    It keeps the input (``self._input``), takes its element spec and cardinality unless
    overridden, and passes dynamic-sharding splits through to it. Implement
    ``_iterator(ctx)``; iterate the input with ``self._input._iterator(ctx)``.

    Args:
      input_dataset: the dataset this one transforms.

    Raises:
      TypeError: ``input_dataset`` is not a dataset.

    Examples:
        >>> class Doubled(tw.data.UnaryDataset):
        ...     def _iterator(self, ctx):
        ...         return (x for e in self._input._iterator(ctx) for x in (e, e))
        ...     def _cardinality(self):
        ...         return 2 * self._input.cardinality()
        >>> ds = Doubled(tw.data.Dataset.range(3))
        >>> [int(x) for x in ds], ds.cardinality()
        ([0, 0, 1, 1, 2, 2], 6)
    """

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
from . import snapshot_format as _snapshot_format  # noqa: E402
from . import sources as _sources  # noqa: E402
from . import threaded as _threaded  # noqa: E402
from . import transforms as _transforms  # noqa: E402
