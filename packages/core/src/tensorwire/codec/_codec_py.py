"""The pure-Python twin of the tensor codec (``_codec_c`` is the compiled one).

Used when the extension is not built or ``TENSORWIRE_PURE_PYTHON`` is set. It produces and
accepts exactly the bytes ``_codec_c`` does; the shared golden vectors in the tests hold both
to that. The format is described in ``tensorwire.codec``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ..errors import DataLossError, InvalidArgumentError
from ..frameworks import FrameworkArray
from . import _format as F

__all__ = ["dumps", "loads", "encode", "decode"]

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_INTP_MAX = int(np.iinfo(np.intp).max)


# --- encoding -----------------------------------------------------------------------------


def _put_len(out: bytearray, n: int, what: str) -> None:
    if n > F.MAX_U32:
        raise ValueError(f"{what} of length {n} is too long for tensorwire.codec (max 2**32-1)")
    out += _U32.pack(n)


def _enc(obj: Any, out: bytearray, arrays: list[np.ndarray[Any, Any]], depth: int) -> None:
    t = type(obj)
    if obj is None:
        out.append(F.T_NONE)
    elif t is bool:
        out.append(F.T_TRUE if obj else F.T_FALSE)
    elif t is int:
        _enc_int(obj, out)
    elif t is float:
        out.append(F.T_FLOAT)
        out += _F64.pack(obj)
    elif t is str:
        _enc_str(obj, out)
    elif t is np.ndarray:
        _enc_array(obj, out, arrays)
    elif t is dict:
        _enc_dict(obj, out, arrays, depth)
    elif t is list:
        _enc_seq(F.T_LIST, obj, out, arrays, depth)
    elif t is tuple:
        _enc_seq(F.T_TUPLE, obj, out, arrays, depth)
    elif t is bytes:
        out.append(F.T_BYTES)
        _put_len(out, len(obj), "bytes")
        out += obj
    elif t is complex:
        out.append(F.T_COMPLEX)
        out += _C128.pack(obj.real, obj.imag)
    else:
        _enc_other(obj, out, arrays, depth)


class _Arrays(list):
    """The payload arrays in table order, and whether a T_TENSOR record was written."""

    has_tensor = False


def _enc_other(obj: Any, out: bytearray, arrays: list[np.ndarray[Any, Any]], depth: int) -> None:
    # Subclasses and NumPy types; the order matters (np.float64 is a float, np.str_ a str).
    if isinstance(obj, np.ndarray):
        _enc_array(obj, out, arrays)
    elif isinstance(obj, np.generic):
        out += F.scalar_record(obj)
    elif type(obj) is FrameworkArray or hasattr(type(obj), "__dlpack__"):
        _enc_tensor(obj, out, arrays)
    elif isinstance(obj, tuple):
        if F.is_namedtuple(obj):
            if depth >= F.MAX_DEPTH:
                raise ValueError(f"structure nested deeper than {F.MAX_DEPTH} levels")
            out += F.namedtuple_header(type(obj))
            for v in tuple.__iter__(obj):
                _enc(v, out, arrays, depth + 1)
        else:
            _enc_seq(F.T_TUPLE, obj, out, arrays, depth)
    elif isinstance(obj, dict):
        _enc_dict(obj, out, arrays, depth)
    elif isinstance(obj, list):
        _enc_seq(F.T_LIST, obj, out, arrays, depth)
    elif isinstance(obj, bool):  # pragma: no cover - bool cannot be subclassed
        out.append(F.T_TRUE if obj else F.T_FALSE)
    # The base type's own value, whatever a subclass's __int__/__str__/... return.
    elif isinstance(obj, int):
        _enc_int(int.__index__(obj), out)
    elif isinstance(obj, float):
        out.append(F.T_FLOAT)
        out += _F64.pack(float.__float__(obj))
    elif isinstance(obj, str):
        _enc_str(str.__str__(obj), out)
    elif isinstance(obj, bytes):
        b = bytes(memoryview(obj))
        out.append(F.T_BYTES)
        _put_len(out, len(b), "bytes")
        out += b
    elif isinstance(obj, complex):
        out.append(F.T_COMPLEX)
        out += _C128.pack(complex.real.__get__(obj), complex.imag.__get__(obj))
    else:
        raise TypeError(f"tensorwire.codec cannot encode objects of type {type(obj).__qualname__}")


def _enc_int(obj: int, out: bytearray) -> None:
    if _INT64_MIN <= obj <= _INT64_MAX:
        out.append(F.T_INT)
        out += _I64.pack(obj)
    else:
        b = F.bigint_bytes(obj)
        out.append(F.T_BIGINT)
        _put_len(out, len(b), "int")
        out += b


def _enc_str(obj: str, out: bytearray) -> None:
    b = obj.encode("utf-8", "surrogatepass")
    out.append(F.T_STR)
    _put_len(out, len(b), "str")
    out += b


def _enc_seq(
    tag: int, obj: Any, out: bytearray, arrays: list[np.ndarray[Any, Any]], depth: int
) -> None:
    if depth >= F.MAX_DEPTH:
        raise ValueError(f"structure nested deeper than {F.MAX_DEPTH} levels")
    # The base type's length and iterator, so the count written is the count walked even for
    # a subclass that overrides __len__/__iter__ (the compiled codec does the same).
    base = tuple if tag == F.T_TUPLE else list
    out.append(tag)
    _put_len(out, base.__len__(obj), "sequence")
    for v in base.__iter__(obj):
        _enc(v, out, arrays, depth + 1)


def _enc_dict(
    obj: dict[Any, Any], out: bytearray, arrays: list[np.ndarray[Any, Any]], depth: int
) -> None:
    if depth >= F.MAX_DEPTH:
        raise ValueError(f"structure nested deeper than {F.MAX_DEPTH} levels")
    out.append(F.T_DICT)
    _put_len(out, dict.__len__(obj), "dict")
    for k, v in dict.items(obj):
        _enc(k, out, arrays, depth + 1)
        _enc(v, out, arrays, depth + 1)


def _enc_tensor(obj: Any, out: bytearray, arrays: list[np.ndarray[Any, Any]]) -> None:
    t = obj if type(obj) is FrameworkArray else F.export_tensor(obj)
    if not isinstance(t, FrameworkArray):  # another DLPack producer: a plain array
        _enc_array(t, out, arrays)
        return
    head, a = F.prepare_tensor(t)
    out += head
    _enc_array(a, out, arrays, raw_ok=True)
    arrays.has_tensor = True  # type: ignore[attr-defined]


def _enc_array(
    a: np.ndarray[Any, Any],
    out: bytearray,
    arrays: list[np.ndarray[Any, Any]],
    raw_ok: bool = False,
) -> None:
    a = F.prepare_array(a)
    dt = a.dtype
    code = F.dtype_code(dt, raw_ok)
    out.append(F.T_ARRAY)
    out.append(code)
    if code in F.SIZED_CODES:
        out += _U32.pack(dt.itemsize)
    out.append(a.ndim)
    for d in a.shape:
        out += _U64.pack(d)
    arrays.append(a)


def _header(obj: Any, packed: bool) -> tuple[bytearray, list[np.ndarray[Any, Any]], list[int]]:
    """Header bytes, the wire arrays, and (packed) each payload's offset in the frame."""
    tree = bytearray()
    arrays = _Arrays()
    _enc(obj, tree, arrays, 0)
    n = len(arrays)
    header_len = F.PREFIX_SIZE + F.TABLE_ENTRY.size * n + len(tree)
    if header_len > F.MAX_U32:
        raise ValueError(f"header of {header_len} bytes is too large for tensorwire.codec")
    version = F.VERSION if arrays.has_tensor else F.VERSION_PLAIN
    out = bytearray(
        F.PREFIX.pack(F.MAGIC, version, F.FLAG_PACKED if packed else 0, 0, header_len, n)
    )
    offsets = []
    pos = header_len
    for a in arrays:
        off = F.align(pos) if packed else 0
        offsets.append(off)
        out += F.TABLE_ENTRY.pack(off, a.nbytes)
        pos = off + a.nbytes
    out += tree
    return out, arrays, offsets


