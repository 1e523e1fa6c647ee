"""distributed_epoch (ShardingPolicy.DYNAMIC), as TensorFlow's dynamic_sharding_test."""

from __future__ import annotations

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors

from .helpers import distribute, values

Dataset = tw.data.Dataset


@pytest.mark.parametrize("num_workers", [1, 3])
def test_range_each_element_once(service_factory, num_workers):
    dispatcher, _ = service_factory(num_workers)
    ds = distribute(Dataset.range(1000), dispatcher, "distributed_epoch")
    assert sorted(values(ds)) == list(range(1000))


def test_from_tensor_slices_with_map_and_filter(service_factory):
    dispatcher, _ = service_factory(2)
    ds = (
        Dataset.from_tensor_slices(np.arange(300)).map(lambda x: x * 2).filter(lambda x: x % 3 == 0)
    )
    got = values(distribute(ds, dispatcher, "distributed_epoch"))
    assert sorted(got) == [x * 2 for x in range(300) if (x * 2) % 3 == 0]


def test_batches_cover_the_data(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(1000).batch(10), dispatcher, "distributed_epoch")
    got = np.concatenate(list(ds.as_numpy_iterator()))
    assert sorted(got.tolist()) == list(range(1000))


def test_repeat_gives_each_element_repeat_times(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(50).repeat(3), dispatcher, "distributed_epoch")
    assert sorted(values(ds)) == sorted(list(range(50)) * 3)


def test_empty_dataset(service_factory):
    dispatcher, _ = service_factory(2)
    assert values(distribute(Dataset.range(0), dispatcher, "distributed_epoch")) == []


def test_shared_job_consumers_split_the_epoch(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(500), dispatcher, "distributed_epoch", job_name="shared")
    it1, it2 = (
        iter(ds),
        iter(distribute(Dataset.range(500), dispatcher, "distributed_epoch", job_name="shared")),
    )
    got = []
    for it in (it1, it2):
        got.extend(int(x) for x in it)
    assert sorted(got) == list(range(500))


def test_unsplittable_source_is_an_error(service_factory):
    dispatcher, _ = service_factory(1)
    ds = Dataset.from_generator(
        lambda: iter(range(3)), output_signature=tw.data.TensorSpec((), np.int64)
    )
    with pytest.raises(errors.OpError):
        values(distribute(ds, dispatcher, "distributed_epoch"))


def test_forever_repeat(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(20).repeat(), dispatcher, "distributed_epoch").take(200)
    got = values(ds)
    assert len(got) == 200 and set(got) == set(range(20))


def test_repeat_after_distribution(service_factory):
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.range(30), dispatcher, "distributed_epoch").repeat(3)
    assert sorted(values(ds)) == sorted(list(range(30)) * 3)


@pytest.mark.parametrize("combine", ["zip", "concatenate"])
def test_sources_with_several_inputs_are_refused(service_factory, combine):
    dispatcher, _ = service_factory(1)
    a, b = Dataset.range(5), Dataset.range(5)
    ds = Dataset.zip((a, b)) if combine == "zip" else a.concatenate(b)
    with pytest.raises(errors.UnimplementedError):
        values(distribute(ds, dispatcher, "distributed_epoch"))


def test_interleave_over_files(service_factory, tmp_path):
    files = []
    for i in range(6):
        path = tmp_path / f"part{i}.txt"
        path.write_text("".join(f"{i}:{j}\n" for j in range(5)))
        files.append(str(path))
    dispatcher, _ = service_factory(2)
    ds = Dataset.list_files(files, shuffle=False).interleave(
        tw.data.TextLineDataset, cycle_length=2
    )
    got = [
        x.decode() if isinstance(x, bytes) else str(x)
        for x in distribute(ds, dispatcher, "distributed_epoch").as_numpy_iterator()
    ]
    assert sorted(got) == sorted(f"{i}:{j}" for i in range(6) for j in range(5))


def test_shuffle_and_repeat_each_epoch_complete(service_factory):
    dispatcher, _ = service_factory(2)
    ds = Dataset.range(40).shuffle(40, seed=1).repeat(2)
    assert sorted(values(distribute(ds, dispatcher, "distributed_epoch"))) == sorted(
        list(range(40)) * 2
    )
