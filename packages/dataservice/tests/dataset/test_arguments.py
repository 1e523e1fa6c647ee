"""An integer argument of a dataset op that is not one gets an error naming the argument
(``int()``'s own message does not say which argument it was), with ``int()``'s exception
type: TypeError for None or an object, ValueError for a string that is not a number."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import tensorwire as tw

D = tw.data.Dataset

CASES: list[tuple[str, Callable[[Any], Any]]] = [
    ("stop", lambda bad: D.range(bad)),
    ("step", lambda bad: D.range(0, 5, bad)),
    ("start", lambda bad: D.counter(bad)),
    ("step", lambda bad: D.counter(0, bad)),
    ("buffer_size", lambda bad: D.range(3).shuffle(bad)),
    ("count", lambda bad: D.range(3).repeat(bad)),
    ("count", lambda bad: D.range(3).take(bad)),
    ("count", lambda bad: D.range(3).skip(bad)),
    ("num_shards", lambda bad: D.range(3).shard(bad, 0)),
    ("index", lambda bad: D.range(3).shard(2, bad)),
    ("start", lambda bad: D.range(3).enumerate(bad)),
    ("batch_size", lambda bad: D.range(3).batch(bad)),
    ("batch_size", lambda bad: D.range(3).padded_batch(bad)),
    ("size", lambda bad: D.range(3).window(bad)),
    ("shift", lambda bad: D.range(3).window(2, bad)),
    ("stride", lambda bad: D.range(3).window(2, 1, bad)),
    ("cycle_length", lambda bad: D.range(3).interleave(lambda x: D.range(x), cycle_length=bad)),
    ("block_length", lambda bad: D.range(3).interleave(lambda x: D.range(x), block_length=bad)),
    ("num_parallel_calls", lambda bad: D.range(3).map(lambda x: x, num_parallel_calls=bad)),
    ("buffer_size", lambda bad: D.range(3).prefetch(bad)),
    ("num_shards", lambda bad: tw.data.auto_shard(D.range(3), bad, 0, "DATA")),
    ("index", lambda bad: tw.data.auto_shard(D.range(3), 2, bad, "DATA")),
]


@pytest.mark.parametrize(("bad", "error"), [(object(), TypeError), ("two", ValueError)])
@pytest.mark.parametrize(
    ("argument", "call"), CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(CASES)]
)
def test_a_non_integer_argument_is_named_in_the_error(
    argument: str, call: Callable[[Any], Any], bad: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"^`{argument}` must be an integer, got "):
        call(bad)


def test_integer_arguments_convert_as_int_does() -> None:
    assert [int(x) for x in D.range("3")] == [0, 1, 2]
    assert [int(x) for x in D.range(5).take(2.9)] == [0, 1]