def _flat_bytes(a: np.ndarray[Any, Any]) -> memoryview:
    # A byte view of the array's own memory (no copy), whatever the dtype.
    return a.reshape(-1).view(np.uint8).data


def encode(obj: Any) -> list[Any]:
    """Frame 0 is the header; then one frame per array, viewing the array's memory."""
    header, arrays, _ = _header(obj, packed=False)
    return [bytes(header)] + [_flat_bytes(a) for a in arrays]


def dumps(obj: Any) -> bytes:
    """One contiguous frame: header, then each payload at a 64-byte aligned offset."""
    header, arrays, offsets = _header(obj, packed=True)
    parts: list[Any] = [header]
    pos = len(header)
    for a, off in zip(arrays, offsets, strict=True):
        if off > pos:
            parts.append(bytes(off - pos))
        parts.append(_flat_bytes(a))
        pos = off + a.nbytes
    return b"".join(parts)


# --- decoding -----------------------------------------------------------------------------


def _as_bytes_view(buffer: Any) -> memoryview:
    try:
        mv = memoryview(buffer)
    except TypeError:
        raise TypeError(
            f"tensorwire.codec needs a bytes-like frame, not {type(buffer).__qualname__}"
        ) from None
    if not mv.c_contiguous:
        raise InvalidArgumentError("tensorwire.codec frame buffer is not C-contiguous")
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


