"""The ``Dataset`` base class, the iteration protocol and the iterator object.

How a dataset is built (the contract every subclass, including the data service's
distributed dataset, follows):

- ``_iterator(self, ctx: IterationContext) -> Iterator[element]`` (required): a fresh Python
  iterator over the elements, each a nested NumPy structure (see ``structure``): a
  ``checkpoint.NodeIterator`` for a checkpointable dataset (all built-in ones), else
  e.g. a generator. It is called once per iteration of the pipeline, on the consumer's
  thread, and must start no work (threads, files) before it is iterated: the root iterator
  makes the whole tree up front and ``load_state_dict`` may replace it. Whatever it starts
  it stops in a ``finally`` block or through ``ctx.start_thread``; ``ctx.closed`` is set
  when the consumer closes the iterator.
- ``_compute_element_spec(self) -> nested TensorSpec`` (required): the element type; the
  public ``element_spec`` property caches it.
- ``_cardinality(self) -> int`` (optional): element count, ``INFINITE`` or
  ``UNKNOWN`` (the default).
- ``_input_datasets: tuple[Dataset, ...]`` (attribute, default ``()``): the datasets this one
  reads, in order. Graph rewrites (``auto_shard``) copy a node with ``_with_inputs``.
- ``_passes_splits: bool`` (class attribute, default False): True when the dynamic-sharding
  split provider of this dataset is that of its single input (most unary transforms).
  ``_split_repeat_count`` (optional int) makes the provider hand out every split that many
  times (``repeat``).
- A splittable source implements ``_make_split_provider(split_size) -> SplitProvider`` and,
  in ``_iterator``, reads only the splits from ``ctx.split_provider_for(self)`` when that is
  not None (see ``sharding``). A dataset that is neither splittable nor passes splits
  makes ``make_split_provider`` raise ``UnimplementedError`` naming it.
- Datasets created while iterating (``flat_map``/``interleave`` bodies) are iterated with
  ``ctx.without_splits()``.

Checkpoints (``DatasetIterator.state_dict()`` / ``load_state_dict(state)``, see
``checkpoint``): a dataset is checkpointable when its ``_iterator(ctx)`` returns a
``checkpoint.NodeIterator``, whose ``_run`` generator keeps in attributes what its
``_save`` needs and whose ``_restore`` sets them before ``_run`` starts. It saves the
iterators it holds with ``checkpoint.save_iterator`` and rebuilds them with
``checkpoint.restore_iterator`` (by position in the graph: the order of its inputs). Saving
only happens between two ``next()`` calls of the root, so every generator on the consumer's
thread is suspended at a ``yield``; a node that runs a thread pauses it at a consistent
point (``prefetch``) or saves what it holds in flight (parallel ``map``). Any other
iterator (a plain generator) makes ``state_dict()`` raise ``UnimplementedError`` naming
its dataset. ``load_state_dict`` checks a fingerprint of the graph's structure
(``checkpoint.describe``) and refuses the state of another pipeline.

Every dataset must pickle with cloudpickle (user functions by value) so a dispatcher can ship
it to workers: hold no threads, locks or open files on the dataset object itself — those
belong to the iteration and live in the ``IterationContext`` or the generator.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from tensorwire import errors

if TYPE_CHECKING:
    from .sharding import SplitProvider

__all__ = [
    "INFINITE",
    "UNKNOWN",
    "AUTOTUNE",
    "IterationContext",
    "DatasetIterator",
    "DatasetBase",
]

logger = logging.getLogger(__name__)

#: ``tf.data.INFINITE_CARDINALITY``.
INFINITE = -1
#: ``tf.data.UNKNOWN_CARDINALITY``.
UNKNOWN = -2
#: ``tf.data.AUTOTUNE``: let the runtime choose a parallelism or buffer size.
AUTOTUNE = -1

#: How long closing an iterator waits, in total, for the threads it owns.
THREAD_JOIN_TIMEOUT = 1.0
#: The polling period of every blocking wait inside the pipeline, so closing is seen quickly.
POLL_INTERVAL = 0.05


class _Shared:
    """State shared by a root iteration context and every context derived from it."""

    __slots__ = ("closed", "threads", "lock")

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()


class IterationContext:
    """What one iteration of a pipeline shares: split provider, cancellation, threads.

    Every ``DatasetIterator`` makes one and passes it to ``_iterator(ctx)`` of the
    dataset it iterates; a dataset of your own reads it there (see ``DatasetBase``).
    ``split_provider`` is set only while iterating with dynamic sharding; the source
    ``split_source`` (identified by object identity inside this pipeline copy) then reads
    only the splits it gets from the provider. Datasets created inside user functions
    (``flat_map``, ``interleave``) are iterated with ``without_splits``, as in TensorFlow.

    Args:
      split_provider: where the splittable source gets its splits, or None to read
        everything.
      split_source: the dataset node that reads the splits (see
        ``find_split_source``).

    Examples:
        >>> ctx = tw.data.IterationContext()
        >>> ctx.closed.is_set(), ctx.split_provider_for(tw.data.Dataset.range(3))
        (False, None)
        >>> ctx.close()
        >>> ctx.closed.is_set()
        True
    """

    def __init__(
        self,
        split_provider: SplitProvider | None = None,
        split_source: Any = None,
        *,
        _shared: _Shared | None = None,
    ) -> None:
        self.split_provider = split_provider
        self.split_source = split_source
        self._shared = _shared if _shared is not None else _Shared()
        #: The pipeline's merged ``Options`` (set by the iterator), or None.
        self.options: Any = None

    @property
    def closed(self) -> threading.Event:
        """Set when the iterator that owns this iteration is closed."""
        return self._shared.closed

    def split_provider_for(self, dataset: Any) -> SplitProvider | None:
        """The provider ``dataset`` must read its splits from, or None to read everything.

        Args:
          dataset: the source node asking (compared by identity with ``split_source``).

        Returns:
          The split provider when ``dataset`` is the split source of this iteration, else
          None.
        """
        if self.split_provider is not None and dataset is self.split_source:
            return self.split_provider
        return None

    def without_splits(self) -> IterationContext:
        """A context for nested datasets: same cancellation and threads, no split provider.

        Returns:
          A context sharing ``closed`` and the owned threads with this one.
        """
        ctx = IterationContext(_shared=self._shared)
        ctx.options = self.options
        return ctx

    def start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a daemon thread owned by this iteration; closing the iterator joins it.

        ``target`` must return soon after ``closed`` is set (poll it, use timeouts).

        Args:
          target: what the thread runs.
          name: the thread's name.

        Returns:
          The started thread.

        Raises:
          CancelledError: the iteration is closed already.
        """
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._shared.lock:
            if self._shared.closed.is_set():
                raise errors.CancelledError("Iterator was closed")
            # Forget finished threads only: one another thread registered but has not
            # started yet (ident None) must still be joined by close().
            self._shared.threads = [
                t for t in self._shared.threads if t.is_alive() or t.ident is None
            ]
            self._shared.threads.append(thread)
        thread.start()
        return thread

    def close(self, timeout: float = THREAD_JOIN_TIMEOUT) -> None:
        """Signal every owned thread to stop and wait for them up to ``timeout`` in total.

        A thread still running after ``timeout`` is logged and left to end on its own.

        Args:
          timeout: seconds to wait for all the threads together.
        """
        self._shared.closed.set()
        with self._shared.lock:
            threads = list(self._shared.threads)
            self._shared.threads.clear()
        deadline = time.monotonic() + timeout
        current = threading.current_thread()
        for thread in threads:
            if thread is current:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("Pipeline thread %s did not stop within %.1fs", thread.name, timeout)


