"""The dispatcher's state, changed only by applying journal records.

Every change is a record (a dict with an ``"op"``). The dispatcher builds the record, writes
it to the journal (fault-tolerant mode), then applies it here; recovery replays the journal
through the same ``DispatcherState.apply``, so the live path and the recovery path cannot
disagree. Nothing here does I/O or reads the clock except where a record says so.

A handler looks everything up before it changes anything, so a record that cannot be applied
raises and leaves the state as it was; recovery logs such a record and skips it.

``DispatcherState.snapshot`` and ``DispatcherState.from_snapshot`` turn the state into
plain values and back, for journal compaction. Dataclass instances are stored as rows in
``dataclasses.fields`` order with the field names once per table, so a field added later with
a default reads older snapshots; sets are stored as lists and restored from the type hints.
Compaction first applies ``{"op": "forget_collected_jobs"}``: garbage-collected jobs and their
tasks are dropped, keeping only their ids as ranges (so a client holding one still hears that
it was garbage collected, and ``next_job_id`` never goes back) and a named job's
``(dataset_id, job_name, iteration)`` key (so the name does not silently start a new job).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import typing
from typing import Any

from tensorwire import errors

from .positions import IndexRanges

__all__ = ["DispatcherState", "Dataset", "Job", "Task"]

FIRST_DATASET_ID = 1000
SNAPSHOT_FORMAT = 1


@dataclasses.dataclass
class Dataset:
    dataset_id: str
    fingerprint: str
    dataset_def: bytes
    metadata: dict[str, Any]


@dataclasses.dataclass
class Task:
    task_id: int
    job_id: int
    worker_address: str
    finished: bool = False
    removed: bool = False
    # distributed_epoch hand-outs: how many splits this task has been given in all, and the
    # last hand-out (the job's split numbers ``last_first .. last_first + last_count - 1``,
    # given to the worker incarnation ``last_worker``). A worker asks for splits from its
    # position; asking again from the last hand-out's position (its reply was lost) gets the
    # same splits back, so a dispatcher restart at any moment loses and repeats nothing.
    splits_given: int = 0
    last_first: int = 0
    last_count: int = 0
    last_worker: str = ""
    # Exactly-once distributed_epoch (jobs with ``exact``; see positions.py). ``splits``: the
    # job's split numbers this task was given, as [start, stop) ranges in hand-out order: a
    # replay runs exactly these again. ``generation`` counts the times the task was lost
    # with its worker and replayed; readers read one generation, and ignore what an older
    # one still sends. ``delivered``: the element indices readers received (the replay
    # leaves them out), complete once no reader in ``awaiting`` still has to report.
    splits: list[list[int]] = dataclasses.field(default_factory=list)
    generation: int = 0
    delivered: list[list[int]] = dataclasses.field(default_factory=list)
    awaiting: set[int] = dataclasses.field(default_factory=set)
    # Coordinated reads: the job-wide round from which this task takes part (a worker that
    # joined the running job); 0 for the tasks made with the job.
    starting_round: int = 0
    # What readers that left the job said they had consumed, as [client id, ranges]: left
    # out of replays too (nobody is left to report it), except a restored reader's own.
    departed: list[list[Any]] = dataclasses.field(default_factory=list)

    @property
    def num_recorded_splits(self) -> int:
        return sum(stop - start for start, stop in self.splits)


@dataclasses.dataclass
class Job:
    job_id: int
    job_name: str
    iteration: int
    dataset_id: str
    policy: int
    num_consumers: int  # -1: not a coordinated read
    target_workers: str
    num_splits: int = 0
    splits_exhausted: bool = False
    task_ids: list[int] = dataclasses.field(default_factory=list)
    clients: set[int] = dataclasses.field(default_factory=set)
    garbage_collected: bool = False
    # distributed_epoch of a deterministic pipeline: a lost worker's tasks are replayed, so
    # every element is delivered exactly once (see Task.splits).
    exact: bool = False
    # Its readers share each task's elements through a per-trainer sliding window
    # (trainer_cache.py) instead of splitting them.
    cross_trainer_cache: bool = False
    # Other jobs of a deterministic pipeline (parallel_epochs, static sharding): elements
    # carry their position in their task's stream, so a reader's checkpoint can be
    # restored (see checkpoint.py). Worker losses keep TensorFlow's semantics.
    positions: bool = False
    # Why the job's reader checkpoints cannot be restored ("" when they can).
    not_restorable: str = ""
    # A reader took a checkpoint: the job is kept job_gc_timeout_ms after its last reader
    # left, even when it has no name (those are otherwise collected at once).
    restorable: bool = False

    @property
    def coordinated(self) -> bool:
        return self.num_consumers >= 0


class DispatcherState:
    def __init__(self, id_base: int = 1) -> None:
        # Job, task and client ids start at ``id_base``: a dispatcher restarted without its
        # journal picks a fresh random base, so ids held by surviving workers and clients
        # never name a different job, task or client of the new incarnation.
        self.datasets: dict[str, Dataset] = {}
        self.by_fingerprint: dict[str, str] = {}
        self.next_dataset_id = FIRST_DATASET_ID
        self.workers: dict[str, dict[str, Any]] = {}
        self.jobs: dict[int, Job] = {}
        # A named job is identified by its dataset, its name and the reader's iteration:
        # two datasets read under one job_name are two jobs, as in TensorFlow.
        self.job_keys: dict[tuple[str, str, int], int] = {}
        self.tasks: dict[int, Task] = {}
        # Ids of the tasks at each worker address, ascending (the order of ``tasks``): a
        # worker heartbeat looks at its own tasks, not at every task the dispatcher kept.
        # Derived from ``tasks``, not stored in snapshots.
        self.worker_tasks: dict[str, list[int]] = {}
        self.clients: dict[int, int] = {}  # client id -> job id
        self.next_job_id = id_base
        self.next_task_id = id_base
        self.next_client_id = id_base
        # Sorted, disjoint [start, stop) ranges of ids of jobs forgotten after collection.
        self.forgotten_jobs: list[tuple[int, int]] = []
        # distributed_save: path -> {"dataset_id", "done", "error", "request"}
        # (snapshot_manager.py;
        # the rest of a save's progress is in its directory).
        self.snapshots: dict[str, dict[str, Any]] = {}

    # -- queries -----------------------------------------------------------------------------
    def job_finished(self, job: Job) -> bool:
        # A job whose every task was lost with its worker is not finished: a worker that
        # registers (again) gets a task for it.
        live = [self.tasks[t] for t in job.task_ids if not self.tasks[t].removed]
        return bool(live) and all(t.finished for t in live) and not self.orphans(job)

    def orphans(self, job: Job) -> list[Task]:
        """Tasks of an exact job lost with their worker and waiting for one to replay them
        on: the job is not finished before they are."""
        if not job.exact or job.garbage_collected:
            return []
        return [
            t
            for t in (self.tasks[i] for i in job.task_ids)
            if t.removed and not t.finished and t.splits
        ]

    def replayable(self, task: Task) -> bool:
        """Whether ``task``, losing its worker now, must be replayed: an unfinished task of a
        live exact job that was given splits (without splits it produced nothing)."""
        job = self.jobs.get(task.job_id)
        return (
            job is not None
            and job.exact
            and not job.garbage_collected
            and not task.finished
            and bool(task.splits)
        )

    def live_tasks(self, job: Job) -> list[Task]:
        return [self.tasks[t] for t in job.task_ids if not self.tasks[t].removed]

    def _tasks_at(self, address: str) -> list[Task]:
        return [self.tasks[i] for i in self.worker_tasks.get(address, ())]

    def tasks_for_worker(self, address: str) -> list[Task]:
        return [
            t
            for t in self._tasks_at(address)
            if not t.removed and not t.finished and not self.jobs[t.job_id].garbage_collected
        ]

    def job_forgotten(self, job_id: int) -> bool:
        """Whether ``job_id`` named a job that was garbage collected and then forgotten."""
        i = bisect.bisect_right(self.forgotten_jobs, (job_id, float("inf"))) - 1
        return i >= 0 and self.forgotten_jobs[i][0] <= job_id < self.forgotten_jobs[i][1]

    def removed_tasks_of(self, address: str) -> list[Task]:
        """Unfinished tasks of live jobs taken from the worker at ``address`` when it was
        dropped for missed heartbeats."""
        return [
            t
            for t in self._tasks_at(address)
            if t.removed
            and not t.finished
            and t.job_id in self.jobs
            and not self.jobs[t.job_id].garbage_collected
        ]

    def active_jobs(self) -> list[Job]:
        return [
            j for j in self.jobs.values() if not j.garbage_collected and not self.job_finished(j)
        ]

    # -- the one way to change state -----------------------------------------------------------
    def apply(self, record: dict[str, Any]) -> None:
        op = record["op"]
        handler = getattr(self, f"_apply_{op}", None)
        if handler is None:
            raise errors.DataLossError(f"unknown dispatcher journal record {op!r}")
        handler(record)

    def _apply_register_dataset(self, r: dict[str, Any]) -> None:
        ds = Dataset(r["dataset_id"], r["fingerprint"], r["dataset_def"], r["metadata"])
        next_id = self.next_dataset_id
        if ds.dataset_id.isdigit():
            next_id = max(next_id, int(ds.dataset_id) + 1)
        self.datasets[ds.dataset_id] = ds
        self.by_fingerprint.setdefault(ds.fingerprint, ds.dataset_id)
        self.next_dataset_id = next_id

    def _lose(self, task: Task) -> None:
        """``task``'s worker lost what it had produced: the next generation replays its
        splits once every reader of the job said what it received (they stop reading the
        older generation first)."""
        if self.replayable(task):
            task.generation += 1
            task.awaiting = set(self.jobs[task.job_id].clients)
            delivered = IndexRanges(task.delivered)
            for _, ranges in task.departed:
                delivered.update(IndexRanges(ranges))
            task.delivered = delivered.ranges()

    def _apply_register_worker(self, r: dict[str, Any]) -> None:
        self.workers[r["address"]] = {
            "address": r["address"],
            "incarnation": str(r.get("incarnation") or ""),
        }
        # A worker dropped for missed heartbeats that registers again gets its unfinished
        # tasks back (it may still be running them: they carry on, and a new task would
        # start the epoch again). In this record, not records of their own: a restart
        # between two records left a registered worker whose tasks were still taken away,
        # and the worker was told to delete them and later started them over.
        live_jobs = {t.job_id for t in self.tasks_for_worker(r["address"])}
        for task in self.removed_tasks_of(r["address"]):
            if task.job_id not in live_jobs:  # (never two tasks of one job on a worker)
                task.removed = False
                live_jobs.add(task.job_id)

    def _apply_remove_worker(self, r: dict[str, Any]) -> None:
        self.workers.pop(r["address"], None)
        for task in self._tasks_at(r["address"]):
            if not task.finished and not task.removed:
                task.removed = True
                self._lose(task)

    def _apply_restart_worker(self, r: dict[str, Any]) -> None:
        # The worker at this address is a new process: its tasks start over, and those of
        # exact jobs replay what the previous process was given.
        worker = self.workers[r["address"]]
        worker["incarnation"] = str(r["incarnation"])
        for task in self.tasks_for_worker(r["address"]):
            self._lose(task)

    def _apply_move_task(self, r: dict[str, Any]) -> None:
        # An orphaned task of an exact job goes to a live worker, which replays it.
        task = self.tasks[r["task_id"]]
        if r["worker_address"] not in self.workers:
            raise errors.FailedPreconditionError(
                f"cannot move task {task.task_id} to unregistered worker {r['worker_address']}"
            )
        self.worker_tasks[task.worker_address].remove(task.task_id)
        bisect.insort(self.worker_tasks.setdefault(r["worker_address"], []), task.task_id)
        task.worker_address = r["worker_address"]
        task.removed = False

    def _apply_report_delivered(self, r: dict[str, Any]) -> None:
        # A reader's account of what it received from the task, for its current generation.
        task = self.tasks[r["task_id"]]
        client_id = int(r["client_id"])
        if int(r["generation"]) != task.generation or client_id not in task.awaiting:
            return
        delivered = IndexRanges(task.delivered)
        delivered.update(IndexRanges(r["ranges"]))
        task.delivered = delivered.ranges()
        task.awaiting.discard(client_id)

    def _apply_create_job(self, r: dict[str, Any]) -> None:
        job = Job(
            r["job_id"],
            r["job_name"],
            r["iteration"],
            r["dataset_id"],
            r["policy"],
            r["num_consumers"],
            r["target_workers"],
            exact=bool(r.get("exact", False)),
            cross_trainer_cache=bool(r.get("cross_trainer_cache", False)),
            positions=bool(r.get("positions", False)),
            not_restorable=str(r.get("not_restorable", "")),
        )
        next_id = max(self.next_job_id, job.job_id + 1)
        self.jobs[job.job_id] = job
        if job.job_name:
            self.job_keys[(job.dataset_id, job.job_name, job.iteration)] = job.job_id
        self.next_job_id = next_id

    def _apply_create_task(self, r: dict[str, Any]) -> None:
        task = Task(r["task_id"], r["job_id"], r["worker_address"])
        task.starting_round = int(r.get("starting_round", 0))
        job = self.jobs[task.job_id]
        next_id = max(self.next_task_id, task.task_id + 1)
        replaced = self.tasks.get(task.task_id)
        if replaced is not None:  # (the same record applied again)
            self.worker_tasks[replaced.worker_address].remove(task.task_id)
        self.tasks[task.task_id] = task
        bisect.insort(self.worker_tasks.setdefault(task.worker_address, []), task.task_id)
        job.task_ids.append(task.task_id)
        self.next_task_id = next_id

    def _apply_finish_task(self, r: dict[str, Any]) -> None:
        task = self.tasks.get(r["task_id"])
        if task is not None:
            task.finished = True

    def _apply_produce_splits(self, r: dict[str, Any]) -> None:
        # Journals written before hand-outs were per task: the job's count only.
        job = self.jobs[r["job_id"]]
        job.num_splits += r["count"]
        if r.get("exhausted"):
            job.splits_exhausted = True

    def _apply_give_splits(self, r: dict[str, Any]) -> None:
        job = self.jobs[r["job_id"]]
        task = self.tasks[r["task_id"]]
        count = int(r["count"])
        given = int(r["position"]) + count
        worker = r["worker"]
        task.last_first = job.num_splits
        task.last_count = count
        if count:
            if task.splits and task.splits[-1][1] == job.num_splits:
                task.splits[-1] = [task.splits[-1][0], job.num_splits + count]
            else:
                task.splits.append([job.num_splits, job.num_splits + count])
        task.last_worker = worker
        task.splits_given = given
        job.num_splits += count
        if r.get("exhausted"):
            job.splits_exhausted = True

    def _apply_revive_task(self, r: dict[str, Any]) -> None:
        # A worker dropped for missed heartbeats came back still running the task: it
        # carries on where it was instead of starting the job again.
        self.tasks[r["task_id"]].removed = False

    def _apply_acquire_client(self, r: dict[str, Any]) -> None:
        job = self.jobs[r["job_id"]]
        next_id = max(self.next_client_id, r["client_id"] + 1)
        self.clients[r["client_id"]] = r["job_id"]
        job.clients.add(r["client_id"])
        self.next_client_id = next_id

    def _apply_release_client(self, r: dict[str, Any]) -> None:
        job_id = self.clients.pop(r["client_id"], None)
        if job_id is not None:
            self.jobs[job_id].clients.discard(r["client_id"])
            for task_id, ranges in r.get("consumed", ()):
                task = self.tasks.get(int(task_id))
                if task is not None and task.job_id == job_id:
                    task.departed.append([int(r["client_id"]), ranges])
                    if r["client_id"] in task.awaiting:  # its account is its report
                        delivered = IndexRanges(task.delivered)
                        delivered.update(IndexRanges(ranges))
                        task.delivered = delivered.ranges()
            for task_id in self.jobs[job_id].task_ids:  # a reader gone reports nothing
                self.tasks[task_id].awaiting.discard(r["client_id"])

    def _apply_keep_job(self, r: dict[str, Any]) -> None:
        self.jobs[r["job_id"]].restorable = True

    def _apply_rewind_job(self, r: dict[str, Any]) -> None:
        # A reader restored a checkpoint (client ``client_id``): every task that produced
        # something starts over as a new generation that leaves out what the checkpoint
        # had consumed and what the job's other readers report they received (they are
        # awaited, as for a lost worker). Finished tasks are run again: what was consumed
        # after the checkpoint is delivered again.
        job = self.jobs[r["job_id"]]
        client_id = int(r["client_id"])
        replaces = int(r.get("replaces", -1))
        consumed = {int(task_id): ranges for task_id, ranges in r["consumed"]}
        for task_id in job.task_ids:
            task = self.tasks[task_id]
            # The checkpointed reader's account at its departure is superseded by the
            # checkpoint (it consumed more after it).
            task.departed = [d for d in task.departed if int(d[0]) != replaces]
            if job.exact and not task.splits:
                # It produced nothing yet, so nothing is left out of it and no reader has
                # to report. It still moves on a generation: its old one could get splits
                # after this and hand its first elements to a reader of the old generation
                # (the checkpointed one, whose last request may still be in flight), which
                # the restored reader would then never see. Splits go to the new one only.
                # (Records journaled before this rule lack the flag and replay as applied.)
                if r.get("unsplit_tasks_too") and not task.finished:
                    task.generation += 1
                    task.delivered, task.awaiting = [], set()
                continue
            if not job.exact and task.removed:
                continue  # its worker is gone; outside exact jobs nothing replays it
            task.generation += 1
            task.finished = False
            delivered = IndexRanges(consumed.get(task_id, ()))
            for _, ranges in task.departed:
                delivered.update(IndexRanges(ranges))
            task.delivered = delivered.ranges()
            task.awaiting = set(job.clients) - {client_id}
        job.restorable = True

    def _apply_start_snapshot(self, r: dict[str, Any]) -> None:
        self.snapshots[str(r["path"])] = {
            "dataset_id": str(r["dataset_id"]),
            "done": False,
            "error": "",
            "request": str(r.get("request") or ""),  # the client's, for its retries
        }

    def _apply_finish_snapshot(self, r: dict[str, Any]) -> None:
        snapshot = self.snapshots[str(r["path"])]
        snapshot["done"] = True
        snapshot["error"] = str(r.get("error") or "")

    def _apply_gc_job(self, r: dict[str, Any]) -> None:
        job = self.jobs[r["job_id"]]
        job.garbage_collected = True
        for client_id in list(job.clients):
            self.clients.pop(client_id, None)
        job.clients.clear()
        for task_id in job.task_ids:
            self.tasks[task_id].awaiting.clear()

    def _apply_forget_collected_jobs(self, r: dict[str, Any]) -> None:
        gone = [job for job in self.jobs.values() if job.garbage_collected]
        ranges = sorted([*self.forgotten_jobs, *((j.job_id, j.job_id + 1) for j in gone)])
        merged: list[tuple[int, int]] = []
        for start, stop in ranges:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
            else:
                merged.append((start, stop))
        self.forgotten_jobs = merged
        for job in gone:
            for task_id in job.task_ids:
                self.tasks.pop(task_id, None)
            del self.jobs[job.job_id]
        self.worker_tasks = {
            address: kept
            for address, ids in self.worker_tasks.items()
            if (kept := [i for i in ids if i in self.tasks])
        }

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain values (lists, dicts, scalars) for the journal."""
        return {
            "format": SNAPSHOT_FORMAT,
            "next_ids": {
                "dataset": self.next_dataset_id,
                "job": self.next_job_id,
                "task": self.next_task_id,
                "client": self.next_client_id,
            },
            "fields": {name: _field_names(cls) for name, cls in _TABLES.items()},
            "datasets": [_row(d) for d in self.datasets.values()],
            "jobs": [_row(j) for j in self.jobs.values()],
            "tasks": [_row(t) for t in self.tasks.values()],
            "by_fingerprint": [[fp, ds] for fp, ds in self.by_fingerprint.items()],
            "workers": [dict(w) for w in self.workers.values()],
            "job_keys": [[*key, job_id] for key, job_id in self.job_keys.items()],
            "clients": [[client_id, job_id] for client_id, job_id in self.clients.items()],
            "forgotten_jobs": [[start, stop] for start, stop in self.forgotten_jobs],
            "snapshots": [[path, dict(s)] for path, s in self.snapshots.items()],
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> DispatcherState:
        """The state ``snapshot`` described. ``DataLossError`` if it cannot be read."""
        if snap.get("format") != SNAPSHOT_FORMAT:
            raise errors.DataLossError(
                f"dispatcher snapshot format {snap.get('format')!r} is not {SNAPSHOT_FORMAT}"
            )
        state = cls()
        ids = snap["next_ids"]
        state.next_dataset_id = ids["dataset"]
        state.next_job_id = ids["job"]
        state.next_task_id = ids["task"]
        state.next_client_id = ids["client"]
        tables = {
            name: [_from_row(table_cls, snap["fields"][name], row) for row in snap[name]]
            for name, table_cls in _TABLES.items()
        }
        state.datasets = {d.dataset_id: d for d in tables["datasets"]}
        state.jobs = {j.job_id: j for j in tables["jobs"]}
        state.tasks = {t.task_id: t for t in tables["tasks"]}
        for task_id in sorted(state.tasks):
            state.worker_tasks.setdefault(state.tasks[task_id].worker_address, []).append(task_id)
        state.by_fingerprint = {fp: ds for fp, ds in snap["by_fingerprint"]}
        state.workers = {w["address"]: dict(w) for w in snap["workers"]}
        state.job_keys = {tuple(entry[:-1]): entry[-1] for entry in snap["job_keys"]}
        state.clients = {client_id: job_id for client_id, job_id in snap["clients"]}
        state.forgotten_jobs = [(start, stop) for start, stop in snap["forgotten_jobs"]]
        state.snapshots = {path: dict(s) for path, s in snap.get("snapshots", [])}
        return state


_TABLES: dict[str, type] = {"datasets": Dataset, "jobs": Job, "tasks": Task}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _row(obj: Any) -> list[Any]:
    return [_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)]


