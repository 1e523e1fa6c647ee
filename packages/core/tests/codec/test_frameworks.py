"""Framework tensors through the codec: torch and JAX round trips, dtypes, views, zero copy.

Every test taking ``codec`` runs against both implementations (conftest). torch's and JAX's
CPU wheels are in requirements-test.txt; the GPU tests skip where no GPU is present and run
on a machine with one (CUDA torch / JAX with a GPU backend).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import numpy as np
import pytest
from tensorwire import codec as tw_codec
from tensorwire import frameworks
from tensorwire_testing.devices import needs_cuda, needs_jax_gpu

torch = pytest.importorskip("torch")

# Every torch dtype that has CPU tensors (quantized types have none), by name.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # complex32 is "experimental"
    TORCH_DTYPES = sorted(
        name
        for name in dir(torch)
        if isinstance(getattr(torch, name), torch.dtype)
        and not name.startswith(("qint", "quint"))  # quantized: no plain CPU tensors
        and str(getattr(torch, name)) == f"torch.{name}"  # canonical names, not aliases
    )


def sample(dtype: Any, shape: tuple[int, ...] = (3, 4)) -> Any:
    """A tensor of ``dtype`` whose bytes differ element to element."""
    size = dtype.itemsize
    n = int(np.prod(shape))
    if dtype.is_floating_point and size >= 2:
        return (torch.arange(n, dtype=torch.float32) / 3).reshape(shape).to(dtype)
    raw = ((np.arange(n * size) * 37 + 11) % 251).astype(np.uint8)
    if dtype == torch.bool:
        raw %= 2
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def raw_bytes(t: Any) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_tensor(got: Any, want: Any) -> None:
    assert type(got) is torch.Tensor, type(got)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.device.type == "cpu"
    assert raw_bytes(got) == raw_bytes(want)


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_every_torch_dtype_round_trips(codec, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = sample(getattr(torch, name))
    for got in (codec.loads(codec.dumps(t)), codec.decode(codec.encode(t))):
        assert_same_tensor(got, t)


@pytest.mark.parametrize("name", ["bfloat16", "complex32", "uint3"])
def test_dtypes_without_numpy_twin_reach_numpy_readers(codec, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = sample(getattr(torch, name))
    got = codec.loads(codec.dumps(t), numpy=True)
    assert type(got) is np.ndarray
    assert got.shape == tuple(t.shape)
    assert got.tobytes() == raw_bytes(t)
    if name == "bfloat16":
        assert got.dtype.name == "bfloat16"  # an ml_dtypes array
    else:
        assert got.dtype == np.dtype(f"V{t.dtype.itemsize}")  # the raw bytes


def test_both_implementations_write_the_same_bytes():
    if tw_codec.codec_c is None:
        pytest.skip("the compiled codec is not built")
    value = {
        "w": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4),
        "view": torch.arange(12.0).reshape(3, 4).t(),
        "n": np.arange(3),
    }
    assert tw_codec.codec_c.dumps(value) == tw_codec.codec_py.dumps(value)
    c_frames = [bytes(f) for f in tw_codec.codec_c.encode(value)]
    assert c_frames == [bytes(f) for f in tw_codec.codec_py.encode(value)]


def test_frames_with_tensors_are_version_2_and_others_stay_version_1(codec):
    assert codec.dumps(np.arange(3))[4] == 1
    assert codec.dumps([1, "a", np.float32(2)])[4] == 1
    assert codec.dumps(torch.arange(3))[4] == 2
    assert codec.encode({"t": torch.arange(3)})[0][4] == 2


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t.t(),  # transposed
        lambda t: t[:, ::2],  # strided
        lambda t: t[1:, 1:3],  # offset
        lambda t: t[0].expand(5, 8),  # stride 0
        lambda t: t.flip(0),  # torch copies a flip itself; it has no negative strides
        lambda t: t[2, 3],  # 0-d
        lambda t: t[:0],  # empty
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "bool", "complex64", "uint16"])
def test_views_round_trip_by_value(codec, view, dtype):
    base = sample(getattr(torch, dtype), (6, 8))
    t = view(base)
    got = codec.loads(codec.dumps(t))
    assert_same_tensor(got, t)
    assert got.is_contiguous()


def test_numpy_negative_strides_still_copy_once(codec):
    a = np.arange(12.0).reshape(3, 4)[::-1, ::-2]
    got = codec.loads(codec.dumps(a))
    assert np.array_equal(got, a)


def test_requires_grad_conj_and_neg_tensors_send_their_values(codec):
    p = torch.nn.Parameter(torch.arange(4.0))
    got = codec.loads(codec.dumps(p))
    assert type(got) is torch.Tensor and not got.requires_grad
    assert torch.equal(got, p.detach())
    c = torch.tensor([1 + 2j, 3 - 1j]).conj()
    assert torch.equal(codec.loads(codec.dumps(c)), c.resolve_conj())
    neg = c.imag  # a lazily negated view
    assert torch.equal(codec.loads(codec.dumps(neg)), neg.resolve_neg())


# The compiled codec's fast path (torch.Tensor viewed through DLPack, decoded with
# torch.from_numpy) is armed by the first torch tensor it meets; these tests arm it first, so
# that they hold the fast path to what the general path (and the twin) does.
GRAD_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FAST_PATH_VIEWS = {
    "contiguous": lambda t: t,
    "transposed": lambda t: t.t(),
    "offset": lambda t: t[1:, 1:3],
    "stride 0": lambda t: t[0].expand(5, 8),
    "0-d": lambda t: t[2, 3],
    "empty": lambda t: t[:0],
    # Gradients and lazy negation where torch has them (its float8 and sub-byte types lack
    # the kernels; a negated view is what x.conj().imag gives).
    "requires_grad": lambda t: t.detach().requires_grad_() if t.dtype in GRAD_DTYPES else t,
    "neg bit": lambda t: torch._neg_view(t) if t.dtype in GRAD_DTYPES else t,
    "conj bit": lambda t: t.conj(),
}


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_fast_path_writes_the_twins_bytes_for_every_dtype_and_view(name):
    if tw_codec.codec_c is None:
        pytest.skip("the compiled codec is not built")
    tw_codec.codec_c.dumps(torch.ones(1))  # arms the fast path
    for view, make in FAST_PATH_VIEWS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = make(sample(getattr(torch, name), (6, 8)))
        assert tw_codec.codec_c.dumps(t) == tw_codec.codec_py.dumps(t), view
        c_frames = [bytes(f) for f in tw_codec.codec_c.encode(t)]
        assert c_frames == [bytes(f) for f in tw_codec.codec_py.encode(t)], view


def test_encoded_frames_keep_the_tensor_memory_alive(codec):
    codec.dumps(torch.ones(1))  # arms the compiled codec's fast path
    t = torch.arange(1000.0)
    frames = codec.encode(t)
    ptr = t.data_ptr()
    del t
    gc.collect()
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == ptr  # still the tensor's memory
    assert torch.equal(codec.decode(frames), torch.arange(1000.0))


def test_first_float32_torch_tensor_does_not_import_ml_dtypes():
    # ml_dtypes (a second or more to import) is needed for bfloat16/float8 tensors only.
    code = textwrap.dedent(
        """
        import sys
        import torch
        import tensorwire as tw
        tw.codec.loads(tw.codec.dumps(torch.arange(3.0)))
        print("ml_dtypes" in sys.modules)
        tw.codec.loads(tw.codec.dumps(torch.arange(3.0).to(torch.bfloat16)))
        print("ml_dtypes" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_sparse_tensor_is_refused_naming_the_layout(codec):
    s = torch.eye(3).to_sparse()
    with pytest.raises(TypeError, match="layout torch.sparse_coo.*to_dense"):
        codec.dumps(s)


def test_encode_of_a_contiguous_tensor_copies_nothing(codec):
    bf16 = torch.arange(64).to(torch.bfloat16)
    for t in (torch.arange(64.0), bf16, torch.ones(8, dtype=torch.bool)):
        frames = codec.encode({"t": t})
        payload = np.frombuffer(frames[1], np.uint8)
        assert payload.ctypes.data == t.data_ptr()
        assert payload.nbytes == t.numel() * t.element_size()


@pytest.mark.parametrize("kind", [bytes, bytearray])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64", "complex32"])
def test_decoded_tensor_lies_inside_the_receive_buffer(codec, kind, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = sample(getattr(torch, dtype), (16, 16))
    buf = kind(codec.dumps({"a": t, "b": [t[0]]}))
    got = codec.loads(buf)
    start = np.frombuffer(buf, np.uint8).ctypes.data
    for g in (got["a"], got["b"][0]):
        nbytes = g.numel() * g.element_size()
        assert start <= g.data_ptr() and g.data_ptr() + nbytes <= start + len(buf)
    if kind is bytearray:  # the tensor is the buffer: a write to one shows in the other
        off = got["a"].data_ptr() - start
        buf[off] ^= 0xFF
        assert raw_bytes(got["a"])[0] == raw_bytes(t)[0] ^ 0xFF


def test_split_frames_decode_into_their_own_payloads(codec):
    t = torch.arange(100.0)
    frames = [bytes(f) for f in codec.encode(t)]
    got = codec.decode(frames)
    start = np.frombuffer(frames[1], np.uint8).ctypes.data
    assert got.data_ptr() == start


def test_numpy_switch_returns_arrays_everywhere(codec):
    value = {"t": torch.arange(3), "nested": (torch.ones(2, dtype=torch.bfloat16),)}
    got = codec.loads(codec.dumps(value), numpy=True)
    assert type(got["t"]) is np.ndarray and got["t"].tolist() == [0, 1, 2]
    assert type(got["nested"][0]) is np.ndarray and got["nested"][0].dtype.name == "bfloat16"
    got = codec.decode(codec.encode(value), numpy=True)
    assert type(got["t"]) is np.ndarray


def test_a_framework_array_travels_as_its_framework_without_it(codec):
    # What a worker that stores a torch variable as NumPy sends back.
    fa = frameworks.FrameworkArray(frameworks.TORCH, "int32", np.arange(4, dtype=np.int32))
    got = codec.loads(codec.dumps(fa))
    assert type(got) is torch.Tensor and got.dtype == torch.int32 and got.tolist() == [0, 1, 2, 3]


class HostDLPack:
    """A minimal third-party DLPack producer on the host."""

    def __init__(self, array: np.ndarray, device: tuple[int, int] = (1, 0)) -> None:
        self.array = array
        self.device = device

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device


def test_other_dlpack_producers_travel_as_numpy(codec):
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    frames = codec.encode(HostDLPack(a))
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == a.ctypes.data  # no copy
    got = codec.decode(frames)
    assert type(got) is np.ndarray and np.array_equal(got, a)
    assert bytes(frames[0])[4] == 1  # a plain array record: readable by version-1 readers


def test_dlpack_producer_off_the_host_is_refused(codec):
    with pytest.raises(TypeError, match=r"on DLPack device \(2, 0\): copy it to host memory"):
        codec.dumps(HostDLPack(np.arange(3), device=(2, 0)))


def test_unknown_framework_id_decodes_as_numpy(codec, caplog):
    fa = frameworks.FrameworkArray(77, "float32", np.arange(3, dtype=np.float32))
    with caplog.at_level("WARNING", logger="tensorwire.codec"):
        got = codec.loads(codec.dumps(fa))
    assert type(got) is np.ndarray and got.tolist() == [0, 1, 2]


# --- JAX ----------------------------------------------------------------------------------


def aligned_copy(data: bytes) -> np.ndarray:
    """``data`` in a 64-byte aligned, writable buffer (what XLA needs to alias it)."""
    raw = np.empty(len(data) + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    out = raw[off : off + len(data)]
    out[:] = np.frombuffer(data, np.uint8)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "bool", "uint32", "complex64"])
def test_jax_arrays_round_trip_as_jax(codec, dtype):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.arange(12).reshape(3, 4).astype(dtype)
    got = codec.loads(codec.dumps({"x": x}))["x"]
    assert isinstance(got, jax.Array)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert np.array_equal(np.asarray(got), np.asarray(x))
    assert type(codec.loads(codec.dumps(x), numpy=True)) is np.ndarray


def test_jax_encode_copies_nothing_and_decode_aliases_aligned_buffers(codec):
    jax = pytest.importorskip("jax")
    x = jax.numpy.arange(256, dtype=jax.numpy.float32)
    frames = codec.encode(x)
    assert np.frombuffer(frames[1], np.uint8).ctypes.data == x.unsafe_buffer_pointer()
    buf = aligned_copy(codec.dumps(x))
    got = codec.loads(buf)
    start = buf.ctypes.data
    assert start <= got.unsafe_buffer_pointer() < start + buf.nbytes


def test_torch_tensor_to_a_jax_reader_and_back(codec):
    # Frames say which framework sent them: torch stays torch even when JAX is loaded.
    pytest.importorskip("jax")
    t = torch.arange(5, dtype=torch.float16)
    assert type(codec.loads(codec.dumps(t))) is torch.Tensor


# --- readers without the framework, and import cost ---------------------------------------

NO_FRAMEWORK_READER = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # torch cannot be imported in this process
    sys.modules["jax"] = None
    from tensorwire import codec
    impl = codec.codec_c if sys.argv[1] == "c" else codec.codec_py
    frame = bytes.fromhex(sys.argv[2])
    for _ in range(3):
        value = impl.loads(frame)
    print(type(value["t"]).__name__, value["t"].dtype, type(value["j"]).__name__)
    """
)


def test_reader_without_the_framework_gets_numpy_and_one_warning(codec):
    jax = pytest.importorskip("jax")
    name = "c" if codec.__name__.endswith("_c") else "py"
    frame = codec.dumps(
        {"t": torch.arange(4).to(torch.bfloat16), "j": jax.numpy.arange(3), "u": torch.ones(2)}
    )
    proc = subprocess.run(
        [sys.executable, "-c", NO_FRAMEWORK_READER, name, frame.hex()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ndarray", "bfloat16", "ndarray"]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr  # one line per missing framework, however many tensors
    assert any("torch is not installed here" in line for line in lines)
    assert any("jax is not installed here" in line for line in lines)


def test_importing_and_using_tensorwire_imports_no_framework():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tensorwire as tw
        frame = tw.codec.dumps({"a": np.arange(3), "b": [1, "x"]})
        tw.codec.loads(frame)
        print(sorted(m for m in ("torch", "jax", "ml_dtypes") if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- GPU: staged through host memory once -------------------------------------------------


@needs_cuda()
def test_cuda_tensor_arrives_on_the_cpu(codec):
    t = torch.arange(1000.0, device="cuda").reshape(10, 100)
    for value in (t, t.t(), t.to(torch.bfloat16)):
        got = codec.loads(codec.dumps(value))
        assert got.device.type == "cpu"
        assert torch.equal(got, value.cpu())


@needs_jax_gpu()
def test_jax_gpu_array_arrives_on_the_cpu(codec):
    import jax

    x = jax.device_put(jax.numpy.arange(100.0), jax.devices("gpu")[0])
    got = codec.loads(codec.dumps(x))
    assert all(d.platform == "cpu" for d in got.devices())
    assert np.array_equal(np.asarray(got), np.asarray(x))


def test_relay_decoding_keeps_the_framework_without_importing_it(codec):
    frame = codec.dumps({"t": torch.arange(3).to(torch.bfloat16), "n": np.arange(2)})
    relayed = codec.loads(frame, relay=True)
    assert isinstance(relayed["t"], frameworks.FrameworkArray)
    assert relayed["t"].framework == frameworks.TORCH and relayed["t"].dtype_name == "bfloat16"
    assert type(relayed["n"]) is np.ndarray
    assert codec.dumps(relayed) == frame  # sent on, it is the same tensor again
