"""Tensors of other frameworks (PyTorch, JAX, any DLPack producer) as NumPy arrays and back.

The one place that knows about framework tensors. The codec, the variables of the runtime and
the data service all go through it:

- ``export`` turns a tensor into a ``FrameworkArray``: the framework it came from, the
  framework's dtype name, and a NumPy view of its memory. A CPU tensor is viewed, not copied
  (a non-contiguous one is copied once later, by the codec, into the wire layout). A GPU tensor
  (CUDA torch, JAX on a GPU) is copied to host memory exactly once, with the framework's own
  ``.cpu()`` / ``jax.device_get``; it is never pickled.
- ``restore`` turns a decoded NumPy array back into the framework's type, sharing its
  memory: ``torch.from_numpy`` for torch, ``jax.device_put`` onto the CPU for JAX (which aliases
  64-byte aligned host memory and copies otherwise, as XLA requires). Restored tensors are CPU
  tensors unless the receiver names a device (below). When the framework cannot be imported
  the NumPy array is returned and one warning line is logged per framework and process.
- ``device_for`` resolves the receiver's ``device=`` (a torch device string or
  ``torch.device``; a ``jax.Device`` or ``"platform:index"`` string for JAX) into the
  framework's device, or refuses it with ``InvalidArgumentError`` naming the device and the
  devices this process has. ``restore(..., device=...)`` then moves the restored tensor there
  with exactly one host-to-device copy, straight from the receive buffer (``Tensor.to`` /
  ``jax.device_put``; the buffer is not pinned first: pinning is itself a host copy).

Frameworks are never imported to *recognise* a tensor: a tensor's class names its module, and
a framework whose tensor is in hand is already in ``sys.modules``. Importing ``tensorwire``
therefore costs nothing extra; only decoding a frame that holds a torch tensor imports torch.

Dtypes: every torch dtype that has a CPU tensor travels. Those NumPy has (bool, the ints and
uints, float16/32/64, complex64/128) become plain arrays; bfloat16 and the float8 types become
``ml_dtypes`` arrays (``ml_dtypes`` must be installed to send or read them as such); the rest
(complex32, the bits and sub-byte int/uint types, float4_e2m1fn_x2) are carried as raw bytes
(NumPy ``V<itemsize>``) with the torch dtype name on the wire, so a torch reader gets the exact
dtype back and a NumPy reader gets the bytes.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = [
    "TORCH",
    "JAX",
    "FRAMEWORK_NAMES",
    "FrameworkArray",
    "export",
    "restore",
    "device_for",
    "is_tensor",
    "framework_of",
    "to_numpy",
    "ml_dtype",
    "torch_wire_dtype",
    "torch_from_numpy",
]

log = logging.getLogger("tensorwire.codec")

# Framework ids on the wire (one byte). 0 is never written: a tensor of an unknown framework
# travels as a plain array.
TORCH = 1
JAX = 2
FRAMEWORK_NAMES = {TORCH: "torch", JAX: "jax"}

# DLPack's device type for host memory (DLDeviceType kDLCPU).
_DLPACK_CPU = 1

# The unsigned int of each size: how dtypes without a NumPy twin are viewed (same bytes).
_UINT_OF_SIZE = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}

# torch dtypes stored as an ml_dtypes NumPy dtype of the same name and size.
_ML_DTYPE_NAMES = (
    "bfloat16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
)


class FrameworkArray:
    """A NumPy array that travels as a tensor of ``framework`` with dtype ``dtype_name``.

    What ``export`` returns and what the codec writes as a framework-tensor record. The
    runtime also builds these directly (a variable created from a torch tensor is stored as
    NumPy and read back through one of these), so a process holding only NumPy can send a
    torch tensor without importing torch.
    """

    __slots__ = ("framework", "dtype_name", "array")

    def __init__(self, framework: int, dtype_name: str, array: np.ndarray[Any, Any]) -> None:
        self.framework = framework
        self.dtype_name = dtype_name
        self.array = array

    def __repr__(self) -> str:
        fw = FRAMEWORK_NAMES.get(self.framework, str(self.framework))
        return f"FrameworkArray({fw}, {self.dtype_name}, shape={self.array.shape})"


def _module_root(cls: type) -> str:
    return cls.__module__.partition(".")[0]


# Tensor classes already recognised -> framework: one dict lookup for the common case.
_known_types: dict[type, int] = {}


def framework_of(obj: Any) -> int:
    """TORCH or JAX when ``obj`` is a tensor of that framework, else 0. Imports nothing."""
    cls = type(obj)
    fw = _known_types.get(cls)
    if fw is not None:
        return fw
    fw = 0
    root = _module_root(cls)
    if root == "torch":
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            fw = TORCH
    elif root in ("jaxlib", "jax"):
        jax = sys.modules.get("jax")
        if jax is not None and isinstance(obj, jax.Array):
            fw = JAX
    if fw and len(_known_types) < 256:
        _known_types[cls] = fw
    return fw


def is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a tensor ``export`` takes (torch, JAX or a DLPack producer)."""
    if isinstance(obj, (np.ndarray, FrameworkArray)):
        return False
    return framework_of(obj) != 0 or hasattr(type(obj), "__dlpack_device__")


