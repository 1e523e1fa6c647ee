"""``TorchIterableDataset`` under torchdata's ``StatefulDataLoader``: resume from its state."""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

import pytest
from tensorwire_dataservice.dataset import Dataset

pytest.importorskip("torch", reason="needs torch")
stateful = pytest.importorskip(
    "torchdata.stateful_dataloader", reason="needs torchdata (pip install torchdata)"
)
from tensorwire_dataservice.dataset.torch_stateful import TorchIterableDataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkpoint_pipelines import _square  # noqa: E402


def pipeline() -> Any:
    # Module-level functions only: "spawn" workers unpickle the dataset.
    return Dataset.range(97).shuffle(10, seed=3).map(_square, num_parallel_calls=2).batch(4)


def rows(batches: list[Any]) -> list[list[int]]:
    return [b.tolist() for b in batches]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stateful_dataloader_resumes_exactly(num_workers: int) -> None:
    def loader() -> Any:
        kwargs: dict[str, Any] = {"batch_size": None, "num_workers": num_workers}
        if num_workers:
            # Not fork: other tests of this session may run gRPC servers in this process.
            kwargs.update(multiprocessing_context="spawn", timeout=60)
        return stateful.StatefulDataLoader(TorchIterableDataset(pipeline()), **kwargs)

    first = loader()
    it = iter(first)
    head = rows([next(it) for _ in range(7)])
    state = pickle.loads(pickle.dumps(first.state_dict()))
    tail = rows(list(it))
    assert sorted(x for b in head + tail for x in b) == sorted(x * x for x in range(97))
    resumed = loader()
    resumed.load_state_dict(state)
    assert rows(list(resumed)) == tail
