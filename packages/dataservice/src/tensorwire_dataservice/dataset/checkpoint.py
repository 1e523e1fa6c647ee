"""Iterator checkpoints: the saved position of a pipeline, and the iterators that save it.

A checkpointable dataset's ``_iterator(ctx)`` returns a ``NodeIterator``: an object
that owns the node's iteration state in attributes and does the work in a generator
(``_run``). ``iter(node_iterator)`` returns that generator, so a parent's ``for`` loop runs
at generator speed; the iterator object is only consulted when a checkpoint is taken.

Saving happens between two ``next()`` calls of the root iterator, on its consumer's
thread: every generator of the consumer's chain is then suspended at a ``yield`` (or not
started, or finished), so each node's attributes describe exactly the elements it has
delivered. A node saves its own attributes plus the saved states of the iterators it holds
(``save_iterator``). Nothing is recorded per element beyond counters, and most counters
cost nothing: a ``range`` iterator that a ``zip``/``map`` consumes counts in C, and
``operator.length_hint`` reads how far it got (``counter``, ``position``).

Restoring builds the same tree of iterators unstarted and hands each its state
(``restore_iterator``) before the first ``next()``; the generators then start from the
restored attributes. Threads (``prefetch``, parallel ``map``, parallel ``interleave``)
save the elements they hold (buffered, in flight) so they are delivered again after a
restore; see each node for what is saved and what is recomputed.

The saved object (``wrap``) is plain data (dicts, lists, ints, strings, bytes, NumPy
values), versioned, with a fingerprint of the pipeline's structure so a state is not
restored into a different pipeline.
"""

from __future__ import annotations

import hashlib
import inspect
import operator
import sys
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from tensorwire import errors

if TYPE_CHECKING:
    from .base import DatasetBase, IterationContext

__all__ = [
    "FORMAT",
    "VERSION",
    "MultiInputIterator",
    "NodeIterator",
    "UnaryIterator",
    "close_iterator",
    "closed_iterator",
    "counter",
    "describe",
    "fingerprint",
    "op_name",
    "position",
    "remaining",
    "restore_iterator",
    "save_iterator",
    "unwrap",
    "wrap",
]

#: What a saved iterator state says it is.
FORMAT = "tensorwire.data.iterator"
#: Bumped when the saved layout changes; older states are refused with a clear error.
VERSION = 1


def op_name(dataset: Any) -> str:
    """The TensorFlow op name of ``dataset`` (its class name when it sets none)."""
    return getattr(dataset, "_op_name", None) or type(dataset).__name__


def _nothing() -> Generator[Any, None, None]:
    yield from ()


def closed_iterator() -> Iterator[Any]:
    """A finished generator: what an iterator restored at its end runs."""
    gen = _nothing()
    gen.close()
    return gen


def counter(start: int = 0) -> Iterator[int]:
    """``start, start + 1, ...`` whose progress ``position`` reads at no per-item cost."""
    return iter(range(start, sys.maxsize))


def position(count: Iterator[int]) -> int:
    """The next value ``count`` (from ``counter``) would give."""
    return sys.maxsize - operator.length_hint(count)


def remaining(iterator: Iterator[Any]) -> int:
    """Items left in a ``range``, list or NumPy-array iterator (exact for those types)."""
    return operator.length_hint(iterator)


