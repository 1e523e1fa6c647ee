"""distribute / register_dataset / from_dataset_id, as TensorFlow's data_service_ops_test."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors

from .helpers import distribute, values

service = tw.data.service
Dataset = tw.data.Dataset


def test_distribute_basic(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(10), dispatcher)
    assert values(ds) == list(range(10))


def test_elements_are_numpy_int64(service_factory):
    dispatcher, _ = service_factory(1)
    got = list(distribute(Dataset.range(3), dispatcher).as_numpy_iterator())
    assert all(isinstance(x, np.int64) for x in got)


def test_parallel_epochs_two_workers_each_element_twice(service_factory):
    dispatcher, _ = service_factory(2)
    assert sorted(values(distribute(Dataset.range(10), dispatcher))) == sorted(list(range(10)) * 2)


def test_distributed_epoch_two_workers_each_element_once(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(100), dispatcher, "distributed_epoch")
    assert sorted(values(ds)) == list(range(100))


def test_sharding_policy_enum_accepted(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(5), dispatcher, service.ShardingPolicy.OFF)
    assert values(ds) == list(range(5))
    ds = distribute(Dataset.range(5), dispatcher, service.ShardingPolicy.DYNAMIC)
    assert sorted(values(ds)) == list(range(5))


def test_transformations_before_and_after(service_factory):
    dispatcher, _ = service_factory(2)
    ds = Dataset.range(5).map(lambda x: x * x)
    ds = ds.apply(service.distribute("parallel_epochs", dispatcher.target))
    ds = ds.map(lambda x: x + 1)
    assert sorted(values(ds)) == [1, 1, 2, 2, 5, 5, 10, 10, 17, 17]


def test_nested_structures_and_batches(service_factory):
    dispatcher, _ = service_factory(1)
    ds = Dataset.from_tensor_slices(
        {"a": np.arange(8, dtype=np.float32), "b": np.arange(8).reshape(8, 1)}
    ).batch(3)
    got = list(distribute(ds, dispatcher).as_numpy_iterator())
    assert [g["a"].tolist() for g in got] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert got[0]["b"].shape == (3, 1) and got[0]["a"].dtype == np.float32


def test_iterate_twice(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(4), dispatcher)
    assert values(ds) == [0, 1, 2, 3]
    assert values(ds) == [0, 1, 2, 3]


def test_element_spec_carried(service_factory):
    dispatcher, _ = service_factory(1)
    src = Dataset.range(3)
    ds = distribute(src, dispatcher)
    assert ds.element_spec == src.element_spec


def test_large_elements_above_4mb(service_factory):
    dispatcher, _ = service_factory(1)
    big = np.random.default_rng(0).random((3, 600_000))  # 3 x 4.8 MB float64
    ds = distribute(Dataset.from_tensor_slices(big), dispatcher)
    got = list(ds.as_numpy_iterator())
    assert len(got) == 3
    np.testing.assert_array_equal(np.stack(got), big)


def test_user_function_error_reaches_the_reader(service_factory):
    dispatcher, _ = service_factory(1)

    def boom(x):
        if x == 3:
            raise ValueError("element three is bad")
        return x

    ds = distribute(Dataset.range(10).map(boom), dispatcher)
    with pytest.raises(errors.OpError, match="element three is bad"):
        values(ds)


# -- registration ---------------------------------------------------------------------------


def test_register_same_dataset_twice_returns_same_id(service_factory):
    dispatcher, _ = service_factory(1)
    ds = Dataset.range(10)
    id1 = service.register_dataset(dispatcher.target, ds)
    id2 = service.register_dataset(dispatcher.target, ds)
    assert id1 == id2
    id3 = service.register_dataset(dispatcher.target, Dataset.range(11))
    assert id3 != id1


def test_register_with_explicit_id(service_factory):
    dispatcher, _ = service_factory(1)
    dataset_id = service.register_dataset(
        dispatcher.target, Dataset.range(10), dataset_id="my_dataset"
    )
    assert dataset_id == "my_dataset"
    again = service.register_dataset(dispatcher.target, Dataset.range(10), dataset_id="my_dataset")
    assert again == "my_dataset"
    ds = service.from_dataset_id("parallel_epochs", dispatcher.target, "my_dataset")
    assert values(ds) == list(range(10))


def test_register_different_dataset_under_same_id_fails(service_factory):
    dispatcher, _ = service_factory(1)
    service.register_dataset(dispatcher.target, Dataset.range(10), dataset_id="ds")
    with pytest.raises(errors.InvalidArgumentError, match="same ID should have the same"):
        service.register_dataset(dispatcher.target, Dataset.range(20), dataset_id="ds")


def test_from_dataset_id(service_factory):
    dispatcher, _ = service_factory(1)
    src = Dataset.range(10)
    dataset_id = service.register_dataset(dispatcher.target, src)
    ds = service.from_dataset_id("parallel_epochs", dispatcher.target, dataset_id, src.element_spec)
    assert values(ds) == list(range(10))


def test_from_dataset_id_fetches_element_spec(service_factory):
    dispatcher, _ = service_factory(1)
    src = Dataset.range(10)
    dataset_id = service.register_dataset(dispatcher.target, src)
    ds = service.from_dataset_id("parallel_epochs", dispatcher.target, dataset_id)
    assert ds.element_spec == src.element_spec


def test_from_unknown_dataset_id(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.NotFoundError, match="Dataset id nope not found"):
        service.from_dataset_id("parallel_epochs", dispatcher.target, "nope")


# -- validation -----------------------------------------------------------------------------


def test_bad_processing_mode():
    with pytest.raises(ValueError, match="processing mode should be a"):
        service.distribute("invalid", "grpc://localhost:5000")


def test_bad_compression():
    with pytest.raises(ValueError, match="Invalid `compression` argument: gzip"):
        service.distribute("parallel_epochs", "grpc://localhost:5000", compression="gzip")


def test_job_name_must_be_string():
    with pytest.raises(ValueError, match="`job_name` must be a string"):
        service.distribute("parallel_epochs", "grpc://localhost:5000", job_name=3)


def test_job_name_must_not_be_empty():
    with pytest.raises(ValueError, match="`job_name` must not be empty"):
        service.distribute("parallel_epochs", "grpc://localhost:5000", job_name="")


@pytest.mark.parametrize("bad", [1, "", "grpc://a://b"])
def test_bad_service(bad):
    with pytest.raises(ValueError, match="service"):
        service.register_dataset(bad, Dataset.range(1))


def test_consumer_index_without_num_consumers(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(
        ValueError, match="Must either set both `consumer_index` and `num_consumers`, or neither"
    ):
        distribute(Dataset.range(1).repeat(), dispatcher, job_name="j", consumer_index=0)


def test_num_consumers_needs_job_name(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(ValueError, match="`job_name` must be set when setting `num_consumers`"):
        distribute(Dataset.range(1).repeat(), dispatcher, consumer_index=0, num_consumers=2)


def test_bad_max_outstanding_requests(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(ValueError, match="max_outstanding_requests"):
        distribute(Dataset.range(1), dispatcher, max_outstanding_requests=0)


def test_unreachable_dispatcher_fails_in_bounded_time(protocol, monkeypatch):
    from tensorwire_dataservice.service import client

    monkeypatch.setattr(client, "CLIENT_TIMEOUT", 1.0)
    with pytest.raises(errors.UnavailableError):
        service.register_dataset(f"{protocol}://localhost:1", Dataset.range(3))


# -- max_outstanding_requests and concurrency -------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_max_outstanding_requests(service_factory, limit):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(50), dispatcher, max_outstanding_requests=limit)
    assert sorted(values(ds)) == sorted(list(range(50)) * 2)


def test_a_reader_holds_at_most_its_prefetch_bytes_ahead(service_factory, monkeypatch):
    # Messages of 256 KiB (four 64 KiB elements) and at most 1 MiB ahead: the byte bound
    # binds long before the message count (16) does.
    from tensorwire_dataservice.service import client, worker

    monkeypatch.setattr(worker, "_MESSAGE_BYTES", 256 << 10)
    monkeypatch.setattr(client, "_PREFETCH_BYTES", 1 << 20)
    ahead: list[int] = []
    real_put = client._Reader._put

    def put(self, item):
        queued = real_put(self, item)
        # What the queue holds now, by the sizes its streamed messages carry.
        ahead.append(sum(p[3] for kind, p in list(self._queue.queue) if kind == "elements"))
        return queued

    monkeypatch.setattr(client._Reader, "_put", put)
    dispatcher, _ = service_factory(1)
    # Random bytes: compression cannot shrink the messages below the bound's scale.
    element = np.random.default_rng(0).integers(0, 256, 64 << 10, dtype=np.uint8)
    n = 160
    it = iter(distribute(Dataset.from_tensors(element).repeat(n), dispatcher))
    got = [next(it)]
    # The consumer pauses until the reader has filled its prefetch to the bound.
    end = time.monotonic() + 60
    while max(ahead, default=0) < 3 * (256 << 10) and time.monotonic() < end:
        time.sleep(0.01)
    got.extend(it)
    assert len(got) == n and all(np.array_equal(x, element) for x in got)
    assert 3 * (256 << 10) <= max(ahead) <= 1 << 20, ahead


@pytest.mark.parametrize("workers", [1, 2])
def test_an_epoch_ends_when_its_last_task_does_not_at_the_next_idle_wait(
    service_factory, monkeypatch, workers
):
    # With a reader's idle wait of ten minutes, only the wake-up of a task's end can end the
    # iteration in time: each epoch used to end one idle wait after its last element.
    from tensorwire_dataservice.service import client

    monkeypatch.setattr(client, "_IDLE_WAIT", 600.0)
    dispatcher, _ = service_factory(workers)
    got: list[int] = []
    reader = threading.Thread(
        target=lambda: got.extend(values(distribute(Dataset.range(20), dispatcher))), daemon=True
    )
    reader.start()
    reader.join(120)
    assert not reader.is_alive(), "the iteration did not end after its last element"
    assert sorted(got) == sorted(list(range(20)) * workers)


# -- shared jobs ----------------------------------------------------------------------------


def test_shared_job_name_splits_elements(service_factory):
    dispatcher, _ = service_factory(1)
    ds1 = distribute(Dataset.range(200), dispatcher, job_name="shared")
    ds2 = distribute(Dataset.range(200), dispatcher, job_name="shared")
    it1, it2 = iter(ds1), iter(ds2)
    got: list[int] = []
    exhausted = [False, False]
    while not all(exhausted):
        for i, it in enumerate((it1, it2)):
            if exhausted[i]:
                continue
            try:
                got.append(int(next(it)))
            except StopIteration:
                exhausted[i] = True
    assert sorted(got) == list(range(200))  # nothing duplicated, nothing lost


def test_shared_job_from_threads(service_factory):
    dispatcher, _ = service_factory(2)
    results: list[list[int]] = [[], [], []]

    def consume(i: int) -> None:
        ds = distribute(Dataset.range(300), dispatcher, "distributed_epoch", job_name="threads")
        results[i] = values(ds)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(sum(results, [])) == list(range(300))


def test_new_job_per_iteration_with_job_name(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(5), dispatcher, job_name="epochs")
    assert values(ds) == list(range(5))
    assert values(ds) == list(range(5))  # the second iteration is a new job


def test_worker_added_later_joins_the_job(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(10**9), dispatcher)  # effectively endless
    it = iter(ds)
    assert int(next(it)) == 0
    service_factory.add_worker(dispatcher)
    # The new worker gets a task for the running job and starts its own epoch at 0; the
    # client learns of the task at its next heartbeat.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if int(next(it)) == 0:
            break
    else:
        pytest.fail("the worker added mid-job never served the job")


def test_max_outstanding_requests_bounds_elements_per_request(service_factory, monkeypatch):
    from tensorwire_dataservice.service import client

    sizes: list[int] = []
    real = client.decode_chunk

    def recording(frames):
        elements, eos, first = real(frames)
        sizes.append(len(elements))
        return elements, eos, first

    monkeypatch.setattr(client, "decode_chunk", recording)
    dispatcher, (worker,) = service_factory(1)
    ds = distribute(Dataset.range(2000), dispatcher, max_outstanding_requests=2)
    assert values(ds) == list(range(2000))
    assert max(sizes) <= 2
    sizes.clear()
    it = iter(distribute(Dataset.range(2000), dispatcher))
    got = [int(next(it))]

    def producer_ahead() -> bool:
        # Once the worker holds several elements ready, its next message carries them all
        # (with no bound): wait for that rather than hope the producer runs ahead in time.
        with worker._core.lock:
            tasks = list(worker._core.tasks.values())
        return any(len(t.buffer) > 4 or t.exhausted for t in tasks)

    deadline = time.monotonic() + 60
    while not producer_ahead() and time.monotonic() < deadline:
        time.sleep(0.01)
    got.extend(int(x) for x in it)
    assert got == list(range(2000))
    assert max(sizes) > 2  # without the bound, messages carry many elements


def test_two_level_distribute(service_factory):
    dispatcher, _ = service_factory(1)
    inner = distribute(Dataset.range(5), dispatcher)
    outer = inner.map(lambda x: x + 100).apply(
        service.distribute("parallel_epochs", dispatcher.target)
    )
    assert values(outer) == [100, 101, 102, 103, 104]


def test_concurrent_iterators_of_one_dataset_get_full_epochs(service_factory):
    dispatcher, _ = service_factory(1)
    ds = distribute(Dataset.range(100), dispatcher)
    it1, it2 = iter(ds), iter(ds)
    got1 = [int(x) for x in it1]
    got2 = [int(x) for x in it2]
    assert got1 == got2 == list(range(100))


def test_public_names():
    assert tw.data.experimental.service.DispatchServer is service.DispatchServer
    for name in (
        "DispatchServer",
        "WorkerServer",
        "DispatcherConfig",
        "WorkerConfig",
        "distribute",
        "register_dataset",
        "from_dataset_id",
        "ShardingPolicy",
    ):
        assert hasattr(service, name)
    assert [p.name for p in service.ShardingPolicy] == [
        "OFF",
        "DYNAMIC",
        "FILE",
        "DATA",
        "FILE_OR_DATA",
        "HINT",
    ]
    assert tw.data.Dataset is not None and tw.data.INFINITE == -1 and tw.data.UNKNOWN == -2


def test_large_dataset_definition(service_factory, tmp_path):
    # TF's testDistributeLargeGraph: the definition itself (with its data) is above 4 MB,
    # journaled and sent to the worker.
    dispatcher, _ = service_factory(1, work_dir=str(tmp_path), fault_tolerant_mode=True)
    data = np.random.default_rng(3).random(800_000)  # 6.4 MB inside the definition
    ds = distribute(Dataset.from_tensors(data), dispatcher)
    (got,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(got, data)