def _plain(value: Any) -> Any:
    """``value`` with sets turned into (sorted) lists, recursively."""
    if isinstance(value, (set, frozenset)):
        items = [_plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _restore(value: Any, hint: Any) -> Any:
    """Undo ``_plain`` for a value whose declared type is ``hint``."""
    origin = typing.get_origin(hint) or hint
    if origin in (set, frozenset):
        return origin(value)
    if origin is list and isinstance(value, tuple):
        return list(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin) and isinstance(value, dict):
        return _from_row(origin, list(value), list(value.values()))
    return value


def _from_row(cls: type, names: list[str], row: list[Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in names if name not in known]
    if unknown or len(names) != len(row):
        raise errors.DataLossError(
            f"dispatcher snapshot: {cls.__name__} fields {unknown or names} do not match this "
            f"version's {list(known)}"
        )
    hints = _hints(cls)
    kwargs = {name: _restore(value, hints[name]) for name, value in zip(names, row, strict=True)}
    missing = [
        f.name
        for f in known.values()
        if f.name not in kwargs
        and f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise errors.DataLossError(
            f"dispatcher snapshot: {cls.__name__} lacks required fields {missing}"
        )
    obj = cls(**{name: v for name, v in kwargs.items() if known[name].init})
    for name, value in kwargs.items():
        if not known[name].init:
            setattr(obj, name, value)
    return obj
