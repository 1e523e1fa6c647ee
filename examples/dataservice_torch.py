"""Feeding PyTorch from the tf.data service.

    python examples/dataservice_torch.py [--service grpc://localhost:5050] [--num_workers 2]

Without ``--service`` a dispatcher and two workers start in this process. The input pipeline
(decode + augment stand-in + batch) runs on the data-service workers;
``tw.data.service.to_torch`` makes the service dataset a ``torch.utils.data.IterableDataset``
whose elements are tensors sharing the received buffers (``torch.from_numpy``, no copy
beyond the wire). The DataLoader's worker processes share one job of the service per epoch,
so every example is read once per epoch however many workers there are.

A process that serves gRPC (here: the local dispatcher and workers) cannot fork workers that
use gRPC, so with a local service the DataLoader spawns its workers; against a service in
other processes it uses PyTorch's default start method.
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorwire as tw
import torch


def make_pipeline(num_examples: int, batch_size: int):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((num_examples, 8)).astype(np.float32)
    labels = (features.sum(axis=1) > 0).astype(np.int64)

    def augment(example):
        return {"x": example["x"] * np.float32(1.0), "y": example["y"]}

    return (
        tw.data.Dataset.from_tensor_slices({"x": features, "y": labels})
        .map(augment)
        .batch(batch_size)
    )


def make_dataset(service: str, num_examples: int, batch_size: int):
    """The pipeline, run by the service; each batch of an epoch read once."""
    dataset = make_pipeline(num_examples, batch_size).apply(
        tw.data.service.distribute("distributed_epoch", service)
    )
    return tw.data.service.to_torch(dataset)


def train(
    service: str,
    num_examples: int = 4096,
    batch_size: int = 64,
    num_workers: int = 0,
    multiprocessing_context: str | None = None,
    epochs: int = 1,
) -> int:
    """Trains a linear model; returns the number of examples seen over all epochs."""
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        make_dataset(service, num_examples, batch_size),
        batch_size=None,  # the service batches already
        num_workers=num_workers,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
    seen = 0
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
            seen += len(batch["y"])
    print(f"trained on {seen} examples, final loss {loss.item():.3f}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default=None, help="dispatcher target; default: local")
    parser.add_argument("--protocol", default="grpc")
    parser.add_argument("--num_workers", type=int, default=2, help="DataLoader workers")
    args = parser.parse_args()
    local = None
    context = None  # PyTorch's default ("fork" on Linux)
    if args.service is None:  # a dispatcher and 2 workers in this process
        local = tw.test.create_local_data_service(num_workers=2, protocol=args.protocol)
        context = "spawn"  # this process serves gRPC: its forked children could not use it
        if args.protocol == "inproc":
            args.num_workers = 0  # inproc cannot reach other processes
    try:
        train(
            args.service or local.target,
            num_workers=args.num_workers,
            multiprocessing_context=context,
        )
    finally:
        if local is not None:
            local.stop()


if __name__ == "__main__":
    main()