def export(obj: Any) -> FrameworkArray | np.ndarray[Any, Any]:
    """``obj`` as NumPy: a ``FrameworkArray`` for torch/JAX, an array for other producers.

    Raises TypeError saying why when the tensor cannot be expressed (sparse or quantized torch
    tensors, a JAX tracer, a DLPack producer's tensor on a device other than the host).
    """
    fw = framework_of(obj)
    if fw == TORCH:
        return _torch_export(obj)
    if fw == JAX:
        return _jax_export(obj)
    return _dlpack_export(obj)


def to_numpy(obj: Any) -> Any:
    """``obj`` as a NumPy array when it is a framework tensor (a view on the CPU), else itself."""
    if isinstance(obj, FrameworkArray):
        return obj.array
    if isinstance(obj, np.ndarray) or not is_tensor(obj):
        return obj
    out = export(obj)
    return out.array if isinstance(out, FrameworkArray) else out


def ml_dtype(name: str) -> np.dtype[Any] | None:
    """The ``ml_dtypes`` dtype called ``name`` (bfloat16, float8_*), or None (not installed,
    or no such type). Looked up in the module's namespace only: names may come from the wire."""
    if name not in _ML_DTYPE_NAMES and name not in ("int4", "uint4", "float8_e4m3b11fnuz"):
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    kind = vars(ml_dtypes).get(name)
    return None if kind is None else np.dtype(kind)


# --- torch --------------------------------------------------------------------------------

# torch dtype -> (how it is viewed, the NumPy dtype it becomes, its name). Built on first use,
# when torch is already imported.
_NATIVE, _VIEW, _RAW = 0, 1, 2
_torch_table: dict[Any, tuple[int, np.dtype[Any], str]] | None = None
_torch_table_lock = threading.Lock()


# The ml_dtypes types (bfloat16, float8_*) of the table, each with what it travels as when
# ml_dtypes is not installed (raw bytes, or None: refused). Resolved on first use, so that
# ml_dtypes (a second or more to import: it registers its NumPy casts and ufuncs) is imported
# only when such a tensor is sent, never for the first float32 one.
_torch_ml_pending: dict[Any, tuple[str, tuple[int, np.dtype[Any], str] | None]] = {}


def _build_torch_table(torch: Any) -> dict[Any, tuple[int, np.dtype[Any], str]]:
    table: dict[Any, tuple[int, np.dtype[Any], str]] = {}
    for dt in list(vars(torch).values()):
        if not isinstance(dt, torch.dtype) or dt in table or dt in _torch_ml_pending:
            continue
        name = str(dt).removeprefix("torch.")
        try:
            table[dt] = (_NATIVE, torch.empty(0, dtype=dt).numpy().dtype, name)
            continue
        except Exception:  # noqa: BLE001 - NumPy has no such dtype: see below
            pass
        size = dt.itemsize
        raw: tuple[int, np.dtype[Any], str] | None = None
        if size in _UINT_OF_SIZE:
            try:  # raw bytes need a same-size unsigned view; quantized types have none
                torch.empty(0, dtype=dt).view(getattr(torch, _UINT_OF_SIZE[size]))
                raw = (_RAW, np.dtype(f"V{size}"), name)
            except Exception:  # noqa: BLE001 - left out: export refuses it by name
                pass
        if name in _ML_DTYPE_NAMES:
            _torch_ml_pending[dt] = (name, raw)
        elif raw is not None:
            table[dt] = raw
    return table


