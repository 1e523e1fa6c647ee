"""The dispatcher's side of reader checkpoints: keeping a job restorable, and rewinding it
when a reader restores a checkpoint.

A reader's checkpoint names its job and, per task, the element indices its consumer had
consumed (``checkpoint``). Restoring acquires a new client of the job, releases the
client the checkpoint was taken by (its process is usually gone) and journals a
``rewind_job`` record (``state.DispatcherState._apply_rewind_job``): every task that
produced something starts over as a new generation whose skip set is what the checkpoint
consumed plus what the job's other readers report they received. Elements consumed after
the checkpoint, and those buffered or in flight at the time, are produced again.

These functions are the dispatcher's ``KeepJob`` and ``RestoreClient`` methods; they run
against a ``dispatcher._Dispatcher`` under its lock, changing state only through
journaled records.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tensorwire import errors

if TYPE_CHECKING:
    from .dispatcher import _Dispatcher
    from .state import Job

__all__ = ["keep_job", "restore_client"]


def _restorable_job(core: _Dispatcher, job_id: int) -> Job:
    """The job ``job_id``, or a clear error: garbage collected, unknown, or one whose
    readers cannot be restored (and why). Caller holds the lock."""
    job = core._job(job_id)  # NotFoundError saying it was garbage collected
    if job.not_restorable or not (job.exact or job.positions):
        raise errors.FailedPreconditionError(
            f"A reader of job {job.job_id} (dataset {job.dataset_id}) cannot be checkpointed: "
            f"{job.not_restorable or 'its elements carry no positions'}"
        )
    return job


def keep_job(core: _Dispatcher, req: dict[str, Any]) -> dict[str, Any]:
    """A reader of the job took a checkpoint: keep the job ``job_gc_timeout_ms`` after its
    last reader left (an unnamed job is otherwise collected at once)."""
    with core.lock:
        job = _restorable_job(core, int(req["job_id"]))
        if not job.restorable:
            core._commit({"op": "keep_job", "job_id": job.job_id})
    return {}


def restore_client(core: _Dispatcher, req: dict[str, Any]) -> dict[str, Any]:
    """A new reader of the job, positioned at a checkpoint: its client id and the job's
    tasks (as ``GetOrCreateJob`` answers), after rewinding the job (module docstring)."""
    job_id = int(req["job_id"])
    dataset_id = str(req["dataset_id"])
    replaces = int(req.get("replaces", -1))
    consumed = [
        [int(task_id), [[int(start), int(stop)] for start, stop in ranges]]
        for task_id, ranges in req.get("consumed", ())
    ]
    with core.lock:
        job = _restorable_job(core, job_id)
        if job.dataset_id != dataset_id:
            raise errors.InvalidArgumentError(
                f"The checkpoint is of job {job_id} of dataset {dataset_id}, but job {job_id} "
                f"reads dataset {job.dataset_id}"
            )
        client_id = int(core.acquire_client({"job_id": job_id})["client_id"])
        if core.state.clients.get(replaces) == job_id:
            core._release(replaces)  # the checkpointed reader: it reports nothing any more
        core._commit(
            {
                "op": "rewind_job",
                "job_id": job_id,
                "client_id": client_id,
                "replaces": replaces,
                "consumed": consumed,
                "unsplit_tasks_too": True,  # see DispatcherState._apply_rewind_job
            }
        )
        core.job_idle_since[job_id] = time.monotonic()
        for task in core.state.live_tasks(job):
            if not task.finished and not core._replay_held(task):
                core._push(task.worker_address, task)  # the worker starts it over now
        core._place_orphans()
        reply: dict[str, Any] = {"job_id": job_id, "client_id": client_id}
        reply.update(core._client_view(job, client_id))
        return reply
