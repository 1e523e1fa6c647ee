"""The client side: ``distribute``, ``register_dataset``, ``from_dataset_id`` and the reader.

Iterating a dataset made by ``from_dataset_id`` gets or creates a job at the dispatcher,
acquires a client id, learns the job's tasks from client heartbeats and reads every task's
element stream concurrently into a bounded queue (the prefetch buffer). Failures of the
dispatcher or a worker are retried with back-off; every wait is bounded so a reader never
hangs: a dispatcher unreachable for ``CLIENT_TIMEOUT`` seconds ends the iteration with
``UnavailableError``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import cloudpickle
from tensorwire import errors

# The public Dataset class, so .map/.batch/... work after distribute.
from ..dataset import Dataset as _DatasetClass
from . import host, pipeline, torch_workers
from .coordinated_join import task_for_round
from .elements import decode_chunk, decode_elements
from .positions import IndexRanges
from .protocol import (
    COMPRESSION_AUTO,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    DISPATCHER_SERVICE,
    RETRYABLE,
    STATIC_POLICIES,
    WORKER_SERVICE,
    ShardingPolicy,
    as_bytes,
    call,
    call_with_retries,
    channel_to,
    pack,
    parse_service,
    sharding_policy_from,
)
from .specs import check_element_spec
from .trainer_cache import CrossTrainerCache

if TYPE_CHECKING:
    from .checkpoint import ServiceCheckpoint

__all__ = ["distribute", "register_dataset", "from_dataset_id", "DataServiceDataset"]

log = logging.getLogger(__name__)

#: Seconds a reader keeps retrying an unreachable dispatcher (or waits for a first worker)
#: before failing with UnavailableError. Environment: TENSORWIRE_DATA_CLIENT_TIMEOUT.
CLIENT_TIMEOUT = float(os.environ.get("TENSORWIRE_DATA_CLIENT_TIMEOUT", "60"))
#: How often a reader asks the dispatcher for task changes.
TASK_REFRESH_INTERVAL = 0.5
_PREFETCH_MESSAGES = 16
#: Bytes of streamed messages a reader holds ahead of its consumer at most (one message is
#: always let in): with messages of up to 4 MiB (the worker's bound), sixteen of them would
#: be 64 MiB a reader, where four already keep a reader on the worker's host at memcpy speed.
_PREFETCH_BYTES = 16 << 20
#: How long a reader waits for its queue before it looks at errors, stops, lost workers and
#: whether the job has ended. A task that ends wakes it at once: no epoch waits this long.
_IDLE_WAIT = 0.05
#: Elements per streamed message at most: with _PREFETCH_MESSAGES, what one reader may hold
#: ahead of its consumer (4096 elements), so many open readers do not make their workers
#: produce, encode and send far more than is read.
_STREAM_MESSAGE_ELEMENTS = 256
#: Elements a consumer of a shared job (``job_name`` without ``num_consumers``) holds or has
#: requested ahead of what it has consumed, when ``max_outstanding_requests`` is not set.
#: Consumers of one job take elements first come, first served; reading ahead without a
#: bound would let one consumer take the whole job while the others starve.
SHARED_READAHEAD = 64
#: How long a worker holds a shared-job request open waiting for an element.
_TAKE_WAIT_S = 1.0
#: What a take retries: the retryable errors, and a task the worker cancelled (restarted at
#: a newer generation, or deleted while the reader learns of it).
_RETRY_TAKE: tuple[type[errors.OpError], ...] = (*RETRYABLE, errors.CancelledError)
_TARGET_WORKERS = ("AUTO", "ANY", "LOCAL")


# -- validation (TensorFlow's messages) -------------------------------------------------------


def _validate_compression(compression: Any) -> None:
    valid = [COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_SNAPPY]
    if compression not in valid:
        raise ValueError(f"Invalid `compression` argument: {compression}. Must be one of {valid}.")


def _validate_job_name(job_name: Any) -> None:
    if job_name is None:
        return
    if not isinstance(job_name, str):
        raise ValueError(
            "`job_name` must be a string, but `job_name` was of type "
            f"{type(job_name)}. job_name={job_name}"
        )
    if not job_name:
        raise ValueError("`job_name` must not be empty")


def _validate_consumers(job_name: Any, consumer_index: Any, num_consumers: Any) -> None:
    if (consumer_index is None) != (num_consumers is None):
        raise ValueError(
            "Must either set both `consumer_index` and `num_consumers`, or neither. "
            f"consumer_index={consumer_index}, num_consumers={num_consumers}"
        )
    if num_consumers is not None and job_name is None:
        raise ValueError(
            "`job_name` must be set when setting `num_consumers`. "
            f"num_consumers was set to {num_consumers}."
        )
    if num_consumers is not None:
        if not isinstance(num_consumers, int) or num_consumers <= 0:
            raise ValueError(f"`num_consumers` must be a positive integer, got {num_consumers!r}")
        if not isinstance(consumer_index, int) or not 0 <= consumer_index < num_consumers:
            raise ValueError(
                f"`consumer_index` must be in [0, num_consumers={num_consumers}), "
                f"got {consumer_index!r}"
            )


def _validate_max_outstanding(value: Any) -> int | None:
    if value is None or value == -1:  # None / AUTOTUNE: the runtime decides
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`max_outstanding_requests` must be a positive integer or None, got {value!r}"
        )
    return value


# -- registration ---------------------------------------------------------------------------


def _dispatcher_call(
    protocol: str, address: str, method: str, request: dict[str, Any], deadline: float | None = None
) -> dict[str, Any]:
    return call_with_retries(
        lambda: call(protocol, address, DISPATCHER_SERVICE, method, request, timeout=10.0),
        deadline=deadline if deadline is not None else time.monotonic() + CLIENT_TIMEOUT,
        what=f"{method} to the tf.data service dispatcher at {address}",
    )


def register_dataset(
    service: Any, dataset: Any, compression: str | None = "AUTO", dataset_id: str | None = None
) -> str:
    """Register ``dataset`` with the dispatcher at ``service``; returns its dataset id.

    Registering the same dataset again returns the id it already has. ``dataset_id`` picks
    the id explicitly; re-registering a different dataset under it is an error. Readers
    then use ``from_dataset_id``.

    Args:
      service: the dispatcher, ``"grpc://host:port"`` (or ``(protocol, address)``).
      dataset: the ``tw.data.Dataset`` to register (its definition is sent as code unless it
        is a ``registered_pipeline``).
      compression: ``"AUTO"`` (zstandard when it pays), ``"SNAPPY"`` or None.
      dataset_id: an explicit id (printable ASCII); None lets the dispatcher choose.

    Returns:
      The dataset id, a string.

    Raises:
      ValueError: a malformed ``service``, ``compression`` or ``dataset_id``.
      PermissionDeniedError: the dispatcher runs registered pipelines only and the dataset
        is code.
      InvalidArgumentError: ``dataset_id`` already names a different dataset (as
        TensorFlow, which says "Datasets with the same ID should have the same structure").
      UnavailableError: the dispatcher did not answer within the client timeout.

    Examples:
        >>> dataset_id = register_dataset(service, tw.data.Dataset.range(5))  # doctest: +SKIP
        >>> ds = from_dataset_id("parallel_epochs", service, dataset_id)      # doctest: +SKIP
    """
    protocol, address = parse_service(service)
    _validate_compression(compression)
    if dataset_id is not None and (not isinstance(dataset_id, str) or not dataset_id):
        raise ValueError(f"`dataset_id` must be a non-empty string, got {dataset_id!r}")
    # Spec and cardinality first: computing them may cache values on the dataset object,
    # and the definition (hence the fingerprint that deduplicates registrations) must not
    # depend on whether that happened before.
    metadata: dict[str, Any] = {
        "compression": compression or "",
        "element_spec": b"",
        "cardinality": pipeline.cardinality(dataset),
    }
    dataset_def = pipeline.serialize(dataset)
    if pipeline.is_reference(dataset_def):
        # No code at all: from_dataset_id readers rebuild the spec from their own registry.
        name, params = pipeline.reference_of(dataset_def)
        metadata["pipeline"] = {"name": name, "params": params}
    else:
        try:
            metadata["element_spec"] = cloudpickle.dumps(
                dataset.element_spec, protocol=pickle.HIGHEST_PROTOCOL
            )
        except Exception:  # noqa: BLE001 - a spec is a convenience for from_dataset_id
            pass
    reply = _dispatcher_call(
        protocol,
        address,
        "GetOrRegisterDataset",
        {"dataset_def": dataset_def, "metadata": metadata, "dataset_id": dataset_id or ""},
    )
    return str(reply["dataset_id"])


def _registered_spec(reference: Any) -> Any:
    """The element spec of a registered pipeline, built from this process's registry; None
    when it is not a registered pipeline or it is not registered here."""
    if not isinstance(reference, dict):
        return None
    try:
        return pipeline.registered_pipeline(
            str(reference["name"]), **dict(reference["params"])
        ).element_spec
    except errors.NotFoundError:
        return None


def distribute(
    processing_mode: Any,
    service: Any,
    job_name: str | None = None,
    consumer_index: int | None = None,
    num_consumers: int | None = None,
    max_outstanding_requests: int | None = None,
    data_transfer_protocol: str | None = None,
    compression: str | None = "AUTO",
    cross_trainer_cache: Any = None,
    target_workers: str = "AUTO",
) -> Callable[[Any], DataServiceDataset]:
    """A transformation (for ``dataset.apply``) that moves processing to the data service.

    Applying it registers the dataset with the dispatcher; iterating the result starts (or
    joins) a job whose elements the service's workers produce and stream to this reader.

    Args:
      processing_mode: ``"parallel_epochs"`` (every worker produces the whole dataset),
        ``"distributed_epoch"`` (the workers split it; each element once), or a
        ``ShardingPolicy`` (``OFF``, ``DYNAMIC``, ``FILE``, ``DATA``, ``FILE_OR_DATA``,
        ``HINT``).
      service: the dispatcher, ``"grpc://host:port"``.
      job_name: share one job between readers that pass the same name: each element goes
        to exactly one of them.
      consumer_index: this reader's index, for coordinated reads (with ``num_consumers``).
      num_consumers: the number of readers stepping in lockstep (coordinated reads; needs
        ``job_name`` and an infinite dataset or one of unknown cardinality).
      max_outstanding_requests: bound on elements requested ahead (memory per reader).
      data_transfer_protocol: accepted as in TensorFlow; only steers ``"AUTO"``
        compression (off when not ``"grpc"``), elements always travel on the service's
        protocol.
      compression: ``"AUTO"``, ``"SNAPPY"`` or None.
      cross_trainer_cache: a ``CrossTrainerCache``: the readers of the job (which
        needs a ``job_name`` and an infinite dataset) each read all of its elements, from
        a window the workers keep, instead of splitting them; a trainer falling behind
        the window skips ahead.
      target_workers: ``"AUTO"`` (the default; as ``"ANY"`` here, since workers carry no
        tags), ``"ANY"`` (every worker of the job) or ``"LOCAL"`` (only the workers on
        this reader's host, see ``host``; an error names the hosts there are when
        none is local).

    Returns:
      A function from a dataset to a ``DataServiceDataset``.

    Raises:
      ValueError: an unknown processing mode or compression, a malformed ``service``,
        ``job_name`` or consumer arguments (TensorFlow's messages).
      InvalidArgumentError: ``cross_trainer_cache`` without a ``job_name``, with a finite
        dataset or with coordinated reads; ``target_workers="LOCAL"`` with coordinated
        reads (TensorFlow's messages). On iteration: ``"LOCAL"`` and no worker of the
        job on this host; a second iteration of a cross-trainer cache dataset.
      FailedPreconditionError: on iteration, coordinated reads of a dataset of known,
        finite cardinality.
      UnavailableError: the dispatcher or workers did not answer within the client timeout.

    Examples:
        >>> ds = tw.data.Dataset.range(10).apply(
        ...     distribute("distributed_epoch", "grpc://localhost:5050"))  # doctest: +SKIP
        >>> sorted(int(x) for x in ds.as_numpy_iterator())                 # doctest: +SKIP
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    policy = sharding_policy_from(processing_mode)
    _validate_compression(compression)
    _validate_job_name(job_name)
    if (
        data_transfer_protocol is not None
        and compression == COMPRESSION_AUTO
        and (data_transfer_protocol != "grpc")
    ):
        compression = COMPRESSION_NONE  # as TensorFlow: AUTO compresses over gRPC only

    def _apply_fn(dataset: Any) -> DataServiceDataset:
        dataset_id = register_dataset(service, dataset, compression=compression)
        return _from_dataset_id(
            policy,
            service,
            dataset_id,
            getattr(dataset, "element_spec", None),
            job_name=job_name,
            consumer_index=consumer_index,
            num_consumers=num_consumers,
            max_outstanding_requests=max_outstanding_requests,
            data_transfer_protocol=data_transfer_protocol,
            target_workers=target_workers,
            cardinality=pipeline.cardinality(dataset),
            cross_trainer_cache=cross_trainer_cache,
        )

    return _apply_fn


def from_dataset_id(
    processing_mode: Any,
    service: Any,
    dataset_id: Any,
    element_spec: Any = None,
    job_name: str | None = None,
    consumer_index: int | None = None,
    num_consumers: int | None = None,
    max_outstanding_requests: int | None = None,
    data_transfer_protocol: str | None = None,
    cross_trainer_cache: Any = None,
    target_workers: str = "AUTO",
) -> DataServiceDataset:
    """A dataset reading the registered dataset ``dataset_id`` from the data service.

    Args:
      processing_mode: as for ``distribute``.
      service: the dispatcher, ``"grpc://host:port"``.
      dataset_id: what ``register_dataset`` returned.
      element_spec: the structure of the elements; None takes the one the registrant sent
        (or, for a registered pipeline, builds it from this process's registry). When
        given and the registered one is known, they must be compatible (same structure,
        dtypes and compatible shapes).
      job_name: as for ``distribute``.
      consumer_index: as for ``distribute``.
      num_consumers: as for ``distribute``.
      max_outstanding_requests: as for ``distribute``.
      data_transfer_protocol: as for ``distribute``.
      cross_trainer_cache: as for ``distribute``.
      target_workers: as for ``distribute``.

    Returns:
      A ``DataServiceDataset``.

    Raises:
      ValueError: invalid arguments, as for ``distribute``.
      InvalidArgumentError: ``element_spec`` does not match the spec of the registered
        dataset (the message shows both); the restrictions of ``distribute``.
      NotFoundError: when the dispatcher knows no such dataset.

    Examples:
        >>> dataset_id = register_dataset(service, tw.data.Dataset.range(5))   # doctest: +SKIP
        >>> ds = from_dataset_id("parallel_epochs", service, dataset_id)       # doctest: +SKIP
    """
    policy = sharding_policy_from(processing_mode)
    return _from_dataset_id(
        policy,
        service,
        dataset_id,
        element_spec,
        job_name=job_name,
        consumer_index=consumer_index,
        num_consumers=num_consumers,
        max_outstanding_requests=max_outstanding_requests,
        data_transfer_protocol=data_transfer_protocol,
        target_workers=target_workers,
        cross_trainer_cache=cross_trainer_cache,
    )


def _from_dataset_id(
    policy: ShardingPolicy,
    service: Any,
    dataset_id: Any,
    element_spec: Any,
    *,
    job_name: str | None,
    consumer_index: int | None,
    num_consumers: int | None,
    max_outstanding_requests: int | None,
    data_transfer_protocol: str | None,
    target_workers: str,
    cardinality: int | None = None,
    cross_trainer_cache: Any = None,
) -> DataServiceDataset:
    protocol, address = parse_service(service)
    _validate_job_name(job_name)
    _validate_consumers(job_name, consumer_index, num_consumers)
    max_outstanding = _validate_max_outstanding(max_outstanding_requests)
    if not isinstance(target_workers, str) or target_workers.upper() not in _TARGET_WORKERS:
        raise ValueError(
            f"Unrecognized `target_workers` {target_workers!r}; must be one of {_TARGET_WORKERS}"
        )
    target_workers = target_workers.upper()
    if target_workers == "LOCAL" and num_consumers is not None:
        raise errors.InvalidArgumentError(
            'Coordinated reads require non-local workers, but `target_workers` is "LOCAL".'
        )
    if isinstance(dataset_id, bytes):
        dataset_id = dataset_id.decode()
    dataset_id = str(dataset_id)
    if element_spec is None or cardinality is None:
        reply = _dispatcher_call(
            protocol, address, "GetDataServiceMetadata", {"dataset_id": dataset_id}
        )
        metadata = reply["metadata"]
        registered = _registered_spec(metadata.get("pipeline"))
        if registered is None and metadata.get("element_spec"):
            # The spec of a dataset registered as code, pickled by its registrant.
            registered = pickle.loads(as_bytes(metadata["element_spec"]))
        if element_spec is None:
            element_spec = registered
        elif registered is not None:
            check_element_spec(element_spec, registered, dataset_id)
        if cardinality is None:
            cardinality = int(metadata.get("cardinality", -2))
    trainer_id = _check_cross_trainer_cache(
        cross_trainer_cache, job_name, num_consumers, cardinality
    )
    return DataServiceDataset(
        protocol=protocol,  # workers serve elements on the service's protocol
        dispatcher_protocol=protocol,
        address=address,
        dataset_id=dataset_id,
        policy=policy,
        element_spec=element_spec,
        job_name=job_name,
        consumer_index=consumer_index,
        num_consumers=num_consumers,
        max_outstanding_requests=max_outstanding,
        target_workers=target_workers,
        cardinality=cardinality,
        trainer_id=trainer_id,
    )


def _check_cross_trainer_cache(
    cache: Any, job_name: str | None, num_consumers: int | None, cardinality: int | None
) -> str | None:
    """The trainer id of ``cache`` (None without one), after TensorFlow's checks."""
    if cache is None:
        return None
    if not isinstance(cache, CrossTrainerCache):
        raise TypeError(
            "`cross_trainer_cache` must be a tw.data.experimental.service.CrossTrainerCache "
            f"or None, got {type(cache).__name__}"
        )
    if not job_name:
        raise errors.InvalidArgumentError(
            "Cross-trainer caching requires named jobs. Got empty `job_name`."
        )
    if cardinality is None or not pipeline.is_infinite(cardinality):
        raise errors.InvalidArgumentError(
            "Cross-trainer caching requires the input dataset to be infinite. Got input with "
            f"cardinality {cardinality} (add `.repeat()` at the end of the dataset)."
        )
    if num_consumers is not None:
        raise errors.InvalidArgumentError(
            "Cross-trainer caching does not support coordinated reads. Got number of "
            f"coordinated consumers: {num_consumers}"
        )
    return cache.trainer_id


# -- the dataset and its iterator -------------------------------------------------------------


class DataServiceDataset(_DatasetClass):
    """A dataset whose elements come from the tf.data service."""

    _op_name = "DataServiceDataset"

    def __init__(
        self,
        *,
        protocol: str,
        dispatcher_protocol: str,
        address: str,
        dataset_id: str,
        policy: ShardingPolicy,
        element_spec: Any,
        job_name: str | None,
        consumer_index: int | None,
        num_consumers: int | None,
        max_outstanding_requests: int | None,
        target_workers: str,
        cardinality: int | None,
        trainer_id: str | None = None,
    ) -> None:
        self._input_datasets = ()
        self._protocol = protocol
        self._dispatcher_protocol = dispatcher_protocol
        self._address = address
        self._dataset_id = dataset_id
        self._policy = policy
        self._spec = element_spec
        self._job_name = job_name
        self._consumer_index = consumer_index
        self._num_consumers = num_consumers
        self._max_outstanding = max_outstanding_requests
        self._target_workers = target_workers
        self._source_cardinality = cardinality
        self._trainer_id = trainer_id  # a cross-trainer cache job's reader
        self._iterations = itertools.count()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_iterations"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._iterations = itertools.count()

    def _compute_element_spec(self) -> Any:
        return self._spec

    def _cardinality(self) -> int:
        # Only "infinite" survives the service unchanged; with several workers or shared jobs
        # the count is not known in advance.
        if self._source_cardinality is not None and pipeline.is_infinite(self._source_cardinality):
            return self._source_cardinality
        return pipeline.unknown_cardinality()

    @property
    def dataset_id(self) -> str:
        return self._dataset_id

    def _iterator(self, ctx: Any) -> Iterator[Any]:
        from .checkpoint import ServiceIterator  # it builds on _Reader, below

        return ServiceIterator(self, ctx)

    def _read_from(self, ctx: Any, reader: _Reader) -> Iterator[Any]:
        """Yield ``reader``'s elements, closing it when ``ctx`` (the pipeline) is closed."""
        if self._job_name is None:  # PyTorch DataLoader workers would each read it all
            torch_workers.warn_if_every_worker_reads_everything(self)
        closed = getattr(ctx, "closed", None)
        if isinstance(closed, threading.Event):
            _CLOSE_WATCH.add(closed, reader)
        try:
            yield from reader
        finally:
            reader.close()

    def _next_iteration(self) -> int:
        return next(self._iterations)

    def _restored_iteration(self, iteration: int) -> None:
        """A reader of this dataset object was restored at ``iteration``: later readers
        take later iteration numbers (a named job is one per iteration)."""
        self._iterations = itertools.count(max(next(self._iterations), iteration + 1))

    def _read(self) -> _Reader:
        """A bare reader over one iteration (no pipeline iterator around it)."""
        return _Reader(self, next(self._iterations))


class _CloseWatch:
    """Closes readers whose pipeline was closed: one thread for all of them, looking once
    a second. (A thread per reader waking every second made 500 waiting readers wake
    500 times a second, each wake a fight for the GIL with every other thread.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: list[tuple[threading.Event, weakref.ref[_Reader]]] = []
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._watched = []
        self._thread = None

    def add(self, event: threading.Event, reader: _Reader) -> None:
        with self._lock:
            self._watched.append((event, weakref.ref(reader)))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tw-data-reader-watch", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_CLOSE_WATCH_INTERVAL)
            to_close: list[_Reader] = []
            with self._lock:
                kept = []
                for event, ref in self._watched:
                    reader = ref()
                    if reader is None or reader.closed:
                        continue
                    if event.is_set():
                        to_close.append(reader)
                    else:
                        kept.append((event, ref))
                self._watched = kept
                if not kept and not to_close:
                    self._thread = None  # the next add starts one again
                    return
            for reader in to_close:
                reader.close()
            del to_close


#: How often the close watch looks at the pipelines of the readers it watches.
_CLOSE_WATCH_INTERVAL = 1.0
_CLOSE_WATCH = _CloseWatch()


class _TaskState:
    """What a reader knows of one task. For an exact job: the generation it reads (elements
    of an older one are ignored), the indices it received (reported when the task is lost,
    so the replay leaves them out; and never delivered twice), and whether the dispatcher
    awaits that report."""

    __slots__ = (
        "task_id",
        "address",
        "done",
        "removed",
        "thread",
        "generation",
        "received",
        "report",
        "starting_round",
        "resume_from",
    )

    def __init__(self, task_id: int, address: str, generation: int = 0) -> None:
        self.task_id = task_id
        self.address = address
        self.done = False
        self.removed = False
        self.thread: threading.Thread | None = None
        self.generation = generation
        self.received = IndexRanges()
        self.report = False
        self.starting_round = 0  # coordinated reads: the job round it joined at
        # One past the last position received of this generation: what each request to
        # the worker names, so it sends again what a broken stream lost (sent_log.py).
        self.resume_from = 0


class _Reader(Iterator[Any]):
    """One iteration of a DataServiceDataset: a job client and its reader threads.

    ``restore``: a checkpoint (``checkpoint.ServiceCheckpoint``) of a reader of the
    same dataset; this reader then rejoins that job, which the dispatcher rewinds to it.
    """

    def __init__(
        self, ds: DataServiceDataset, iteration: int, restore: ServiceCheckpoint | None = None
    ) -> None:
        self.ds = ds
        self.iteration = iteration
        self.closed = False
        # Names this reader to workers, which keep what they sent it until it confirms it.
        self._key = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # A shared job's consumers read on demand: at most ``_credit_total`` elements held
        # or requested ahead of consumption (see SHARED_READAHEAD).
        self._shared = ds._job_name is not None and ds._num_consumers is None
        self._credit_total = ds._max_outstanding or SHARED_READAHEAD
        self._credits = self._credit_total
        self._credit_cond = threading.Condition()
        maxsize = 0 if self._shared else ds._max_outstanding or _PREFETCH_MESSAGES
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=maxsize)
        #: Bytes of the streamed messages in the queue (``_PREFETCH_BYTES``), and the
        #: condition a stream waits on for them to fall.
        self._ahead_bytes = 0
        self._room = threading.Condition()
        self._sem = threading.Semaphore(ds._max_outstanding) if ds._max_outstanding else None
        self._tasks: dict[int, _TaskState] = {}
        # Tasks whose end of sequence this reader received, with the generation that sent it.
        self._ended: dict[int, int] = {}
        self._current: list[Any] = []
        self._pos = 0
        # Positions (task, indices) of the elements consumed, for checkpoints: folded in a
        # message at a time (``_fold``), so consuming costs nothing per element.
        self._current_task = -1
        self._current_positions: range | list[int] | None = None
        self._consumed: dict[int, IndexRanges] = {}
        self._kept = False  # the dispatcher keeps the job for restores (see checkpoint())
        self._error: BaseException | None = None
        self._last_dispatcher_ok = time.monotonic()
        self._no_workers_since: float | None = None
        # target_workers="LOCAL": this reader's host, compared with each worker's.
        self._host = host.host_id() if ds._target_workers == "LOCAL" else None
        # Coordinated reads: the next job round this reader reads, and the round a joining
        # task waits at (not read until that task is known; -1: none).
        self._round = 0
        self._block_round = -1
        # The dispatcher's view of the job this reader applied last (reader_view.py): named
        # in heartbeats, so replies carry the task list only when it changed.
        self._view: str | None = None
        if ds._trainer_id is not None and iteration > 0:
            raise errors.InvalidArgumentError(
                "Cross-trainer caching requires infinite datasets and disallows multiple "
                f"repetitions of the same dataset. Got repetition {iteration}"
            )
        # Reported in heartbeats (the dispatcher's status and metrics): seconds next() waited
        # for elements, elements received, and since when this reader reads (the share of
        # its time it waited says whether the job is input-bound).
        self._waited = 0.0
        self._received = 0
        self._reading_since = time.monotonic()
        if restore is None:
            job = self._dispatcher(
                "GetOrCreateJob",
                {
                    "dataset_id": ds._dataset_id,
                    "job_name": ds._job_name or "",
                    "iteration": iteration,
                    "policy": int(ds._policy),
                    "num_consumers": ds._num_consumers if ds._num_consumers is not None else -1,
                    "target_workers": ds._target_workers,
                    "cross_trainer_cache": ds._trainer_id is not None,
                    "acquire": True,
                },
            )
        else:
            job = self._dispatcher("RestoreClient", restore.request())
            # What the checkpoint consumed counts as received: never delivered again, and
            # reported as such if the job is rewound again.
            self._consumed = {t: IndexRanges(r) for t, r in restore.consumed}
            self._kept = True
        self._dedup = bool(job.get("exact", False))
        self._not_restorable = str(job.get("not_restorable", ""))
        self.job_id = int(job["job_id"])
        self.client_id = int(job["client_id"])
        if job.get("job_finished") and ds._job_name:
            log.warning(
                "job %r of dataset %s has already finished, so this reader gets no elements "
                "(as in TensorFlow). To read the dataset again, start a new epoch: a new "
                "iterator of the same dataset object, or another job_name (one per epoch).",
                ds._job_name,
                ds._dataset_id,
            )
        # Filled by close(): what this reader consumed, so a later restore of another
        # reader of the job does not deliver it again.
        self._release_report: dict[str, Any] = {}
        self._finalizer = weakref.finalize(
            self,
            _release,
            ds._dispatcher_protocol,
            ds._address,
            self.client_id,
            self._stop,
            self._release_report,
        )
        no_local = self._no_local_worker(job)
        if no_local is not None:
            self.close()
            raise no_local
        self._update_tasks(job)
        threading.Thread(
            target=_heartbeat_loop,
            args=(weakref.ref(self), self._stop),
            name=f"tw-data-client-{self.client_id}",
            daemon=True,
        ).start()
        if ds._num_consumers is not None:
            threading.Thread(
                target=self._read_rounds, name=f"tw-data-rounds-{self.client_id}", daemon=True
            ).start()

    # -- dispatcher ---------------------------------------------------------------------------
    def _dispatcher(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        return call_with_retries(
            lambda: call(
                self.ds._dispatcher_protocol,
                self.ds._address,
                DISPATCHER_SERVICE,
                method,
                request,
                timeout=10.0,
            ),
            deadline=time.monotonic() + CLIENT_TIMEOUT,
            what=f"{method} to the tf.data service dispatcher at {self.ds._address}",
            should_stop=self._stop.is_set,
        )

    def _heartbeat_once(self) -> None:
        with self._lock:
            ended = sorted(self._ended.items())
            # Lost tasks of an exact job: what this reader received from them, which the
            # replay leaves out. Sent until the dispatcher stops asking (a reply may be lost).
            delivered = [
                {"task_id": t.task_id, "generation": t.generation, "ranges": t.received.ranges()}
                for t in self._tasks.values()
                if t.report
            ]
        # The tasks this reader saw end are reported, so the dispatcher knows the job has
        # finished before this reader ends (a reader joining it later is told so).
        request: dict[str, Any] = {
            "client_id": self.client_id,
            "finished": [task_id for task_id, _ in ended],
            "finished_generations": [[task_id, gen] for task_id, gen in ended],
            "wait_s": self._waited,
            "elements": self._received,
            "read_s": time.monotonic() - self._reading_since,
        }
        if delivered:
            request["delivered"] = delivered
        if self._view is not None:
            request["view"] = self._view
        if self.ds._num_consumers is not None:
            with self._lock:
                request["current_round"] = self._round
                # A block heard while still before it is honoured: confirmed.
                if 0 <= self._round <= self._block_round:
                    request["blocked_round"] = self._block_round
        reply = call(
            self.ds._dispatcher_protocol,
            self.ds._address,
            DISPATCHER_SERVICE,
            "ClientHeartbeat",
            request,
            timeout=10.0,
        )
        self._last_dispatcher_ok = time.monotonic()
        if not self._tasks:
            # No local worker yet (LOCAL): workers that registered since may all be remote.
            no_local = self._no_local_worker(reply)
            if no_local is not None:
                raise no_local
        self._update_tasks(reply)

    def _no_local_worker(self, reply: dict[str, Any]) -> errors.OpError | None:
        """For ``target_workers="LOCAL"``: the error when the job's workers are known and
        none is on this host (TensorFlow fails such a reader at once too); None otherwise,
        also while the workers' hosts are not known yet or there are no workers."""
        if self._host is None:
            return None
        hosts = {str(a): str(h) for a, h in dict(reply.get("worker_hosts") or {}).items()}
        if not hosts or any(h == self._host for h in hosts.values()):
            return None
        if not all(hosts.values()):
            return None  # a worker has not said where it runs yet (dispatcher restarted)
        listed = ", ".join(f"{a} on host {h!r}" for a, h in sorted(hosts.items()))
        policy = ShardingPolicy(self.ds._policy)
        return errors.InvalidArgumentError(
            (
                f"Static sharding policy <{policy.name}> requires local tf.data workers, but "
                if policy in STATIC_POLICIES
                else "Local reads require local tf.data workers, but "
            )
            + f"no local worker is found: job {self.job_id} (job_name "
            f"{self.ds._job_name!r}) of dataset {self.ds._dataset_id} has workers {listed}, "
            f"and this reader runs on host {self._host!r}. You need to run local tf.data "
            'service workers in your training workers (target_workers="LOCAL" reads only '
            'those), or use target_workers="ANY". Host identities come from '
            f"{host.HOST_ID_ENV} or the machine id."
        )

    def _update_tasks(self, reply: dict[str, Any]) -> None:
        if "tasks" not in reply:
            # The view this reader holds is current: the tasks are as they were.
            with self._lock:
                report = {int(t) for t in reply.get("report", ())}
                for task_id, held in self._tasks.items():
                    held.report = task_id in report
                self._block_round = int(reply.get("block_round", -1))
            return
        if self._host is not None:
            # Only the workers on this host are read: the others are not this reader's.
            reply = dict(reply)
            reply["tasks"] = [t for t in reply["tasks"] if t.get("worker_host") == self._host]
        listed = {int(t["task_id"]): t for t in reply["tasks"]}
        report = {int(t) for t in reply.get("report", ())}
        with self._lock:
            for task_id, entry in listed.items():
                address = str(entry["worker_address"])
                generation = int(entry.get("generation", 0))
                state = self._tasks.get(task_id)
                if state is None:
                    state = self._tasks[task_id] = _TaskState(task_id, address, generation)
                    if task_id in self._consumed:  # (a restored reader)
                        state.received.update(self._consumed[task_id])
                elif generation > state.generation:
                    # The task was lost with its worker and is replayed (exact job), or a
                    # reader of the job restored a checkpoint: from now on, what its older
                    # generation still sends is ignored, so what this reader reports
                    # having received is final. A rewound task produces again.
                    state.generation = generation
                    state.resume_from = 0
                    state.address = address
                    state.removed = False
                    state.done = False
                    self._ended.pop(task_id, None)
                    state.thread = None  # the old generation's reader ends by itself
                elif state.removed and not state.done:
                    # Its worker missed heartbeats and was dropped, then came back still
                    # running the task: read on from where the task is.
                    state.removed = False
                state.report = task_id in report
                state.starting_round = int(entry.get("starting_round", 0))
                if not address:
                    continue  # lost, waiting for a worker to replay it on
                if self.ds._num_consumers is None and state.thread is None and not state.done:
                    # The thread reads this generation at this address, as they are now: a
                    # reply that replaces the generation before the thread runs (a replay,
                    # maybe with no worker yet) makes it end, not read the new one.
                    state.thread = threading.Thread(
                        target=self._run_task_reader,
                        args=(state, state.generation, address),
                        name=f"tw-data-read-{task_id}",
                        daemon=True,
                    )
                    state.thread.start()
            for task_id, state in self._tasks.items():
                if task_id not in listed:
                    state.removed = True
            # With the tasks, in one step: a round reader that saw the block lifted without
            # the task that starts there would pick another task for that round.
            self._block_round = int(reply.get("block_round", -1))
            self._view = reply.get("view")

    def _reader_exits(self, state: _TaskState, generation: int) -> bool:
        """A reader thread whose task was removed (or whose reader stopped) ends, unless the
        task was listed again meanwhile; ``_update_tasks`` starts a new thread for it then.
        So does one reading a generation since replaced (the new one has its own)."""
        with self._lock:
            if state.generation != generation:
                return True
            if self._stop.is_set() or state.removed:
                state.thread = None
                return True
            return False

    def _accept(
        self, state: _TaskState, generation: int, elements: list[Any], first: int | None
    ) -> tuple[list[Any], range | list[int] | None] | None:
        """The elements of a message to deliver and their positions (indices in the task's
        stream; None when they have none): None when they come from a generation since
        replaced (not recorded as received: the replay produces them again); without
        those this reader received already (an exact job's replay)."""
        with self._lock:
            if state.generation != generation:
                return None
            if first is None or not elements:
                return elements, None
            stop = first + len(elements)
            state.resume_from = max(state.resume_from, stop)
            positions: range | list[int] = range(first, stop)
            if self._dedup and state.received.overlaps(first, stop):
                kept = [i for i in positions if i not in state.received]
                elements = [elements[i - first] for i in kept]
                positions = kept
            state.received.add(first, stop)
            return elements, positions

    def heartbeat(self) -> bool:
        """One client heartbeat; False when the dispatcher could not be reached."""
        try:
            self._heartbeat_once()
            return True
        except RETRYABLE as exc:
            if time.monotonic() - self._last_dispatcher_ok > CLIENT_TIMEOUT:
                self._fail(
                    errors.UnavailableError(
                        f"the tf.data service dispatcher at {self.ds._address} has been "
                        f"unreachable for {CLIENT_TIMEOUT:.0f}s: {exc}"
                    )
                )
        except errors.OpError as exc:
            self._fail(exc)
        return False

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop.set()

    # -- reading ---------------------------------------------------------------------------
    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _put_streamed(self, payload: tuple[list[Any], int, Any, int]) -> bool:
        """Queue a streamed message's elements once the bytes ahead leave room for it
        (``_PREFETCH_BYTES``; its last item is its size). False when the reader stops."""
        nbytes = payload[3]
        with self._room:
            while self._ahead_bytes and self._ahead_bytes + nbytes > _PREFETCH_BYTES:
                if self._stop.is_set():
                    return False
                self._room.wait(0.1)
            self._ahead_bytes += nbytes
        if self._put(("elements", payload)):
            return True
        self._taken(nbytes)
        return False

    def _taken(self, nbytes: int) -> None:
        """A message of ``nbytes`` left the queue: room for the streams."""
        if nbytes:
            with self._room:
                self._ahead_bytes -= nbytes
                self._room.notify_all()

    def _run_task_reader(self, state: _TaskState, generation: int, address: str) -> None:
        """The body of a task's reader thread: what it cannot handle fails the reader, which
        then raises it to the consumer, instead of ending the thread silently and leaving
        the consumer waiting for elements that no thread reads any more."""
        read = self._read_task_shared if self._shared else self._read_task
        try:
            read(state, generation, address)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            log.error("reading task %d from %s failed", state.task_id, address, exc_info=True)
            self._fail(
                exc
                if isinstance(exc, errors.OpError)
                else errors.InternalError(
                    f"reading task {state.task_id} from worker {address} failed: {exc!r}"
                )
            )

    def _read_task(self, state: _TaskState, generation: int, address: str) -> None:
        """Stream a task's elements into the prefetch queue (a job read by one consumer)."""
        channel = channel_to(self.ds._protocol, address)
        retry = _Retry(self, state)
        while not self._reader_exits(state, generation):
            # A stream that ends without the end of sequence (a window of messages sent,
            # sent_log.py) or breaks is opened again, from where this reader is.
            request = pack(
                {
                    "task_id": state.task_id,
                    "max_elements": self.ds._max_outstanding or _STREAM_MESSAGE_ELEMENTS,
                    "generation": generation,
                    "reader": self._key,
                    "resume_from": state.resume_from,
                }
            )
            try:
                stream = channel.stream(WORKER_SERVICE, "GetElements", request)
                for frames in _bounded(stream, self._sem):
                    nbytes = sum(len(f) for f in frames)
                    got, eos, first = decode_chunk(frames)
                    retry.succeeded()
                    accepted = self._accept(state, generation, got, first)
                    if accepted is None:
                        return  # a replaced generation
                    elements, positions = accepted
                    if elements and not self._put_streamed(
                        (elements, state.task_id, positions, nbytes)
                    ):
                        return
                    if eos:
                        self._task_done(state, generation)
                        return
                    # A removed task's stream is read on until it ends or fails: messages
                    # the worker already sent would be lost if it were dropped here.
                    if self._stop.is_set():
                        return
            except _RETRY_TAKE as exc:
                if not retry.wait(exc):
                    return
            except errors.FailedPreconditionError:
                self._task_deleted(state, generation)
                return
            except errors.OpError as exc:
                self._fail(exc)
                return

    def _read_task_shared(self, state: _TaskState, generation: int, address: str) -> None:
        """Take a task's elements on demand (a shared job): one request at a time, for at
        most the elements this consumer may still hold ahead, so that every consumer of
        the job keeps receiving elements as it asks for them."""
        channel = channel_to(self.ds._protocol, address)
        retry = _Retry(self, state)
        while not self._reader_exits(state, generation):
            with self._lock:
                live = sum(1 for t in self._tasks.values() if not t.removed and not t.done)
            wanted = self._take_credits(max(1, live))
            if not wanted:
                continue
            request_fields: dict[str, Any] = {
                "task_id": state.task_id,
                "max_elements": wanted,
                "wait_s": _TAKE_WAIT_S,
                "generation": generation,
                "reader": self._key,
                "resume_from": state.resume_from,
            }
            if self.ds._trainer_id is not None:
                request_fields["trainer_id"] = self.ds._trainer_id
            request = pack(request_fields)
            try:
                frames = channel.call(
                    WORKER_SERVICE, "TakeElements", request, timeout=_TAKE_WAIT_S + 30.0
                )
                got, eos, first = decode_chunk(frames)
            except _RETRY_TAKE as exc:
                self._return_credits(wanted)
                if not retry.wait(exc):
                    return
                continue
            except errors.FailedPreconditionError:
                self._return_credits(wanted)
                self._task_deleted(state, generation)
                return
            except errors.OpError as exc:
                self._return_credits(wanted)
                self._fail(exc)
                return
            retry.succeeded()
            accepted = self._accept(state, generation, got, first)
            if accepted is None:
                self._return_credits(wanted)
                return  # a replaced generation
            elements, positions = accepted
            self._return_credits(wanted - len(elements))
            if elements and not self._put(("elements", (elements, state.task_id, positions, 0))):
                return
            if eos:
                self._task_done(state, generation)
                return

    def _take_credits(self, tasks: int) -> int:
        """Claim this task's share of the read-ahead allowance; 0 when stopping.

        Waits until at least half the share is free, so requests carry many elements
        rather than one each time the consumer takes one.
        """
        share = max(1, self._credit_total // tasks)
        with self._credit_cond:
            while self._credits < max(1, share // 2):
                if self._stop.is_set():
                    return 0
                self._credit_cond.wait(0.1)
            taken = min(self._credits, share)
            self._credits -= taken
            return taken

    def _return_credits(self, count: int) -> None:
        if count > 0:
            with self._credit_cond:
                self._credits += count
                self._credit_cond.notify_all()

    def _task_done(self, state: _TaskState, generation: int) -> None:
        with self._lock:
            if state.generation != generation:
                return  # the end of a replaced generation: the replay has its own
            state.done = True
            state.thread = None
            self._ended[state.task_id] = generation
        self._put(("task_done", state.task_id))

    def _task_deleted(self, state: _TaskState, generation: int) -> None:
        # The worker no longer has the task (job collected, worker reset): nothing more will
        # come from it.
        with self._lock:
            if state.generation != generation:
                return
            state.removed = True
            state.done = True
            state.thread = None
        self._put(("task_done", state.task_id))

    def _read_rounds(self) -> None:
        """Coordinated reads: job round ``r`` is one element for each consumer from the
        task ``task_for_round`` picks, the task's own round being how many of the
        job's earlier rounds it served. Every consumer computes the same schedule from the
        tasks and the rounds they joined at; a task joining the running job waits at its
        starting round (``block_round``) until this reader knows it."""
        ds = self.ds
        served: dict[int, int] = {}  # task id -> rounds of it read so far
        waiting_since: float | None = None
        while not self._stop.is_set():
            with self._lock:
                tasks = [t for t in self._tasks.values() if not t.removed]
                round_index, block = self._round, self._block_round
            joining = round_index == block and not any(t.starting_round == block for t in tasks)
            task = None if joining else task_for_round(tasks, round_index)
            if task is None:
                now = time.monotonic()
                waiting_since = waiting_since or now
                if joining and now - waiting_since > CLIENT_TIMEOUT:
                    self._fail(
                        errors.UnavailableError(
                            f"consumer {ds._consumer_index} of job {self.job_id} waited "
                            f"{CLIENT_TIMEOUT:.0f}s at round {round_index} for a joining "
                            "worker's task to start"
                        )
                    )
                    return
                self._stop.wait(0.02)
                continue
            waiting_since = None
            request = pack(
                {
                    "task_id": task.task_id,
                    "consumer_index": ds._consumer_index,
                    "round": served.get(task.task_id, 0),
                }
            )
            channel = channel_to(ds._protocol, task.address)
            try:
                frames = call_with_retries(
                    functools.partial(
                        channel.call, WORKER_SERVICE, "GetRoundElement", request, timeout=30.0
                    ),
                    deadline=time.monotonic() + CLIENT_TIMEOUT,
                    what=f"round {round_index} from {task.address}",
                    should_stop=self._stop.is_set,
                )
            except errors.OpError as exc:
                if not self._stop.is_set():
                    self._fail(exc)
                return
            elements, eos = decode_elements(frames)
            if eos:
                self._put(("end", None))
                return
            served[task.task_id] = served.get(task.task_id, 0) + 1
            with self._lock:
                self._round = round_index + 1
            if not self._put(("elements", (elements, -1, None, 0))):
                return

    def _live_tasks_done(self) -> bool:
        live = [t for t in self._tasks.values() if not t.removed]
        return bool(live) and all(t.done for t in live)

    def _finished(self) -> bool:
        """True when every live task of the job has ended, confirmed by a fresh heartbeat.

        Tasks lost with their worker do not count; a job left with none waits (at most
        CLIENT_TIMEOUT) for a worker to take it up again.
        """
        with self._lock:
            if not self._live_tasks_done():
                return False
        if not self.heartbeat():
            return False  # tasks may have changed during an outage: never end on stale news
        with self._lock:
            return self._live_tasks_done()

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> Any:
        waiting_since: float | None = None
        while True:
            if self._pos < len(self._current):
                element = self._current[self._pos]
                self._pos += 1
                if self._shared:
                    self._return_credits(1)
                return element
            if self.closed:
                raise StopIteration
            if waiting_since is None:
                waiting_since = time.monotonic()
            try:
                kind, payload = self._queue.get(timeout=_IDLE_WAIT)
            except queue.Empty:
                kind, payload = "idle", None
            # A task that just ended may have been the last: look at once rather than after
            # the next idle wait (which every epoch's end would otherwise cost).
            if kind in ("idle", "task_done"):
                if self._error is not None:
                    error, self._error = self._error, None
                    self.close()
                    raise error
                if self._stop.is_set():
                    self.close()
                    raise StopIteration
                now = time.monotonic()
                with self._lock:
                    has_live = any(not t.removed and t.address for t in self._tasks.values())
                if has_live:
                    self._no_workers_since = None
                elif self._no_workers_since is None:
                    self._no_workers_since = now
                elif now - self._no_workers_since > CLIENT_TIMEOUT:
                    self.close()
                    raise errors.UnavailableError(
                        f"no tf.data service worker served job {self.job_id} for "
                        f"{CLIENT_TIMEOUT:.0f}s"
                    )
                if self.ds._num_consumers is None and self._finished():
                    # A task's last elements are queued before it is marked done: they may
                    # have arrived after the queue was found empty above. Read them first.
                    if not self._queue.empty():
                        continue
                    self.close()
                    raise StopIteration
                continue
            if kind == "elements":
                if self._current_positions is not None:
                    self._fold(len(self._current))
                self._current, self._current_task, self._current_positions, nbytes = payload
                self._taken(nbytes)
                self._pos = 0
                self._waited += time.monotonic() - waiting_since
                self._received += len(self._current)
            elif kind == "end":
                self.close()
                raise StopIteration

    # -- checkpoints ---------------------------------------------------------------------------
    def _fold(self, count: int) -> None:
        """Record the first ``count`` elements of the current message as consumed."""
        positions = self._current_positions
        if positions is None or not count:
            return
        consumed = self._consumed.get(self._current_task)
        if consumed is None:
            consumed = self._consumed[self._current_task] = IndexRanges()
        if isinstance(positions, range):
            consumed.add(positions.start, positions.start + count)
        else:
            for index in positions[:count]:
                consumed.add(index, index + 1)

    def checkpoint(self) -> ServiceCheckpoint:
        """Where this reader's consumer is: the job and the positions of the elements it
        consumed (those buffered or in flight are not, so a restore delivers them again).
        Call between two ``next()`` calls, on the consumer's thread.

        Raises:
          FailedPreconditionError: the job cannot be restored (a non-deterministic
            pipeline, coordinated reads), or the dispatcher collected it.
          UnavailableError: the dispatcher did not answer within the client timeout.
        """
        from .checkpoint import ServiceCheckpoint

        if self._not_restorable:
            raise errors.FailedPreconditionError(
                f"Cannot checkpoint an iterator of tf.data service job {self.job_id} "
                f"(dataset {self.ds._dataset_id}): {self._not_restorable}"
            )
        if not self._kept:
            # Once per reader: from now on the job outlives its readers by
            # job_gc_timeout_ms, so the checkpoint can be restored after a crash.
            self._dispatcher("KeepJob", {"job_id": self.job_id})
            self._kept = True
        self._fold(self._pos)
        return ServiceCheckpoint(
            dataset_id=self.ds._dataset_id,
            job_id=self.job_id,
            job_name=self.ds._job_name or "",
            client_id=self.client_id,
            iteration=self.iteration,
            consumed=tuple(
                (task_id, tuple((a, b) for a, b in ranges.ranges()))
                for task_id, ranges in sorted(self._consumed.items())
            ),
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._consumed or self._current_positions is not None:
            try:
                self._fold(self._pos)
                self._release_report["consumed"] = [
                    [task_id, ranges.ranges()] for task_id, ranges in self._consumed.items()
                ]
            except (RuntimeError, ValueError):  # closed from another thread mid-fold
                pass
        self._finalizer()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - finalizer
            pass


class _Retry:
    """Back-off for one task's reader while its worker is unreachable, bounded by
    CLIENT_TIMEOUT, after which the reader fails with UnavailableError."""

    def __init__(self, reader: _Reader, state: _TaskState) -> None:
        self.reader = reader
        self.state = state
        self.delay = 0.02
        self.since: float | None = None

    def succeeded(self) -> None:
        self.since = None
        self.delay = 0.02

    def wait(self, exc: BaseException) -> bool:
        """Sleep before the next attempt; False (after failing the reader) when out of time."""
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > CLIENT_TIMEOUT:
            self.reader._fail(
                errors.UnavailableError(
                    f"tf.data service worker {self.state.address} unreachable for "
                    f"{CLIENT_TIMEOUT:.0f}s: {exc}"
                )
            )
            return False
        log.debug(
            "reading task %d from %s failed (%s); retrying",
            self.state.task_id,
            self.state.address,
            exc,
        )
        self.reader._stop.wait(self.delay)
        self.delay = min(self.delay * 2, 0.5)
        return True


def _bounded(stream: Iterator[Any], sem: threading.Semaphore | None) -> Iterator[Any]:
    """Iterate ``stream`` holding ``sem`` (max_outstanding_requests) for each request."""
    if sem is None:
        yield from stream
        return
    while True:
        with sem:
            try:
                item = next(stream)
            except StopIteration:
                return
        yield item


def _heartbeat_loop(reader_ref: weakref.ref[_Reader], stop: threading.Event) -> None:
    while not stop.wait(TASK_REFRESH_INTERVAL):
        reader = reader_ref()
        if reader is None:
            return
        reader.heartbeat()
        del reader


def _release(
    protocol: str, address: str, client_id: int, stop: threading.Event, report: dict[str, Any]
) -> None:
    stop.set()

    def release() -> None:
        try:
            call(
                protocol,
                address,
                DISPATCHER_SERVICE,
                "ReleaseClient",
                {"client_id": client_id, **report},
                timeout=2.0,
            )
        except errors.OpError as exc:  # the dispatcher times the client out instead
            log.debug("releasing client %d failed: %s", client_id, exc)

    # Off the caller's thread: close() may run in a finalizer or at interpreter exit.
    threading.Thread(target=release, name=f"tw-data-release-{client_id}", daemon=True).start()
