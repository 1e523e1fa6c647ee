"""WorkerServer: runs the tasks the dispatcher assigns and streams their elements to clients.

Each task has a producer thread that iterates the task's pipeline (the whole dataset, splits
from the dispatcher, or a static shard) into a bounded buffer; client streams drain that
buffer first come, first served, several elements per message. Coordinated reads
(``num_consumers``) are served in rounds: round ``k`` of a task is the next
``num_consumers`` elements, element ``i`` going to consumer ``i``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tensorwire import errors
from tensorwire.lifecycle import stop_at_exit, stopped_on_failure
from tensorwire.observe import status_service
from tensorwire.transport import get_transport
from tensorwire.transport.base import CallContext, Service
from tensorwire.transport.threads import join_threads

from . import host, pipeline
from .config import (
    DEFAULT_CROSS_TRAINER_CACHE_SIZE_BYTES,
    DEFAULT_DISPATCHER_TIMEOUT_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS,
    WorkerConfig,
    bind_host,
    transport_options_of,
    worker_config_from,
)
from .elements import Compressor, element_nbytes, encode_elements, eos_message
from .metrics import metered, start_metrics, worker_families
from .positions import BufferIndices, IndexRanges, SkipCursor
from .protocol import (
    DISPATCHER_SERVICE,
    STATIC_POLICIES,
    WORKER_SERVICE,
    ShardingPolicy,
    as_bytes,
    call,
    call_with_retries,
    pack,
    refusing_malformed,
    unpack,
)
from .sent_log import SentLog, SentLogs
from .snapshot_writer import SnapshotWriters
from .status import task_stats, worker_status
from .trainer_cache import TrainerWindow

if TYPE_CHECKING:
    from tensorwire.observe import WorkerStatus

__all__ = ["WorkerServer"]

log = logging.getLogger(__name__)

_BUFFER_BYTES = 32 << 20
#: Elements of a streamed message at most, in bytes (one larger element is sent alone): one
#: message costs each side about 100 us (a send, the window's credit, the release of its
#: shared memory) whatever its size, so 1 MiB elements move at twice the rate in messages
#: of 4 MiB as in messages of 1 MiB. The first messages of a stream carry fewer elements
#: (``get_elements``), so this does not delay the first element.
_MESSAGE_BYTES = 4 << 20
_MAX_ELEMENTS_PER_MESSAGE = 4096
_ROUNDS_KEPT = 8
#: How long a stream waits for its task's next element before it looks again whether the
#: worker stops (a task that stops, or a new element, wakes it at once).
_STREAM_WAIT_S = 10.0
_TASK_WAIT = 5.0  # seconds a client request waits for a task the worker has not heard of
#: How long ``stop()`` waits for the worker's threads (heartbeat, task producers) to end.
_STOP_JOIN_SECONDS = 5.0


def _as_op_error(exc: BaseException) -> errors.OpError:
    if isinstance(exc, errors.OpError):
        return exc
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        return errors.InvalidArgumentError(f"{type(exc).__name__}: {exc}")
    return errors.UnknownError(f"{type(exc).__name__}: {exc}")


#: Between two GetSplits of a replay the dispatcher holds back (its readers have not all
#: said what they received yet).
_REPLAY_POLL_S = 0.05


class _RemoteSplitProvider:  # implements dataset.sharding.SplitProvider
    """Splits of a distributed_epoch job, fetched from the dispatcher a few at a time.

    For an exact job (``task`` given) the position counts the task's splits over all its
    generations: a replay starts at 0 and gets the splits its task was given before, in
    the same order, then new ones; the first reply also says which element indices the
    readers already received (``task.skip``)."""

    def __init__(
        self,
        worker: _Worker,
        job_id: int,
        task_id: int,
        stopped: threading.Event,
        task: _Task | None = None,
    ):
        self._worker = worker
        self._job_id = job_id
        self._task_id = task_id
        self._stopped = stopped
        self._task = task
        self._pending: collections.deque[bytes] = collections.deque()
        self._position = 0  # splits received so far; the dispatcher's idempotency key
        self._end = False
        self._batch = 1
        self._lock = threading.Lock()

    def get_next(self) -> Any:
        with self._lock:
            return self._get_next_locked()

    def _get_next_locked(self) -> Any:
        if not self._pending and not self._end:
            # Retried as is: a request whose reply was lost gets the same splits again.
            request = {
                "job_id": self._job_id,
                "task_id": self._task_id,
                "max": self._batch,
                "position": self._position,
                "worker": self._worker.incarnation,
            }
            if self._task is not None:
                request.update(
                    generation=self._task.generation, worker_address=self._worker.address
                )
            reply = self._call(request)
            if self._task is not None and "skip" in reply:
                self._task.skip_from(reply["skip"])
            splits = [as_bytes(s) for s in reply["splits"]]
            self._position += len(splits)
            self._pending.extend(splits)
            self._end = bool(reply["end"])
            # Ask for more per call as the job goes on: few round trips for big jobs, and
            # small jobs still spread over several workers.
            self._batch = min(self._batch * 2, 16)
        if self._pending:
            return pipeline.decode_split(self._pending.popleft())
        return None

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self._worker.dispatcher_timeout
        while True:
            reply: dict[str, Any] = self._worker.dispatcher_call(
                "GetSplits", request, should_stop=self._stopped.is_set
            )
            if not reply.get("wait"):
                return reply
            if time.monotonic() >= deadline:
                raise errors.DeadlineExceededError(
                    f"task {self._task_id}: the dispatcher held back its splits for "
                    f"{self._worker.dispatcher_timeout:.0f}s (a replay waits for every "
                    "reader of the job to report what it received)"
                )
            if self._stopped.wait(_REPLAY_POLL_S):
                raise errors.CancelledError(f"task {self._task_id} was stopped")

    def reset(self) -> None:  # part of the SplitProvider interface; a task never rewinds
        raise errors.UnimplementedError("a distributed_epoch task cannot rewind its splits")

    def cancel(self) -> None:
        self._stopped.set()

    def num_splits(self) -> int | None:
        return None


class _Task:
    def __init__(self, worker: _Worker, definition: dict[str, Any]) -> None:
        self.worker = worker
        self.task_id = int(definition["task_id"])
        self.job_id = int(definition["job_id"])
        self.definition = definition
        self.num_consumers = int(definition.get("num_consumers", -1))
        self.cond = threading.Condition()
        self.buffer: collections.deque[Any] = collections.deque()
        self.capacity = 2
        self.max_capacity = 2
        self.producer_blocked = False
        self.element_bytes = 0
        self.exhausted = False
        self.error: errors.OpError | None = None
        self.stopped = threading.Event()
        self.compression = definition.get("compression") or None
        # Exact jobs: every element has an index in the task's output (see positions.py);
        # a replay leaves out the indices in ``skip``; ``indices`` knows the buffered
        # elements' indices.
        self.exact = bool(definition.get("exact", False))
        self.generation = int(definition.get("generation", 0))
        self.skip: SkipCursor | None = None
        if definition.get("skip"):  # a parallel_epochs replay (exact jobs learn it later)
            self.skip_from(definition["skip"])
        self.produced = 0
        self.indices = BufferIndices()
        # What each reader (by its key) was sent and has not confirmed (sent_log.py).
        self.sent = SentLogs(f"task {self.task_id} on worker {self.worker.address}")
        # Coordinated reads.
        self.round_cond = threading.Condition()
        self.rounds: dict[int, list[Any]] = {}
        self.round_taken: dict[int, set[int]] = {}
        self.next_round = 0
        # Cross-trainer cache: every trainer reads the task's elements from this window.
        self.window: TrainerWindow | None = None
        if definition.get("cross_trainer_cache"):
            self.window = TrainerWindow(worker.cross_trainer_cache_bytes, self._take_for_window)
        # For status and metrics (status.py, metrics.py): plain totals, one addition each.
        # elements_produced is also the next buffered element's sequence number (indices).
        self.started = time.monotonic()
        self.elements_produced = 0
        self.elements_served = 0
        self.thread = threading.Thread(
            target=self._produce, name=f"tw-data-task-{self.task_id}", daemon=True
        )
        self.thread.start()

    # -- production --------------------------------------------------------------------------
    def _iterator(self) -> Iterator[Any]:
        d = self.definition
        dataset_def = self.worker.dataset_def(
            str(d["dataset_id"]), str(d.get("fingerprint", "")), self.stopped
        )
        dataset = pipeline.deserialize(
            dataset_def, code_allowed=not self.worker.config.registered_pipelines_only
        )
        policy = ShardingPolicy(int(d["policy"]))
        if policy == ShardingPolicy.DYNAMIC:
            provider = _RemoteSplitProvider(
                self.worker, self.job_id, self.task_id, self.stopped, self if self.exact else None
            )
            return pipeline.iterate_splits(dataset, provider)
        if policy in STATIC_POLICIES:
            return pipeline.iterate_shard(
                dataset, int(d["num_workers"]), int(d["worker_index"]), int(policy)
            )
        return pipeline.iterate(dataset)

    def skip_from(self, ranges: list[Any]) -> None:
        """The indices the readers already received; called before the first split."""
        self.skip = SkipCursor(IndexRanges(ranges)) if ranges else None

    def _produce(self) -> None:
        exact = self.exact
        skipped = False
        try:
            it = self._iterator()
            first = True
            for element in it:
                if exact:
                    index = self.produced
                    self.produced += 1
                    if self.skip is not None and self.skip.skips(index):
                        skipped = True
                        continue  # a reader has it already
                if first:
                    first = False
                    self.element_bytes = max(1, element_nbytes(element))
                    self.max_capacity = max(2, min(8192, _BUFFER_BYTES // self.element_bytes))
                    # Start small so a new task does not spend its first milliseconds (and
                    # the GIL) filling a large buffer while its first element waits to be
                    # sent; take() grows the buffer while consumers keep emptying it.
                    self.capacity = min(16, self.max_capacity)
                with self.cond:
                    while len(self.buffer) >= self.capacity and not self.stopped.is_set():
                        self.producer_blocked = True
                        self.cond.wait(0.5)
                    if self.stopped.is_set():
                        return
                    if skipped:
                        self.indices.after_skip(self.elements_produced, index)
                        skipped = False
                    self.buffer.append(element)
                    self.elements_produced += 1
                    if len(self.buffer) == 1:
                        self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the clients
            if not self.stopped.is_set():
                log.warning("task %d failed: %s", self.task_id, exc)
                self.error = _as_op_error(exc)
        finally:
            with self.cond:
                self.exhausted = True
                self.cond.notify_all()

    # -- consumption ---------------------------------------------------------------------------
    def take(self, max_elements: int, timeout: float) -> tuple[list[Any], bool]:
        """Up to ``max_elements`` ready elements (waits for one), and end_of_sequence."""
        out, eos, _ = self.take_chunk(max_elements, timeout)
        return out, eos

    def open_sent(
        self, reader: str, resume_from: int
    ) -> tuple[SentLog, int, list[tuple[int, list[Any]]]]:
        """A request of ``reader`` (its key), which received every position of this
        generation before ``resume_from``: its log, the lease its takes hold, and what it
        was sent and did not receive (``SentLogs.open``, which raises DataLossError for a
        reader whose unconfirmed elements were forgotten). ``close_sent`` when the request
        ends."""
        with self.cond:
            return self.sent.open(reader, resume_from)

    def close_sent(self, sent: SentLog) -> None:
        """The request that ``open_sent`` gave ``sent`` ended."""
        with self.cond:
            self.sent.done(sent)

    def unconfirmed(self) -> tuple[int, int]:
        """Bytes sent to readers and not confirmed, and the readers with a log (status)."""
        with self.cond:
            return self.sent.nbytes, len(self.sent)

    def forget_idle_readers(self) -> None:
        """Drop the logs of readers gone silent (``SentLogs.forget_idle``)."""
        with self.cond:
            self.sent.forget_idle()

    def take_chunk(
        self,
        max_elements: int,
        timeout: float,
        generation: int | None = None,
        sent: SentLog | None = None,
        lease: int = 0,
    ) -> tuple[list[Any], bool, int | None]:
        """Like ``take``, plus the index of the first element (exact jobs; the others
        follow it without gaps) or None. ``generation``: what the reader reads; another
        generation of the task is refused (UnavailableError, worth retrying: the reader
        or this worker has not caught up with the dispatcher yet). ``sent``: the log of the
        reader the elements are for, which records them, while ``lease`` is its latest
        (a request the reader has since replaced is refused, CancelledError)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            if generation is not None and generation != self.generation:
                raise errors.UnavailableError(
                    f"task {self.task_id} is at generation {self.generation} on worker "
                    f"{self.worker.address}, the reader asked for generation {generation}"
                )
            while not self.buffer and not self.exhausted and not self.stopped.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return [], False, None
                self.cond.wait(remaining)
            if self.stopped.is_set():
                raise errors.CancelledError(f"task {self.task_id} was deleted")
            if sent is not None and sent.lease != lease:
                raise errors.CancelledError(
                    f"a newer request of the same reader reads task {self.task_id}"
                )
            blocked = self.producer_blocked
            if blocked and self.capacity < self.max_capacity:
                # The producer outran the consumers: a larger buffer (and messages) pays.
                self.capacity = min(self.capacity * 4, self.max_capacity)
            self.producer_blocked = False
            n = min(len(self.buffer), max_elements)
            if self.element_bytes:
                n = min(n, max(1, _MESSAGE_BYTES // self.element_bytes))
            first: int | None = None
            if self.exact and n:
                first, n = self.indices.take(n)
            out = [self.buffer.popleft() for _ in range(n)]
            self.elements_served += n
            if sent is not None and first is not None and n:
                sent.add(first, out, n * self.element_bytes)
            if blocked or len(self.buffer) + n >= self.capacity:
                self.cond.notify_all()  # the producer may be waiting for room
            eos = self.exhausted and not self.buffer
        if eos and not out and self.error is None:
            self.worker.task_finished(self.task_id, self.generation)
        return out, eos, first

    def _take_for_window(self, max_elements: int, timeout: float) -> tuple[list[Any], bool]:
        """``take`` for the cross-trainer window; a failed pipeline raises its error."""
        out, eos = self.take(max_elements, timeout)
        if eos and not out and self.error is not None:
            raise self.error
        return out, eos

    def round_element(self, consumer: int, round_index: int, timeout: float) -> tuple[Any, bool]:
        if not 0 <= consumer < self.num_consumers:
            raise errors.InvalidArgumentError(
                f"consumer_index {consumer} is out of range for {self.num_consumers} consumers"
            )
        deadline = time.monotonic() + timeout
        with self.round_cond:
            while self.next_round <= round_index:
                # A consumer running ahead waits for the others rather than letting rounds
                # they have not read yet be dropped: rounds are strict.
                if len(self.rounds) >= _ROUNDS_KEPT:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.stopped.is_set():
                        raise errors.DeadlineExceededError(
                            f"consumer {consumer} is {_ROUNDS_KEPT} rounds ahead of the others "
                            f"on task {self.task_id}"
                        )
                    self.round_cond.wait(min(remaining, 0.5))
                    continue
                elements: list[Any] = []
                while len(elements) < self.num_consumers:
                    got, eos = self.take(
                        self.num_consumers - len(elements), max(0.0, deadline - time.monotonic())
                    )
                    elements.extend(got)
                    if eos and len(elements) < self.num_consumers:
                        if self.error is not None:
                            raise self.error
                        return None, True
                    if not got and time.monotonic() >= deadline:
                        raise errors.DeadlineExceededError(
                            f"round {round_index} of task {self.task_id} was not ready in time"
                        )
                self.rounds[self.next_round] = elements
                self.round_taken[self.next_round] = set()
                self.next_round += 1
            kept = self.rounds.get(round_index)
            if kept is None:
                raise errors.FailedPreconditionError(
                    f"round {round_index} of task {self.task_id} was already read by every "
                    "consumer; coordinated consumers must read rounds in order"
                )
            taken = self.round_taken[round_index]
            taken.add(consumer)
            element = kept[consumer]
            if len(taken) == self.num_consumers:
                self.rounds.pop(round_index, None)
                self.round_taken.pop(round_index, None)
                self.round_cond.notify_all()
            return element, False

    def stop(self) -> None:
        self.stopped.set()
        if self.window is not None:
            self.window.cancel(errors.CancelledError(f"task {self.task_id} was deleted"))
        with self.cond:
            self.cond.notify_all()


class _Worker:
    """The worker's logic, independent of how it is served."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.address = ""
        # Tells this process's requests from those of an earlier worker on the same address.
        self.incarnation = secrets.token_hex(8)
        self.lock = threading.Lock()
        self.tasks: dict[int, _Task] = {}
        self.finished: set[int] = set()
        # The generation each task had when it finished or was deleted: a restored reader
        # checkpoint runs it again as a newer one, which readers then wait for.
        self.ended_generation: dict[int, int] = {}
        self.reported_finished: set[int] = set()
        self.deleted: set[int] = set()
        self.datasets: dict[str, bytes] = {}
        self.heartbeat_now = threading.Event()
        self.task_arrived = threading.Condition(self.lock)
        self.stopped = threading.Event()
        #: Token/TLS for its listener and for its calls to the dispatcher.
        self.options = transport_options_of(config)
        self.heartbeat_interval = (
            config.heartbeat_interval_ms or DEFAULT_HEARTBEAT_INTERVAL_MS
        ) / 1000
        self.dispatcher_timeout = (
            config.dispatcher_timeout_ms or DEFAULT_DISPATCHER_TIMEOUT_MS
        ) / 1000
        self.cross_trainer_cache_bytes = _positive_int(
            "cross_trainer_cache_size_bytes",
            config.cross_trainer_cache_size_bytes,
            DEFAULT_CROSS_TRAINER_CACHE_SIZE_BYTES,
        )
        if config.host_id is not None and (
            not isinstance(config.host_id, str) or not config.host_id.strip()
        ):
            raise ValueError(f"`host_id` must be a non-empty string, got {config.host_id!r}")
        #: The host identity readers with target_workers="LOCAL" compare with theirs.
        self.host_id = config.host_id.strip() if config.host_id else host.host_id()
        #: distributed_save: one writer thread per save in progress (snapshot_writer.py).
        self.snapshot_writers = SnapshotWriters(self)

    def dispatcher_call(self, method: str, request: dict[str, Any], should_stop: Any = None) -> Any:
        def once() -> dict[str, Any]:
            return call(
                self.config.protocol,
                self.config.dispatcher_address,
                DISPATCHER_SERVICE,
                method,
                request,
                timeout=10.0,
                options=self.options,
            )

        return call_with_retries(
            once,
            deadline=time.monotonic() + self.dispatcher_timeout,
            what=f"{method} to the dispatcher at {self.config.dispatcher_address}",
            should_stop=should_stop or self.stopped.is_set,
        )

    def dataset_def(self, dataset_id: str, fingerprint: str, stopped: threading.Event) -> bytes:
        # Cached by id *and* content: a dispatcher restarted without its journal may give
        # the same id to another dataset.
        key = f"{dataset_id}/{fingerprint}"
        with self.lock:
            cached = self.datasets.get(key)
        if cached is not None:
            return cached
        reply = self.dispatcher_call(
            "GetDatasetDef", {"dataset_id": dataset_id}, should_stop=stopped.is_set
        )
        data = as_bytes(reply["dataset_def"])
        with self.lock:
            self.datasets[key] = data
        return data

    def task_finished(self, task_id: int, generation: int = 0) -> None:
        with self.lock:
            if task_id not in self.finished:
                self.finished.add(task_id)
                self.ended_generation[task_id] = generation
                self.heartbeat_now.set()  # tell the dispatcher now, not at the next beat

    def heartbeat(self) -> None:
        with self.lock:
            current = sorted(self.tasks)
            finished = sorted(self.finished - self.reported_finished)
            generations = {t.task_id: t.generation for t in self.tasks.values() if t.exact}
            tasks = list(self.tasks.values())
        for running in tasks:
            running.forget_idle_readers()
        reply = call(
            self.config.protocol,
            self.config.dispatcher_address,
            DISPATCHER_SERVICE,
            "WorkerHeartbeat",
            {
                "worker_address": self.address,
                "tasks": current,
                "finished": finished,
                "incarnation": self.incarnation,
                "generations": generations,
                "host_id": self.host_id,
                "stats": task_stats(tasks),
            },
            timeout=10.0,
            options=self.options,
        )
        with self.task_arrived:
            self.reported_finished.update(finished)
            self._add_tasks(reply["tasks"])
            self.deleted.difference_update(int(d["task_id"]) for d in reply["tasks"])
            for task_id in reply["delete"]:
                task = self.tasks.pop(int(task_id), None)
                if task is not None:
                    task.stop()
                    self.deleted.add(int(task_id))
                    self.ended_generation[int(task_id)] = task.generation
            self.task_arrived.notify_all()
        self.snapshot_writers.update(reply.get("snapshots") or [])

    def _add_tasks(self, definitions: list[dict[str, Any]]) -> None:
        """Start the tasks not running yet. Caller holds ``task_arrived``."""
        for definition in definitions:
            task_id = int(definition["task_id"])
            running = self.tasks.get(task_id)
            if running is not None and int(definition.get("generation", 0)) > running.generation:
                # The dispatcher replays the task (this worker was taken for lost): what
                # this run produced is superseded, and the replay starts over.
                running.stop()
                del self.tasks[task_id]
                self.finished.discard(task_id)
                running = None
            generation = int(definition.get("generation", 0))
            if running is None and generation > self.ended_generation.get(task_id, generation):
                # Finished or deleted, and run again from a reader's restored checkpoint.
                self.finished.discard(task_id)
                self.reported_finished.discard(task_id)
                self.deleted.discard(task_id)
                del self.ended_generation[task_id]
            if running is None and task_id not in self.finished and not self.stopped.is_set():
                self.tasks[task_id] = _Task(self, definition)
        self.task_arrived.notify_all()

    def _rerun(self, definition: dict[str, Any]) -> bool:
        """Whether ``definition`` runs a finished or deleted task again (a newer generation,
        after a reader restored a checkpoint)."""
        task_id = int(definition["task_id"])
        generation = int(definition.get("generation", 0))
        return generation > self.ended_generation.get(task_id, generation)

    def get_task(self, task_id: int, generation: int | None = None) -> _Task | None:
        """The task, or None when it finished and was since deleted (end of sequence).

        ``generation``: the one the reader reads; when it is newer than the one that
        finished or was deleted here, the task runs again (a restored checkpoint) and the
        reader waits for it instead."""
        deadline = time.monotonic() + _TASK_WAIT
        with self.task_arrived:
            running = self.tasks.get(task_id)
            if running is not None and generation is not None and generation > running.generation:
                self.heartbeat_now.set()  # the dispatcher has a newer generation for it
            while task_id not in self.tasks:
                ended = self.ended_generation.get(task_id)
                rerun = generation is not None and ended is not None and generation > ended
                if task_id in self.finished and not rerun:
                    return None
                if task_id in self.deleted and not rerun:
                    raise errors.FailedPreconditionError(
                        f"task {task_id} was deleted from worker {self.address}"
                    )
                if self.stopped.is_set():
                    raise errors.UnavailableError(f"worker {self.address} is stopping")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.UnavailableError(
                        f"task {task_id} is not (yet) known to worker {self.address}"
                    )
                self.heartbeat_now.set()  # the dispatcher may have assigned it just now
                self.task_arrived.wait(min(remaining, 0.05))
            return self.tasks[task_id]

    # -- service -------------------------------------------------------------------------------
    def get_elements(self, frames: list[memoryview], context: CallContext) -> Iterator[Any]:
        req = unpack(frames)
        task = self.get_task(int(req["task_id"]), _generation_of(req))
        if task is None:
            yield eos_message()
            return
        max_elements = max(
            1,
            min(int(req.get("max_elements", _MAX_ELEMENTS_PER_MESSAGE)), _MAX_ELEMENTS_PER_MESSAGE),
        )
        generation = _generation_of(req)
        compressor = Compressor(task.compression)
        with _sent_log(task, req) as (sent, lease, unreceived):
            # What this reader was sent before and did not receive (a broken stream) first.
            for position, elements in unreceived:
                yield encode_elements(elements, compressor, position)
            # Small messages first so the first element leaves at once, then larger ones (up
            # to max_elements) so small elements do not pay a message each.
            batch = 1
            while True:
                if self.stopped.is_set():
                    raise errors.UnavailableError(f"worker {self.address} is stopping")
                if sent is not None and sent.full():
                    return  # not the end: the reader's next stream confirms this window
                out, eos, first = task.take_chunk(batch, _STREAM_WAIT_S, generation, sent, lease)
                batch = min(batch * 4, max_elements)
                if out:
                    yield encode_elements(out, compressor, first)
                if eos:
                    if task.error is not None:
                        raise task.error
                    yield eos_message()
                    return

    def take_elements(self, frames: list[memoryview], context: CallContext) -> Any:
        """Up to ``max_elements`` elements of a task, waiting at most ``wait_s`` for the
        first: how consumers of a shared job read, on demand (an empty reply means "none
        yet, ask again")."""
        req = unpack(frames)
        task = self.get_task(int(req["task_id"]), _generation_of(req))
        if task is None:
            return eos_message()
        max_elements = max(1, min(int(req.get("max_elements", 1)), _MAX_ELEMENTS_PER_MESSAGE))
        wait = max(0.0, min(float(req.get("wait_s", 1.0)), 10.0))
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - 0.5))
        if self.stopped.is_set():
            raise errors.UnavailableError(f"worker {self.address} is stopping")
        trainer_id = req.get("trainer_id")
        if task.window is not None or trainer_id is not None:
            return _take_from_window(task, trainer_id, max_elements, wait)
        with _sent_log(task, req) as (sent, lease, unreceived):
            if unreceived:
                # The reader's last take did not arrive (its call failed): the same elements.
                position, elements = unreceived[0]
                compressor = Compressor(task.compression)
                return encode_elements(elements[:max_elements], compressor, position)
            out, eos, first = task.take_chunk(max_elements, wait, _generation_of(req), sent, lease)
        if not out and eos:
            if task.error is not None:
                raise task.error
            return eos_message()
        return encode_elements(out, Compressor(task.compression), first)

    def get_round_element(self, frames: list[memoryview], context: CallContext) -> Any:
        req = unpack(frames)
        task = self.get_task(int(req["task_id"]))
        if task is None:
            return eos_message()
        remaining = context.time_remaining()
        element, eos = task.round_element(
            int(req["consumer_index"]),
            int(req["round"]),
            timeout=min(remaining, 30.0) if remaining is not None else 30.0,
        )
        if eos:
            return eos_message()
        return encode_elements([element], Compressor(task.compression))

    def nudge(self, frames: list[memoryview], context: CallContext) -> Any:
        """The dispatcher pushes tasks it just assigned here, or deleted, or saves that
        started (``distributed_save``)."""
        request = unpack(frames)
        with self.task_arrived:
            self._add_tasks(
                [
                    d
                    for d in request.get("tasks", [])
                    if int(d["task_id"]) not in self.deleted or self._rerun(d)
                ]
            )
            for task_id in request.get("delete", []):
                task = self.tasks.pop(int(task_id), None)
                if task is not None:
                    task.stop()
                    self.ended_generation[int(task_id)] = task.generation
                self.deleted.add(int(task_id))
        self.snapshot_writers.update(request.get("snapshots") or [])
        return pack({})

    def service(self) -> Service:
        svc = Service(WORKER_SERVICE)
        svc.add(
            "GetElements",
            refusing_malformed("GetElements", self.get_elements, streaming=True),
            streaming=True,
        )
        for name, handler in (
            ("TakeElements", self.take_elements),
            ("GetRoundElement", self.get_round_element),
            ("Nudge", self.nudge),
        ):
            svc.add(name, refusing_malformed(name, handler))
        return svc

    def stop(self) -> list[threading.Thread]:
        """Stop every task; their producer threads, which end soon after, to join."""
        self.stopped.set()
        self.heartbeat_now.set()
        with self.task_arrived:
            tasks = list(self.tasks.values())
            self.tasks.clear()
            self.task_arrived.notify_all()
        for task in tasks:
            task.stop()
        return [task.thread for task in tasks] + self.snapshot_writers.threads()


def _take_from_window(task: _Task, trainer_id: Any, max_elements: int, wait: float) -> Any:
    """TakeElements of a cross-trainer cache job: the trainer's next elements."""
    if task.window is None or not trainer_id:
        raise errors.InvalidArgumentError(
            f"task {task.task_id} of job {task.job_id} "
            + (
                "uses a cross-trainer cache: every reader must pass a trainer id"
                if task.window is not None
                else "does not use a cross-trainer cache, but the reader passed a trainer id"
            )
        )
    out = task.window.get(str(trainer_id), max_elements, wait)
    return encode_elements(out, Compressor(task.compression))


def _positive_int(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}")
    return value


@contextlib.contextmanager
def _sent_log(
    task: _Task, request: dict[str, Any]
) -> Iterator[tuple[SentLog | None, int, list[tuple[int, list[Any]]]]]:
    """While a request of a reader that names itself (``reader``, with ``resume_from``)
    of a task that numbers its elements runs: the reader's log, lease and what it did not
    receive (``_Task.open_sent``); the log is closed when the request ends, however it
    ends. Otherwise nothing is kept for the reader: (None, 0, [])."""
    reader = request.get("reader")
    generation = _generation_of(request)
    if not task.exact or reader is None or generation not in (None, task.generation):
        yield None, 0, []  # (another generation: the take refuses it)
        return
    sent, lease, unreceived = task.open_sent(str(reader), int(request.get("resume_from", 0)))
    try:
        yield sent, lease, unreceived
    finally:
        task.close_sent(sent)


def _generation_of(request: dict[str, Any]) -> int | None:
    """The task generation a reader asks for (exact jobs), or None (any)."""
    generation = request.get("generation")
    return None if generation is None else int(generation)


def _heartbeat_loop(worker_ref: weakref.ref[_Worker]) -> None:
    while True:
        worker = worker_ref()
        if worker is None or worker.stopped.is_set():
            return
        event, interval = worker.heartbeat_now, worker.heartbeat_interval
        del worker
        event.wait(interval)
        event.clear()
        worker = worker_ref()
        if worker is None or worker.stopped.is_set():
            return
        try:
            worker.heartbeat()
        except errors.OpError as exc:
            log.info("heartbeat of worker %s failed: %s", worker.address, exc)
        del worker


class WorkerServer:
    """An in-process tf.data service worker (TensorFlow's class and behaviour).

    The constructor returns once the worker is registered with its dispatcher; while the
    dispatcher does not answer it retries with back-off for ``dispatcher_timeout_ms``, logging
    whom it waits for.

    Args:
      config: a ``WorkerConfig`` (``dispatcher_address`` is required).
      start: start serving at once; otherwise call ``start``.

    Raises:
      ValueError: no ``dispatcher_address``, or another invalid field.
      UnavailableError: the port cannot be bound, or the dispatcher did not answer within
        ``dispatcher_timeout_ms``.
      FailedPreconditionError: the server would listen beyond loopback without
        authentication.

    Examples:
        >>> dispatcher = DispatchServer()                                   # doctest: +SKIP
        >>> worker = WorkerServer(WorkerConfig(
        ...     dispatcher_address=dispatcher.target.split("://")[1]))      # doctest: +SKIP
        >>> worker.stop(); dispatcher.stop()                                # doctest: +SKIP
    """

    def __init__(self, config: WorkerConfig | Any, start: bool = True) -> None:
        if getattr(config, "dispatcher_address", None) in (None, ""):
            raise ValueError(
                "Must specify a `dispatcher_address` in the `config` passed to `WorkerServer`."
            )
        config = worker_config_from(config)
        self._config = config
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._listening = False
        self._started = False
        self._stopped = False
        self._core = _Worker(config)
        host = bind_host("worker", self._core.options)
        server_options = metered(self._core.options, config.metrics_port)
        # One listener for the dispatcher and the clients: data_transfer_protocol is accepted
        # for compatibility but elements travel over ``protocol`` too.
        self._listener = get_transport(config.protocol).serve(
            f"{host}:{int(config.port)}",
            [self._core.service(), status_service(self.status)],
            server_options,
        )
        self._port = int(self._listener.port)
        self._core.address = config.worker_address.replace("%port%", str(self._port))
        self._thread: threading.Thread | None = None
        self._created = time.monotonic()
        self._meter = server_options.call_meter
        self._metrics = None
        with stopped_on_failure(self):  # (refused by the dispatcher, a metrics port in use)
            self._metrics = start_metrics(
                config,
                lambda: worker_families(self.status()),
                f"worker {self._core.address}",
                self._listener,
                self.status,
            )
            stop_at_exit(self)
            if start:
                self.start()

    def start(self) -> None:
        """Serve and register with the dispatcher; idempotent.

        Until the dispatcher answers it retries with back-off for at most
        ``dispatcher_timeout_ms``, logging a warning at the first failure and every few
        seconds after; ``stop`` from another thread ends the wait (``CancelledError``).
        """
        with self._start_lock:  # one start at a time; stop() does not wait for it
            with self._lock:
                if self._stopped:
                    raise RuntimeError("Server cannot be started after it has been stopped")
                if self._started:
                    return
                if not self._listening:
                    self._listener.start()
                    self._listening = True
            core = self._core
            call_with_retries(
                core.heartbeat,
                deadline=time.monotonic() + core.dispatcher_timeout,
                what=f"registering worker {core.address}",
                waiting_for=f"the tf.data service dispatcher at {self._config.dispatcher_address}",
                stop=core.stopped,
            )
            with self._lock:
                if self._stopped:
                    raise errors.CancelledError(
                        f"worker {core.address} was stopped while registering"
                    )
                self._started = True
                self._thread = threading.Thread(
                    target=_heartbeat_loop,
                    args=(weakref.ref(core),),
                    name=f"tw-data-worker-heartbeat-{self._port}",
                    daemon=True,
                )
                self._thread.start()
        log.info(
            "worker %s registered with %s", self._core.address, self._config.dispatcher_address
        )

    def join(self) -> None:
        """Block until the worker is stopped."""
        while not self._core.stopped.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop serving; idempotent. Returns once the port and the worker's threads are
        released (a task's pipeline busy in a long computation is waited for at most
        a few seconds, and logged)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            heartbeat = self._thread
        threads = self._core.stop()
        self._listener.stop(0)
        if self._metrics is not None:
            self._metrics.stop()
        if heartbeat is not None:
            threads.append(heartbeat)
        join_threads(threads, time.monotonic() + _STOP_JOIN_SECONDS, f"worker {self._address}")

    _stop = stop

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    @property
    def _address(self) -> str:
        return f"localhost:{self._port}"

    @property
    def _worker_address(self) -> str:
        return self._core.address

    def _num_tasks(self) -> int:
        """Tasks currently held by this worker."""
        with self._core.lock:
            return len(self._core.tasks)

    # -- observing ---------------------------------------------------------------------------
    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` when ``WorkerConfig.metrics_port`` is set, else None."""
        return self._metrics.url if self._metrics is not None else None

    def status(self) -> WorkerStatus:
        """A snapshot of this worker: its tasks, their buffers and what they produced.

        Returns:
          A ``tensorwire.observe.WorkerStatus``; also served to other processes
          (``tensorwire status grpc://HOST:PORT``).
        """
        return worker_status(self, self._core)