class NodeIterator(Iterator[Any]):
    """The iterator of one dataset node that can save and restore its position.

    Subclasses implement ``_run`` (a generator doing the work, keeping in attributes
    whatever ``_save`` needs), ``_save`` (a dict of plain data) and ``_restore`` (set the
    attributes from such a dict; called before ``_run`` starts). A node whose iterator has
    finished saves as exhausted and restores to nothing, whatever its subclass.
    """

    def __init__(self, dataset: DatasetBase, ctx: IterationContext) -> None:
        self._dataset = dataset
        self._ctx = ctx
        self._gen: Iterator[Any] | None = None

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        gen = self._gen
        if gen is None:
            gen = self._gen = self._run()
        return gen

    def __next__(self) -> Any:
        gen = self._gen
        if gen is None:
            gen = self.__iter__()
        return next(gen)

    def close(self) -> None:
        gen = self._gen
        if gen is None:
            self._gen = closed_iterator()
            self._close_unstarted()
        elif hasattr(gen, "close"):
            gen.close()

    def _run(self) -> Iterator[Any]:
        raise NotImplementedError

    def _close_unstarted(self) -> None:
        """Release what ``__init__``/``_restore`` acquired when ``_run`` never started."""

    # -- checkpoints ----------------------------------------------------------------------

    def save(self) -> dict[str, Any]:
        """This node's state and that of the iterators it holds (see the module docstring)."""
        gen = self._gen
        if gen is not None and inspect.isgenerator(gen):
            status = inspect.getgeneratorstate(gen)
            if status == inspect.GEN_CLOSED:
                return {"op": op_name(self._dataset), "exhausted": True}
            if status == inspect.GEN_RUNNING:
                raise errors.FailedPreconditionError(
                    f"Cannot checkpoint {op_name(self._dataset)} while it computes an element: "
                    "call state_dict() between next() calls, not from inside the pipeline"
                )
        state = self._save()
        state["op"] = op_name(self._dataset)
        return state

    def restore(self, state: Any) -> None:
        """Position this fresh iterator at ``state`` (what ``save`` returned)."""
        name = op_name(self._dataset)
        if self._gen is not None:
            raise errors.FailedPreconditionError(
                f"{name}: load_state_dict must be called on a fresh iterator, before next()"
            )
        if not isinstance(state, dict) or state.get("op") != name:
            found = state.get("op") if isinstance(state, dict) else type(state).__name__
            raise errors.InvalidArgumentError(
                f"The checkpoint does not match the pipeline: {name} was given the state of "
                f"{found!r}"
            )
        if state.get("exhausted"):
            self._close_unstarted()
            self._gen = closed_iterator()
            return
        try:
            self._restore(state)
        except KeyError as exc:
            raise errors.InvalidArgumentError(
                f"The checkpoint of {name} lacks {exc}: it was written by another version"
            ) from None

    def _save(self) -> dict[str, Any]:
        raise errors.UnimplementedError(f"{op_name(self._dataset)} cannot be checkpointed")

    def _restore(self, state: dict[str, Any]) -> None:
        raise errors.UnimplementedError(f"{op_name(self._dataset)} cannot be checkpointed")

    # -- helpers for subclasses -----------------------------------------------------------

    def _started(self) -> bool:
        return self._gen is not None


class UnaryIterator(NodeIterator):
    """The iterator of a node with one input, whose own state is nothing at a ``yield``
    (``map``, ``filter``, ``batch``: a batch is delivered when it is yielded) or is saved by
    a subclass on top of ``{"input": ...}``.

    ``body(input_iterator)`` is the generator doing the node's work; subclasses may
    override ``_run`` instead. The input's iterator is made here (unstarted) so a state can
    be saved before the first element; ``_input`` is replaced by a restore.
    """

    def __init__(
        self,
        dataset: DatasetBase,
        ctx: IterationContext,
        body: Callable[[Iterator[Any]], Iterator[Any]] | None = None,
    ) -> None:
        super().__init__(dataset, ctx)
        self._input_dataset = dataset._inputs()[0]
        self._input: Iterator[Any] = self._input_dataset._iterator(ctx)
        self._body = body

    def _run(self) -> Iterator[Any]:
        assert self._body is not None, f"{op_name(self._dataset)} defines neither body nor _run"
        return self._body(self._input)

    def _save(self) -> dict[str, Any]:
        return {"input": save_iterator(self._input, self._input_dataset)}

    def _restore(self, state: dict[str, Any]) -> None:
        close_iterator(self._input)
        self._input = restore_iterator(self._input_dataset, self._ctx, state["input"])

    def _close_unstarted(self) -> None:
        close_iterator(self._input)


