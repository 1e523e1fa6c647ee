"""Transforms, with TensorFlow's documented outputs where its docstrings give them."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np
import pytest
from tensorwire import errors
from tensorwire_dataservice.dataset import AUTOTUNE, INFINITE, UNKNOWN, Dataset, TensorSpec


def ints(ds: Any) -> list[int]:
    return [int(x) for x in ds]


def lists(ds: Any) -> list[Any]:
    return [x.tolist() for x in ds]


# ---------------------------------------------------------------------------------- map


def test_map_unpacks_plain_tuples_into_arguments() -> None:
    ds = Dataset.from_tensor_slices(([1, 2], [10, 20])).map(lambda a, b: a + b)
    assert ints(ds) == [11, 22]


def test_map_passes_dicts_and_namedtuples_whole() -> None:
    Pair = collections.namedtuple("Pair", "a b")
    ds = Dataset.from_tensor_slices({"a": [1, 2], "b": [3, 4]}).map(lambda d: d["a"] * d["b"])
    assert ints(ds) == [3, 8]
    ds = Dataset.from_tensors(Pair(1, 2)).map(lambda p: p.a + p.b)
    assert ints(ds) == [3]


def test_map_returning_a_list_gives_a_tuple() -> None:
    out = list(Dataset.range(2).map(lambda x: [x, x + 1]))
    assert isinstance(out[0], tuple)
    assert [tuple(map(int, e)) for e in out] == [(0, 1), (1, 2)]


def test_map_converts_python_results() -> None:
    out = list(Dataset.range(2).map(lambda x: {"s": "ab", "f": 1.5}))
    assert out[0]["s"] == b"ab" and type(out[0]["f"]) is np.float32


def test_map_element_spec_is_traced_with_unknown_dims() -> None:
    ds = Dataset.range(10).batch(4).map(lambda x: (x.astype(np.float32), x[:1]))
    spec = ds.element_spec
    assert spec[0] == TensorSpec((None,), np.float32)
    assert spec[1] == TensorSpec((1,), np.int64)


def test_map_element_spec_falls_back_to_the_first_element() -> None:
    def fn(x: Any) -> Any:
        if int(x) == 1:  # placeholders are ones: make tracing fail
            raise RuntimeError("no tracing")
        return np.full((3,), x)

    ds = Dataset.range(5, 7).map(fn)
    assert ds.element_spec == TensorSpec((3,), np.int64)


def test_map_keeps_cardinality() -> None:
    assert Dataset.range(7).map(lambda x: x).cardinality() == 7


@pytest.mark.parametrize("parallel", [2, AUTOTUNE])
def test_parallel_map_preserves_order(parallel: int) -> None:
    ds = Dataset.range(2000).map(lambda x: x * 3, num_parallel_calls=parallel)
    assert ints(ds) == [3 * i for i in range(2000)]


def test_parallel_map_runs_concurrently() -> None:
    pairs = threading.Barrier(2)

    def meet(x: Any) -> Any:
        # Passes only while another call runs at the same time; called one after the
        # other, the first waits out the deadline and raises BrokenBarrierError.
        pairs.wait(timeout=60)
        return x

    assert ints(Dataset.range(8).map(meet, num_parallel_calls=2)) == list(range(8))


def test_parallel_map_nondeterministic_yields_everything() -> None:
    def jitter(x: Any) -> Any:
        time.sleep(0.002 * (int(x) % 3))
        return x

    ds = Dataset.range(60).map(jitter, num_parallel_calls=4, deterministic=False)
    assert sorted(ints(ds)) == list(range(60))


def test_parallel_map_raises_the_function_error_in_order() -> None:
    def fn(x: Any) -> Any:
        if int(x) == 5:
            raise ValueError("bad element 5")
        return x

    it = iter(Dataset.range(10).map(fn, num_parallel_calls=3))
    got = [int(next(it)) for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="bad element 5"):
        next(it)


def test_map_rejects_bad_parallelism() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="num_parallel_calls"):
        Dataset.range(3).map(lambda x: x, num_parallel_calls=0)


# ------------------------------------------------------------------------------- filter


def test_filter_keeps_true_elements_and_unknown_cardinality() -> None:
    ds = Dataset.range(10).filter(lambda x: x % 3 == 0)
    assert ints(ds) == [0, 3, 6, 9]
    assert ds.cardinality() == UNKNOWN


def test_filter_unpacks_tuples() -> None:
    ds = Dataset.from_tensor_slices(([1, 2, 3], [3, 2, 1])).filter(lambda a, b: a < b)
    assert [(int(a), int(b)) for a, b in ds] == [(1, 3)]


def test_filter_requires_a_scalar_bool() -> None:
    with pytest.raises(ValueError, match="scalar"):
        list(Dataset.range(3).filter(lambda x: x))


# -------------------------------------------------------------------------------- batch


def test_batch_and_drop_remainder() -> None:
    assert lists(Dataset.range(8).batch(3)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert lists(Dataset.range(8).batch(3, drop_remainder=True)) == [[0, 1, 2], [3, 4, 5]]
    assert Dataset.range(8).batch(3).cardinality() == 3
    assert Dataset.range(8).batch(3, drop_remainder=True).cardinality() == 2


def test_batch_spec_knows_the_batch_dim_only_with_drop_remainder() -> None:
    assert Dataset.range(8).batch(3).element_spec == TensorSpec((None,), np.int64)
    spec = Dataset.range(8).batch(3, drop_remainder=True).element_spec
    assert spec == TensorSpec((3,), np.int64)


def test_batch_stacks_nested_structures() -> None:
    ds = Dataset.from_tensor_slices({"x": np.arange(6).reshape(3, 2), "y": ["a", "b", "c"]})
    (batch,) = list(ds.batch(3))
    assert batch["x"].shape == (3, 2)
    assert batch["y"].tolist() == [b"a", b"b", b"c"]


def test_batch_of_different_shapes_fails_like_tensorflow() -> None:
    ds = Dataset.range(1, 3).map(lambda x: np.zeros(int(x)))
    with pytest.raises(errors.InvalidArgumentError, match="Cannot batch tensors with different"):
        list(ds.batch(2))


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="Batch size must be greater than zero"):
        Dataset.range(3).batch(0)


def test_batch_cardinality_of_infinite_and_unknown() -> None:
    assert Dataset.range(3).repeat().batch(2).cardinality() == INFINITE
    assert Dataset.range(3).filter(lambda x: True).batch(2).cardinality() == UNKNOWN


# ------------------------------------------------------------------------- padded_batch


def fills() -> Any:
    return Dataset.range(1, 5, dtype=np.int32).map(lambda x: np.full((int(x),), x))


def test_padded_batch_pads_to_the_longest() -> None:
    assert lists(fills().padded_batch(2)) == [[[1, 0], [2, 2]], [[3, 3, 3, 0], [4, 4, 4, 4]]]


def test_padded_batch_to_a_fixed_shape_with_a_value() -> None:
    out = lists(fills().padded_batch(2, padded_shapes=5, padding_values=-1))
    assert out[0] == [[1, -1, -1, -1, -1], [2, 2, -1, -1, -1]]
    assert fills().padded_batch(2, padded_shapes=5).element_spec == TensorSpec((None, 5), np.int32)


def test_padded_batch_nested_with_per_component_padding() -> None:
    ds = Dataset.range(1, 4).map(lambda x: (np.full((int(x),), x), "s" * int(x)))
    batches = list(ds.padded_batch(3, padding_values=(np.int64(9), b"")))
    a, b = batches[0]
    assert a.tolist() == [[1, 9, 9], [2, 2, 9], [3, 3, 3]]
    assert b.tolist() == [b"s", b"ss", b"sss"]


def test_padded_batch_refuses_to_pad_smaller() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="smaller size"):
        list(fills().padded_batch(2, padded_shapes=[3]))


# ----------------------------------------------------------------------------- shuffle


def test_shuffle_is_a_permutation_and_seeded_reproducible() -> None:
    a = ints(Dataset.range(100).shuffle(50, seed=7))
    b = ints(Dataset.range(100).shuffle(50, seed=7))
    assert a == b != list(range(100))
    assert sorted(a) == list(range(100))


def test_shuffle_reshuffles_each_iteration_unless_told_not_to() -> None:
    ds = Dataset.range(50).shuffle(50, seed=1)
    assert ints(ds) != ints(ds)
    fixed = Dataset.range(50).shuffle(50, seed=1, reshuffle_each_iteration=False)
    assert ints(fixed) == ints(fixed)
    epochs = ints(Dataset.range(50).shuffle(50, seed=1).repeat(2))
    assert epochs[:50] != epochs[50:] and sorted(epochs[:50]) == sorted(epochs[50:])


def test_shuffle_buffer_one_keeps_order() -> None:
    assert ints(Dataset.range(10).shuffle(1)) == list(range(10))


def test_shuffle_buffer_must_be_positive() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="buffer_size"):
        Dataset.range(3).shuffle(0)


# ------------------------------------------------------------ repeat, take, skip, shard


def test_repeat() -> None:
    assert ints(Dataset.range(3).repeat(2)) == [0, 1, 2, 0, 1, 2]
    assert ints(Dataset.range(3).repeat(0)) == []
    assert ints(Dataset.range(3).repeat().take(7)) == [0, 1, 2, 0, 1, 2, 0]
    assert ints(Dataset.range(0).repeat()) == []


def test_repeat_cardinality() -> None:
    assert Dataset.range(3).repeat(2).cardinality() == 6
    assert Dataset.range(3).repeat().cardinality() == INFINITE
    assert Dataset.range(0).repeat().cardinality() == 0
    assert Dataset.range(3).filter(lambda x: True).repeat().cardinality() == INFINITE
    assert Dataset.range(3).filter(lambda x: True).repeat(2).cardinality() == UNKNOWN


def test_take_and_skip() -> None:
    assert ints(Dataset.range(10).take(3)) == [0, 1, 2]
    assert ints(Dataset.range(10).take(-1)) == list(range(10))
    assert ints(Dataset.range(10).skip(7)) == [7, 8, 9]
    assert ints(Dataset.range(10).skip(-1)) == []
    assert Dataset.range(10).take(3).cardinality() == 3
    assert Dataset.range(10).take(30).cardinality() == 10
    assert Dataset.range(3).repeat().take(5).cardinality() == 5
    assert Dataset.range(10).skip(7).cardinality() == 3
    assert Dataset.range(10).skip(70).cardinality() == 0
    assert Dataset.range(10).filter(lambda x: True).take(3).cardinality() == UNKNOWN


def test_shard() -> None:
    assert ints(Dataset.range(10).shard(3, 1)) == [1, 4, 7]
    assert Dataset.range(10).shard(3, 0).cardinality() == 4
    assert Dataset.range(10).shard(3, 2).cardinality() == 3


@pytest.mark.parametrize(
    "num_shards, index, message",
    [
        (0, 0, r"Number of shards must be greater than zero \(currently num_shards = 0\)"),
        (3, 3, r"Index must be between 0 and 2 \(currently index = 3\)"),
        (3, -2, r"Index must be between 0 and 2 \(currently index = -2\)"),
    ],
)
def test_shard_rejects_bad_arguments(num_shards: int, index: int, message: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=message):
        Dataset.range(10).shard(num_shards, index)


# ------------------------------------------------------------------ interleave, flat_map


def test_interleave_matches_tensorflows_documented_order() -> None:
    ds = Dataset.range(1, 6).interleave(
        lambda x: Dataset.from_tensors(x).repeat(6), cycle_length=2, block_length=4
    )
    assert ints(ds) == [
        1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 3, 3, 4, 4, 5, 5, 5, 5, 5, 5
    ]  # fmt: skip


def test_interleave_cycle_one_is_flat_map() -> None:
    ds = Dataset.range(3).interleave(lambda x: Dataset.range(x), cycle_length=1)
    assert ints(ds) == [0, 0, 1]
    assert ds.element_spec == TensorSpec((), np.int64)


def test_interleave_function_must_return_a_dataset() -> None:
    with pytest.raises(TypeError, match="must return a `Dataset`"):
        list(Dataset.range(3).interleave(lambda x: x, cycle_length=2))


def test_flat_map() -> None:
    ds = Dataset.from_tensor_slices([[1, 2], [3, 4]]).flat_map(Dataset.from_tensor_slices)
    assert ints(ds) == [1, 2, 3, 4]
    assert ds.cardinality() == UNKNOWN
    assert ds.element_spec == TensorSpec((), np.int32)


# --------------------------------------------------------------- enumerate, zip, concat


def test_enumerate() -> None:
    out = list(Dataset.from_tensor_slices(["a", "b"]).enumerate(start=5))
    assert [(int(i), s) for i, s in out] == [(5, b"a"), (6, b"b")]
    assert type(out[0][0]) is np.int64


def test_zip_nested_and_shortest() -> None:
    a, b = Dataset.range(3), Dataset.range(10, 15)
    assert [(int(x), int(y)) for x, y in Dataset.zip(a, b)] == [(0, 10), (1, 11), (2, 12)]
    assert [(int(x), int(y)) for x, y in Dataset.zip((a, b))] == [(0, 10), (1, 11), (2, 12)]
    out = list(Dataset.zip({"a": a, "nested": (b, a)}))
    assert int(out[1]["nested"][0]) == 11
    assert Dataset.zip((a, b)).cardinality() == 3
    assert Dataset.zip((a, b.repeat())).cardinality() == 3
    assert Dataset.zip((a.repeat(), b.repeat())).cardinality() == INFINITE
    assert Dataset.zip((a, b.filter(lambda x: True))).cardinality() == UNKNOWN


def test_zip_rejects_non_datasets() -> None:
    with pytest.raises(TypeError, match="structure of `tf.data.Dataset`"):
        Dataset.zip((Dataset.range(2), [1, 2]))


def test_concatenate() -> None:
    ds = Dataset.range(3).concatenate(Dataset.range(10, 12))
    assert ints(ds) == [0, 1, 2, 10, 11]
    assert ds.cardinality() == 5
    assert Dataset.range(3).concatenate(Dataset.range(1).repeat()).cardinality() == INFINITE


def test_concatenate_merges_shapes_and_rejects_other_types() -> None:
    a = Dataset.from_tensors(np.zeros(2))
    b = Dataset.from_tensors(np.zeros(3))
    assert a.concatenate(b).element_spec == TensorSpec((None,), np.float64)
    with pytest.raises(TypeError, match="Incompatible dataset elements"):
        Dataset.range(3).concatenate(Dataset.from_tensors("x"))


# ---------------------------------------------------------------------- unbatch, unique


def test_unbatch_inverts_batch() -> None:
    ds = Dataset.range(7).batch(3).unbatch()
    assert ints(ds) == list(range(7))
    assert ds.element_spec == TensorSpec((), np.int64)
    fixed = Dataset.range(6).batch(3, drop_remainder=True).unbatch()
    assert fixed.cardinality() == 6


def test_unbatch_nested() -> None:
    ds = Dataset.from_tensors({"a": np.arange(3), "b": np.ones((3, 2))}).unbatch()
    out = list(ds)
    assert [int(e["a"]) for e in out] == [0, 1, 2]
    assert out[0]["b"].shape == (2,)


def test_unbatch_of_scalars_is_refused() -> None:
    with pytest.raises(ValueError, match="scalar"):
        Dataset.range(3).unbatch()


def test_unique() -> None:
    ds = Dataset.from_tensor_slices([1, 3, 1, 2, 3]).unique()
    assert ints(ds) == [1, 3, 2]
    assert list(Dataset.from_tensor_slices(["a", "a", "b"]).unique()) == [b"a", b"b"]
    with pytest.raises(TypeError, match="unique"):
        Dataset.from_tensor_slices(np.ones((2, 2))).unique()


# --------------------------------------------------------------- cache, apply, reduce


def test_cache_in_memory_runs_the_pipeline_once() -> None:
    calls: list[int] = []
    ds = Dataset.range(4).map(lambda x: calls.append(int(x)) or x).cache()
    assert ints(ds) == ints(ds) == [0, 1, 2, 3]
    assert calls == [0, 1, 2, 3]


def test_cache_discards_a_partial_first_pass() -> None:
    ds = Dataset.range(5).cache()
    assert ints(ds.take(2)) == [0, 1]
    assert ints(ds) == [0, 1, 2, 3, 4]


def test_cache_to_a_file_is_read_back_by_a_new_pipeline(tmp_path: Any) -> None:
    path = str(tmp_path / "cache")
    first = Dataset.range(3).map(lambda x: x * 2).cache(path)
    assert ints(first) == [0, 2, 4]
    second = Dataset.range(100).cache(path)  # same file: reads the cached elements
    assert ints(second) == [0, 2, 4]


def test_apply() -> None:
    assert ints(Dataset.range(5).apply(lambda ds: ds.skip(3))) == [3, 4]
    with pytest.raises(TypeError, match="must return a `tf.data.Dataset`"):
        Dataset.range(5).apply(lambda ds: 3)


def test_reduce() -> None:
    assert int(Dataset.range(5).reduce(np.int64(0), lambda s, x: s + x)) == 10


# ------------------------------------------------------------------------- len, iter


def test_len_of_infinite_and_unknown_raises_type_error() -> None:
    with pytest.raises(TypeError, match="infinite"):
        len(Dataset.range(3).repeat())
    with pytest.raises(TypeError, match="unknown"):
        len(Dataset.range(3).filter(lambda x: True))
    assert bool(Dataset.range(3).repeat())


def test_iterator_get_next_raises_out_of_range_at_the_end() -> None:
    it = Dataset.range(1).as_numpy_iterator()
    assert int(it.get_next()) == 0
    with pytest.raises(errors.OutOfRangeError):
        it.get_next()


def test_parallel_interleave_keeps_the_order_and_reads_ahead_concurrently() -> None:
    """Four parallel readers are open at once: each source waits at a barrier for the other
    three before its first element (reading them one at a time would break it, after a
    bounded wait), and the order is the sequential one."""
    opened = threading.Barrier(4, timeout=60)

    def source(x: Any, together: bool) -> Any:
        def gen() -> Any:
            if together:
                opened.wait()
            for i in range(3):
                yield int(x) * 10 + i

        return Dataset.from_generator(gen, output_types=np.int64)

    sequential = Dataset.range(4).interleave(
        lambda x: source(x, False), cycle_length=4, block_length=1
    )
    parallel = Dataset.range(4).interleave(
        lambda x: source(x, True), cycle_length=4, block_length=1, num_parallel_calls=4
    )
    assert ints(parallel) == ints(sequential) == [0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32]


def test_map_results_that_need_conversion_are_converted() -> None:
    out = list(Dataset.range(1).map(lambda x: np.array(["ab", "c"])))
    assert out[0].dtype == object and out[0].tolist() == [b"ab", b"c"]
    assert list(Dataset.range(1).map(lambda x: np.str_("z"))) == [b"z"]


def test_unseeded_shuffle_differs_between_copies_of_a_pipeline() -> None:
    import cloudpickle

    ds = Dataset.range(200).shuffle(200)
    copies = [cloudpickle.loads(cloudpickle.dumps(ds)) for _ in range(2)]
    assert ints(copies[0]) != ints(copies[1])
    fixed = Dataset.range(200).shuffle(200, reshuffle_each_iteration=False)
    assert ints(fixed) == ints(fixed)


# ------------------------------------------------------- options, take_while, scan


def test_options_merge_downstream_over_upstream() -> None:
    from tensorwire_dataservice.dataset import AutoShardPolicy, Options

    a = Options()
    a.deterministic = False
    a.experimental_distribute.auto_shard_policy = AutoShardPolicy.DATA
    b = Options()
    b.deterministic = True
    ds = Dataset.range(3).with_options(a).map(lambda x: x).with_options(b)
    merged = ds.options()
    assert merged.deterministic is True
    assert merged.experimental_distribute.auto_shard_policy == AutoShardPolicy.DATA
    assert ints(ds) == [0, 1, 2]
    with pytest.raises(AttributeError, match="no_such_option"):
        a.no_such_option = 1
    with pytest.raises(TypeError, match="Options"):
        Dataset.range(3).with_options({"deterministic": False})


def test_options_deterministic_false_lets_parallel_map_reorder() -> None:
    from tensorwire_dataservice.dataset import Options

    def slow_first(x: Any) -> Any:
        if int(x) == 0:
            time.sleep(0.5)
        return x

    options = Options()
    options.deterministic = False
    ds = Dataset.range(4).map(slow_first, num_parallel_calls=4).with_options(options)
    out = ints(ds)
    assert sorted(out) == [0, 1, 2, 3] and out[0] != 0
    assert ints(Dataset.range(4).map(slow_first, num_parallel_calls=4)) == [0, 1, 2, 3]


def test_take_while() -> None:
    assert ints(Dataset.range(10).take_while(lambda x: x < 4)) == [0, 1, 2, 3]
    assert Dataset.range(10).take_while(lambda x: x < 4).cardinality() == UNKNOWN


def test_scan_carries_state() -> None:
    ds = Dataset.range(5).scan(np.int64(0), lambda state, x: (state + x, state * 10))
    assert ints(ds) == [0, 0, 10, 30, 60]
    assert ds.element_spec == TensorSpec((), np.int64)
    with pytest.raises(TypeError, match="pair"):
        list(Dataset.range(2).scan(0, lambda s, x: s))


# ------------------------------------------------------------------------------ window


def windows(ds: Any) -> list[list[int]]:
    return [ints(w) for w in ds]


def test_window_matches_tensorflows_documented_examples() -> None:
    assert windows(Dataset.range(7).window(3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert windows(Dataset.range(7).window(3, 2, 1, True)) == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert windows(Dataset.range(7).window(3, 1, 2, True)) == [
        [0, 2, 4], [1, 3, 5], [2, 4, 6]
    ]  # fmt: skip
    assert windows(Dataset.range(7).window(2, 4)) == [[0, 1], [4, 5]]


def test_window_of_tuples_is_a_tuple_of_datasets() -> None:
    from tensorwire_dataservice.dataset import DatasetSpec

    ds = Dataset.from_tensor_slices(([1, 2, 3], ["a", "b", "c"])).window(2)
    assert ds.element_spec == (
        DatasetSpec(TensorSpec((), np.int32)),
        DatasetSpec(TensorSpec((), np.dtype(object))),
    )
    out = [(ints(a), list(b)) for a, b in ds]
    assert out == [([1, 2], [b"a", b"b"]), ([3], [b"c"])]


def test_window_then_flat_map_batch() -> None:
    ds = Dataset.range(6).window(3, drop_remainder=True).flat_map(lambda w: w.batch(3))
    assert lists(ds) == [[0, 1, 2], [3, 4, 5]]
    assert ds.element_spec == TensorSpec((None,), np.int64)


def test_window_cardinality() -> None:
    assert Dataset.range(7).window(3).cardinality() == 3
    assert Dataset.range(7).window(3, 2, 1, True).cardinality() == 3
    assert Dataset.range(7).window(3, 1, 2, True).cardinality() == 3
    assert Dataset.range(2).window(3, drop_remainder=True).cardinality() == 0
    with pytest.raises(errors.InvalidArgumentError, match="size"):
        Dataset.range(3).window(0)


def test_get_single_element() -> None:
    assert int(Dataset.range(5).skip(4).get_single_element()) == 4
    with pytest.raises(errors.InvalidArgumentError, match="more than one"):
        Dataset.range(2).get_single_element()
    with pytest.raises(errors.InvalidArgumentError, match="empty"):
        Dataset.range(0).get_single_element()
