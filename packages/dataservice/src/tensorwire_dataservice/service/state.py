"""The dispatcher's state, changed only by applying journal records.

Every change is a record (a dict with an ``"op"``). The dispatcher builds the record, writes
it to the journal (fault-tolerant mode), then applies it here; recovery replays the journal
through the same :meth:`DispatcherState.apply`, so the live path and the recovery path cannot
disagree. Nothing here does I/O or reads the clock except where a record says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tensorwire import errors

__all__ = ["DispatcherState", "Dataset", "Job", "Task"]

FIRST_DATASET_ID = 1000


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
        self.clients: dict[int, int] = {}  # client id -> job id
        self.next_job_id = id_base
        self.next_task_id = id_base
        self.next_client_id = id_base

    # -- queries -----------------------------------------------------------------------------
    def job_finished(self, job: Job) -> bool:
        # A job whose every task was lost with its worker is not finished: a worker that
        # registers (again) gets a task for it.
        live = [self.tasks[t] for t in job.task_ids if not self.tasks[t].removed]
        return bool(live) and all(t.finished for t in live)

    def live_tasks(self, job: Job) -> list[Task]:
        return [self.tasks[t] for t in job.task_ids if not self.tasks[t].removed]

    def tasks_for_worker(self, address: str) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.worker_address == address
            and not t.removed
            and not t.finished
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
        self.datasets[ds.dataset_id] = ds
        self.by_fingerprint.setdefault(ds.fingerprint, ds.dataset_id)
        if ds.dataset_id.isdigit():
            self.next_dataset_id = max(self.next_dataset_id, int(ds.dataset_id) + 1)

    def _apply_register_worker(self, r: dict[str, Any]) -> None:
        self.workers[r["address"]] = {"address": r["address"]}

    def _apply_remove_worker(self, r: dict[str, Any]) -> None:
        self.workers.pop(r["address"], None)
        for task in self.tasks.values():
            if task.worker_address == r["address"] and not task.finished:
                task.removed = True

    def _apply_create_job(self, r: dict[str, Any]) -> None:
        job = Job(
            r["job_id"],
            r["job_name"],
            r["iteration"],
            r["dataset_id"],
            r["policy"],
            r["num_consumers"],
            r["target_workers"],
        )
        self.jobs[job.job_id] = job
        if job.job_name:
            self.job_keys[(job.dataset_id, job.job_name, job.iteration)] = job.job_id
        self.next_job_id = max(self.next_job_id, job.job_id + 1)

    def _apply_create_task(self, r: dict[str, Any]) -> None:
        task = Task(r["task_id"], r["job_id"], r["worker_address"])
        self.tasks[task.task_id] = task
        self.jobs[task.job_id].task_ids.append(task.task_id)
        self.next_task_id = max(self.next_task_id, task.task_id + 1)

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
        task.last_first = job.num_splits
        task.last_count = count
        task.last_worker = r["worker"]
        task.splits_given = int(r["position"]) + count
        job.num_splits += count
        if r.get("exhausted"):
            job.splits_exhausted = True

    def _apply_revive_task(self, r: dict[str, Any]) -> None:
        # A worker dropped for missed heartbeats came back still running the task: it
        # carries on where it was instead of starting the job again.
        self.tasks[r["task_id"]].removed = False

    def _apply_acquire_client(self, r: dict[str, Any]) -> None:
        self.clients[r["client_id"]] = r["job_id"]
        self.jobs[r["job_id"]].clients.add(r["client_id"])
        self.next_client_id = max(self.next_client_id, r["client_id"] + 1)

    def _apply_release_client(self, r: dict[str, Any]) -> None:
        job_id = self.clients.pop(r["client_id"], None)
        if job_id is not None:
            self.jobs[job_id].clients.discard(r["client_id"])

    def _apply_gc_job(self, r: dict[str, Any]) -> None:
        job = self.jobs[r["job_id"]]
        job.garbage_collected = True
        for client_id in list(job.clients):
            self.clients.pop(client_id, None)
        job.clients.clear()
