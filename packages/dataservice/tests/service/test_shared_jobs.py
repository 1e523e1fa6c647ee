"""Shared jobs (``job_name``), as TensorFlow: a job is its dataset and its name; the
consumers of a shared job each keep receiving elements as they ask for them until the job
ends, and every element goes to exactly one of them."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import tensorwire as tw
from tensorwire_dataservice.service import client

from .helpers import distribute, values

Dataset = tw.data.Dataset
service = tw.data.service

MODES = ["parallel_epochs", "distributed_epoch"]


def _alternate(iterators, jobs=None):
    """Pull one element from each live iterator in turn until all end.

    Returns what each got, and for each iterator how many elements of its job were
    delivered after it ended: a consumer may only end once its job has (nearly) ended.
    ``jobs[i]`` names iterator i's job (default: all read one job).
    """
    jobs = jobs or [0] * len(iterators)
    got = [[] for _ in iterators]
    ended_at = [None] * len(iterators)
    delivered = Counter()
    while any(e is None for e in ended_at):
        for i, it in enumerate(iterators):
            if ended_at[i] is not None:
                continue
            try:
                got[i].append(int(next(it)))
                delivered[jobs[i]] += 1
            except StopIteration:
                ended_at[i] = delivered[jobs[i]]
    after_end = [delivered[jobs[i]] - e for i, e in enumerate(ended_at)]
    return got, after_end


def _check_shared(got, after_end, expected, num_consumers):
    assert Counter(sum(got, [])) == Counter(expected), "an element was lost or repeated"
    # Nobody ended while more than the others' read-ahead was still to come.
    bound = (num_consumers - 1) * client.SHARED_READAHEAD
    assert max(after_end) <= bound, after_end
    # Each consumer kept receiving. Pulled in turn, the shares are equal (within one round)
    # until the first consumer ends, and at most ``bound`` elements come after that, so each
    # share is at least this whatever the timing. (How the elements a consumer holds ahead
    # split the rest depends on timing: a loaded machine gave one of three consumers 32 of
    # 200 elements, within this bound.)
    least = (len(expected) - bound - (num_consumers - 1)) // num_consumers
    for share in got:
        assert len(share) >= least, ([len(g) for g in got], least)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_workers", [1, 2])
def test_consumers_of_a_shared_job_each_keep_receiving(service_factory, mode, num_workers):
    dispatcher, _ = service_factory(num_workers)
    n = 400
    its = [
        iter(distribute(Dataset.range(n), dispatcher, mode, job_name="shared")) for _ in range(2)
    ]
    got, after_end = _alternate(its)
    per_worker = num_workers if mode == "parallel_epochs" else 1
    _check_shared(got, after_end, list(range(n)) * per_worker, 2)


@pytest.mark.parametrize("mode", MODES)
def test_from_dataset_id_several_datasets_and_consumers(service_factory, mode):
    dispatcher, _ = service_factory(2)
    n = 200
    ids = [
        service.register_dataset(dispatcher.target, Dataset.range(k * 1000, k * 1000 + n))
        for k in range(2)
    ]
    readers = {
        dataset_id: [
            iter(service.from_dataset_id(mode, dispatcher.target, dataset_id, job_name="same-name"))
            for _ in range(3)
        ]
        for dataset_id in ids
    }
    everything = [it for its in readers.values() for it in its]
    got, after_end = _alternate(everything, jobs=[k for k in range(2) for _ in range(3)])
    per_worker = 2 if mode == "parallel_epochs" else 1
    for k in range(len(ids)):
        mine = slice(3 * k, 3 * k + 3)
        expected = list(range(k * 1000, k * 1000 + n)) * per_worker
        _check_shared(got[mine], after_end[mine], expected, 3)


def test_same_job_name_for_two_datasets_is_two_jobs(service_factory):
    """Each reader gets its whole dataset (the job is the dataset and the name)."""
    dispatcher, _ = service_factory(1)
    first = iter(distribute(Dataset.range(10), dispatcher, job_name="job"))
    assert int(next(first)) == 0
    assert values(distribute(Dataset.range(100, 120), dispatcher, job_name="job")) == list(
        range(100, 120)
    )
    assert [0] + [int(x) for x in first] == list(range(10))


def test_joining_a_finished_job_yields_nothing_and_warns(service_factory, caplog):
    dispatcher, _ = service_factory(1)
    assert values(distribute(Dataset.range(5), dispatcher, job_name="epoch")) == list(range(5))
    with caplog.at_level(logging.WARNING, logger=client.__name__):
        # A new dataset object is iteration 0 again: the same, finished job.
        assert values(distribute(Dataset.range(5), dispatcher, job_name="epoch")) == []
    assert "already finished" in caplog.text and "new epoch" in caplog.text


def test_max_outstanding_requests_bounds_a_shared_consumers_read_ahead(service_factory):
    dispatcher, _ = service_factory(1)
    n = 60
    its = [
        iter(
            distribute(Dataset.range(n), dispatcher, job_name="bounded", max_outstanding_requests=2)
        )
        for _ in range(2)
    ]
    got, after_end = _alternate(its)
    assert sorted(sum(got, [])) == list(range(n))
    assert max(after_end) <= 2