class MultiInputIterator(NodeIterator):
    """The iterator of a node reading several inputs at once (``zip``, the mixing ops):
    saves each input's iterator by position; ``_inputs[i]`` is None once the node has
    dropped input ``i`` (saved as None, restored as dropped)."""

    def __init__(
        self,
        dataset: DatasetBase,
        ctx: IterationContext,
        body: Callable[[list[Any]], Iterator[Any]] | None = None,
    ) -> None:
        super().__init__(dataset, ctx)
        self._inputs: list[Any] = [ds._iterator(ctx) for ds in dataset._inputs()]
        self._body = body

    def _run(self) -> Iterator[Any]:
        assert self._body is not None, f"{op_name(self._dataset)} defines neither body nor _run"
        return self._body(self._inputs)

    def _save(self) -> dict[str, Any]:
        datasets = self._dataset._inputs()
        return {
            "inputs": [
                None if it is None else save_iterator(it, ds)
                for it, ds in zip(self._inputs, datasets, strict=True)
            ]
        }

    def _restore(self, state: dict[str, Any]) -> None:
        datasets = self._dataset._inputs()
        saved = state["inputs"]
        if len(saved) != len(datasets):
            raise errors.InvalidArgumentError(
                f"The checkpoint of {op_name(self._dataset)} has {len(saved)} inputs, the "
                f"pipeline {len(datasets)}"
            )
        self._close_unstarted()
        self._inputs = [
            None if s is None else restore_iterator(ds, self._ctx, s)
            for ds, s in zip(datasets, saved, strict=True)
        ]

    def _close_unstarted(self) -> None:
        for it in self._inputs:
            if it is not None:
                close_iterator(it)


def close_iterator(iterator: Any) -> None:
    """Close ``iterator`` if it can be closed (generators, node iterators)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def save_iterator(iterator: Any, dataset: DatasetBase) -> dict[str, Any]:
    """The state of ``iterator``, which ``dataset._iterator`` returned; a clear error when
    that dataset's iterator cannot be checkpointed."""
    if isinstance(iterator, NodeIterator):
        return iterator.save()
    raise errors.UnimplementedError(
        f"{op_name(dataset)} cannot be checkpointed: its iterator "
        f"({type(iterator).__name__}) does not save its position"
    )


def restore_iterator(dataset: DatasetBase, ctx: IterationContext, state: Any) -> NodeIterator:
    """A fresh iterator of ``dataset`` positioned at ``state``."""
    iterator = dataset._iterator(ctx)
    if not isinstance(iterator, NodeIterator):
        close_iterator(iterator)
        raise errors.UnimplementedError(
            f"{op_name(dataset)} cannot be checkpointed: its iterator "
            f"({type(iterator).__name__}) does not restore a position"
        )
    iterator.restore(state)
    return iterator


# -- the whole pipeline's state -----------------------------------------------------------


def describe(dataset: DatasetBase) -> str:
    """The pipeline's structure, e.g. ``BatchDataset(MapDataset(RangeDataset))``."""
    inputs = dataset._inputs()
    name = op_name(dataset)
    if not inputs:
        return name
    return f"{name}({', '.join(describe(d) for d in inputs)})"


def fingerprint(dataset: DatasetBase) -> str:
    """A short hash of ``describe``: equal for pipelines of the same structure."""
    return hashlib.sha256(describe(dataset).encode()).hexdigest()[:16]


def wrap(dataset: DatasetBase, root: dict[str, Any] | None) -> dict[str, Any]:
    """The state ``state_dict()`` returns: ``root`` (None once exhausted) with its header."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint(dataset),
        "pipeline": describe(dataset),
        "iterator": root,
    }


def unwrap(dataset: DatasetBase, state: Any) -> dict[str, Any] | None:
    """The root iterator's state from ``state``, after checking it belongs to ``dataset``."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise errors.InvalidArgumentError(
            "load_state_dict expects what an iterator's state_dict() returned, got "
            f"{type(state).__name__}"
            + (f" with format {state.get('format')!r}" if isinstance(state, dict) else "")
        )
    version = state.get("version")
    if version != VERSION:
        raise errors.InvalidArgumentError(
            f"The iterator checkpoint has version {version!r}; this tensorwire reads version "
            f"{VERSION}"
        )
    if state.get("fingerprint") != fingerprint(dataset):
        raise errors.InvalidArgumentError(
            "The iterator checkpoint was saved from a different pipeline: it was "
            f"{state.get('pipeline')}, this iterator's is {describe(dataset)}"
        )
    root = state.get("iterator")
    if root is not None and not isinstance(root, dict):
        raise errors.InvalidArgumentError("The iterator checkpoint is malformed: no iterator state")
    return root
