"""DispatchServer: datasets, jobs, tasks, clients, splits, GC and the journal.

The dispatcher owns no data: it tells workers which tasks to run (in heartbeat replies),
tells clients which tasks serve their job, hands out splits for ``distributed_epoch`` and
garbage-collects what nobody uses. In fault-tolerant mode each state change is journaled
before the RPC that caused it returns (see ``journal`` and ``state``).
"""

from __future__ import annotations

import functools
import logging
import queue
import secrets
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from tensorwire import errors
from tensorwire.lifecycle import stop_at_exit, stopped_on_failure
from tensorwire.observe import status_service
from tensorwire.transport import get_transport
from tensorwire.transport.base import CallContext, Service, TransportOptions
from tensorwire.transport.kit.address import split_host_port
from tensorwire.transport.threads import join_threads

from . import checkpoint_dispatcher, pipeline
from .config import (
    DEFAULT_CLIENT_TIMEOUT_MS,
    DEFAULT_JOB_GC_CHECK_INTERVAL_MS,
    DEFAULT_JOB_GC_TIMEOUT_MS,
    DEFAULT_WORKER_TIMEOUT_MS,
    DispatcherConfig,
    bind_host,
    dispatcher_config_from,
    transport_options_of,
)
from .coordinated_join import PendingJoins
from .journal import Journal, recover
from .metrics import dispatcher_families, metered, start_metrics
from .protocol import (
    DISPATCHER_SERVICE,
    STATIC_POLICIES,
    WORKER_SERVICE,
    ShardingPolicy,
    as_bytes,
    channel_to,
    pack,
    refusing_malformed,
    unpack,
)
from .reader_view import ReaderViews
from .snapshot_manager import SnapshotManager
from .state import DispatcherState, Job, Task
from .status import ClientReport, TaskReport, client_report, dispatcher_status, task_reports

if TYPE_CHECKING:
    from tensorwire.observe import DispatcherStatus

__all__ = ["DispatchServer"]

log = logging.getLogger(__name__)

#: Extra time the workers and clients of a restarted dispatcher get to reach it, beyond their
#: timeout: the longest reconnect back-off of a channel (2 s on grpc), with a margin.
RECONNECT_GRACE_S = 3.0

_MAX_SPLITS_PER_REQUEST = 64
#: How long ``stop()`` waits for the dispatcher's own threads (woken at once) to end.
_STOP_JOIN_SECONDS = 5.0


def _ms(value: int | None, default: int) -> int:
    return default if not value else int(value)


class _WorkerIndex:
    """Maps registered worker addresses to their index in ``worker_addresses``."""

    def __init__(self, patterns: list[str] | None) -> None:
        self.patterns = list(patterns or [])
        self.assigned: dict[str, int] = {}

    def _matches(self, pattern: str, address: str) -> bool:
        if pattern == address:
            return True
        host = split_host_port(address)[0]
        p_host, p_port = split_host_port(pattern)
        if not p_port:  # "host" alone: any port of that host
            return p_host == host
        return p_host == host and p_port.startswith("%") and p_port.endswith("%")

    def resolve(self, address: str) -> int:
        if address in self.assigned:
            return self.assigned[address]
        taken = set(self.assigned.values())
        for i, pattern in enumerate(self.patterns):
            if i not in taken and self._matches(pattern, address):
                self.assigned[address] = i
                return i
        raise errors.FailedPreconditionError(
            f"Failed to assign an index for worker {address}. Configured workers: "
            f"{self.patterns}. Static sharding needs every worker listed in "
            "DispatcherConfig.worker_addresses."
        )


