"""Sharding a pipeline across workers: split providers (dynamic) and ``auto_shard`` (static).

**Dynamic sharding** (tf.data service ``ShardingPolicy.DYNAMIC``, ``"distributed_epoch"``).
The dispatcher calls ``make_split_provider`` on the dataset; each worker iterates its own
copy with ``make_iterator(dataset, split_provider=p)`` where ``p`` fetches splits from the
dispatcher. The pipeline's single splittable source then reads only the splits it gets; every
other op runs as usual. A *split* is a plain value the codec carries:

- ``(begin, end)`` — a tuple of two ints, element positions ``[begin, end)`` of an indexed
  source: ``range``, ``from_tensor_slices``, ``list_files``;
- ``str`` — one file name of a file reader given a static list (``TFRecordDataset``,
  ``TextLineDataset``).

Splits flow through unary transforms to their input. ``repeat(count)`` wraps the provider so
it hands out every split ``count`` times (forever for ``repeat()``), as TensorFlow's
RepeatDataset does. Sources that cannot be split (``from_tensors``, ``from_generator``) and
ops with several inputs (``zip``, ``concatenate``) make ``make_split_provider`` raise
``UnimplementedError`` naming the op. Datasets built inside ``flat_map``/``interleave``
functions never read splits.

**Static sharding** (``ShardingPolicy`` FILE, DATA, FILE_OR_DATA, HINT):
``auto_shard`` returns a rewritten copy of the pipeline for worker ``index`` of
``num_shards``:

- FILE: every file-based source (``list_files``, or a reader over a static list of files)
  keeps files ``index, index + num_shards, ...``. No file-based source -> ``NotFoundError``;
  fewer files than shards -> ``InvalidArgumentError`` (TensorFlow's message).
- DATA: ``shard(num_shards, index)`` on the elements at the end of the pipeline (before
  trailing ``prefetch`` ops).
- FILE_OR_DATA: FILE, falling back to DATA when FILE sharding is impossible.
- HINT: every ``shard(SHARD_HINT, SHARD_HINT)`` placeholder becomes
  ``shard(num_shards, index)``; a pipeline without placeholders is unchanged.
- OFF: unchanged. DYNAMIC is not a static policy (use a split provider): ``ValueError``.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
from typing import TYPE_CHECKING, Any

from tensorwire import errors

from .base import integer_argument

if TYPE_CHECKING:
    from .base import DatasetBase

__all__ = [
    "Split",
    "SplitProvider",
    "IndexSplitProvider",
    "FileSplitProvider",
    "RepeatedSplitProvider",
    "ShardingPolicy",
    "SHARD_HINT",
    "DEFAULT_MAX_SPLIT_SIZE",
    "default_split_size",
    "make_split_provider",
    "find_split_source",
    "auto_shard",
]

logger = logging.getLogger(__name__)

#: A split: ``(begin, end)`` element positions of an indexed source, or a file name.
Split = tuple[int, int] | str

#: ``tf.data.experimental.SHARD_HINT``: placeholder for ``shard`` rewritten by HINT sharding.
SHARD_HINT = -1

#: The largest number of elements ``default_split_size`` puts in one split.
DEFAULT_MAX_SPLIT_SIZE = 1024


class ShardingPolicy(enum.IntEnum):
    """``tf.data.experimental.service.ShardingPolicy``, with TensorFlow's numbers.

    How the data service splits a dataset between its workers: OFF (every worker reads
    everything), DYNAMIC (workers fetch splits from the dispatcher, see
    ``make_split_provider``) or a static policy applied by ``auto_shard`` (FILE,
    DATA, FILE_OR_DATA, HINT).

    Examples:
        >>> tw.data.ShardingPolicy.FILE_OR_DATA
        <ShardingPolicy.FILE_OR_DATA: 4>
        >>> tw.data.ShardingPolicy["DYNAMIC"] == 1
        True
    """

    OFF = 0
    DYNAMIC = 1
    FILE = 2
    DATA = 3
    FILE_OR_DATA = 4
    HINT = 5


class SplitProvider(abc.ABC):
    """Hands out the splits of one source, each exactly once per epoch.

    Implementations must be thread-safe: a worker may ask from several threads. The data
    service implements a remote provider (fetching splits from the dispatcher) against this
    interface; ``IndexSplitProvider``, ``FileSplitProvider`` and
    ``RepeatedSplitProvider`` run where the dataset is. A split is a ``Split``:
    ``(begin, end)`` positions of an indexed source, or a file name.

    Examples:
        >>> class OneRange(tw.data.SplitProvider):
        ...     def __init__(self):
        ...         self.done = False
        ...     def get_next(self):
        ...         if self.done:
        ...             return None
        ...         self.done = True
        ...         return (2, 5)
        ...     def reset(self):
        ...         self.done = False
        >>> [int(x) for x in tw.data.make_iterator(tw.data.Dataset.range(10), OneRange())]
        [2, 3, 4]
    """

    @abc.abstractmethod
    def get_next(self) -> Split | None:
        """The next split, or None when the provider is exhausted.

        Returns:
          A ``Split``, or None at the end of the epoch.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Start again from the first split (a new epoch)."""

    def num_splits(self) -> int | None:
        """How many splits one epoch has, or None when unknown or infinite.

        Returns:
          The number of splits, or None.
        """
        return None

    def save(self) -> dict[str, Any]:
        """A plain, codec-encodable snapshot of the position (for journaling).

        Returns:
          A dict of plain values that ``restore`` takes back.

        Raises:
          UnimplementedError: the provider cannot save its position (the default).
        """
        raise errors.UnimplementedError(f"{type(self).__name__} does not support save()")

    def restore(self, state: dict[str, Any]) -> None:
        """Return to a position captured by ``save``.

        Args:
          state: what ``save`` returned.

        Raises:
          UnimplementedError: the provider cannot restore a position (the default).
        """
        raise errors.UnimplementedError(f"{type(self).__name__} does not support restore()")


class IndexSplitProvider(SplitProvider):
    """Splits ``[0, num_elements)`` into ``(begin, end)`` ranges of ``split_size`` elements.

    The provider of ``range``, ``from_tensor_slices`` and ``list_files``.

    Args:
      num_elements: the size of the source.
      split_size: elements per split (the last split may be smaller).

    Raises:
      InvalidArgumentError: ``num_elements`` is negative (infinite or unknown), or
        ``split_size`` is below 1.

    Examples:
        >>> provider = tw.data.IndexSplitProvider(5, split_size=2)
        >>> [provider.get_next() for _ in range(4)]
        [(0, 2), (2, 4), (4, 5), None]
        >>> provider.num_splits()
        3
    """

    def __init__(self, num_elements: int, split_size: int = 1) -> None:
        if num_elements < 0:
            raise errors.InvalidArgumentError(
                f"An indexed source needs a known, finite size; got {num_elements}"
            )
        if split_size < 1:
            raise errors.InvalidArgumentError(f"split_size must be >= 1, got {split_size}")
        self._n = int(num_elements)
        self._size = int(split_size)
        self._next = 0
        self._lock = threading.Lock()

    def get_next(self) -> tuple[int, int] | None:
        with self._lock:
            if self._next >= self._n:
                return None
            begin = self._next
            self._next = min(self._n, begin + self._size)
            return (begin, self._next)

    def reset(self) -> None:
        with self._lock:
            self._next = 0

    def num_splits(self) -> int:
        return -(-self._n // self._size)

    def save(self) -> dict[str, Any]:
        with self._lock:
            return {"next": self._next}

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._next = int(state["next"])


class FileSplitProvider(SplitProvider):
    """One split per file name, in the given order.

    The provider of ``TFRecordDataset`` and ``TextLineDataset`` over a list of files.

    Args:
      files: the file names.

    Examples:
        >>> provider = tw.data.FileSplitProvider(["a.tfrecord", "b.tfrecord"])
        >>> provider.get_next(), provider.get_next(), provider.get_next()
        ('a.tfrecord', 'b.tfrecord', None)
    """

    def __init__(self, files: list[str]) -> None:
        self._files = list(files)
        self._next = 0
        self._lock = threading.Lock()

    def get_next(self) -> str | None:
        with self._lock:
            if self._next >= len(self._files):
                return None
            self._next += 1
            return self._files[self._next - 1]

    def reset(self) -> None:
        with self._lock:
            self._next = 0

    def num_splits(self) -> int:
        return len(self._files)

    def save(self) -> dict[str, Any]:
        with self._lock:
            return {"next": self._next}

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._next = int(state["next"])


class RepeatedSplitProvider(SplitProvider):
    """Hands out the splits of ``inner`` ``count`` times (``count < 0``: forever).

    What ``make_split_provider`` makes for a ``repeat(count)`` above the source. An
    infinite repeat of a provider with no splits ends instead of spinning.

    Args:
      inner: the provider to repeat.
      count: how many times; negative repeats forever.

    Raises:
      TypeError: ``count`` is not an integer.

    Examples:
        >>> provider = tw.data.RepeatedSplitProvider(tw.data.FileSplitProvider(["a", "b"]), 2)
        >>> [provider.get_next() for _ in range(5)]
        ['a', 'b', 'a', 'b', None]
    """

    def __init__(self, inner: SplitProvider, count: int) -> None:
        self._inner = inner
        self._count = int(count)
        self._round = 0
        self._got_any = False
        self._lock = threading.Lock()

    def get_next(self) -> Split | None:
        with self._lock:
            while self._count < 0 or self._round < self._count:
                split = self._inner.get_next()
                if split is not None:
                    self._got_any = True
                    return split
                if not self._got_any:
                    return None
                self._round += 1
                self._got_any = False
                self._inner.reset()
            return None

    def reset(self) -> None:
        with self._lock:
            self._round = 0
            self._got_any = False
            self._inner.reset()

    def num_splits(self) -> int | None:
        inner = self._inner.num_splits()
        if inner is None or self._count < 0:
            return None if inner != 0 else 0
        return inner * self._count

    def save(self) -> dict[str, Any]:
        with self._lock:
            return {"round": self._round, "got_any": self._got_any, "inner": self._inner.save()}

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._round = int(state["round"])
            self._got_any = bool(state["got_any"])
            self._inner.restore(state["inner"])


def default_split_size(num_elements: int) -> int:
    """Elements per split for an indexed source of ``num_elements`` when none is given.

    One element per split (TensorFlow's choice) for small sources, so a few hundred elements
    still spread over several workers; larger splits for large sources, up to
    ``DEFAULT_MAX_SPLIT_SIZE`` (1024), so the per-split round trip to the dispatcher stays
    cheap.

    Args:
      num_elements: the size of the source.

    Returns:
      ``num_elements // 256``, at least 1 and at most 1024.

    Examples:
        >>> tw.data.default_split_size(100), tw.data.default_split_size(10_000)
        (1, 39)
    """
    return max(1, min(DEFAULT_MAX_SPLIT_SIZE, num_elements // 256))


def _op(dataset: Any) -> str:
    return getattr(dataset, "_op_name", None) or type(dataset).__name__


def _walk_to_source(dataset: DatasetBase) -> tuple[DatasetBase, list[int]]:
    """The splittable source of ``dataset`` and the repeat counts met on the way down."""
    node = dataset
    repeats: list[int] = []
    while True:
        if hasattr(node, "_make_split_provider") and getattr(node, "_is_split_source", True):
            return node, repeats
        inputs = node._inputs()
        if getattr(node, "_passes_splits", False) and len(inputs) == 1:
            count = getattr(node, "_split_repeat_count", None)
            if count is not None:
                repeats.append(int(count))
            node = inputs[0]
            continue
        if len(inputs) > 1:
            reason = f"it has {len(inputs)} inputs; only pipelines with one source can be split"
        elif not inputs:
            reason = "it is a source that cannot be split"
        else:
            reason = "it does not pass splits to its input"
        raise errors.UnimplementedError(
            f"Cannot create a split provider for dataset of type {_op(node)}: {reason}. "
            "Dynamic sharding (ShardingPolicy.DYNAMIC / distributed_epoch) needs a splittable "
            "source: range, from_tensor_slices, list_files, TFRecordDataset or TextLineDataset."
        )


def find_split_source(dataset: DatasetBase) -> DatasetBase:
    """The source node that reads splits when ``dataset`` is iterated with a provider.

    The walk goes down from ``dataset`` through the transforms that pass splits to their
    single input, to the first splittable source.

    Args:
      dataset: the pipeline.

    Returns:
      The splittable source dataset inside ``dataset``.

    Raises:
      UnimplementedError: the pipeline has no splittable source on that path (a source
        such as ``from_generator``, or an op of several inputs such as ``zip``); the
        message names the op.

    Examples:
        >>> source = tw.data.Dataset.range(4)
        >>> tw.data.find_split_source(source.map(lambda x: x).batch(2)) is source
        True
    """
    return _walk_to_source(dataset)[0]


def make_split_provider(dataset: DatasetBase, split_size: int | None = None) -> SplitProvider:
    """A local provider of the splits of ``dataset``'s splittable source.

    What the dispatcher calls for ``ShardingPolicy.DYNAMIC``. ``repeat`` ops between the
    dataset and its source wrap the provider in a ``RepeatedSplitProvider``.

    Args:
      dataset: the pipeline.
      split_size: elements per split, for indexed sources only; default
        ``default_split_size``.

    Returns:
      A ``SplitProvider`` of the source's splits.

    Raises:
      UnimplementedError: the pipeline has no splittable source; the message names the
        op that prevents splitting.
      InvalidArgumentError: ``split_size`` is negative.

    Examples:
        >>> provider = tw.data.make_split_provider(tw.data.Dataset.range(5).repeat(2), 3)
        >>> [provider.get_next() for _ in range(5)]
        [(0, 3), (3, 5), (0, 3), (3, 5), None]
    """
    source, repeats = _walk_to_source(dataset)
    provider: SplitProvider = source._make_split_provider(split_size)  # type: ignore[attr-defined]
    # The outermost repeat wraps last, so it repeats everything the inner ones hand out.
    for count in reversed(repeats):
        provider = RepeatedSplitProvider(provider, count)
    return provider


# ----------------------------------------------------------------------------- auto_shard


def _coerce_policy(policy: Any) -> ShardingPolicy:
    if isinstance(policy, str):
        try:
            return ShardingPolicy[policy.upper()]
        except KeyError:
            raise ValueError(f"Unknown sharding policy {policy!r}") from None
    name = getattr(policy, "name", None)
    if isinstance(name, str) and name in ShardingPolicy.__members__:
        return ShardingPolicy[name]
    try:
        return ShardingPolicy(int(policy))
    except (TypeError, ValueError):
        raise ValueError(f"Unknown sharding policy {policy!r}") from None


def _rewrite(node: DatasetBase, fn: Any) -> DatasetBase:
    """Bottom-up rewrite: ``fn(node_with_rewritten_inputs)`` for every node."""
    inputs = node._inputs()
    if inputs:
        new_inputs = tuple(_rewrite(i, fn) for i in inputs)
        if any(a is not b for a, b in zip(new_inputs, inputs, strict=False)):
            node = node._with_inputs(new_inputs)
    return fn(node)


def _file_name_slices(node: DatasetBase) -> DatasetBase | None:
    """The ``from_tensor_slices`` of scalar strings feeding a ``flat_map``/``interleave``.

    TensorFlow finds the reader inside the function and shards that function's input; the
    function is opaque here, so a slice source of file names feeding one (through unary
    transforms such as ``shuffle``) is taken to be that input.
    """
    from .sources import TensorSliceDataset
    from .structure import STRING, TensorSpec

    node = node._inputs()[0]
    while True:
        if isinstance(node, TensorSliceDataset):
            spec = node.element_spec
            is_names = isinstance(spec, TensorSpec) and spec.dtype == STRING and spec.shape == ()
            return node if is_names else None
        inputs = node._inputs()
        if not getattr(node, "_passes_splits", False) or len(inputs) != 1:
            return None
        node = inputs[0]


def _file_sources(node: DatasetBase) -> list[DatasetBase]:
    found = []
    if getattr(node, "_is_file_source", False):
        found.append(node)
    elif getattr(node, "_opens_datasets", False):
        names = _file_name_slices(node)
        if names is not None:
            found.append(names)
    for child in node._inputs():
        found.extend(_file_sources(child))
    # One node may be reached twice (through the check above and the walk).
    unique: dict[int, DatasetBase] = {id(n): n for n in found}
    return list(unique.values())


def _shard_by_file(dataset: DatasetBase, num_shards: int, index: int) -> DatasetBase:
    sources = _file_sources(dataset)
    if not sources:
        raise errors.NotFoundError(
            "Could not apply FILE based sharding: found no file-based source dataset "
            "(list_files, TFRecordDataset or TextLineDataset over a list of files, or "
            "from_tensor_slices of file names feeding flat_map/interleave) in the pipeline "
            f"ending in {_op(dataset)}."
        )
    for source in sources:
        n = source._num_files()  # type: ignore[attr-defined]
        if n < num_shards:
            raise errors.InvalidArgumentError(
                f"Could not apply FILE based sharding: the dataset only has {n} file(s), which "
                f"is not enough for the required {num_shards} shards/workers. Consider the "
                "DATA or OFF sharding policy, or split your input files into a larger number "
                "of small files such that number of files is greater than number of "
                "shards/workers."
            )
    targets = {id(n) for n in sources}
    return _rewrite(
        dataset,
        lambda n: n._shard_files(num_shards, index) if id(n) in targets else n,
    )


def _shard_by_data(dataset: DatasetBase, num_shards: int, index: int) -> DatasetBase:
    from .threaded import PrefetchDataset
    from .transforms import ShardDataset

    if isinstance(dataset, PrefetchDataset):
        return dataset._with_inputs((_shard_by_data(dataset._input, num_shards, index),))
    return ShardDataset(dataset, num_shards, index)


def _shard_by_hint(dataset: DatasetBase, num_shards: int, index: int) -> DatasetBase:
    from .transforms import ShardDataset

    def replace(node: DatasetBase) -> DatasetBase:
        if isinstance(node, ShardDataset) and node._is_hint:
            return ShardDataset(node._input, num_shards, index)
        return node

    return _rewrite(dataset, replace)


def auto_shard(dataset: DatasetBase, num_shards: int, index: int, policy: Any) -> DatasetBase:
    """A copy of ``dataset`` keeping shard ``index`` of ``num_shards`` under ``policy``.

    What a data-service worker does with a static sharding policy (TensorFlow's
    auto-sharding rewrite):

    - FILE: every file-based source (``list_files``, or a reader over a list of files)
      keeps files ``index, index + num_shards, ...``;
    - DATA: ``shard(num_shards, index)`` at the end of the pipeline (before trailing
      ``prefetch`` ops);
    - FILE_OR_DATA: FILE, falling back to DATA when FILE sharding is impossible;
    - HINT: every ``shard(SHARD_HINT, SHARD_HINT)`` becomes ``shard(num_shards, index)``;
    - OFF: ``dataset`` unchanged.

    Args:
      dataset: the pipeline.
      num_shards: the number of workers.
      index: this worker's index, from 0.
      policy: a ``ShardingPolicy``, anything with a matching ``.name`` (the data
        service's enum), its number, or its name as a string.

    Returns:
      The sharded pipeline (``dataset`` itself for OFF); ``dataset`` is not changed.

    Raises:
      InvalidArgumentError: ``num_shards`` is not positive, or ``index`` is not in
        ``[0, num_shards)``; FILE sharding finds fewer files than shards (TensorFlow's
        message).
      NotFoundError: FILE sharding finds no file-based source.
      ValueError: ``policy`` is DYNAMIC (not static) or not a sharding policy.

    Examples:
        >>> ds = tw.data.Dataset.range(10).map(lambda x: x * 10)
        >>> shard = tw.data.auto_shard(ds, num_shards=3, index=1, policy="DATA")
        >>> [int(x) for x in shard]
        [10, 40, 70]
    """
    policy = _coerce_policy(policy)
    num_shards = integer_argument(num_shards, "num_shards")
    index = integer_argument(index, "index")
    if num_shards < 1:
        raise errors.InvalidArgumentError(
            f"Number of shards must be greater than zero (currently num_shards = {num_shards})."
        )
    if not 0 <= index < num_shards:
        raise errors.InvalidArgumentError(
            f"Index must be between 0 and {num_shards - 1} (currently index = {index})."
        )
    if policy is ShardingPolicy.OFF:
        return dataset
    if policy is ShardingPolicy.DYNAMIC:
        raise ValueError(
            "ShardingPolicy.DYNAMIC is not a static sharding policy; use make_split_provider"
        )
    if policy is ShardingPolicy.FILE:
        return _shard_by_file(dataset, num_shards, index)
    if policy is ShardingPolicy.DATA:
        return _shard_by_data(dataset, num_shards, index)
    if policy is ShardingPolicy.FILE_OR_DATA:
        try:
            return _shard_by_file(dataset, num_shards, index)
        except (errors.NotFoundError, errors.InvalidArgumentError) as exc:
            logger.info("FILE sharding not possible (%s); sharding by DATA", exc)
            return _shard_by_data(dataset, num_shards, index)
    return _shard_by_hint(dataset, num_shards, index)
