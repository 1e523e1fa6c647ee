"""The receiver's device: ``loads``/``decode(..., device=...)`` place framework tensors there.

Every test taking ``codec`` runs against both implementations (conftest). This machine class
has no GPU: the CPU tests prove the switch, its refusals and that ``device="cpu"`` keeps the
zero-copy decode; the GPU tests skip here and run on a machine with CUDA torch / JAX with a
GPU backend, where they prove the tensor lands on the device.
"""

from __future__ import annotations

import numpy as np
import pytest
from tensorwire import frameworks
from tensorwire.errors import InvalidArgumentError
from tensorwire_testing.devices import jax_gpu_available, needs_cuda, needs_jax_gpu

torch = pytest.importorskip("torch")

HAS_CUDA = "this machine has a CUDA GPU: cuda:0 is not absent here"


def inside(t: object, buf: bytearray) -> bool:
    start = np.frombuffer(buf, np.uint8).ctypes.data
    ptr = t.data_ptr()  # type: ignore[attr-defined]
    nbytes = t.numel() * t.element_size()  # type: ignore[attr-defined]
    return start <= ptr and ptr + nbytes <= start + len(buf)


# --- device="cpu" -------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cpu:0"], ids=str)
def test_cpu_device_keeps_torch_tensors_over_the_receive_buffer(codec, device):
    value = {"f": torch.arange(16.0), "b": torch.ones(4, dtype=torch.bfloat16)}
    buf = bytearray(codec.dumps(value))
    for dev in (device, torch.device(device)):
        got = codec.loads(buf, device=dev)
        for name, t in value.items():
            assert type(got[name]) is torch.Tensor and got[name].device.type == "cpu"
            assert torch.equal(got[name], t)
            assert inside(got[name], buf)  # no copy: the CPU is where it was received


def test_cpu_device_through_split_frames(codec):
    t = torch.arange(100.0)
    frames = [bytes(f) for f in codec.encode(t)]
    got = codec.decode(frames, device="cpu")
    assert got.data_ptr() == np.frombuffer(frames[1], np.uint8).ctypes.data


def test_numpy_origin_arrays_stay_numpy_whatever_the_device(codec):
    # NumPy has no device: arrays sent as NumPy come back as NumPy; only tensors move.
    frame = codec.dumps({"n": np.arange(3), "t": torch.arange(3), "s": np.array([b"x"])})
    got = codec.loads(frame, device="cpu")
    assert type(got["n"]) is np.ndarray and got["n"].tolist() == [0, 1, 2]
    assert type(got["s"]) is np.ndarray
    assert type(got["t"]) is torch.Tensor


def test_frame_without_tensors_ignores_the_device(codec):
    # Known only once a tensor is decoded: a frame of plain data never checks the device.
    frame = codec.dumps({"n": np.arange(3), "x": [1, "a"]})
    got = codec.loads(frame, device="cuda:7")
    assert type(got["n"]) is np.ndarray and got["x"] == [1, "a"]


def test_jax_arrays_land_on_the_named_cpu_device(codec):
    jax = pytest.importorskip("jax")
    x = jax.numpy.arange(12.0).reshape(3, 4)
    frame = codec.dumps({"x": x})
    cpu = jax.devices("cpu")[0]
    for dev in ("cpu", "cpu:0", cpu, torch.device("cpu")):
        got = codec.loads(frame, device=dev)["x"]
        assert isinstance(got, jax.Array)
        assert got.devices() == {cpu}
        assert np.array_equal(np.asarray(got), np.asarray(x))


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason=HAS_CUDA)
def test_absent_cuda_device_is_refused_naming_it_and_what_is_available(codec):
    frame = codec.dumps(torch.arange(3.0))
    for dev in ("cuda:0", torch.device("cuda", 0), "cuda"):
        with pytest.raises(InvalidArgumentError) as err:
            codec.loads(frame, device=dev)
        message = str(err.value)
        assert "not available to torch here" in message
        assert "torch.cuda.is_available() is False" in message
        assert "available: cpu" in message
    with pytest.raises(InvalidArgumentError, match="available: cpu"):
        codec.decode(codec.encode(torch.arange(3.0)), device="cuda:0")


