"""Dataset.save / Dataset.load: the snapshot format of distributed_save, written locally."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.dataset import snapshot_format as fmt
from tensorwire_dataservice.dataset.structure import flatten

Dataset = tw.data.Dataset

Point = collections.namedtuple("Point", ["x", "label"])


def _nested(n: int = 10) -> Dataset:
    return Dataset.range(n).map(
        lambda i: {
            "image": np.full((2, 3), i, np.float32),
            "pair": (i.astype(np.int16), np.array([b"t%d" % int(i)], dtype=object)),
            "flag": i % 2 == 0,
        }
    )


def _equal(a, b) -> bool:
    fa, fb = flatten(a), flatten(b)
    return len(fa) == len(fb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)
        for x, y in zip(fa, fb, strict=True)
    )


@pytest.mark.parametrize("compression", [None, "", "AUTO", "GZIP", "zlib"])
def test_round_trip_nested_structures_and_dtypes(tmp_path, compression):
    ds = _nested()
    path = str(tmp_path / "snap")
    ds.save(path, compression=compression)
    loaded = Dataset.load(path)
    assert loaded.element_spec == ds.element_spec
    assert loaded.cardinality() == 10
    got = list(loaded)
    want = list(ds)
    assert len(got) == len(want)
    assert all(_equal(g, w) for g, w in zip(got, want, strict=True))


def test_compression_is_stored_and_applied(tmp_path):
    ds = Dataset.range(2000).map(lambda i: np.zeros(64, np.int64))
    ds.save(str(tmp_path / "plain"))
    ds.save(str(tmp_path / "auto"), compression="AUTO")
    plain = os.path.getsize(fmt.chunk_path(str(tmp_path / "plain"), 0))
    auto = os.path.getsize(fmt.chunk_path(str(tmp_path / "auto"), 0))
    assert auto < plain / 10
    assert fmt.read_metadata(str(tmp_path / "auto"))["compression"] == "ZLIB"


def test_named_tuples_come_back_with_their_fields(tmp_path):
    ds = Dataset.range(3).map(lambda i: Point(i, i * 2))
    ds.save(str(tmp_path / "s"))
    got = list(Dataset.load(str(tmp_path / "s")))
    assert [(int(p.x), int(p.label)) for p in got] == [(0, 0), (1, 2), (2, 4)]
    assert type(got[0]).__name__ == "Point" and got[0]._fields == ("x", "label")


def test_chunks_keep_the_order_and_shard_func_groups(tmp_path):
    n = fmt.ELEMENTS_PER_CHUNK * 2 + 5
    Dataset.range(n).save(str(tmp_path / "ordered"))
    assert sorted(fmt.chunk_numbers(str(tmp_path / "ordered"))) == [0, 1, 2]
    assert [int(x) for x in Dataset.load(str(tmp_path / "ordered"))] == list(range(n))
    Dataset.range(10).save(str(tmp_path / "sharded"), shard_func=lambda x: (x % 3) * 5)
    got = [int(x) for x in Dataset.load(str(tmp_path / "sharded"))]
    assert got == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]  # shard after shard, in shard index order


def test_load_checkpoint_resumes(tmp_path):
    Dataset.range(50).save(str(tmp_path / "s"), compression="GZIP")
    ds = Dataset.load(str(tmp_path / "s"))
    it = iter(ds)
    first = [int(next(it)) for _ in range(20)]
    state = it.state_dict()
    restored = iter(ds)
    restored.load_state_dict(state)
    assert first + [int(x) for x in restored] == list(range(50))


def test_load_element_spec_and_compression_are_checked(tmp_path):
    path = str(tmp_path / "s")
    Dataset.range(3).save(path, compression="GZIP")
    assert list(Dataset.load(path, element_spec=tw.data.TensorSpec((), np.int64))) == [0, 1, 2]
    with pytest.raises(errors.InvalidArgumentError, match="does not match"):
        Dataset.load(path, element_spec=tw.data.TensorSpec((), np.float32))
    with pytest.raises(errors.InvalidArgumentError, match="compression"):
        Dataset.load(path, compression="ZLIB")
    assert len(list(Dataset.load(path, compression="gzip"))) == 3


def test_refusals(tmp_path):
    path = str(tmp_path / "s")
    Dataset.range(3).save(path)
    with pytest.raises(errors.AlreadyExistsError, match="finished snapshot"):
        Dataset.range(3).save(path)
    with pytest.raises(errors.InvalidArgumentError, match="Unsupported snapshot compression"):
        Dataset.range(3).save(str(tmp_path / "t"), compression="SNAPPY")
    with pytest.raises(errors.InvalidArgumentError, match="scalar integer"):
        Dataset.range(3).save(str(tmp_path / "u"), shard_func=lambda x: 0.5)
    with pytest.raises(errors.NotFoundError, match="no snapshot"):
        Dataset.load(str(tmp_path / "missing"))
    with pytest.raises(errors.UnimplementedError, match="wait=True"):
        Dataset.load(path, wait=True)
    nested = Dataset.range(2).window(1)
    with pytest.raises(errors.UnimplementedError, match="cannot store"):
        nested.save(str(tmp_path / "v"))


def test_unfinished_and_damaged_snapshots_are_refused(tmp_path):
    path = str(tmp_path / "s")
    Dataset.range(fmt.ELEMENTS_PER_CHUNK + 1).save(path)
    os.unlink(fmt.chunk_path(path, 1))
    with pytest.raises(errors.DataLossError, match=r"chunks \[1\] are missing"):
        Dataset.load(path)
    os.unlink(os.path.join(path, fmt.DONE_FILE))
    with pytest.raises(errors.FailedPreconditionError, match="not finished"):
        Dataset.load(path)