def integer_argument(value: Any, name: str) -> int:
    """``int(value)`` for the argument ``name`` of a dataset op; its error names the argument.

    The conversions of ``int()`` (a float is truncated, a numeric string parsed) and its
    exception types, TypeError or ValueError, with a message that says which argument was
    wrong (``int()``'s own does not).
    """
    try:
        return int(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer, got {value!r}") from None
    except ValueError:
        raise ValueError(f"`{name}` must be an integer, got {value!r}") from None


def _exhausted() -> Any:
    raise StopIteration


class DatasetIterator(Iterator[Any]):
    """An iterator over a dataset (``iter(dataset)``, ``as_numpy_iterator()``).

    Owns the iteration: closing it (``close()``, leaving a ``with`` block, exhaustion, or
    garbage collection) stops the threads the pipeline started. ``next`` is thread-safe.
    Its position can be saved with ``state_dict`` and restored into a fresh iterator
    of the same pipeline, in this process or another, with ``load_state_dict`` (what
    ``tf.train.Checkpoint`` does for a ``tf.data`` iterator).

    Args:
      dataset: the dataset to iterate.
      split_provider: with dynamic sharding, where the splittable source gets its splits
        (see ``make_iterator``).

    Raises:
      UnimplementedError: ``split_provider`` is given and the dataset has no splittable
        source.

    Examples:
        >>> with iter(tw.data.Dataset.range(3)) as it:
        ...     print(int(next(it)), int(it.get_next()))
        0 1
    """

    def __init__(self, dataset: DatasetBase, split_provider: SplitProvider | None = None) -> None:
        split_source = None
        if split_provider is not None:
            from .sharding import find_split_source

            split_source = find_split_source(dataset)
        self._dataset = dataset
        self._ctx = IterationContext(split_provider, split_source)
        self._ctx.options = dataset.options()
        self._lock = threading.Lock()
        # The root node's iterator; its generator (``_gen``) is made by the first next(), so
        # load_state_dict can still replace the root before any work starts.
        self._root: Iterator[Any] | None = dataset._iterator(self._ctx)
        self._gen: Iterator[Any] | None = None
        self._next: Callable[[], Any] = self._start
        #: "fresh" (no next() yet), "running", "exhausted", "failed" or "closed".
        self._status = "fresh"

    def _start(self) -> Any:
        root = self._root
        if root is None:
            return _exhausted()
        self._gen = gen = iter(root)
        self._next = gen.__next__
        self._status = "running"
        return gen.__next__()

    @property
    def element_spec(self) -> Any:
        """The nested ``TensorSpec`` structure of the elements (the dataset's).

        Examples:
            >>> iter(tw.data.Dataset.range(3)).element_spec
            TensorSpec(shape=(), dtype=int64, name=None)
        """
        return self._dataset.element_spec

    def __iter__(self) -> DatasetIterator:
        return self

    def __next__(self) -> Any:
        with self._lock:
            try:
                return self._next()
            except StopIteration:
                self._status = "exhausted"
                self._close_locked()
                raise
            except BaseException:
                # Failed: the pipeline is finished; it has no position to save any more.
                if self._status != "exhausted":
                    self._status = "failed"
                self._close_locked()
                raise

    def state_dict(self) -> dict[str, Any]:
        """The position of this iterator: a picklable object of plain Python/NumPy data.

        ``load_state_dict`` on a fresh iterator of the same dataset resumes after the last
        element this one returned, including elements buffered or in flight now (a state
        copies the elements held in ``shuffle`` and ``prefetch`` buffers). It can be called
        between any two ``next()`` calls, and after the end.

        Returns:
          The state: a dict to pickle or store as it is.

        Raises:
          UnimplementedError: a dataset of the pipeline cannot be checkpointed (e.g.
            ``from_generator`` over a plain generator); the message names it.
          FailedPreconditionError: the iterator failed or was closed: it has no position.

        Examples:
            >>> ds = tw.data.Dataset.range(6).shuffle(6, seed=1)
            >>> it = iter(ds)
            >>> first = [int(next(it)) for _ in range(2)]
            >>> state = it.state_dict()
            >>> rest = [int(x) for x in it]
            >>> resumed = iter(ds)
            >>> resumed.load_state_dict(state)
            >>> [int(x) for x in resumed] == rest
            True
        """
        from . import checkpoint

        with self._lock:
            if self._status == "exhausted":
                return checkpoint.wrap(self._dataset, None)
            if self._status in ("failed", "closed") or self._root is None:
                raise errors.FailedPreconditionError(
                    f"Cannot checkpoint an iterator that is {self._status}: it has no position"
                )
            return checkpoint.wrap(
                self._dataset, checkpoint.save_iterator(self._root, self._dataset)
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a position saved by ``state_dict``.

        ``state`` comes from ``state_dict()`` of an iterator of the same pipeline (an equal
        definition, possibly in another process). Call it on a fresh iterator, before its
        first ``next()``; the next element is the one after the last the saved iterator
        returned.

        Args:
          state: what ``state_dict`` returned.

        Raises:
          FailedPreconditionError: ``next()`` was called on this iterator already.
          UnimplementedError: this iterator reads data-service splits.
          InvalidArgumentError: ``state`` is not a state of this pipeline (another
            structure), or is malformed.

        Examples:
            >>> ds = tw.data.Dataset.range(5)
            >>> it = iter(ds)
            >>> _ = next(it), next(it)
            >>> resumed = iter(ds)
            >>> resumed.load_state_dict(it.state_dict())
            >>> [int(x) for x in resumed]
            [2, 3, 4]
        """
        from . import checkpoint

        with self._lock:
            if self._status != "fresh":
                raise errors.FailedPreconditionError(
                    "load_state_dict must be called on a fresh iterator, before its first "
                    f"next() (this one is {self._status})"
                )
            if self._ctx.split_provider is not None:
                raise errors.UnimplementedError(
                    "An iterator reading data-service splits cannot be restored locally"
                )
            root_state = checkpoint.unwrap(self._dataset, state)
            old, self._root = self._root, None
            if old is not None and hasattr(old, "close"):
                old.close()
            if root_state is not None:
                self._root = checkpoint.restore_iterator(self._dataset, self._ctx, root_state)

    def get_next(self) -> Any:
        """The next element, like ``next(iterator)``, but ``OutOfRangeError`` at the end.

        TensorFlow's ``Iterator.get_next``.

        Returns:
          The next element.

        Raises:
          OutOfRangeError: the dataset has no more elements.

        Examples:
            >>> it = iter(tw.data.Dataset.range(1))
            >>> int(it.get_next())
            0
            >>> it.get_next()
            Traceback (most recent call last):
            ...
            tensorwire.errors.OutOfRangeError: End of sequence
        """
        try:
            return self.__next__()
        except StopIteration:
            raise errors.OutOfRangeError("End of sequence") from None

    def close(self) -> None:
        """Stop the pipeline and the threads it owns (idempotent, callable from any thread).

        A ``next`` blocked in another thread waiting on a background thread sees the close
        within ``POLL_INTERVAL`` and ends. One blocked inside user code cannot be
        interrupted: close then returns after ``THREAD_JOIN_TIMEOUT`` and the iterator ends
        once that call returns. After ``close()`` the iterator is exhausted.

        Examples:
            >>> it = iter(tw.data.Dataset.range(10).prefetch(2))
            >>> int(next(it))
            0
            >>> it.close()
            >>> list(it)
            []
        """
        # Signal first: a next() holding the lock may be waiting for exactly this.
        self._ctx.closed.set()
        self._next = _exhausted
        if self._status in ("fresh", "running"):
            self._status = "closed"
        if self._lock.acquire(timeout=THREAD_JOIN_TIMEOUT):
            try:
                self._close_locked()
            finally:
                self._lock.release()
        else:
            logger.warning("Closing a dataset iterator that is busy in next(); it ends after it")

    def _close_locked(self) -> None:
        gen, self._gen = self._gen, None
        root, self._root = self._root, None
        if gen is None:
            gen = root  # never started: close the root's own resources
        self._next = _exhausted
        self._ctx.closed.set()
        if gen is not None and hasattr(gen, "close"):
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - closing must not raise over the real error
                logger.debug("Error while closing a pipeline generator", exc_info=True)
        self._ctx.close()

    def __enter__(self) -> DatasetIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._gen is not None or self._root is not None:
                self._ctx.closed.set()
                gen, self._gen = self._gen, None
                root, self._root = self._root, None
                if gen is None:
                    gen = root
                self._next = _exhausted
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class DatasetBase:
    """The part of ``Dataset`` that defines the contract of a dataset of your own.

    Subclass ``Dataset`` (or ``UnaryDataset`` for a transform of one input) and
    implement ``_iterator(ctx)``, returning a fresh Python iterator over the elements, and
    ``_compute_element_spec()``; optionally ``_cardinality()``. The module
    ``tensorwire_dataservice.dataset.base`` states the whole contract (splits for dynamic
    sharding, checkpoints, pickling for the data service). A dataset whose iterator is a
    plain generator works everywhere but cannot be checkpointed.

    Examples:
        >>> class Squares(tw.data.Dataset):
        ...     def __init__(self, n):
        ...         self.n = n
        ...     def _iterator(self, ctx):
        ...         return (np.int64(i * i) for i in range(self.n))
        ...     def _compute_element_spec(self):
        ...         return tw.data.TensorSpec((), np.int64)
        >>> [int(x) for x in Squares(4).batch(2).unbatch()]
        [0, 1, 4, 9]
    """

    _input_datasets: tuple[DatasetBase, ...] = ()
    _passes_splits: bool = False
    #: TensorFlow's name for the op, used in error messages ("RangeDataset"); a subclass
    #: that sets none is named by its class.
    _op_name: str | None = None

    #: Instance attributes that are iteration bookkeeping, not part of the definition: left
    #: out of pickles, so a pipeline's bytes (and a data-service fingerprint of them) do not
    #: depend on whether it was iterated or its spec computed. Classes give them defaults.
    _transient_attributes: tuple[str, ...] = ("_element_spec_cache", "_epochs")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._transient_attributes:
            state.pop(name, None)
        return state

    # -- the contract ----------------------------------------------------------------------

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement _iterator(ctx)")

    def _compute_element_spec(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement _compute_element_spec()")

    def _cardinality(self) -> int:
        return UNKNOWN

    def _inputs(self) -> tuple[DatasetBase, ...]:
        return tuple(self._input_datasets)

    def _with_inputs(self, inputs: tuple[DatasetBase, ...]) -> DatasetBase:
        """A shallow copy of this node reading ``inputs`` instead (used by graph rewrites)."""
        clone = copy.copy(self)
        clone._input_datasets = tuple(inputs)
        clone.__dict__.pop("_element_spec_cache", None)
        return clone

    # -- public ----------------------------------------------------------------------------

    @property
    def element_spec(self) -> Any:
        """The type of the elements: a nested structure of ``TensorSpec``.

        The structure is that of the elements (tuples, dicts, namedtuples); a dimension of
        None is unknown (it varies). Computed once, without iterating when it can be.

        Examples:
            >>> ds = tw.data.Dataset.from_tensor_slices((np.zeros((4, 2)), ["a", "b", "c", "d"]))
            >>> ds.element_spec
            (TensorSpec(shape=(2,), dtype=float64, name=None),
             TensorSpec(shape=(), dtype=string, name=None))
        """
        spec = self.__dict__.get("_element_spec_cache")
        if spec is None:
            spec = self._compute_element_spec()
            self.__dict__["_element_spec_cache"] = spec
        return spec

    def cardinality(self) -> int:
        """The number of elements, as far as it is known without iterating.

        Computed as TensorFlow does: ``filter`` makes it unknown, ``repeat()`` infinite.

        Returns:
          The number of elements, or ``INFINITE`` (-1) or ``UNKNOWN`` (-2).

        Examples:
            >>> tw.data.Dataset.range(10).batch(3).cardinality()
            4
            >>> tw.data.Dataset.range(10).filter(lambda x: x > 5).cardinality() == tw.data.UNKNOWN
            True
        """
        return self._cardinality()

    #: Options attached to this node by ``with_options`` (None for other nodes).
    _own_options: Any = None

    def options(self) -> Any:
        """The ``Options`` of the pipeline: its inputs' merged, then this node's on top.

        Returns:
          A new ``Options``; changing it changes nothing (use ``with_options``).

        Examples:
            >>> tw.data.Dataset.range(3).options().deterministic is None
            True
        """
        from .options import Options

        merged = Options()
        for dataset in self._inputs():
            merged = merged.merge(dataset.options())
        if self._own_options is not None:
            merged = merged.merge(self._own_options)
        return merged

    def __iter__(self) -> DatasetIterator:
        return DatasetIterator(self)

    def as_numpy_iterator(self) -> DatasetIterator:
        """An iterator over the elements, which are NumPy values already.

        The same as ``iter(dataset)``; TensorFlow's name, kept so its code runs unchanged.
        Use it as a context manager to stop the pipeline's threads early.

        Returns:
          A new ``DatasetIterator``.

        Examples:
            >>> with tw.data.Dataset.range(3).as_numpy_iterator() as it:
            ...     print([x.tolist() for x in it])
            [0, 1, 2]
        """
        return DatasetIterator(self)

    def __len__(self) -> int:
        n = self._cardinality()
        if n == INFINITE:
            raise TypeError("The dataset is infinite.")
        if n == UNKNOWN:
            raise TypeError("The dataset length is unknown.")
        return n

    def __bool__(self) -> bool:
        # Needed because __len__ is defined and may raise (TensorFlow does the same).
        return True

    def __repr__(self) -> str:
        # A repr must never run the pipeline: show the spec only once it is known.
        spec = self.__dict__.get("_element_spec_cache")
        shown = "..." if spec is None else spec
        return f"<{type(self).__name__} element_spec={shown}>"