class _Reader:
    """Walks the structure bytes; every read is bounds-checked first."""

    __slots__ = (
        "mv",
        "pos",
        "end",
        "payloads",
        "next_array",
        "version",
        "numpy",
        "relay",
        "device",
    )

    def __init__(
        self,
        mv: memoryview,
        pos: int,
        end: int,
        payloads: list[tuple[memoryview, int, int]],
        version: int,
        numpy: bool,
        relay: bool,
        device: Any,
    ) -> None:
        self.mv = mv
        self.pos = pos
        self.end = end
        self.payloads = payloads  # (buffer, offset, nbytes) per table entry
        self.next_array = 0
        self.version = version
        self.numpy = numpy  # framework tensors come back as NumPy arrays
        self.relay = relay  # ... or as FrameworkArray, to be sent on unchanged
        self.device = device  # ... or on the receiver's device (None: the host)

    def take(self, n: int, what: str) -> int:
        pos = self.pos
        if n > self.end - pos:
            raise DataLossError(
                f"header truncated: {what} needs {n} bytes at offset {pos}, {self.end - pos} left"
            )
        self.pos = pos + n
        return pos

    def u8(self, what: str) -> int:
        p = self.take(1, what)
        return self.mv[p]

    def u32(self, what: str) -> int:
        p = self.take(4, what)
        return _U32.unpack_from(self.mv, p)[0]

    def count(self, what: str, min_item: int) -> int:
        n = self.u32(what)
        if n * min_item > self.end - self.pos:
            raise DataLossError(
                f"{what} of {n} items cannot fit in the {self.end - self.pos} header bytes left"
            )
        return n

    def string(self, what: str) -> str:
        n = self.u32(what + " length")
        p = self.take(n, what)
        try:
            return str(self.mv[p : p + n], "utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise DataLossError(f"{what} at offset {p} is not valid UTF-8: {exc.reason}") from None

    def value(self, depth: int) -> Any:
        tag = self.u8("tag")
        if tag == F.T_NONE:
            return None
        if tag == F.T_FALSE:
            return False
        if tag == F.T_TRUE:
            return True
        if tag == F.T_INT:
            return _I64.unpack_from(self.mv, self.take(8, "int"))[0]
        if tag == F.T_FLOAT:
            return _F64.unpack_from(self.mv, self.take(8, "float"))[0]
        if tag == F.T_STR:
            return self.string("str")
        if tag == F.T_ARRAY:
            return self.array()
        if tag in (F.T_LIST, F.T_TUPLE, F.T_DICT, F.T_NAMEDTUPLE):
            if depth >= F.MAX_DEPTH:
                raise InvalidArgumentError(f"structure nested deeper than {F.MAX_DEPTH} levels")
            if tag == F.T_DICT:
                n = self.count("dict", 2)
                d: dict[Any, Any] = {}
                for _ in range(n):
                    k = self.value(depth + 1)
                    v = self.value(depth + 1)
                    try:
                        d[k] = v
                    except TypeError:
                        raise DataLossError(
                            f"dict key of type {type(k).__qualname__} is not hashable"
                        ) from None
                return d
            if tag == F.T_NAMEDTUPLE:
                return self.namedtuple(depth)
            n = self.count("list" if tag == F.T_LIST else "tuple", 1)
            items = [self.value(depth + 1) for _ in range(n)]
            return items if tag == F.T_LIST else tuple(items)
        if tag == F.T_BYTES:
            n = self.u32("bytes length")
            p = self.take(n, "bytes")
            return bytes(self.mv[p : p + n])
        if tag == F.T_SCALAR:
            code, itemsize = self.dtype_head()
            p = self.take(itemsize, "scalar")
            return F.scalar_from_raw(code, itemsize, self.mv[p : p + itemsize])
        if tag == F.T_BIGINT:
            n = self.u32("int length")
            p = self.take(n, "int")
            return int.from_bytes(self.mv[p : p + n], "little", signed=True)
        if tag == F.T_COMPLEX:
            re, im = _C128.unpack_from(self.mv, self.take(16, "complex"))
            return complex(re, im)
        if tag == F.T_TENSOR and self.version >= 2:
            return self.tensor()
        raise DataLossError(f"unknown tag 0x{tag:02x} at offset {self.pos - 1}")

    def namedtuple(self, depth: int) -> Any:
        module = self.string("namedtuple module")
        qualname = self.string("namedtuple name")
        n = self.count("namedtuple fields", 5)
        fields = tuple(self.string("namedtuple field") for _ in range(n))
        cls = F.resolve_namedtuple(module, qualname, fields)
        values = [self.value(depth + 1) for _ in range(n)]
        return F.make_namedtuple(cls, values)

    def tensor(self) -> Any:
        framework = self.u8("tensor framework")
        name = self.string("tensor dtype name")
        if self.u8("tensor array tag") != F.T_ARRAY:
            raise DataLossError(f"tensor record at offset {self.pos - 1} does not hold an array")
        return F.tensor_value(framework, name, self.array(), self.numpy, self.relay, self.device)

    def dtype_head(self) -> tuple[int, int]:
        code = self.u8("dtype code")
        itemsize = 0
        if code in F.SIZED_CODES:
            itemsize = self.u32("itemsize")
        dt = F.code_dtype(code, itemsize)
        return code, dt.itemsize

    def array(self) -> np.ndarray[Any, Any]:
        code, itemsize = self.dtype_head()
        ndim = self.u8("ndim")
        if ndim > F.MAX_NDIM:
            raise InvalidArgumentError(f"array of {ndim} dimensions (at most {F.MAX_NDIM})")
        p = self.take(8 * ndim, "shape")
        shape = struct.unpack_from(f"<{ndim}Q", self.mv, p)
        k = self.next_array
        if k >= len(self.payloads):
            raise DataLossError(f"array {k} has no payload (the table lists {len(self.payloads)})")
        self.next_array = k + 1
        buf, off, nbytes = self.payloads[k]
        dt = F.code_dtype(code, itemsize)
        nonzero = itemsize
        for d in shape:
            if d:
                nonzero *= d
        if nonzero > _INTP_MAX:
            raise DataLossError(f"array {k} of shape {shape} and dtype {dt} is too big")
        need = 0 if 0 in shape else nonzero
        if need != nbytes:
            raise DataLossError(
                f"array {k} of shape {shape} and dtype {dt} needs {need} bytes "
                f"but its payload has {nbytes}"
            )
        # Through a memoryview, not np.ndarray(buffer=...): NumPy keeps the memoryview as the
        # base, so the buffer export stays held (a bytearray cannot be resized under the array).
        flat = np.asarray(buf[off : off + nbytes])
        return flat.view(dt).reshape(shape)


def _parse_prefix(mv: memoryview) -> tuple[int, int, int, int]:
    if len(mv) < F.PREFIX_SIZE:
        raise DataLossError(
            f"frame of {len(mv)} bytes is shorter than the {F.PREFIX_SIZE}-byte codec header"
        )
    magic, version, flags, reserved, header_len, n = F.PREFIX.unpack_from(mv, 0)
    if magic != F.MAGIC:
        raise DataLossError(f"bad magic {magic!r}: not a tensorwire codec frame")
    F.check_version(version)
    if flags & ~F.FLAG_PACKED:
        raise InvalidArgumentError(f"unknown codec flags 0x{flags:02x}")
    if reserved:
        raise DataLossError("reserved header bytes are not zero")
    if header_len > len(mv):
        raise DataLossError(
            f"header length {header_len} exceeds the frame's {len(mv)} bytes (truncated)"
        )
    if n > (header_len - F.PREFIX_SIZE) // F.TABLE_ENTRY.size:
        raise DataLossError(
            f"payload table of {n} entries does not fit in a header of {header_len} bytes"
        )
    return flags, header_len, n, version


def _finish(r: _Reader, n: int, header_len: int) -> Any:
    value = r.value(0)
    if r.pos != header_len:
        raise DataLossError(
            f"{header_len - r.pos} trailing bytes after the structure in the header"
        )
    if r.next_array != n:
        raise DataLossError(
            f"payload table lists {n} payloads but the structure uses {r.next_array}"
        )
    return value


def loads(buffer: Any, *, numpy: bool = False, relay: bool = False, device: Any = None) -> Any:
    """Decode one frame made by ``dumps``; arrays are views into ``buffer``.

    ``numpy=True`` returns framework tensors (torch, JAX) as NumPy arrays; ``relay=True`` as
    ``tensorwire.frameworks.FrameworkArray`` (re-encoded as they came, framework not needed);
    ``device`` places them on that device (``tensorwire.frameworks.device_for``).
    """
    if device is not None:
        F.check_device_switch(numpy, relay, device)
    mv = _as_bytes_view(buffer)
    flags, header_len, n, version = _parse_prefix(mv)
    if not flags & F.FLAG_PACKED:
        if n:
            raise InvalidArgumentError(
                f"frame is a split header with {n} payload frames; use decode(frames)"
            )
        if header_len != len(mv):
            raise DataLossError(f"{len(mv) - header_len} trailing bytes after the header")
    payloads = []
    end = header_len
    p = F.PREFIX_SIZE
    for k in range(n):
        off, nbytes = F.TABLE_ENTRY.unpack_from(mv, p)
        p += F.TABLE_ENTRY.size
        expect = F.align(end)
        if off != expect:
            raise DataLossError(
                f"payload {k} at offset {off}, expected the aligned offset {expect}"
            )
        if nbytes > len(mv) - off:
            raise DataLossError(
                f"payload {k} of {nbytes} bytes at offset {off} runs past the frame's "
                f"{len(mv)} bytes (truncated)"
            )
        payloads.append((mv, off, nbytes))
        end = off + nbytes
    if end != len(mv):
        raise DataLossError(f"{len(mv) - end} trailing bytes after the last payload")
    reader = _Reader(mv, p, header_len, payloads, version, numpy, relay, device)
    return _finish(reader, n, header_len)


def decode(frames: Any, *, numpy: bool = False, relay: bool = False, device: Any = None) -> Any:
    """Decode ``encode``'s frames (a single ``dumps`` frame is accepted too).

    ``numpy``, ``relay`` and ``device`` as for ``loads``.
    """
    if device is not None:
        F.check_device_switch(numpy, relay, device)
    try:
        frames = list(frames)
    except TypeError:
        raise TypeError(
            f"tensorwire.codec.decode needs a list of frames, not {type(frames).__qualname__}"
        ) from None
    if not frames:
        raise DataLossError("no frames to decode")
    mv = _as_bytes_view(frames[0])
    flags, header_len, n, version = _parse_prefix(mv)
    if flags & F.FLAG_PACKED:
        if len(frames) != 1:
            raise DataLossError(f"packed frame followed by {len(frames) - 1} extra frames")
        return loads(frames[0], numpy=numpy, relay=relay, device=device)
    if header_len != len(mv):
        raise DataLossError(f"{len(mv) - header_len} trailing bytes after the header")
    if len(frames) != n + 1:
        raise DataLossError(f"header lists {n} payloads but {len(frames) - 1} payload frames came")
    payloads = []
    p = F.PREFIX_SIZE
    for k in range(n):
        off, nbytes = F.TABLE_ENTRY.unpack_from(mv, p)
        p += F.TABLE_ENTRY.size
        if off != 0:
            raise DataLossError(f"payload {k} has offset {off} in a split message (must be 0)")
        pmv = _as_bytes_view(frames[k + 1])
        if nbytes != len(pmv):
            raise DataLossError(
                f"payload {k} should have {nbytes} bytes but its frame has {len(pmv)}"
            )
        payloads.append((pmv, 0, nbytes))
    reader = _Reader(mv, p, header_len, payloads, version, numpy, relay, device)
    return _finish(reader, n, header_len)
