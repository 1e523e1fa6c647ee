"""Coordinated reads (num_consumers / consumer_index), as TensorFlow's coordinated_read_test."""

from __future__ import annotations

import threading

import pytest
import tensorwire as tw
from tensorwire import errors

Dataset = tw.data.Dataset
service = tw.data.service


def _consumer(dispatcher, index, num_consumers, dataset, job_name="coordinated"):
    return dataset.apply(
        service.distribute(
            "parallel_epochs",
            dispatcher.target,
            job_name=job_name,
            consumer_index=index,
            num_consumers=num_consumers,
        )
    )


def _read_rounds(dispatcher, num_consumers, rounds, dataset):
    out = [[] for _ in range(num_consumers)]

    def run(i):
        it = iter(_consumer(dispatcher, i, num_consumers, dataset))
        out[i] = [int(next(it)) for _ in range(rounds)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(num_consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(len(o) == rounds for o in out), "a consumer did not finish its rounds"
    return out


@pytest.mark.parametrize("num_workers,num_consumers", [(1, 3), (2, 2), (3, 4)])
def test_rounds_are_consecutive_elements_of_one_worker(service_factory, num_workers, num_consumers):
    dispatcher, _ = service_factory(num_workers)
    rounds = 12
    out = _read_rounds(dispatcher, num_consumers, rounds, Dataset.range(10**6).repeat())
    for r in range(rounds):
        row = [out[c][r] for c in range(num_consumers)]
        # In round r every consumer read from the same worker, consumer c getting element c
        # of that worker's next round of num_consumers elements.
        assert row == list(range(row[0], row[0] + num_consumers)), (r, row)
        assert row[0] % num_consumers == 0


def test_rounds_alternate_between_workers(service_factory):
    dispatcher, _ = service_factory(2)
    out = _read_rounds(dispatcher, 2, 6, Dataset.range(10**6).repeat())
    firsts = [out[0][r] for r in range(6)]
    # Each worker runs its own epoch from 0: rounds 0/1 both start at 0, rounds 2/3 at 2, ...
    assert firsts == [0, 0, 2, 2, 4, 4]


def test_finite_dataset_is_refused(service_factory):
    dispatcher, _ = service_factory(1)
    ds = _consumer(dispatcher, 0, 2, Dataset.range(10))
    with pytest.raises(errors.FailedPreconditionError, match="infinite"):
        next(iter(ds))


def test_consumer_index_out_of_range(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(ValueError, match="consumer_index"):
        _consumer(dispatcher, 2, 2, Dataset.range(10).repeat())


def _explode(x):
    return Dataset.from_tensor_slices([x, x + 1000])


def test_unknown_cardinality_is_accepted_and_each_round_comes_from_one_worker(service_factory):
    """As TensorFlow: only a known, finite cardinality is refused. A flat_map after a
    shuffle and repeat has unknown cardinality; each round's values come from one worker."""
    dispatcher, _ = service_factory(2)
    dataset = Dataset.range(50).shuffle(10, seed=1).repeat().flat_map(_explode)
    assert dataset.cardinality() == tw.data.UNKNOWN_CARDINALITY
    num_consumers, rounds = 2, 8
    out = _read_rounds(dispatcher, num_consumers, rounds, dataset)
    for r in range(rounds):
        row = [out[c][r] for c in range(num_consumers)]
        # flat_map emits x then x + 1000 from one worker's stream: a round of two
        # consecutive elements of one worker is such a pair (both halves of one element).
        assert row[1] == row[0] + 1000, (r, row)
