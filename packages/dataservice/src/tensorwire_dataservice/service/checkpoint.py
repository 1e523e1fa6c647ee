"""Checkpoints of iterators reading from the tf.data service.

A reader's checkpoint (``ServiceCheckpoint``) names its job and says which elements
its consumer had consumed, by position: (task, index in the task's output stream), kept
as index ranges per task (``positions.IndexRanges``). Elements the reader held in
its buffer or had in flight are not in it. Restoring (``load_state_dict`` on a fresh
iterator, in any process) rejoins the job by id and has the dispatcher rewind it
(``checkpoint_dispatcher``): every task starts over and leaves out what the checkpoint
consumed, so the restored iterator yields exactly the elements the original had not
yielded at the checkpoint, each once, whatever happened after it (more elements consumed,
the trainer killed, the dispatcher restarted from its journal).

What that means per processing mode:

- ``distributed_epoch`` of a deterministic pipeline (an *exact* job): the elements of the
  epoch not consumed at the checkpoint, each once. Tasks re-run their recorded splits.
- ``parallel_epochs`` (and static sharding) of a deterministic pipeline: each worker's
  stream is a task; the restored iterator gets, per worker, that stream without what the
  checkpoint consumed of it. A worker that joined after the checkpoint is a task the
  checkpoint did not know: its whole stream. A worker lost since keeps TensorFlow's
  semantics (its task ends; a restarted worker starts its stream over).
- Shared jobs (``job_name``): the job's other readers are asked what they received, as
  when a worker is lost, and that is left out too.
- Refused, with the reason: non-deterministic pipelines (an unseeded shuffle,
  ``deterministic=False``, ``from_generator``), coordinated reads (``num_consumers``), a job
  garbage collected (kept ``job_gc_timeout_ms`` after its last reader left, once one of its
  readers took a checkpoint).

The saved state is plain data (dicts, lists, ints, strings): it pickles, and nests in a
local pipeline's checkpoint (``distribute(...)`` followed by ``map``/``batch``/...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tensorwire import errors

from ..dataset.checkpoint import NodeIterator, op_name

if TYPE_CHECKING:
    from .client import DataServiceDataset, _Reader

__all__ = ["ServiceCheckpoint", "ServiceIterator"]

#: Bumped when the saved layout changes; older states are refused with a clear error.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class ServiceCheckpoint:
    """Where a service reader's consumer was: its job, and the positions it consumed.

    Attributes:
      dataset_id: the registered dataset the job reads.
      job_id: the job (named or not) the reader read.
      job_name: the job's name ("" for none), for messages.
      client_id: the reader's client id: a restore releases it at once instead of waiting
        for it to time out.
      iteration: the reader's iteration of its dataset object.
      consumed: ``((task_id, ((start, stop), ...)), ...)``: per task, the indices consumed.
    """

    dataset_id: str
    job_id: int
    job_name: str
    client_id: int
    iteration: int
    consumed: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]

    def to_state(self) -> dict[str, Any]:
        """Plain values, for ``state_dict()``."""
        return {
            "version": VERSION,
            "dataset_id": self.dataset_id,
            "job_id": self.job_id,
            "job_name": self.job_name,
            "client_id": self.client_id,
            "iteration": self.iteration,
            "consumed": [[task_id, [list(r) for r in ranges]] for task_id, ranges in self.consumed],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ServiceCheckpoint:
        """The checkpoint ``to_state`` described; ``InvalidArgumentError`` if it is not
        one."""
        if state.get("version") != VERSION:
            raise errors.InvalidArgumentError(
                f"The tf.data service iterator checkpoint has version {state.get('version')!r}; "
                f"this tensorwire reads version {VERSION}"
            )
        try:
            return cls(
                dataset_id=str(state["dataset_id"]),
                job_id=int(state["job_id"]),
                job_name=str(state["job_name"]),
                client_id=int(state["client_id"]),
                iteration=int(state["iteration"]),
                consumed=tuple(
                    (int(task_id), tuple((int(a), int(b)) for a, b in ranges))
                    for task_id, ranges in state["consumed"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidArgumentError(
                f"The tf.data service iterator checkpoint is malformed: {exc!r}"
            ) from None

    def request(self) -> dict[str, Any]:
        """The dispatcher's ``RestoreClient`` request."""
        return {
            "job_id": self.job_id,
            "dataset_id": self.dataset_id,
            "replaces": self.client_id,
            "consumed": [[task_id, [list(r) for r in ranges]] for task_id, ranges in self.consumed],
        }


class ServiceIterator(NodeIterator):
    """The iterator of a ``client.DataServiceDataset``: a reader of its job, made at
    the first ``next()`` (a new job, or the checkpoint's job when restored)."""

    _dataset: DataServiceDataset

    def __init__(self, dataset: DataServiceDataset, ctx: Any) -> None:
        super().__init__(dataset, ctx)
        self._reader: _Reader | None = None
        self._restored: ServiceCheckpoint | None = None

    def _run(self) -> Iterator[Any]:
        if self._reader is None:
            self._reader = self._new_reader()
        return self._dataset._read_from(self._ctx, self._reader)

    def _new_reader(self) -> _Reader:
        from .client import _Reader

        ds = self._dataset
        restored = self._restored
        if restored is None:
            return _Reader(ds, ds._next_iteration())
        ds._restored_iteration(restored.iteration)
        return _Reader(ds, restored.iteration, restore=restored)

    def _save(self) -> dict[str, Any]:
        if self._reader is None and self._restored is not None:
            return {"reader": self._restored.to_state()}  # restored, not started: the same
        if self._reader is None:
            # Not started: join (or create) the job now, so the checkpoint names the job
            # the first next() reads; a restore then rewinds that job, whatever this
            # iterator read from it after the checkpoint (a named job is shared).
            self._reader = self._new_reader()
        return {"reader": self._reader.checkpoint().to_state()}

    def _close_unstarted(self) -> None:
        if self._reader is not None:  # made by a checkpoint before the first next()
            self._reader.close()

    def _restore(self, state: dict[str, Any]) -> None:
        saved = state["reader"]
        if not isinstance(saved, dict):
            raise errors.InvalidArgumentError(
                f"The checkpoint of {op_name(self._dataset)} is malformed: {type(saved).__name__}"
            )
        checkpoint = ServiceCheckpoint.from_state(saved)
        if checkpoint.dataset_id != self._dataset._dataset_id:
            raise errors.InvalidArgumentError(
                f"The checkpoint is of a reader of dataset {checkpoint.dataset_id}; this "
                f"iterator reads dataset {self._dataset._dataset_id}"
            )
        self._restored = checkpoint
