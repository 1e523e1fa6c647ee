"""torch and JAX tensors through a Session: run arguments and results, variables, send/recv.

They travel through the codec (never pickled) and come back as what they were.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorwire as tw
from tensorwire.runtime import messages

torch = pytest.importorskip("torch")


def test_tensors_travel_through_the_codec_not_pickle():
    frames = messages.pack({"t": torch.arange(3), "b": torch.ones(2, dtype=torch.bfloat16)})
    assert bytes(frames[0]) == b"c"
    got = messages.unpack(frames, allow_pickle=False)  # a server refusing pickle takes it
    assert type(got["t"]) is torch.Tensor and got["b"].dtype == torch.bfloat16


def test_run_arguments_and_results_are_torch_tensors(session):
    def describe(t, scale):
        return {"type": type(t).__name__, "dtype": str(t.dtype), "out": t * scale}

    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    got = session.run(describe, t, scale=2, device="/job:worker/task:1")
    assert got["type"] == "Tensor" and got["dtype"] == "torch.bfloat16"
    assert type(got["out"]) is torch.Tensor and got["out"].dtype == torch.bfloat16
    assert torch.equal(got["out"], t * 2)


def test_run_identity_on_a_large_tensor(session):
    t = torch.randn(1 << 20)
    got = session.run(lambda x: x, t, device="/job:ps/task:0")
    assert type(got) is torch.Tensor and torch.equal(got, t)


def test_variable_created_from_a_torch_tensor_reads_back_as_one(session):
    v = session.variable("w", torch.zeros(4, dtype=torch.float32), device="/job:ps/task:0")
    assert v.dtype == np.dtype(np.float32) and v.shape == (4,)
    v.assign_add(torch.ones(4))
    v.assign_add(np.full(4, 2.0, np.float32))  # NumPy deltas work on a torch variable too
    got = v.read()
    assert type(got) is torch.Tensor and got.dtype == torch.float32
    assert got.tolist() == [3.0] * 4
    new = v.assign_sub(torch.ones(4), read_value=True)
    assert type(new) is torch.Tensor and new.tolist() == [2.0] * 4
    assert type(v.numpy()) is np.ndarray and v.numpy().tolist() == [2.0] * 4


def test_bfloat16_variable(session):
    v = session.variable("b", torch.zeros(3, dtype=torch.bfloat16), device="/job:ps/task:0")
    assert v.dtype.name == "bfloat16"
    v.assign_add(torch.tensor([1.5, 2.0, -1.0], dtype=torch.bfloat16))
    got = v.read()
    assert got.dtype == torch.bfloat16 and got.tolist() == [1.5, 2.0, -1.0]


def test_numpy_variable_assign_add_with_a_torch_tensor_stays_numpy(session):
    v = session.variable("n", np.zeros(3, np.float64), device="/job:ps/task:0")
    v.assign_add(torch.ones(3, dtype=torch.float64))
    got = v.read()
    assert type(got) is np.ndarray and got.tolist() == [1.0, 1.0, 1.0]


def test_torch_variable_passed_to_run_arrives_as_a_tensor(session):
    w = session.variable("w", torch.arange(3.0), device="/job:ps/task:0")
    assert session.run(lambda x: type(x).__name__, w, device="/job:ps/task:0") == "Tensor"
    assert session.run(lambda x: type(x).__name__, w, device="/job:worker/task:1") == "Tensor"


def test_send_and_recv_keep_the_framework(session):
    t = torch.arange(5, dtype=torch.int16)
    session.send("k", {"t": t, "n": np.arange(2)}, device="/job:ps/task:0")
    got = session.recv("k", device="/job:ps/task:0", timeout=10)
    assert type(got["t"]) is torch.Tensor and torch.equal(got["t"], t)
    assert type(got["n"]) is np.ndarray


def test_jax_arrays_round_trip_through_run_and_variables(session):
    jax = pytest.importorskip("jax")
    x = jax.numpy.arange(4.0)
    got = session.run(lambda a: a * 2, x, device="/job:worker/task:1")
    assert isinstance(got, jax.Array) and np.asarray(got).tolist() == [0.0, 2.0, 4.0, 6.0]
    v = session.variable("j", x, device="/job:ps/task:0")
    v.assign_add(np.ones(4, np.float32))
    assert isinstance(v.read(), jax.Array)
    assert np.asarray(v.read()).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_variable_of_torch_tensor_with_other_dtype_is_invalid(session):
    session.variable("v", torch.zeros(3), device="/job:ps/task:0")
    with pytest.raises(tw.errors.InvalidArgumentError, match="dtype"):
        session.variable("v", torch.zeros(3, dtype=torch.int64), device="/job:ps/task:0")