class _Dispatcher:
    """The dispatcher's logic, independent of how it is served."""

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.state = DispatcherState(id_base=1 + secrets.randbelow(1 << 40))
        self.worker_index = _WorkerIndex(config.worker_addresses)
        self.journal: Journal | None = None
        now = time.monotonic()
        self.worker_seen: dict[str, float] = {}
        self.client_seen: dict[int, float] = {}
        self.job_idle_since: dict[int, float] = {}
        self.gc_clients: set[int] = set()
        self.former_clients: dict[int, int] = {}  # released client -> its job, for messages
        self.outbox: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self.split_providers: dict[int, Any] = {}  # job id -> provider (distributed_epoch)
        self.handouts: dict[int, list[bytes]] = {}  # task id -> its last hand-out's splits
        # Exact jobs: every split handed out so far, by split number, so a replay gets the
        # very splits its task was given (rebuilt from the deterministic provider).
        self.split_log: dict[int, list[bytes]] = {}
        self.nondeterminism: dict[str, str | None] = {}  # dataset id -> why (see below)
        self._heartbeating = ""  # worker whose heartbeat is being handled (under the lock)
        # The host identity each worker reports in its heartbeats (target_workers="LOCAL");
        # not journaled: a restarted dispatcher learns it again at the next heartbeat.
        self.worker_hosts: dict[str, str] = {}
        # Workers waiting to join running coordinated-read jobs (coordinated_join.py).
        self.joins = PendingJoins()
        # What readers' heartbeat replies say about their jobs (reader_view.py).
        self.reader_views = ReaderViews()
        # distributed_save: which split each worker writes (snapshot_manager.py).
        self.snapshots = SnapshotManager(self)
        self.worker_timeout = _ms(config.worker_timeout_ms, DEFAULT_WORKER_TIMEOUT_MS) / 1000
        self.gc_interval = (
            _ms(config.job_gc_check_interval_ms, DEFAULT_JOB_GC_CHECK_INTERVAL_MS) / 1000
        )
        self.gc_timeout_ms = _ms(config.job_gc_timeout_ms, DEFAULT_JOB_GC_TIMEOUT_MS)
        self.client_timeout = (
            DEFAULT_CLIENT_TIMEOUT_MS / 1000
            if not config.job_gc_timeout_ms or self.gc_timeout_ms < 0
            else max(self.gc_timeout_ms / 1000, 1.0)
        )
        if config.work_dir and config.fault_tolerant_mode:
            recovery = recover(config.work_dir)
            if recovery.snapshot is not None:
                self.state = DispatcherState.from_snapshot(recovery.snapshot)
            skipped = 0
            for entry in recovery.entries:
                try:
                    if entry.record is None:
                        raise errors.DataLossError(entry.error)
                    self.state.apply(entry.record)
                except Exception as exc:  # noqa: BLE001 - one bad record must not brick restarts
                    skipped += 1
                    log.error(
                        "journal %s: the record at byte %d cannot be applied and is skipped: "
                        "%s: %s",
                        entry.path,
                        entry.offset,
                        type(exc).__name__,
                        exc,
                    )
            log.info(
                "dispatcher recovered generation %d from %s: a snapshot and %d journal "
                "records (%d skipped)",
                recovery.generation,
                config.work_dir,
                len(recovery.entries),
                skipped,
            )
            self.journal = Journal(config.work_dir, recovery)
            self._maybe_compact()  # also turns a version-1 journal into generation 1
            if self.journal.legacy:
                raise errors.FailedPreconditionError(
                    f"cannot convert the version-1 journal in {config.work_dir} (see the log); "
                    "it is left as it was"
                )
            # Recovered workers and clients get their lease when the dispatcher starts
            # serving (renew_leases), not here: recovery may take a while.
            if config.worker_addresses:
                for address in self.state.workers:
                    try:
                        self.worker_index.resolve(address)
                    except errors.FailedPreconditionError:
                        pass
            for job_id in self.state.jobs:
                self.job_idle_since[job_id] = now
        self.methods = {
            "WorkerHeartbeat": self.worker_heartbeat,
            "GetOrRegisterDataset": self.get_or_register_dataset,
            "GetDatasetDef": self.get_dataset_def,
            "GetDataServiceMetadata": self.get_metadata,
            "GetOrCreateJob": self.get_or_create_job,
            "AcquireClient": self.acquire_client,
            "ReleaseClient": self.release_client,
            "ClientHeartbeat": self.client_heartbeat,
            "GetSplits": self.get_splits,
            "GetWorkers": self.get_workers,
            "KeepJob": functools.partial(checkpoint_dispatcher.keep_job, self),
            "RestoreClient": functools.partial(checkpoint_dispatcher.restore_client, self),
            "Snapshot": self.snapshot,
            "GetSnapshotSplit": self.get_snapshot_split,
        }
        # For status and metrics (status.py, metrics.py): what workers and readers reported.
        self.started = time.monotonic()
        self.workers_lost = 0
        self.task_reports: dict[int, TaskReport] = {}
        self.client_reports: dict[int, ClientReport] = {}

    # -- journaled changes ----------------------------------------------------------------
    def _commit(self, record: dict[str, Any]) -> None:
        """Journal (when fault tolerant) and apply one change. Caller holds the lock.

        A compaction that is due runs first, between two records: a caller's earlier
        changes are in the snapshot and this one goes to the new journal."""
        if self.journal is not None:
            self._maybe_compact()
            self.journal.write(record)
        self.state.apply(record)
        if record["op"] != "give_splits" or self.state.tasks[record["task_id"]].removed:
            # Splits for a live task show in no reader's view: the only frequent change
            # that leaves them be. (A removed task's splits make it an orphan, which shows.)
            self.reader_views.changed()

    def _maybe_compact(self) -> None:
        """Compact if due. A failure is logged and compaction postponed: the journal keeps
        working without it (or is closed, if the failure left its generation unknown)."""
        assert self.journal is not None
        if not self.journal.compaction_due():
            return
        try:
            self._compact()
        except Exception:  # noqa: BLE001 - the dispatcher must keep serving
            log.exception(
                "dispatcher journal compaction in %s failed; retried later", self.config.work_dir
            )
            self.journal.postpone_compaction()

    def _compact(self) -> None:
        """Forget garbage-collected jobs and snapshot the state into a new journal generation.

        Forgetting is not journaled: it is part of the snapshot, and a crash (or a failure)
        before the snapshot is in place recovers the collected jobs as they were, collected,
        which answers every request the same way."""
        assert self.journal is not None
        self._forget_collected_jobs()
        self.journal.compact(self.state.snapshot())

    def _forget_collected_jobs(self) -> None:
        """Drop garbage-collected jobs and their tasks, keeping what answers their readers
        (that the job was collected) and their workers (whatever they still run of it is
        deleted at their next heartbeat: no task of theirs is assigned)."""
        self.state.apply({"op": "forget_collected_jobs"})
        self.reader_views.changed()
        for job_id in [j for j in self.job_idle_since if j not in self.state.jobs]:
            del self.job_idle_since[job_id]
        for client_id, job_id in list(self.former_clients.items()):
            if job_id not in self.state.jobs:  # heartbeats of its clients keep the GC message
                del self.former_clients[client_id]
                self.gc_clients.add(client_id)

    # -- helpers -------------------------------------------------------------------------------
    def _task_def(self, task: Task) -> dict[str, Any]:
        job = self.state.jobs[task.job_id]
        ds = self.state.datasets[job.dataset_id]
        index = -1
        if job.policy in STATIC_POLICIES:
            index = self.worker_index.resolve(task.worker_address)
        return {
            "task_id": task.task_id,
            "job_id": job.job_id,
            "dataset_id": job.dataset_id,
            "fingerprint": ds.fingerprint,
            "policy": job.policy,
            "num_consumers": job.num_consumers,
            "num_workers": len(self.config.worker_addresses or []),
            "worker_index": index,
            "compression": ds.metadata.get("compression") or "",
            # (A job with positions has its workers number elements like an exact one.)
            "exact": self._has_positions(job.job_id),
            "generation": task.generation,
            "cross_trainer_cache": job.cross_trainer_cache,
            # What a restored reader's replay of a parallel_epochs task leaves out (an exact
            # job's replay learns it with its first splits).
            "skip": task.delivered if job.positions else [],
        }

    def _create_task(self, job: Job, address: str, starting_round: int = 0) -> None:
        if job.policy in STATIC_POLICIES:
            self.worker_index.resolve(address)
        record: dict[str, Any] = {
            "op": "create_task",
            "task_id": self.state.next_task_id,
            "job_id": job.job_id,
            "worker_address": address,
        }
        if starting_round:
            record["starting_round"] = starting_round
        self._commit(record)
        self._push(address, self.state.tasks[self.state.next_task_id - 1])

    def _push(self, address: str, task: Task) -> None:
        """Send a new task to its worker at once (best effort), so it starts producing
        before its first client asks instead of at the next heartbeat; the heartbeat stays
        the reliable path."""
        if address == self._heartbeating:
            return  # the worker learns about it in the reply it is waiting for
        self._send(address, {"tasks": [self._task_def(task)]})

    def _send(self, address: str, message: dict[str, Any]) -> None:
        """Tell a worker about new or deleted tasks without waiting (best effort).

        Called under the lock, so it only queues: the nudger thread sends. Network calls
        made while holding the lock would hold up every other request (worker heartbeats
        among them) for as long as a busy worker takes to take the call.
        """
        self.outbox.put((address, message))

    def _job(self, job_id: int) -> Job:
        job = self.state.jobs.get(job_id)
        if job is None and not self.state.job_forgotten(job_id):
            raise errors.NotFoundError(f"Job id {job_id} not found")
        if job is None or job.garbage_collected:
            raise errors.NotFoundError(
                f"Job id {job_id} has been garbage collected after being unused for "
                f"{self.gc_timeout_ms} ms. Consider configuring the dispatcher with a larger "
                "`job_gc_timeout_ms`."
            )
        return job

    def _dataset(self, dataset_id: str) -> Any:
        ds = self.state.datasets.get(str(dataset_id))
        if ds is None:
            raise errors.NotFoundError(f"Dataset id {dataset_id} not found")
        return ds

    # -- worker-facing -------------------------------------------------------------------------
    def worker_heartbeat(self, req: dict[str, Any]) -> dict[str, Any]:
        address = str(req["worker_address"])
        current = {int(t) for t in req.get("tasks", [])}
        finished = [int(t) for t in req.get("finished", [])]
        incarnation = str(req.get("incarnation") or "")
        # Generations of the exact tasks the worker runs: an older one is sent again, and
        # the worker starts it over (a replay).
        generations = {int(t): int(g) for t, g in dict(req.get("generations") or {}).items()}
        host_id = str(req.get("host_id") or "")
        self.task_reports.update(task_reports(req.get("stats")))
        with self.lock:
            if host_id and self.worker_hosts.get(address) != host_id:
                self.worker_hosts[address] = host_id
                self.reader_views.changed()
            self._heartbeating = address
            try:
                return self._worker_heartbeat_locked(
                    address, current, finished, incarnation, generations
                )
            finally:
                self._heartbeating = ""

    def _worker_heartbeat_locked(
        self,
        address: str,
        current: set[int],
        finished: list[int],
        incarnation: str,
        generations: dict[int, int],
    ) -> dict[str, Any]:
        if address not in self.state.workers:
            if self.config.worker_addresses:
                self.worker_index.resolve(address)
            # A worker dropped for missed heartbeats (busy, or cut off for a while) may come
            # back still running its tasks: registering gives them all back (see
            # DispatcherState), also those it does not report yet: a task whose nudge is
            # still on its way would otherwise run beside a new task for the same job. A
            # worker that restarted gets them in this reply and starts them over, as it
            # would new ones.
            resumed = [t.task_id for t in self.state.removed_tasks_of(address)]
            self._commit({"op": "register_worker", "address": address, "incarnation": incarnation})
            log.info(
                "worker %s registered%s",
                address,
                f"; it resumes tasks {resumed}" if resumed else "",
            )
            for job in self.state.active_jobs():
                if job.coordinated:
                    self._plan_join(job, address)  # from a round no consumer has passed
                    continue
                if any(
                    self.state.tasks[t].worker_address == address
                    and not self.state.tasks[t].removed
                    for t in job.task_ids
                ):
                    continue
                self._create_task(job, address)
            # (Its tasks of exact jobs were lost when it was dropped: whether it is the
            # same process or not, they come back as a new generation and start over.)
            self._place_orphans()
        else:
            self._check_incarnation(address, incarnation)
            # A journal from before registering revived tasks in the same record may hold
            # a registered worker whose tasks are still marked taken: the worker runs them,
            # so they are its again (never "delete": it would start them over later).
            for taken in self.state.removed_tasks_of(address):
                if taken.task_id in current:
                    self._commit({"op": "revive_task", "task_id": taken.task_id})
        self.worker_seen[address] = time.monotonic()
        for task_id in finished:
            task = self.state.tasks.get(task_id)
            # A task whose elements have positions (an exact job's, or one a checkpoint
            # can restore) is finished by its readers, once one received its end of
            # sequence: the worker may have sent its last elements into a connection that
            # then broke, and keeps them for the reader's next request (sent_log.py), or a
            # replay must still be possible.
            # (A report about an older generation, run again since, is stale.)
            if (
                task is not None
                and not task.finished
                and not self._has_positions(task.job_id)
                and generations.get(task_id, task.generation) == task.generation
            ):
                self._commit({"op": "finish_task", "task_id": task_id})
        assigned = self.state.tasks_for_worker(address)
        assigned_ids = {t.task_id for t in assigned}
        new = [
            self._task_def(t)
            for t in assigned
            if (t.task_id not in current or generations.get(t.task_id, t.generation) < t.generation)
            and not self._replay_held(t)
        ]
        delete = sorted(t for t in current if t not in assigned_ids and t not in finished)
        reply: dict[str, Any] = {"tasks": new, "delete": delete}
        snapshots = self.snapshots.active()
        if snapshots:
            reply["snapshots"] = snapshots
        return reply

    def _replay_held(self, task: Task) -> bool:
        """Whether ``task`` (of a job with positions, restarted by a restored checkpoint)
        waits for the job's other readers to report what they received before its worker
        may start it over: its skip set travels with its definition. (An exact job's
        replay waits in GetSplits instead.)"""
        return bool(task.awaiting) and self.state.jobs[task.job_id].positions

    def _check_incarnation(self, address: str, incarnation: str) -> None:
        """A worker process that is not the one the state knows at ``address`` (it
        restarted) lost every task it ran: those of exact jobs are replayed. Caller holds
        the lock; ``address`` is registered."""
        known = self.state.workers[address].get("incarnation", "")
        if not incarnation or known == incarnation:
            return
        lost = [t.task_id for t in self.state.tasks_for_worker(address) if self.state.replayable(t)]
        self._commit({"op": "restart_worker", "address": address, "incarnation": incarnation})
        if lost:
            log.info("worker %s restarted; its tasks %s replay their splits", address, lost)

    def _has_positions(self, job_id: int) -> bool:
        """Whether the job's workers number its elements: an exact job, or one a checkpoint
        can restore."""
        job = self.state.jobs[job_id]
        return job.exact or job.positions

    def _place_orphans(self) -> None:
        """Give each task of an exact job lost with its worker to the live worker with the
        fewest tasks, which replays it. Caller holds the lock."""
        if not self.state.workers:
            return
        for job in self.state.active_jobs():
            for task in self.state.orphans(job):
                load = {a: 0 for a in self.state.workers}
                for t in self.state.tasks.values():
                    if t.worker_address in load and not t.removed and not t.finished:
                        load[t.worker_address] += 1
                address = min(sorted(load), key=load.__getitem__)
                self._commit(
                    {"op": "move_task", "task_id": task.task_id, "worker_address": address}
                )
                log.info(
                    "task %d of job %d (lost with worker %s) is replayed on %s",
                    task.task_id,
                    job.job_id,
                    task.worker_address,
                    address,
                )
                self._push(address, task)

    def _plan_joins(self) -> None:
        """Make each registered worker without a task of a running coordinated job a
        pending task of it (also after a restart forgot the pending ones). Caller holds
        the lock."""
        for job in self.state.active_jobs():
            if job.coordinated:
                for address in sorted(self.state.workers):
                    self._plan_join(job, address)

    def _plan_join(self, job: Job, address: str) -> None:
        """``address`` joins the coordinated ``job`` at a round no consumer has passed
        (see coordinated_join.py). Caller holds the lock."""
        live = self.state.live_tasks(job)
        if any(t.worker_address == address for t in live) or self.joins.is_pending(
            job.job_id, address
        ):
            return
        if not live:
            # Nobody reads while the job has no task: start at the furthest round reached.
            pending = self.joins.add(job.job_id, address, set(job.clients), lookahead=False)
        else:
            pending = self.joins.add(job.job_id, address, set(job.clients))
        log.info(
            "worker %s joins coordinated job %d at round %d once its %d consumers agree",
            address,
            job.job_id,
            pending.target_round,
            len(job.clients),
        )
        self._advance_join(job)

    def _advance_join(self, job: Job) -> None:
        """Create the job's front pending task once every consumer confirmed its round."""
        pending = self.joins.ready_to_join(job.job_id, set(job.clients))
        if pending is None:
            return
        if pending.worker_address not in self.state.workers:
            return
        self._create_task(job, pending.worker_address, starting_round=pending.target_round)
        log.info(
            "worker %s joined coordinated job %d from round %d",
            pending.worker_address,
            job.job_id,
            pending.target_round,
        )
        self._advance_join(job)  # the next pending task may be ready too

    def get_dataset_def(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            ds = self._dataset(req["dataset_id"])
            return {"dataset_def": ds.dataset_def}

    def get_splits(self, req: dict[str, Any]) -> dict[str, Any]:
        """Splits for a distributed_epoch task, idempotently.

        The worker says how many splits its task has received (``position``) and which
        incarnation of the worker asks (``worker``). Asking again from the position of the
        last hand-out, by the same incarnation, returns that hand-out again: its reply was
        lost (a dispatcher restart, a timeout), and handing out new splits instead would
        lose the old ones. A restarted worker (a new incarnation) gets new splits.
        """
        job_id = int(req["job_id"])
        task_id = int(req["task_id"])
        want = max(1, min(int(req.get("max", 1)), _MAX_SPLITS_PER_REQUEST))
        worker = str(req.get("worker") or "")
        with self.lock:
            job = self._job(job_id)
            task = self.state.tasks.get(task_id)
            if task is None or task.job_id != job_id:
                raise errors.NotFoundError(f"Task {task_id} of job {job_id} not found")
            if job.exact:
                return self._exact_splits(job, task, req, want)
            position = int(req.get("position", task.splits_given))
            if (
                worker
                and task.last_count
                and worker == task.last_worker
                and position == task.splits_given - task.last_count
            ):
                return {"splits": self._last_handout(job, task), "end": False}
            if job.splits_exhausted:
                return {"splits": [], "end": True}
            splits, end = _draw_splits(self._split_provider(job), want)
            self._commit(
                {
                    "op": "give_splits",
                    "job_id": job_id,
                    "task_id": task_id,
                    "position": position,
                    "count": len(splits),
                    "exhausted": end,
                    "worker": worker,
                }
            )
            self.handouts[task_id] = splits
            return {"splits": splits, "end": end and not splits}

    def _exact_splits(self, job: Job, task: Task, req: dict[str, Any], want: int) -> dict[str, Any]:
        """GetSplits of an exact job. ``position`` counts the task's splits over all its
        generations: below the number recorded, it is a replay (or a reply that was lost)
        and gets the recorded splits again; at it, new splits, recorded first.

        A worker that is not (yet) the task's current runner waits: an older generation,
        a process the dispatcher has not seen register, or a replay whose skip set is not
        complete yet (a reader has still to say what it received)."""
        generation = int(req.get("generation", -1))
        address = str(req.get("worker_address") or "")
        worker = self.state.workers.get(task.worker_address)
        if (
            task.removed
            or task.finished
            or worker is None
            or generation != task.generation
            or address != task.worker_address
            or str(req.get("worker") or "") != worker.get("incarnation")
            or task.awaiting
        ):
            return {"splits": [], "end": False, "wait": True}
        position = int(req["position"])
        recorded = task.num_recorded_splits
        reply: dict[str, Any] = {"generation": task.generation}
        if position == 0:
            reply["skip"] = task.delivered
        if position < recorded:
            log_ = self._split_log(job)
            reply.update(
                splits=[log_[n] for n in _split_numbers(task.splits, position, want)], end=False
            )
            return reply
        if position > recorded:
            raise errors.DataLossError(
                f"task {task.task_id} of job {job.job_id} asks for splits from position "
                f"{position}, but only {recorded} were recorded for it"
            )
        if job.splits_exhausted:
            reply.update(splits=[], end=True)
            return reply
        log_ = self._split_log(job)
        splits, end = _draw_splits(self._split_provider(job), want)
        self._commit(
            {
                "op": "give_splits",
                "job_id": job.job_id,
                "task_id": task.task_id,
                "position": position,
                "count": len(splits),
                "exhausted": end,
                "worker": str(req.get("worker") or ""),
            }
        )
        log_.extend(splits)
        reply.update(splits=splits, end=end and not splits)
        return reply

    def _split_log(self, job: Job) -> list[bytes]:
        """Every split of the exact ``job`` handed out so far, by number."""
        if job.job_id not in self.split_log:
            self.split_providers.pop(job.job_id, None)
            self.split_log[job.job_id] = []
            self._split_provider(job)  # fills the log on its way to where it was
        return self.split_log[job.job_id]

    def _split_provider(self, job: Job) -> Any:
        """The job's split provider, positioned after the splits already handed out.

        Built on first use, also after a restart: the provider is deterministic, so
        skipping the splits the journal says were given out puts it where it was; the
        splits of each task's last hand-out are kept on the way, for repeated requests.
        """
        provider = self.split_providers.get(job.job_id)
        if provider is not None:
            return provider
        dataset = pipeline.deserialize(
            self.state.datasets[job.dataset_id].dataset_def,
            code_allowed=not self.config.registered_pipelines_only,
        )
        provider = pipeline.make_split_provider(dataset)
        last = {
            task.task_id: range(task.last_first, task.last_first + task.last_count)
            for task in (self.state.tasks[t] for t in job.task_ids)
            if task.last_count
        }
        kept: dict[int, list[bytes]] = {task_id: [] for task_id in last}
        log_ = self.split_log.get(job.job_id) if job.exact else None
        for number in range(job.num_splits):
            split, end = pipeline.split_provider_next(provider)
            if end:
                break
            if log_ is not None:
                log_.append(pipeline.encode_split(split))
            for task_id, numbers in last.items():
                if number in numbers:
                    kept[task_id].append(pipeline.encode_split(split))
        self.handouts.update(kept)
        self.split_providers[job.job_id] = provider
        return provider

    def _last_handout(self, job: Job, task: Task) -> list[bytes]:
        if task.task_id not in self.handouts:
            self._split_provider(job)
        splits = self.handouts.get(task.task_id)
        if splits is None or len(splits) != task.last_count:
            raise errors.DataLossError(
                f"the splits last handed to task {task.task_id} of job {job.job_id} cannot be "
                "rebuilt: the dataset's split provider is not deterministic"
            )
        return splits

    def get_snapshot_split(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self.snapshots.next_split(req)

    # -- client-facing -------------------------------------------------------------------------
    def snapshot(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self.snapshots.start(req)

    def get_or_register_dataset(self, req: dict[str, Any]) -> dict[str, Any]:
        dataset_def = as_bytes(req["dataset_def"])
        # Before anything is journaled: refused here, it is refused for good.
        pipeline.check_definition(dataset_def, not self.config.registered_pipelines_only)
        fp = pipeline.fingerprint(dataset_def)
        requested = req.get("dataset_id")
        if requested is None or requested == "":
            requested = ""
        else:
            _check_dataset_id(requested)
        with self.lock:
            if requested:
                existing = self.state.datasets.get(requested)
                if existing is not None:
                    if existing.fingerprint != fp:
                        raise errors.InvalidArgumentError(
                            f"Datasets with the same ID should have the same structure, got "
                            f"conflicting datasets for dataset ID {requested!r}"
                        )
                    return {"dataset_id": requested}
                dataset_id = requested
            else:
                known = self.state.by_fingerprint.get(fp)
                if known is not None:
                    return {"dataset_id": known}
                dataset_id = str(self.state.next_dataset_id)
                while dataset_id in self.state.datasets:
                    dataset_id = str(int(dataset_id) + 1)
            self._commit(
                {
                    "op": "register_dataset",
                    "dataset_id": dataset_id,
                    "fingerprint": fp,
                    "dataset_def": dataset_def,
                    "metadata": dict(req.get("metadata") or {}),
                }
            )
            return {"dataset_id": dataset_id}

    def get_metadata(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"metadata": self._dataset(req["dataset_id"]).metadata}

    def get_or_create_job(self, req: dict[str, Any]) -> dict[str, Any]:
        dataset_id = str(req["dataset_id"])
        job_name = str(req.get("job_name") or "")
        iteration = int(req.get("iteration", 0))
        policy = ShardingPolicy(int(req["policy"]))
        num_consumers = int(req.get("num_consumers", -1))
        cross_trainer_cache = bool(req.get("cross_trainer_cache", False))
        target_workers = str(req.get("target_workers") or "AUTO")
        with self.lock:
            ds = self._dataset(dataset_id)
            if policy in STATIC_POLICIES and not self.config.worker_addresses:
                raise errors.FailedPreconditionError(
                    f"Cannot create a job with sharding policy {policy.name}: static sharding "
                    "needs a fixed list of workers in DispatcherConfig.worker_addresses"
                )
            cardinality = int(ds.metadata.get("cardinality", pipeline.unknown_cardinality()))
            if num_consumers >= 0 and cardinality >= 0:
                raise errors.FailedPreconditionError(
                    "Coordinated reads (num_consumers) require an infinite dataset (or one of "
                    "unknown cardinality), so that no consumer runs out of data early; the "
                    "dataset registered as "
                    f"{dataset_id} has a known, finite cardinality ({cardinality}). "
                    "Add `.repeat()` to the end of the dataset."
                )
            if job_name:
                job_id = self.state.job_keys.get((dataset_id, job_name, iteration))
                if job_id is not None:
                    job = self._job(job_id)
                    if (job.policy, job.num_consumers) != (int(policy), num_consumers):
                        raise errors.InvalidArgumentError(
                            f"Tried to create job with name {job_name} for dataset "
                            f"{dataset_id} (processing mode {policy.name}), but there is "
                            f"already an existing job with that name for dataset "
                            f"{job.dataset_id} (processing mode "
                            f"{ShardingPolicy(job.policy).name})"
                        )
                    _check_same_sharing(job, cross_trainer_cache, target_workers)
                    return self._job_reply(job, req)
            job_id = self.state.next_job_id
            reason = self._nondeterminism(ds)
            exact = (
                policy == ShardingPolicy.DYNAMIC and num_consumers < 0 and not cross_trainer_cache
            )
            if exact:
                exact = self._exactly_once(ds, job_id, reason)
            positions = not exact and num_consumers < 0 and reason is None
            positions = positions and not cross_trainer_cache
            not_restorable = ""
            if num_consumers >= 0:
                not_restorable = (
                    "coordinated reads (num_consumers) cannot be checkpointed: their rounds "
                    "are not replayed"
                )
            elif cross_trainer_cache:
                not_restorable = (
                    "jobs with a cross-trainer cache cannot be checkpointed: their trainers "
                    "share a sliding window of elements, which is not replayed"
                )
            elif reason is not None:
                not_restorable = f"its pipeline is not deterministic ({reason})"
            self._commit(
                {
                    "op": "create_job",
                    "exact": exact,
                    "positions": positions,
                    "not_restorable": not_restorable,
                    "job_id": job_id,
                    "job_name": job_name,
                    "iteration": iteration,
                    "dataset_id": dataset_id,
                    "policy": int(policy),
                    "num_consumers": num_consumers,
                    "target_workers": target_workers,
                    "cross_trainer_cache": cross_trainer_cache,
                }
            )
            self.job_idle_since[job_id] = time.monotonic()
            job = self.state.jobs[job_id]
            for address in sorted(self.state.workers):
                self._create_task(job, address)
            return self._job_reply(job, req)

    def _nondeterminism(self, ds: Any) -> str | None:
        """Why ``ds``'s pipeline may produce different elements when run again, or None.
        Worked out once per dataset (it deserializes the pipeline)."""
        if ds.dataset_id not in self.nondeterminism:
            self.nondeterminism[ds.dataset_id] = self._inspect_determinism(ds)
        return self.nondeterminism[ds.dataset_id]

    def _inspect_determinism(self, ds: Any) -> str | None:
        try:
            dataset = pipeline.deserialize(
                ds.dataset_def, code_allowed=not self.config.registered_pipelines_only
            )
            return pipeline.nondeterminism(dataset)
        except errors.OpError as exc:
            return f"its pipeline cannot be inspected here ({exc})"

    def _exactly_once(self, ds: Any, job_id: int, reason: str | None) -> bool:
        """Whether a distributed_epoch job of ``ds`` can be read exactly once through worker
        failures: its pipeline is deterministic (``reason``, why not, is None); if not,
        say why in the log."""
        if reason is not None:
            log.warning(
                "job %d of dataset %s: %s, so a worker lost mid-job loses the elements it "
                "held (at most once), as in TensorFlow; a deterministic pipeline gets every "
                "element exactly once",
                job_id,
                ds.dataset_id,
                reason,
            )
            return False
        return True

    def _job_reply(self, job: Job, req: dict[str, Any]) -> dict[str, Any]:
        """The job id and, when asked (``acquire``), a new client id and the job's tasks:
        one round trip from iterator creation to reading."""
        reply: dict[str, Any] = {"job_id": job.job_id, "not_restorable": job.not_restorable}
        if req.get("acquire"):
            acquired = self.acquire_client({"job_id": job.job_id})
            reply.update(acquired)
            reply.update(self._client_view(job, acquired["client_id"]))
        return reply

    def _client_view(self, job: Job, client_id: int, held: str | None = None) -> dict[str, Any]:
        """The job as reader ``client_id`` sees it (``ReaderViews.reply``; the task list only
        when the reader does not hold view ``held`` already), and the coordinated-read round
        a joining task waits at (-1: none), which changes without a journaled record."""
        reply = self.reader_views.reply(self.state, self.worker_hosts, job, client_id, held)
        pending = self.joins.front(job.job_id) if job.coordinated else None
        reply["block_round"] = pending.target_round if pending is not None else -1
        return reply

    def acquire_client(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            job = self._job(int(req["job_id"]))
            client_id = self.state.next_client_id
            self._commit({"op": "acquire_client", "client_id": client_id, "job_id": job.job_id})
            self.client_seen[client_id] = time.monotonic()
            return {"client_id": client_id}

    def release_client(self, req: dict[str, Any]) -> dict[str, Any]:
        client_id = int(req["client_id"])
        with self.lock:
            self._release(client_id, req.get("consumed"))
        return {}

    def _release(self, client_id: int, consumed: Any = None) -> None:
        """``consumed``: what the reader says it consumed, per task ([[task id, ranges]]),
        for jobs whose elements carry positions."""
        job_id = self.state.clients.get(client_id)
        if job_id is None:
            return
        record: dict[str, Any] = {"op": "release_client", "client_id": client_id}
        job = self.state.jobs[job_id]
        if consumed and (job.exact or job.positions):
            record["consumed"] = [
                [int(task_id), [[int(a), int(b)] for a, b in ranges]]
                for task_id, ranges in consumed
            ]
        self._commit(record)
        self.former_clients[client_id] = job_id
        self.client_seen.pop(client_id, None)
        self.job_idle_since[job_id] = time.monotonic()
        job = self.state.jobs[job_id]
        self.joins.forget_client(client_id)
        if job.coordinated and not job.garbage_collected:
            self._advance_join(job)  # the consumers left may all have confirmed
        if (
            not job.job_name
            and not job.clients
            and not job.garbage_collected
            and not job.restorable
            and (self.gc_timeout_ms >= 0)
        ):
            # Nobody can join an anonymous job: collect it now rather than let its tasks
            # hold buffers on the workers until the GC timeout.
            self._collect(job)

    def client_heartbeat(self, req: dict[str, Any]) -> dict[str, Any]:
        client_id = int(req["client_id"])
        with self.lock:
            job_id = self.state.clients.get(client_id)
            if job_id is None:
                former = self.former_clients.get(client_id)
                if client_id in self.gc_clients or (
                    former is not None and self.state.jobs[former].garbage_collected
                ):
                    raise errors.NotFoundError(
                        f"The job read by client {client_id} has been garbage collected after "
                        f"being unused for {self.gc_timeout_ms} ms. Consider configuring the "
                        "dispatcher with a larger `job_gc_timeout_ms`."
                    )
                raise errors.NotFoundError(
                    f"Unknown iteration client id {client_id}: it was released or timed out"
                )
            self.client_seen[client_id] = time.monotonic()
            self.client_reports[client_id] = client_report(job_id, req)
            job = self._job(job_id)
            # (Generations: a task run again since, by a restored checkpoint, is not.)
            ended_at = {int(t): int(g) for t, g in req.get("finished_generations", ())}
            for task_id in req.get("finished", ()):
                # A reader received this task's end of sequence from its worker.
                task = self.state.tasks.get(int(task_id))
                if (
                    task is not None
                    and task.job_id == job_id
                    and not task.finished
                    and ended_at.get(task.task_id, task.generation) == task.generation
                ):
                    self._commit({"op": "finish_task", "task_id": task.task_id})
            for report in req.get("delivered", ()):
                self._report_delivered(job, client_id, report)
            if job.coordinated and "current_round" in req:
                self.joins.report(
                    job.job_id,
                    set(job.clients),
                    client_id,
                    int(req["current_round"]),
                    int(req.get("blocked_round", -1)),
                    time.monotonic(),
                )
                self._advance_join(job)
            held = req.get("view")
            return self._client_view(job, client_id, str(held) if held is not None else None)

    def _report_delivered(self, job: Job, client_id: int, report: dict[str, Any]) -> None:
        """A reader's account of the elements it received from a lost task."""
        task = self.state.tasks.get(int(report["task_id"]))
        generation = int(report["generation"])
        if (
            task is None
            or task.job_id != job.job_id
            or client_id not in task.awaiting
            or generation != task.generation
        ):
            return  # already counted, or about a generation since replaced
        ranges = [[int(a), int(b)] for a, b in report["ranges"]]
        self._commit(
            {
                "op": "report_delivered",
                "task_id": task.task_id,
                "client_id": client_id,
                "generation": generation,
                "ranges": ranges,
            }
        )
        if not task.awaiting:
            if job.positions and not task.removed:
                self._push(task.worker_address, task)  # its replay may start now
            log.info(
                "task %d generation %d: every reader reported; the replay leaves out "
                "%d elements they received",
                task.task_id,
                generation,
                sum(b - a for a, b in task.delivered),
            )

    def get_workers(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"workers": sorted(self.state.workers)}

    # -- timers --------------------------------------------------------------------------------
    def renew_leases(self) -> None:
        """Give the workers and clients known at start-up (recovered from the journal) a full
        timeout from the moment the dispatcher serves, plus what a channel's reconnect
        back-off may add: recovery can take a while, and a worker whose connection backed
        off while the dispatcher was down reaches it up to that much later (the grpc
        transport backs off at most 2 s). Dropping it first would only make it register
        again."""
        with self.lock:
            lease = time.monotonic() + RECONNECT_GRACE_S
            for address in self.state.workers:
                self.worker_seen[address] = lease
            for client_id in self.state.clients:
                self.client_seen[client_id] = lease

    def tick(self, now: float, run_job_gc: bool) -> None:
        with self.lock:
            for address, seen in list(self.worker_seen.items()):
                if now - seen > self.worker_timeout and address in self.state.workers:
                    log.warning(
                        "worker %s missed heartbeats for %.1fs; dropping it", address, now - seen
                    )
                    self._commit({"op": "remove_worker", "address": address})
                    self.workers_lost += 1
                    self.worker_seen.pop(address, None)
                    self.worker_index.assigned.pop(address, None)
                    self.joins.drop_worker(address)
            self._place_orphans()
            self._plan_joins()
            for client_id, seen in list(self.client_seen.items()):
                if now - seen > self.client_timeout:
                    log.info("client %d timed out; releasing it", client_id)
                    self._release(client_id)
            if not run_job_gc or self.gc_timeout_ms < 0:
                return
            collected = 0
            for job in list(self.state.jobs.values()):
                if job.garbage_collected or job.clients:
                    continue
                idle = now - self.job_idle_since.get(job.job_id, now)
                if idle * 1000 >= self.gc_timeout_ms:
                    log.info("garbage collecting job %d (unused for %.1fs)", job.job_id, idle)
                    self._collect(job)
                    collected += 1
            if collected and self.journal is None:
                # With a journal, compaction forgets them (a recovery must not see a job
                # vanish between two records); without one nothing else would, and a
                # long-lived dispatcher would keep every job it ever ran.
                self._forget_collected_jobs()

    def _collect(self, job: Job) -> None:
        """Garbage-collect ``job`` and tell its workers to drop its tasks now."""
        self.gc_clients.update(c for c, j in self.state.clients.items() if j == job.job_id)
        self._commit({"op": "gc_job", "job_id": job.job_id})
        self.joins.drop_job(job.job_id)
        self.split_providers.pop(job.job_id, None)
        self.split_log.pop(job.job_id, None)
        for task_id in job.task_ids:
            self.handouts.pop(task_id, None)
            self.task_reports.pop(task_id, None)
        self.client_reports = {
            c: r for c, r in self.client_reports.items() if r.job_id != job.job_id
        }
        by_worker: dict[str, list[int]] = {}
        for task_id in job.task_ids:
            task = self.state.tasks[task_id]
            if not task.removed:
                by_worker.setdefault(task.worker_address, []).append(task_id)
        for address, task_ids in by_worker.items():
            self._send(address, {"delete": task_ids})

    def service(self) -> Service:
        svc = Service(DISPATCHER_SERVICE)
        for name, fn in self.methods.items():
            svc.add(name, refusing_malformed(name, _unary(fn)))
        return svc


def _split_numbers(ranges: list[list[int]], position: int, count: int) -> list[int]:
    """Split numbers ``position .. position + count - 1`` of a task's hand-out order, given
    as [start, stop) ranges of the job's split numbers."""
    numbers: list[int] = []
    for start, stop in ranges:
        if position >= stop - start:
            position -= stop - start
            continue
        take = min(count - len(numbers), stop - start - position)
        numbers.extend(range(start + position, start + position + take))
        position = 0
        if len(numbers) == count:
            break
    return numbers


def _draw_splits(provider: Any, want: int) -> tuple[list[bytes], bool]:
    """Up to ``want`` encoded splits from ``provider``, and whether it ran out."""
    splits: list[bytes] = []
    while len(splits) < want:
        split, end = pipeline.split_provider_next(provider)
        if end:
            return splits, True
        splits.append(pipeline.encode_split(split))
    return splits, False


def _check_same_sharing(job: Job, cross_trainer_cache: bool, target_workers: str) -> None:
    """Readers of one named job must agree on how they share it (TensorFlow's check and
    wording): the cross-trainer cache and ``target_workers``."""
    diff = []
    if job.cross_trainer_cache != cross_trainer_cache:
        state = {True: "enabled", False: "disabled"}
        diff.append(
            f"Existing cross-trainer cache: <{state[job.cross_trainer_cache]}>; got "
            f"<{state[cross_trainer_cache]}>."
        )
    if job.target_workers != target_workers:
        diff.append(f"Existing target workers: <{job.target_workers}>; got <{target_workers}>.")
    if diff:
        raise errors.InvalidArgumentError(
            f"Tried to create job with name {job.job_name}, but found an existing job with "
            f"different parameters: {' '.join(diff)}"
        )


def _check_dataset_id(dataset_id: Any) -> None:
    """Refuse, before anything is journaled, an explicit dataset id that is not a string of
    printable ASCII characters (what a worker, a file name or a log line can carry)."""
    if not (isinstance(dataset_id, str) and dataset_id.isascii() and dataset_id.isprintable()):
        raise errors.InvalidArgumentError(
            "`dataset_id` must be a non-empty string of printable ASCII characters, got "
            f"{dataset_id!r}"
        )


def _unary(fn: Any) -> Any:
    def handler(frames: list[memoryview], context: CallContext) -> list[Any]:
        return pack(fn(unpack(frames)))

    return handler


class DispatchServer:
    """An in-process tf.data service dispatch server (TensorFlow's class and behaviour).

    A fault-tolerant dispatcher (``work_dir`` + ``fault_tolerant_mode``) restarted on the same
    port with the same ``work_dir`` recovers its datasets, jobs, splits and workers.

    Args:
      config: a ``DispatcherConfig`` (or TensorFlow's ``DispatcherConfig`` proto);
        None for the defaults (a free loopback port, ``grpc``, not fault tolerant).
      start: start serving at once; otherwise call ``start``.

    Raises:
      ValueError: ``fault_tolerant_mode`` without a ``work_dir``, or another invalid field.
      UnavailableError: the port cannot be bound (already in use).
      FailedPreconditionError: the server would listen beyond loopback without
        authentication (see the Security guide).
      DataLossError: the journal in ``work_dir`` is damaged beyond a torn tail.

    Examples:
        >>> dispatcher = DispatchServer()                       # doctest: +SKIP
        >>> dispatcher.target                                   # doctest: +SKIP
        'grpc://localhost:43211'
        >>> dispatcher.stop()                                   # doctest: +SKIP
    """

    def __init__(self, config: DispatcherConfig | Any = None, start: bool = True) -> None:
        config = dispatcher_config_from(config)
        if config.fault_tolerant_mode and not config.work_dir:
            raise ValueError(
                "Cannot enable fault tolerant mode without configuring a work dir. "
                "Make sure to set `work_dir` in the `config` object passed to "
                "`DispatcherServer`."
            )
        self._config = config
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._stop_event = threading.Event()
        self._options = transport_options_of(config)
        host = bind_host("dispatcher", self._options)
        self._core = _Dispatcher(config)
        transport = get_transport(config.protocol)
        server_options = metered(self._options, config.metrics_port)
        self._meter = server_options.call_meter
        self._listener = transport.serve(
            f"{host}:{int(config.port)}",
            [self._core.service(), status_service(self.status)],
            server_options,
        )
        self._port = int(self._listener.port)
        self._metrics = None
        self._gc_thread: threading.Thread | None = None
        self._nudge_thread: threading.Thread | None = None
        with stopped_on_failure(self):  # (refused by the dispatcher, a metrics port in use)
            self._metrics = start_metrics(
                config,
                lambda: dispatcher_families(self.status()),
                f"dispatcher {self._address}",
                self._listener,
                self.status,
            )
            stop_at_exit(self)
            if start:
                self.start()

    def start(self) -> None:
        """Start serving; idempotent. RuntimeError after ``stop``."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("Server cannot be started after it has been stopped")
            if self._started:
                return
            self._listener.start()
            self._started = True
            self._core.renew_leases()
            self._gc_thread = threading.Thread(
                target=_gc_loop,
                args=(weakref.ref(self._core), self._stop_event),
                name=f"tw-dispatcher-gc-{self._port}",
                daemon=True,
            )
            self._gc_thread.start()
            self._nudge_thread = threading.Thread(
                target=_nudge_loop,
                args=(self._config.protocol, self._options, self._core.outbox),
                name=f"tw-dispatcher-nudge-{self._port}",
                daemon=True,
            )
            self._nudge_thread.start()
        # DEBUG: `tensorwire dispatcher` announces this event with its ready line on stdout,
        # and an INFO line beside it would say the same thing twice.
        log.debug("dispatcher serving at %s", self.target)

    def join(self) -> None:
        """Block until the server is stopped."""
        while not self._stop_event.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop serving; idempotent. Returns once the port and the dispatcher's threads
        are released."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_event.set()
        self._core.outbox.put(None)
        try:
            self._listener.stop(0)
            if self._metrics is not None:
                self._metrics.stop()
        finally:
            if self._core.journal is not None:
                self._core.journal.close()
            threads = [t for t in (self._gc_thread, self._nudge_thread) if t is not None]
            join_threads(
                threads, time.monotonic() + _STOP_JOIN_SECONDS, f"dispatcher {self.target}"
            )

    _stop = stop

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    @property
    def target(self) -> str:
        """``"<protocol>://localhost:<port>"``."""
        return f"{self._config.protocol}://localhost:{self._port}"

    @property
    def _address(self) -> str:
        return f"localhost:{self._port}"

    def _num_workers(self) -> int:
        """Workers currently registered."""
        with self._core.lock:
            return len(self._core.state.workers)

    def _num_jobs(self, include_gc: bool = False) -> int:
        with self._core.lock:
            return sum(
                1 for j in self._core.state.jobs.values() if include_gc or not j.garbage_collected
            )

    # -- observing ---------------------------------------------------------------------------
    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` when ``DispatcherConfig.metrics_port`` is set, else
        None."""
        return self._metrics.url if self._metrics is not None else None

    def status(self) -> DispatcherStatus:
        """A snapshot of the dispatcher: datasets, jobs with their tasks and readers,
        workers, and the journal.

        Returns:
          A ``tensorwire.observe.DispatcherStatus``; also served to other processes
          (``tensorwire status grpc://HOST:PORT``).

        Examples:
            >>> dispatcher = DispatchServer()                       # doctest: +SKIP
            >>> [job.job_id for job in dispatcher.status().jobs]    # doctest: +SKIP
            []
        """
        return dispatcher_status(self, self._core)


def _nudge_loop(protocol: str, options: TransportOptions, outbox: queue.SimpleQueue[Any]) -> None:
    """Send the nudges the dispatcher queued, until a None arrives."""
    while True:
        item = outbox.get()
        if item is None:
            return
        address, message = item
        try:
            channel_to(protocol, address, options).call_async(
                WORKER_SERVICE, "Nudge", pack(message), timeout=2.0
            )
        except errors.OpError as exc:
            log.debug("nudging worker %s failed: %s", address, exc)


def _gc_loop(core_ref: weakref.ref[_Dispatcher], stop: threading.Event) -> None:
    last_gc = time.monotonic()
    while True:
        core = core_ref()
        if core is None:
            return
        tick = min(core.gc_interval, core.worker_timeout / 4, 0.5)
        del core
        if stop.wait(max(tick, 0.005)):
            return
        core = core_ref()
        if core is None:
            return
        now = time.monotonic()
        run_gc = now - last_gc >= core.gc_interval
        if run_gc:
            last_gc = now
        try:
            core.tick(now, run_gc)
        except errors.OpError as exc:  # e.g. the journal closed during stop
            log.debug("dispatcher GC tick failed: %s", exc)
        del core