def _torch_dtypes(torch: Any) -> dict[Any, tuple[int, np.dtype[Any], str]]:
    global _torch_table
    if _torch_table is None:
        with _torch_table_lock:
            if _torch_table is None:
                with warnings.catch_warnings():  # creating complex32/quantized tensors warns
                    warnings.simplefilter("ignore")
                    _torch_table = _build_torch_table(torch)
    return _torch_table


def _torch_entry(dtype: Any) -> tuple[int, np.dtype[Any], str] | None:
    """How a torch dtype is viewed: (_NATIVE/_VIEW/_RAW, NumPy dtype, name); None: refused."""
    table = _torch_dtypes(sys.modules["torch"])
    entry = table.get(dtype)
    if entry is None and dtype in _torch_ml_pending:
        name, raw = _torch_ml_pending[dtype]
        ml = ml_dtype(name)  # bfloat16/float8 then travel as raw bytes with their name
        entry = (_VIEW, ml, name) if ml is not None else raw
        if entry is not None:
            table[dtype] = entry
    return entry


def _torch_export(t: Any) -> FrameworkArray:
    torch = sys.modules["torch"]
    entry = _torch_entry(t.dtype)
    if entry is not None and entry[0] == _NATIVE:
        # The common case in one call: .numpy() refuses (RuntimeError/TypeError) exactly what
        # needs the careful path below (gradients, another device, lazy bits, sparse layouts).
        try:
            return FrameworkArray(TORCH, entry[2], t.numpy())
        except (RuntimeError, TypeError):
            pass
    return _torch_export_slow(torch, t)


def _torch_export_slow(torch: Any, t: Any) -> FrameworkArray:
    if t.layout is not torch.strided:
        raise TypeError(
            f"tensorwire.codec cannot encode a torch tensor with layout {t.layout}; "
            "convert it with .to_dense() first"
        )
    entry = _torch_entry(t.dtype)
    if entry is None:
        raise TypeError(f"tensorwire.codec cannot encode torch tensors of dtype {t.dtype}")
    how, npdt, name = entry
    if t.requires_grad:
        t = t.detach()  # the data only; gradients do not travel
    if not t.is_cpu:
        # The one device-to-host copy of a GPU (or other device) tensor.
        t = t.cpu()
    # Lazy conjugation/negation bits (x.conj(), x.conj().imag): .numpy() refuses them, and
    # the memory does not hold the values until they are resolved (one copy).
    if t.is_neg():
        t = t.resolve_neg()
    if t.is_conj():  # complex dtypes only, complex32 (raw bytes) included
        t = t.resolve_conj()
    if how == _NATIVE:
        return FrameworkArray(TORCH, name, t.numpy())
    # No NumPy twin: view the same memory as an unsigned int of the same size, then as the
    # ml_dtypes type (or raw bytes). Views, not copies; strides are kept.
    raw = t.view(getattr(torch, _UINT_OF_SIZE[npdt.itemsize])).numpy()
    return FrameworkArray(TORCH, name, raw.view(npdt))


def torch_wire_dtype(dtype: Any) -> tuple[str, np.dtype[Any]] | None:
    """The wire name of the torch dtype ``dtype`` and the NumPy dtype its bytes are viewed as
    (what ``export`` gives a CPU tensor of it), or None for a dtype it refuses.

    For the compiled codec's fast path, which caches the answer per dtype; torch is imported
    (a tensor of it is in hand).
    """
    entry = _torch_entry(dtype)
    return None if entry is None else (entry[2], entry[1])


