"""Cross-trainer cache, as TensorFlow's cross_trainer_cache_test: several trainers read the
elements of one job from a sliding window on each worker."""

from __future__ import annotations

import pytest
import tensorwire as tw
from tensorwire import errors

from .helpers import distribute

Dataset = tw.data.Dataset
CrossTrainerCache = tw.data.experimental.service.CrossTrainerCache


def _trainer(dispatcher, trainer_id, job_name="job", dataset=None, **kwargs):
    dataset = dataset if dataset is not None else Dataset.range(10**7).repeat()
    return distribute(
        dataset,
        dispatcher,
        job_name=job_name,
        cross_trainer_cache=CrossTrainerCache(trainer_id=trainer_id),
        **kwargs,
    )


def _take(iterator, n):
    return [int(next(iterator)) for _ in range(n)]


def test_two_trainers_read_the_same_elements_in_the_same_order(service_factory):
    dispatcher, _ = service_factory(1)
    first = iter(_trainer(dispatcher, "trainer 1"))
    second = iter(_trainer(dispatcher, "trainer 2"))
    assert _take(first, 50) == list(range(50))
    assert _take(second, 50) == list(range(50))
    # Interleaved, within the window, they stay in step.
    for _ in range(20):
        assert _take(first, 3) == _take(second, 3)


def test_without_the_cache_readers_of_a_job_split_it(service_factory):
    dispatcher, _ = service_factory(1)
    first = iter(distribute(Dataset.range(10**7).repeat(), dispatcher, job_name="job"))
    assert _take(first, 10) == list(range(10))
    second = iter(distribute(Dataset.range(10**7).repeat(), dispatcher, job_name="job"))
    assert _take(second, 10)[0] >= 10


def test_a_trainer_behind_the_window_skips_to_its_oldest_element(service_factory):
    # int64 elements are 8 bytes: a window of 20 elements.
    dispatcher, _ = service_factory(1, worker_config={"cross_trainer_cache_size_bytes": 160})
    slow = iter(_trainer(dispatcher, "slow", max_outstanding_requests=1))
    assert _take(slow, 5) == list(range(5))
    fast = iter(_trainer(dispatcher, "fast", max_outstanding_requests=1))
    assert _take(fast, 300) == list(range(300))
    # The window moved on to (at least) elements 280..299: the slow trainer's next
    # elements (after the one it may hold read ahead) come from there, contiguous.
    seq = [4, *_take(slow, 30)]
    jump = next(i for i in range(1, len(seq)) if seq[i] != seq[i - 1] + 1)
    assert jump <= 2  # at most element 5, read ahead before the fast trainer started
    assert seq[jump] >= 300 - 20
    assert seq[jump:] == list(range(seq[jump], seq[jump] + len(seq) - jump))


def test_readers_with_one_trainer_id_share_its_position(service_factory):
    dispatcher, _ = service_factory(1)
    first = iter(_trainer(dispatcher, "same", max_outstanding_requests=1))
    assert _take(first, 10) == list(range(10))
    second = iter(_trainer(dispatcher, "same", max_outstanding_requests=1))
    assert _take(second, 10)[0] >= 10


def test_a_job_name_is_required(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.InvalidArgumentError, match="requires named jobs"):
        _trainer(dispatcher, "t", job_name=None)


def test_a_finite_dataset_is_refused(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.InvalidArgumentError, match="requires the input dataset to be inf"):
        _trainer(dispatcher, "t", dataset=Dataset.range(10))


def test_coordinated_reads_are_refused(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.InvalidArgumentError, match="does not support coordinated reads"):
        _trainer(dispatcher, "t", num_consumers=2, consumer_index=0)


def test_a_second_iteration_of_one_dataset_is_refused(service_factory):
    dispatcher, _ = service_factory(1)
    ds = _trainer(dispatcher, "t")
    assert _take(iter(ds), 3) == [0, 1, 2]
    with pytest.raises(errors.InvalidArgumentError, match="disallows multiple repetitions"):
        next(iter(ds))