def test_unknown_torch_device_string_is_refused(codec):
    frame = codec.dumps(torch.arange(3.0))
    with pytest.raises(InvalidArgumentError, match=r"'warp:0' is not a torch device.*cpu"):
        codec.loads(frame, device="warp:0")
    with pytest.raises(InvalidArgumentError, match="'meta' holds no data"):
        codec.loads(frame, device="meta")


def test_device_of_the_wrong_type_is_refused(codec):
    frame = codec.dumps(torch.arange(3.0))
    for dev in (0, ["cuda:0"]):
        with pytest.raises(TypeError, match="device must be a device string"):
            codec.loads(frame, device=dev)


def test_absent_jax_device_is_refused_naming_it_and_what_is_available(codec):
    jax = pytest.importorskip("jax")
    if jax_gpu_available():
        pytest.skip("this machine has a JAX GPU backend: gpu:0 is not absent here")
    frame = codec.dumps(jax.numpy.arange(3.0))
    with pytest.raises(InvalidArgumentError, match=r"'gpu:0' is not available to JAX.*cpu:0"):
        codec.loads(frame, device="gpu:0")
    with pytest.raises(InvalidArgumentError, match=r"'cpu:5'.*1 'cpu' device"):
        codec.loads(frame, device="cpu:5")
    with pytest.raises(InvalidArgumentError, match="is not a JAX device"):
        codec.loads(frame, device="cpu:first")


def test_jax_device_cannot_place_torch_tensors(codec):
    jax = pytest.importorskip("jax")
    frame = codec.dumps(torch.arange(3.0))
    with pytest.raises(InvalidArgumentError, match="jax.Device .* cannot place torch tensors"):
        codec.loads(frame, device=jax.devices("cpu")[0])


@pytest.mark.parametrize("switch", ["numpy", "relay"])
def test_device_beside_a_host_switch_is_refused(codec, switch):
    frame = codec.dumps(torch.arange(3.0))
    with pytest.raises(ValueError, match=f"cannot be combined with {switch}=True"):
        codec.loads(frame, device="cpu", **{switch: True})
    with pytest.raises(ValueError, match=f"cannot be combined with {switch}=True"):
        codec.decode(codec.encode(torch.arange(3.0)), device="cpu", **{switch: True})


def test_refusal_is_not_remembered(codec):
    # A refused device is looked up again next time (only successes are cached).
    frame = codec.dumps(torch.arange(3.0))
    for _ in range(2):
        with pytest.raises(InvalidArgumentError):
            codec.loads(frame, device="warp")
    assert frameworks.device_for(frameworks.TORCH, "cpu") is None


# --- GPU: one host-to-device copy, onto the device ----------------------------------------


@needs_cuda()
def test_torch_tensors_land_on_the_cuda_device(codec):
    value = {
        "f": torch.arange(1000.0).reshape(10, 100),
        "b": torch.arange(8).to(torch.bfloat16),
        "n": np.arange(3),
    }
    for dev in ("cuda:0", torch.device("cuda", 0)):
        got = codec.loads(codec.dumps(value), device=dev)
        for name in ("f", "b"):
            assert got[name].device == torch.device("cuda", 0)
            assert got[name].dtype == value[name].dtype
            assert torch.equal(got[name].cpu(), value[name])
        assert type(got["n"]) is np.ndarray  # NumPy-origin: stays on the host


@needs_cuda()
def test_cuda_tensor_sent_and_received_onto_the_device(codec):
    t = torch.arange(100.0, device="cuda")
    got = codec.decode(codec.encode(t), device="cuda")
    assert got.is_cuda and torch.equal(got, t)


@needs_cuda()
def test_cuda_index_beyond_the_count_is_refused(codec):
    n = torch.cuda.device_count()
    with pytest.raises(InvalidArgumentError, match=f"device_count\\(\\) is {n}.*cuda:0"):
        codec.loads(codec.dumps(torch.arange(3.0)), device=f"cuda:{n}")


@needs_jax_gpu()
def test_jax_arrays_land_on_the_gpu_device(codec):
    import jax

    gpu = jax.devices("gpu")[0]
    x = jax.numpy.arange(100.0)
    for dev in ("gpu:0", gpu):
        got = codec.loads(codec.dumps(x), device=dev)
        assert got.devices() == {gpu}
        assert np.array_equal(np.asarray(got), np.asarray(x))