def torch_from_numpy() -> Any:
    """``torch.from_numpy``, imported on first need and ready for read-only arrays (torch's
    one-time warning about them already taken, silenced); None when torch is not installed.

    For the compiled codec's fast path, which calls it directly for the dtypes NumPy and torch
    share (what ``restore`` does for them, minus the Python calls in between).
    """
    torch = _import("torch")
    if torch is None:
        return None
    if not _torch_warned_readonly:
        _torch_from_numpy(torch, np.frombuffer(bytes(1), np.uint8))
    return torch.from_numpy


_torch_warned_readonly = False

# NumPy scalar types torch.from_numpy takes as they are (a set of types: cheap to look up).
_SHARED_TYPES = frozenset(
    {np.bool_, np.float16, np.float32, np.float64, np.complex64, np.complex128}
    | {np.dtype(f"{k}{n}").type for k in "iu" for n in (1, 2, 4, 8)}
)


def _torch_from_numpy(torch: Any, a: np.ndarray[Any, Any]) -> Any:
    global _torch_warned_readonly
    if not _torch_warned_readonly and not a.flags.writeable:
        # torch warns once per process (TORCH_WARN_ONCE) that a tensor over read-only memory
        # may be written to. Decoded tensors over a read-only receive buffer are documented as
        # read-only; take that one warning here, silenced, instead of in the user's code. A
        # per-call catch_warnings would cost more than the conversion and is not thread-safe.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tensor = torch.from_numpy(a)
        _torch_warned_readonly = True
        return tensor
    return torch.from_numpy(a)


def _torch_restore(dtype_name: str, a: np.ndarray[Any, Any], device: Any = None) -> Any:
    torch = _import("torch")
    if torch is None:
        return a
    target = None if device is None else device_for(TORCH, device)
    dtype = a.dtype
    if dtype.type in _SHARED_TYPES:
        t = _torch_from_numpy(torch, a)  # a dtype NumPy and torch share
        return t if target is None else t.to(target)  # the one host-to-device copy
    # bfloat16/float8 (ml_dtypes) or raw bytes: view as an unsigned int, then as the dtype.
    # The name came from the wire: a plain namespace lookup, no module __getattr__ runs.
    name = dtype_name or dtype.name
    dt = vars(torch).get(name)
    if (
        not isinstance(dt, torch.dtype)
        or dt.itemsize != dtype.itemsize
        or dtype.itemsize not in _UINT_OF_SIZE
    ):
        _warn_once(
            ("torch", name),
            f"tensorwire.codec: this torch has no {dtype.itemsize}-byte dtype {name!r}; "
            "the tensor is returned as a NumPy array",
        )
        return a
    base = _torch_from_numpy(torch, a.view(_UINT_OF_SIZE[dtype.itemsize]))
    t = base.view(dt)
    return t if target is None else t.to(target)  # the one host-to-device copy


# --- jax ----------------------------------------------------------------------------------


def _jax_export(x: Any) -> FrameworkArray:
    jax = sys.modules["jax"]
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    if tracer is not None and isinstance(x, tracer):
        raise TypeError(
            "tensorwire.codec cannot encode a JAX tracer (a value inside jit/grad/vmap); "
            "send concrete arrays"
        )
    if all(d.platform == "cpu" for d in x.devices()):
        a = np.asarray(x)  # a read-only view of the CPU buffer, no copy
    else:
        a = jax.device_get(x)  # the one device-to-host copy
    return FrameworkArray(JAX, a.dtype.name, a)


_jax_cpu: Any = None


def _jax_restore(a: np.ndarray[Any, Any], device: Any = None) -> Any:
    global _jax_cpu
    jax = _import("jax")
    if jax is None:
        return a
    if device is not None:
        target = device_for(JAX, device)
    else:
        if _jax_cpu is None:
            _jax_cpu = jax.devices("cpu")[0]
        target = _jax_cpu
    if a.dtype.type is np.void:
        return a  # raw bytes (a torch-only dtype): JAX has no type for them
    # On the CPU: aliases host memory that is 64-byte aligned (XLA's requirement), else copies
    # once. On another device: the one host-to-device copy.
    return jax.device_put(a, target)


# --- other DLPack producers ---------------------------------------------------------------