def test_a_reader_without_the_cache_cannot_join_a_cached_job(service_factory):
    dispatcher, _ = service_factory(1)
    assert _take(iter(_trainer(dispatcher, "t")), 3) == [0, 1, 2]
    plain = distribute(Dataset.range(10**7).repeat(), dispatcher, job_name="job")
    with pytest.raises(
        errors.InvalidArgumentError, match="Existing cross-trainer cache: <enabled>; got <disabled>"
    ):
        next(iter(plain))


def test_an_empty_trainer_id_is_refused():
    with pytest.raises(ValueError, match="non-empty trainer ID"):
        CrossTrainerCache(trainer_id=None)
    with pytest.raises(ValueError, match="non-empty trainer ID"):
        CrossTrainerCache(trainer_id="")


def test_an_element_larger_than_the_window_is_an_error(service_factory):
    import numpy as np

    dispatcher, _ = service_factory(1, worker_config={"cross_trainer_cache_size_bytes": 64})
    big = Dataset.from_tensors(np.zeros(100, np.float64)).repeat()
    with pytest.raises(errors.InvalidArgumentError, match="larger than cache size"):
        next(iter(_trainer(dispatcher, "t", dataset=big)))


def test_distributed_epoch_trainers_share_elements_as_in_tensorflow(service_factory):
    # TensorFlow allows the cache with dynamic sharding: each worker's window holds its
    # share of the splits, and a second trainer reads what the first one read.
    # Which worker's window a trainer's first elements come from is a race (both stream
    # at once): the second trainer may begin with the other worker's share, so it reads on
    # (a bounded count) until it meets what the first one read.
    dispatcher, _ = service_factory(2)
    first = iter(_trainer(dispatcher, "trainer 1", mode="distributed_epoch"))
    output1 = set(_take(first, 100))
    second = iter(_trainer(dispatcher, "trainer 2", mode="distributed_epoch"))
    for _ in range(200):
        if output1 & set(_take(second, 100)):
            break
    else:
        pytest.fail("the second trainer read 20000 elements, none of those the first read")


def _counting_source():
    import numpy as np

    produced = []

    def source(n, timeout):
        start = len(produced)
        batch = [np.int64(i) for i in range(start, start + n)]
        produced.extend(batch)
        return batch, False

    return source, produced


def test_the_window_keeps_the_newest_elements_within_its_budget():
    from tensorwire_dataservice.service.trainer_cache import TrainerWindow

    source, produced = _counting_source()
    window = TrainerWindow(max_bytes=80, source=source)  # ten int64 elements
    fast = [int(x) for _ in range(30) for x in window.get("fast", 1, timeout=1.0)]
    assert fast == list(range(30))
    assert window.start == 20  # elements 0..19 left the window, oldest first
    # A new (or fallen-behind) trainer starts at the oldest element still there.
    assert [int(x) for x in window.get("new", 3, timeout=1.0)] == [20, 21, 22]
    # Reading what is cached produces nothing new.
    assert len(produced) == 30


def test_the_end_of_the_dataset_is_an_error_for_every_trainer():
    from tensorwire_dataservice.service.trainer_cache import TrainerWindow

    window = TrainerWindow(max_bytes=80, source=lambda n, t: ([], True))
    for trainer in ("a", "b"):
        with pytest.raises(errors.InvalidArgumentError, match="requires the input dataset"):
            window.get(trainer, 1, timeout=1.0)


def test_a_failing_pipeline_reaches_every_trainer_with_its_error(service_factory):
    dispatcher, _ = service_factory(1)

    def explode(x):
        if x >= 3:
            raise ValueError(f"bad element {x}")
        return x

    failing = Dataset.range(10**7).repeat().map(explode)
    reader = iter(_trainer(dispatcher, "t", dataset=failing))
    assert _take(reader, 3) == [0, 1, 2]
    with pytest.raises(errors.InvalidArgumentError, match="bad element 3"):
        next(reader)
