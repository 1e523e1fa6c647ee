"""The framework examples run against a live service (skipped where the framework is absent)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorwire as tw

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_basic_example_prints_range():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dataservice_basic.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(list(range(10)))


def test_torch_iterable_dataset_shares_received_buffers(service_factory):
    torch = pytest.importorskip(
        "torch",
        reason="needs torch (pip install 'tensorwire-dataservice[torch]'); CI "
        "installs the CPU build",
    )
    example = _load("dataservice_torch")
    dispatcher, _ = service_factory(2)
    pipeline = example.make_pipeline(256, 32)
    batches = list(example.make_dataset(dispatcher.target, 256, 32))
    assert sum(len(b["y"]) for b in batches) == 256  # distributed_epoch: each example once
    b = batches[0]
    assert b["x"].dtype == torch.float32 and b["x"].shape == (32, 8)
    # torch.from_numpy made no copy: the tensor's memory is the received array's.
    raw = next(
        iter(
            pipeline.apply(
                tw.data.service.distribute("parallel_epochs", dispatcher.target)
            ).as_numpy_iterator()
        )
    )["x"]
    tensor = torch.from_numpy(raw)
    assert tensor.data_ptr() == raw.__array_interface__["data"][0]


def test_torch_training_example(service_factory):
    pytest.importorskip("torch", reason="needs torch; CI installs the CPU build")
    example = _load("dataservice_torch")
    dispatcher, _ = service_factory(2)
    assert example.train(dispatcher.target, num_examples=512, batch_size=64) == 512


def test_jax_training_example(service_factory):
    pytest.importorskip("jax", reason="needs jax (pip install 'tensorwire-dataservice[jax]')")
    example = _load("dataservice_jax")
    dispatcher, _ = service_factory(1)
    loss = example.train(dispatcher.target, epochs=2)
    assert np.isfinite(loss) and loss < 5.0
