"""The pipelines the checkpoint tests save and restore, by name.

A module of its own (not a test file) so a subprocess can build the same pipelines:
``build(name, directory)`` makes a fresh dataset each call (as a restarted trainer would),
writing the files it reads into ``directory`` first when they are missing.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from tensorwire_dataservice.dataset import Dataset as D
from tensorwire_dataservice.dataset import (
    DatasetBase,
    Options,
    TextLineDataset,
    TFRecordDataset,
    TFRecordWriter,
)


def _records(directory: str, compression: str | None = None) -> list[str]:
    """Four TFRecord files of 5 to 8 records each."""
    suffix = ".gz" if compression else ""
    paths = []
    for i in range(4):
        path = os.path.join(directory, f"records-{i}.tfrecord{suffix}")
        if not os.path.exists(path):
            with TFRecordWriter(path, options=compression) as writer:
                for j in range(5 + i):
                    writer.write(f"file{i}-record{j}".encode() * (j + 1))
        paths.append(path)
    return paths


def _text(directory: str) -> list[str]:
    paths = []
    for i in range(3):
        path = os.path.join(directory, f"lines-{i}.txt.gz")
        if not os.path.exists(path):
            with gzip.open(path, "wb") as f:
                f.write("".join(f"file {i} line {j}\r\n" for j in range(4 + i)).encode())
        paths.append(path)
    return paths


def _square(x: Any) -> Any:
    return x * x


class CountingStream:
    """A restorable iterator for ``from_generator``: has state_dict/load_state_dict."""

    def __init__(self, n: int) -> None:
        self.i, self.n = 0, n

    def __iter__(self) -> CountingStream:
        return self

    def __next__(self) -> int:
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return self.i * 3

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.i = state["i"]


def _pipelines(tmp: str) -> dict[str, Callable[[], DatasetBase]]:
    return {
        "range": lambda: D.range(3, 40, 2),
        "slices_dict": lambda: D.from_tensor_slices(
            {"a": np.arange(12), "b": np.arange(24).reshape(12, 2)}
        ),
        "slices_array": lambda: D.from_tensor_slices(np.arange(30).reshape(10, 3)),
        "from_tensors": lambda: D.from_tensors((np.int32(4), b"x")).repeat(3),
        "from_generator_stateful": lambda: D.from_generator(
            CountingStream, output_types=np.int64, args=(9,)
        ),
        "counter": lambda: D.counter(5, 3).take(15),
        "random_seeded": lambda: D.random(seed=3).take(2100),
        "list_files_shuffled": lambda: D.list_files(
            os.path.join(tmp, "records-*"), shuffle=True, seed=4
        ).repeat(3),
        "shuffle_seeded_epochs": lambda: D.range(30).shuffle(8, seed=1).repeat(3),
        "shuffle_same_order": lambda: (
            D.range(30).shuffle(8, seed=2, reshuffle_each_iteration=False).repeat(2)
        ),
        "repeat_take": lambda: D.range(5).repeat().take(23),
        "skip_take": lambda: D.range(30).skip(3).take(20),
        "skip_all": lambda: D.range(5).skip(-1).concatenate(D.range(3)),
        "batch": lambda: D.range(23).batch(4),
        "batch_drop": lambda: D.range(23).batch(4, drop_remainder=True),
        "padded_batch": lambda: D.range(10).map(lambda x: np.arange(x)).padded_batch(3),
        "unbatch": lambda: D.range(20).batch(6).unbatch(),
        "unbatch_tuple": lambda: (
            D.from_tensor_slices((np.arange(12), np.arange(12) * 2)).batch(5).unbatch()
        ),
        "filter": lambda: D.range(40).filter(lambda x: x % 3 == 0),
        "map": lambda: D.range(20).map(_square),
        "parallel_map": lambda: D.range(300).map(_square, num_parallel_calls=3),
        "interleave": lambda: D.range(6).interleave(
            lambda i: D.range(i * 10, i * 10 + 7), cycle_length=3, block_length=2
        ),
        "parallel_interleave": lambda: D.range(7).interleave(
            lambda i: D.range(i * 10, i * 10 + 5 + i),
            cycle_length=3,
            block_length=2,
            num_parallel_calls=3,
        ),
        "flat_map": lambda: D.range(7).flat_map(lambda i: D.range(i).map(lambda x: x + i)),
        "prefetch": lambda: D.range(60).prefetch(5),
        "prefetch_chain": lambda: (
            D.range(200).map(_square, num_parallel_calls=2).batch(3).prefetch(2).prefetch(3)
        ),
        "prefetch_zero": lambda: D.range(10).prefetch(0),
        "zip": lambda: D.zip((D.range(10), {"b": D.range(10, 40).batch(2)})),
        "concatenate": lambda: D.range(5).concatenate(D.range(10, 14)),
        "enumerate": lambda: D.range(10, 20).enumerate(5),
        "cache_memory": lambda: D.range(8).map(_square).cache().repeat(3),
        "cache_file": lambda: D.range(8).cache(os.path.join(tmp, "cache")).repeat(3),
        "sample_from_datasets": lambda: D.sample_from_datasets(
            [D.range(0, 20), D.range(100, 130)], weights=[0.3, 0.7], seed=5
        ),
        "choose_from_datasets": lambda: D.choose_from_datasets(
            [D.range(0, 10), D.range(100, 104), D.range(200, 210)],
            D.range(3).repeat(6),
            stop_on_empty_dataset=False,
        ),
        "scan": lambda: D.range(12).scan(np.int64(0), lambda s, x: (s + x, s * 2)),
        "window_flat_map": lambda: D.range(13).window(4, shift=3).flat_map(lambda w: w.batch(4)),
        "window_sparse": lambda: D.range(20).window(2, shift=5).flat_map(lambda w: w),
        "shard": lambda: D.range(20).shard(3, 1),
        "unique": lambda: D.from_tensor_slices(np.array([1, 2, 1, 3, 2, 4, 4, 5])).unique(),
        "take_while": lambda: D.range(20).take_while(lambda x: x < 9).batch(4),
        "with_options": lambda: D.range(9).with_options(Options()).map(_square),
        "tfrecord": lambda: TFRecordDataset(_records(tmp)),
        "tfrecord_parallel_reads": lambda: TFRecordDataset(_records(tmp), num_parallel_reads=3),
        "tfrecord_gzip": lambda: TFRecordDataset(_records(tmp, "GZIP"), compression_type="GZIP"),
        "textline_gzip": lambda: TextLineDataset(_text(tmp), compression_type="GZIP"),
        "files_interleave_composite": lambda: (
            D.list_files(os.path.join(tmp, "records-*.tfrecord"), shuffle=True, seed=7)
            .interleave(TFRecordDataset, cycle_length=2, num_parallel_calls=2)
            .shuffle(6, seed=8)
            .map(lambda r: np.int64(len(r)), num_parallel_calls=2)
            .batch(3)
            .prefetch(2)
        ),
    }


def names() -> list[str]:
    return sorted(_pipelines("/nonexistent"))


def build(name: str, directory: str) -> DatasetBase:
    """A fresh dataset ``name``, its files written into ``directory`` when missing."""
    # Make every file first, so list_files finds the same ones whatever was built before.
    _records(directory)
    _records(directory, "GZIP")
    _text(directory)
    return _pipelines(directory)[name]()


def canon(value: Any) -> Any:
    """A comparable, hashable form of an element (arrays by dtype, shape and contents)."""
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, repr(value.tolist()))
    if isinstance(value, np.generic):
        return ("scalar", str(value.dtype), repr(value.item()))
    if isinstance(value, dict):
        return ("dict", tuple((k, canon(v)) for k, v in sorted(value.items())))
    if isinstance(value, tuple):
        return ("tuple", tuple(canon(v) for v in value))
    if isinstance(value, DatasetBase):
        return ("dataset", tuple(canon(v) for v in value))
    return ("other", repr(value))
