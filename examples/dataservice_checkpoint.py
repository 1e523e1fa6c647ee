"""Checkpoint an iterator of the tf.data service with a plain pickle, as a JAX trainer
would save it next to its parameters (Orbax or ``pickle``), and resume it in a new run:

    python examples/dataservice_checkpoint.py

The "trainer" reads a ``distributed_epoch`` job, checkpoints its parameters and the data
iterator together, reads on (those steps are lost when it "crashes"), and a restarted
trainer restores both: it sees every remaining element of the epoch exactly once, the ones
read after the checkpoint included. The restore works in another process too, and after
the dispatcher restarted from its ``work_dir``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any

import numpy as np
import tensorwire as tw


def train(steps: int, iterator: Any, params: np.ndarray, seen: list[int]) -> np.ndarray:
    for _ in range(steps):
        batch = next(iterator)
        seen.extend(int(x) for x in batch)
        params = params + batch.mean() * 1e-3  # a stand-in for a jitted update step
    return params


def main() -> None:
    work_dir = tempfile.mkdtemp()
    dispatcher = tw.data.service.DispatchServer(
        tw.data.service.DispatcherConfig(work_dir=work_dir, fault_tolerant_mode=True)
    )
    address = dispatcher.target.split("://")[1]
    workers = [
        tw.data.service.WorkerServer(tw.data.service.WorkerConfig(dispatcher_address=address))
        for _ in range(2)
    ]
    # Processing happens on the workers; batching here, in the trainer.
    dataset = (
        tw.data.Dataset.range(1_000)
        .map(lambda x: np.float32(x))
        .apply(tw.data.service.distribute("distributed_epoch", dispatcher.target))
        .batch(10)
    )
    path = os.path.join(work_dir, "checkpoint.pickle")

    # First run: 20 steps, then parameters and data iterator saved together.
    iterator = iter(dataset)
    seen: list[int] = []
    params = train(20, iterator, np.zeros(4, np.float32), seen)
    with open(path, "wb") as f:
        pickle.dump({"params": params, "data": iterator.state_dict(), "seen": seen}, f)
    train(5, iterator, params, list(seen))  # steps the crash loses
    iterator.close()

    # Restarted run: a fresh iterator of the same dataset, restored before the first next().
    with open(path, "rb") as f:
        checkpoint = pickle.load(f)
    iterator = iter(dataset)
    iterator.load_state_dict(checkpoint["data"])
    seen = list(checkpoint["seen"])
    params = checkpoint["params"]
    for batch in iterator:
        seen.extend(int(x) for x in batch)
    assert sorted(seen) == list(range(1_000)), "every element exactly once"
    print(f"resumed after {len(checkpoint['seen'])} elements; the epoch has {len(seen)}, each once")
    for worker in workers:
        worker.stop()
    dispatcher.stop()


if __name__ == "__main__":
    main()
