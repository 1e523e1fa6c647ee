"""The tensor codec: nested structures of NumPy arrays (and torch/JAX tensors) to bytes and back.

API::

    dumps(obj) -> bytes            one contiguous frame (header, then 64-byte aligned payloads)
    loads(buffer, *, numpy=False, device=None) -> obj   arrays come back as views into ``buffer``
    encode(obj) -> list[buffer]    frame 0 = header, then one frame per array (views, no copy)
    decode(frames, *, numpy=False, device=None) -> obj  arrays are views into their own frames

Two implementations produce and accept the same bytes: ``_codec_c`` (Cython, the default) and
``_codec_py`` (the pure-Python twin). ``IMPLEMENTATION`` says which one is live; set
``TENSORWIRE_PURE_PYTHON=1`` to force the twin. Both are importable by name for tests.

What it carries
---------------
``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, namedtuples, NumPy arrays and NumPy scalars (``np.float32(1)`` comes back
as ``np.float32``). Array dtypes: bool, int8..int64, uint8..uint64, float16/32/64,
complex64/128, bfloat16 (``ml_dtypes``; needed to decode it, never required otherwise), and
fixed-width ``S``/``U`` strings; the float8 and int4 types of ``ml_dtypes`` as well. Object
arrays, structured, datetime and masked arrays raise TypeError naming the dtype, as does any
other unsupported object (naming its type).

Framework tensors
-----------------
``torch.Tensor`` and ``jax.Array`` travel as themselves: the frame records the framework, and
``loads``/``decode`` return a ``torch.Tensor`` (``torch.from_numpy`` over the received bytes)
or a ``jax.Array`` (``jax.device_put`` on the CPU, which aliases 64-byte aligned memory and
copies otherwise). Pass ``numpy=True`` to get NumPy arrays instead (``relay=True`` gives
``tensorwire.frameworks.FrameworkArray`` wrappers, which encode again as the same framework's
tensors without the framework imported: what a relay such as a variable store wants). A
reader without the framework installed gets NumPy arrays and one warning line (logger
``tensorwire.codec``), never an error. Other ``__dlpack__`` producers on the host
(``__dlpack_device__`` kDLCPU) travel as plain arrays and come back as NumPy.

- Every torch dtype with CPU tensors travels, bfloat16, bool, complex, uint16/32/64 and the
  float8 types included (bfloat16/float8 as ``ml_dtypes`` arrays for a NumPy reader). Dtypes
  NumPy has no type for (complex32, bits8, uint1..7, int1..7, float4_e2m1fn_x2) travel as raw
  bytes with the torch dtype's name: torch readers get the dtype back, NumPy readers get ``V<n>``
  arrays of the bytes.
- Encoding a contiguous CPU tensor copies nothing (a view of its memory, like an array); a
  non-contiguous view is copied once into the wire layout (torch has no negative strides; NumPy
  views with them are copied once too). ``requires_grad`` tensors send their data only; lazy
  conjugate/negative bits are resolved (one copy).
- GPU tensors (CUDA torch, JAX on a GPU) are copied to host memory exactly once, by the
  framework itself (``tensor.cpu()``, ``jax.device_get``), and never pickled; they arrive as CPU
  tensors, or on the receiver's device when it asks for one (below).
- ``device=`` places the frame's torch tensors and JAX arrays on a device of the receiver:
  a torch device string or ``torch.device`` (``"cuda:0"``) for torch tensors, a ``jax.Device``
  or ``"platform:index"`` string (``"gpu:0"``) for JAX arrays (a string serves both). Each
  tensor is copied from the receive buffer to the device exactly once (``Tensor.to``,
  ``jax.device_put``); the buffer is not pinned first, since pinning is itself a host copy.
  ``device="cpu"`` keeps the zero-copy decode. NumPy arrays have no device and stay NumPy
  on the host. A device the process lacks raises ``InvalidArgumentError`` naming it and
  listing the devices there are, when the first tensor it would hold is decoded, before any
  copy (a frame without tensors never checks it); a value that is no device raises
  TypeError; ``device=`` beside ``numpy=True`` or ``relay=True`` raises ValueError.
- Decoded torch tensors share the receive buffer; when that buffer is read-only (``bytes``)
  they must be treated as read-only (``.clone()`` one to write to it); torch cannot mark them.
  Its one-time warning about such tensors is taken, silenced, on the first decode.
- Recognising a tensor imports nothing (its class names its framework, which is then already
  imported); decoding a torch or JAX tensor imports that framework if it is not imported yet.
  ``tensorwire.frameworks`` is where all of this lives.

Rules worth knowing:

- dict keys may be any value the codec carries that is hashable when decoded (str, int,
  bytes, float, bool, None, NumPy scalars, tuples/namedtuples of those).
- Subclasses travel as their base: a dict subclass (OrderedDict, defaultdict) comes back as a
  dict, an IntEnum as an int, an ndarray subclass (np.memmap) as an ndarray.
- A namedtuple comes back as its own class when the class's module is already imported in the
  decoding process and the class at its qualified name has the same fields; otherwise as a
  ``collections.namedtuple`` of the same name and fields. Decoding never imports modules.
- Arrays are sent C-contiguous and little-endian: non-contiguous or big-endian input is copied
  once on encode and decodes value-equal (as little-endian). Anything else is not copied:
  ``encode`` returns views of the arrays' memory, and decoded arrays are views of the received
  buffer, writable exactly when that buffer is (bytes give read-only arrays, a bytearray
  writable ones).
- Containers nest at most ``MAX_DEPTH`` (100) levels; arrays have at most 32 dimensions.
- Payload bytes are never scanned on decode (that would cost the zero-copy): a ``U`` array
  element that is not a valid code point raises NumPy's error when it is read; a bool array
  holds whatever bytes arrived. NumPy scalars, which are copies, are checked.

Bad frames raise ``tw.errors.DataLossError`` (corrupt or truncated: bad magic, lengths,
offsets, tags, UTF-8, shapes that do not match their payloads, trailing bytes) or
``tw.errors.InvalidArgumentError`` (well-formed but not supported here: another format version,
unknown flags or dtype codes, bfloat16 without ml_dtypes, nesting beyond the limit). Every check
runs before any payload memory is touched.

Wire format, versions 1 and 2 (all integers little-endian)
----------------------------------------------------------
Version 2 is version 1 plus the T_TENSOR record. A frame is written as version 2 only when it
holds a T_TENSOR record; all others are written as version 1, unchanged, so older readers still
read them, and refuse a version-2 frame up front with InvalidArgumentError ("unsupported codec
format version 2 (this build reads 1)"). This build reads both.

Header (frame 0 of ``encode``; the start of a ``dumps`` frame)::

    prefix   16 bytes  magic b"TWCD" | u8 version=1|2 | u8 flags | u16 reserved=0
                       | u32 header_len (prefix + table + structure) | u32 n_payloads
    table    n_payloads x (u64 offset, u64 nbytes)
    structure          one value, encoded as below, filling the header exactly

flags bit 0 (PACKED) marks a ``dumps`` frame: payload k sits at ``offset``, which must be the
first multiple of 64 at or after the end of the header (k = 0) or of payload k-1, and the frame
ends exactly where the last payload does (zero padding between). In ``encode``'s split form
every offset is 0 and payload k is frame k+1, exactly ``nbytes`` long. The table lets a
transport size its receive buffers without parsing the structure.

Values (one tag byte, then)::

    0x00 None | 0x01 False | 0x02 True
    0x03 int       i64                       0x04 big int   u32 n, n bytes two's complement
    0x05 float     f64                       0x06 complex   f64 real, f64 imag
    0x07 str       u32 n, n bytes UTF-8      0x08 bytes     u32 n, n bytes
    0x09 list      u32 n, n values           0x0A tuple     u32 n, n values
    0x0B dict      u32 n, n x (key value, value)
    0x0C namedtuple  str module, str qualname, u32 n, n x str field, n values (str = u32 n + UTF-8)
    0x0D array     u8 dtype, [u32 itemsize], u8 ndim, ndim x u64 dim; its bytes are the next
                   payload in table order (C order, little-endian)
    0x0E NumPy scalar  u8 dtype, [u32 itemsize], itemsize bytes
    0x0F tensor    (version 2) u8 framework (1 torch, 2 jax), str dtype name (the framework's,
                   u32 n + UTF-8), then one 0x0D array record, tag included

The itemsize field is present only for the string and raw dtypes. Dtype codes follow
TensorFlow's DataType enum: DT_FLOAT=1, DT_DOUBLE=2, DT_INT32=3, DT_UINT8=4, DT_INT16=5,
DT_INT8=6, DT_STRING=7 (NumPy ``S``), DT_COMPLEX64=8, DT_INT64=9, DT_BOOL=10, DT_BFLOAT16=14,
DT_UINT16=17, DT_COMPLEX128=18, DT_HALF=19, DT_UINT32=22, DT_UINT64=23, DT_FLOAT8_E5M2=24,
DT_FLOAT8_E4M3FN=25, DT_FLOAT8_E4M3FNUZ=26, DT_FLOAT8_E4M3B11FNUZ=27, DT_FLOAT8_E5M2FNUZ=28,
DT_INT4=29, DT_UINT4=30 (the ml_dtypes types); and our own 240 = NumPy ``U`` (UCS-4, itemsize
in bytes), 241 = float8_e8m0fnu, 250 = raw bytes of a framework dtype (itemsize in bytes; only
inside a tensor record, whose dtype name says what they are). An unknown framework id decodes
as NumPy with a warning (so a newer writer's framework degrades safely).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from .._compiled import why_missing
from . import _codec_py
from ._format import MAX_DEPTH, VERSION

__all__ = [
    "dumps",
    "loads",
    "encode",
    "decode",
    "IMPLEMENTATION",
    "MAX_DEPTH",
    "VERSION",
    "codec_py",
    "codec_c",
    "PURE_REASON",
]

log = logging.getLogger(__name__)

codec_py: ModuleType = _codec_py
codec_c: ModuleType | None
_unavailable: str | None = None
try:
    from . import _codec_c as codec_c
except ImportError as exc:  # not built (pure build) or broken: the twin serves
    log.debug("compiled codec unavailable, using the pure-Python twin: %s", exc)
    codec_c = None
    _unavailable = why_missing(__name__, "_codec_c", "codec", exc)

_impl: ModuleType
#: Why the pure-Python twin serves, and how to get the compiled codec; None when compiled.
PURE_REASON: str | None
if codec_c is not None and not os.environ.get("TENSORWIRE_PURE_PYTHON"):
    _impl = codec_c
    IMPLEMENTATION = "compiled"
    PURE_REASON = None
else:
    _impl = codec_py
    IMPLEMENTATION = "python"
    if codec_c is not None:
        PURE_REASON = "TENSORWIRE_PURE_PYTHON is set; unset it for the compiled codec"
    else:
        PURE_REASON = (
            f"{_unavailable}; for the compiled codec reinstall tensorwire from its binary "
            "wheel (pip install --force-reinstall --no-deps --only-binary tensorwire "
            "tensorwire) or, with a working C compiler, from source"
        )


class _Loads(Protocol):
    def __call__(
        self, buffer: Any, *, numpy: bool = False, relay: bool = False, device: Any = None
    ) -> Any: ...


class _Decode(Protocol):
    def __call__(
        self, frames: Any, *, numpy: bool = False, relay: bool = False, device: Any = None
    ) -> Any: ...


dumps: Callable[[Any], bytes] = _impl.dumps
loads: _Loads = _impl.loads
encode: Callable[[Any], list[Any]] = _impl.encode
decode: _Decode = _impl.decode
