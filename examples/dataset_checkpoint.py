"""Checkpoint a local input pipeline with a plain pickle and resume it, as a JAX trainer
would save it next to its parameters (Orbax or ``pickle``), e.g.:

    python examples/dataset_checkpoint.py

The iterator's ``state_dict()`` is plain Python/NumPy data; ``load_state_dict(state)`` on a
fresh iterator of the same pipeline (here: in a "restarted" run) continues after the last
element the saved iterator returned, including the elements its shuffle buffer, parallel
``map`` and ``prefetch`` held at the time.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any

import numpy as np
from tensorwire_dataservice.dataset import Dataset


def make_pipeline() -> Dataset:
    """The same definition in every run: the checkpoint stores positions, not the pipeline."""
    return (
        Dataset.range(1_000)
        .shuffle(100, seed=0)
        .map(lambda x: {"x": np.float32(x), "y": x % 10}, num_parallel_calls=2)
        .batch(32)
        .prefetch(2)
    )


def train(steps: int, iterator: Any, params: np.ndarray) -> np.ndarray:
    for _ in range(steps):
        batch = next(iterator)
        params = params + batch["x"].mean() * 1e-3  # a stand-in for a jitted update step
    return params


def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "checkpoint.pickle")

    # First run: train 10 steps, checkpoint parameters and the data iterator together.
    iterator = iter(make_pipeline())
    params = train(10, iterator, np.zeros(4, np.float32))
    with open(path, "wb") as f:
        pickle.dump({"params": params, "data": iterator.state_dict()}, f)
    expected_next = next(iterator)["y"]  # what the run would have seen next
    iterator.close()

    # "Restarted" run: a fresh pipeline and iterator, restored before the first next().
    with open(path, "rb") as f:
        checkpoint = pickle.load(f)
    iterator = iter(make_pipeline())
    iterator.load_state_dict(checkpoint["data"])
    resumed_next = next(iterator)["y"]
    assert np.array_equal(resumed_next, expected_next)
    params = train(5, iterator, checkpoint["params"])
    print("resumed at the same batch:", resumed_next[:8], "params", params)


if __name__ == "__main__":
    main()