def _dlpack_export(obj: Any) -> np.ndarray[Any, Any]:
    try:
        device_type, device_id = obj.__dlpack_device__()
    except Exception as exc:  # noqa: BLE001 - not a DLPack producer after all
        raise TypeError(
            f"tensorwire.codec cannot encode objects of type {type(obj).__qualname__} "
            f"(__dlpack_device__ failed: {exc})"
        ) from None
    if device_type != _DLPACK_CPU:
        raise TypeError(
            f"tensorwire.codec cannot encode a {type(obj).__qualname__} on DLPack device "
            f"({device_type}, {device_id}): copy it to host memory first (its framework is "
            "not one the codec knows how to copy from)"
        )
    try:
        return np.from_dlpack(obj)
    except (TypeError, BufferError, RuntimeError) as exc:
        raise TypeError(
            f"tensorwire.codec cannot encode a {type(obj).__qualname__}: NumPy cannot view it "
            f"through DLPack ({exc})"
        ) from None


# --- decoding side ------------------------------------------------------------------------

_missing: dict[str, bool] = {}
_warned: set[Any] = set()


def _warn_once(key: Any, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def _import(name: str) -> Any:
    """The framework module, imported on first need; None (and one warning) when missing."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    if _missing.get(name):
        return None
    try:
        mod = __import__(name)
    except ImportError:
        _missing[name] = True
        _warn_once(
            name,
            f"tensorwire.codec: received {name} tensors but {name} is not installed here; "
            "they are returned as NumPy arrays",
        )
        return None
    return mod


def restore(
    framework: int, dtype_name: str, array: np.ndarray[Any, Any], device: Any = None
) -> Any:
    """``array`` as a tensor of ``framework`` sharing its memory (NumPy when not possible).

    With ``device`` (see ``device_for``) the tensor is placed there instead: one
    host-to-device copy, none for the CPU. Raises InvalidArgumentError for a device this
    process lacks, before anything is copied.
    """
    if framework == TORCH:
        return _torch_restore(dtype_name, array, device)
    if framework == JAX:
        return _jax_restore(array, device)
    _warn_once(
        ("framework", framework),
        f"tensorwire.codec: received tensors of framework id {framework}, unknown to this "
        "version; they are returned as NumPy arrays",
    )
    return array


# --- the receiver's device ----------------------------------------------------------------

# (framework, device as given) -> the framework's device (None: torch's CPU, no move). Few
# entries: a process names few devices. Errors are not cached (a device may appear later).
_placements: dict[tuple[int, Any], Any] = {}


def device_for(framework: int, device: Any) -> Any:
    """The device of ``framework`` that a receiver's ``device`` names.

    ``device`` is a device string, a ``torch.device`` or a ``jax.Device``. For torch tensors a
    string is a torch device string (``"cuda:0"``, ``"cpu"``); for JAX arrays it is
    ``"platform"`` or ``"platform:index"`` (``"gpu:0"``, ``"cuda:1"``, ``"cpu"``), and a
    ``torch.device`` is read as its string. A ``jax.Device`` places JAX arrays only.

    Args:
      framework: ``TORCH`` or ``JAX``; the framework is imported.
      device: the device the receiver asked for.

    Returns:
      For torch a ``torch.device``, or None for the CPU (tensors stay over the receive
      buffer); for JAX a ``jax.Device``.

    Raises:
      TypeError: ``device`` is not a string, ``torch.device`` or ``jax.Device``.
      InvalidArgumentError: the framework has no such device here (not a device name, no
        such backend, index out of range); the message lists the devices it has.

    Examples:
        >>> device_for(TORCH, "cpu") is None                               # doctest: +SKIP
        True
        >>> device_for(TORCH, "cuda:0")                                    # doctest: +SKIP
        device(type='cuda', index=0)
    """
    key = (framework, device)
    try:
        return _placements[key]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a device of any kind
        raise TypeError(_device_type_message(device)) from None
    kind = _device_kind(device)
    if framework == TORCH:
        found = _torch_device(sys.modules.get("torch") or _import_required("torch"), device, kind)
    elif framework == JAX:
        found = _jax_device(sys.modules.get("jax") or _import_required("jax"), device, kind)
    else:
        raise ValueError(f"no framework with id {framework}")
    if len(_placements) < 64:
        _placements[key] = found
    return found


def _device_type_message(device: Any) -> str:
    return (
        "device must be a device string ('cuda:0', 'cpu', 'gpu:0'), a torch.device or a "
        f"jax.Device, not {type(device).__qualname__}"
    )


def _device_kind(device: Any) -> str:
    """ "str", "torch" or "jax": what ``device`` is, recognised without importing anything."""
    if isinstance(device, str):
        return "str"
    cls = type(device)
    root = _module_root(cls)
    torch = sys.modules.get("torch")
    if root == "torch" and torch is not None and isinstance(device, torch.device):
        return "torch"
    jax = sys.modules.get("jax")
    if root in ("jaxlib", "jax") and jax is not None and isinstance(device, jax.Device):
        return "jax"
    raise TypeError(_device_type_message(device))


def _import_required(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise InvalidArgumentError(
            f"a device was asked for {name} tensors but {name} is not installed here"
        ) from None


def _torch_devices(torch: Any) -> list[str]:
    """The devices torch can place tensors on in this process, as strings."""
    found = ["cpu"]
    for kind in ("cuda", "xpu", "mps"):
        backend = getattr(torch, kind, None)
        try:
            if backend is None or not backend.is_available():
                continue
            count = backend.device_count() if hasattr(backend, "device_count") else 1
        except Exception:  # noqa: BLE001 - a backend that cannot even say: absent
            continue
        found += [f"{kind}:{i}" for i in range(count)]
    return found


def _torch_device(torch: Any, device: Any, kind: str) -> Any:
    if kind == "jax":
        raise InvalidArgumentError(
            f"a jax.Device ({device}) cannot place torch tensors; pass a torch device "
            f"string or torch.device (available here: {', '.join(_torch_devices(torch))})"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{str(device)!r} is not a torch device ({exc}); available here: "
            f"{', '.join(_torch_devices(torch))}"
        ) from None
    if dev.type == "cpu":
        return None  # received tensors are CPU tensors already: no copy
    if dev.type == "meta":
        raise InvalidArgumentError(
            f"device {str(device)!r} holds no data: received tensors cannot be placed there"
        )
    backend: Any = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    problem = None
    if is_available is not None:
        count = getattr(backend, "device_count", None)
        if not is_available():
            problem = f"torch.{dev.type}.is_available() is False"
        elif dev.index is not None and count is not None and dev.index >= count():
            problem = f"torch.{dev.type}.device_count() is {count()}"
    else:  # a backend torch knows only by name (a plugin's): ask it to allocate
        try:
            torch.empty(0, device=dev)
        except Exception as exc:  # noqa: BLE001 - any refusal means the device is absent
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if problem is not None:
        raise InvalidArgumentError(
            f"device {str(device)!r} is not available to torch here ({problem}); available: "
            f"{', '.join(_torch_devices(torch))}"
        )
    return dev


def _jax_devices(jax: Any) -> str:
    return ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())


def _jax_device(jax: Any, device: Any, kind: str) -> Any:
    if kind == "jax":
        return device
    spec = str(device)  # a torch.device reads as "cuda:0"
    platform, _, index = spec.partition(":")
    if not platform or not (index == "" or index.isdigit()):
        raise InvalidArgumentError(
            f"{spec!r} is not a JAX device ('platform' or 'platform:index', such as 'gpu:0'); "
            f"available here: {_jax_devices(jax)}"
        )
    try:
        devices = jax.devices(platform)
    except (RuntimeError, ValueError):  # no such backend here
        raise InvalidArgumentError(
            f"device {spec!r} is not available to JAX here (no {platform!r} backend); "
            f"available: {_jax_devices(jax)}"
        ) from None
    i = int(index or 0)
    if i >= len(devices):
        raise InvalidArgumentError(
            f"device {spec!r} is not available to JAX here ({len(devices)} {platform!r} "
            f"device(s)); available: {_jax_devices(jax)}"
        )
    return devices[i]
