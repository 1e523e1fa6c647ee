"""The codec's wire constants and the slow-path helpers both implementations share.

``_codec_py`` (the pure-Python twin) and ``_codec_c`` (Cython) each do the hot work themselves
(walking the structure, writing and checking the header, making array views). Everything rare
or policy-shaped lives here once, so the two cannot disagree about it: the dtype code tables,
how a namedtuple class is named and found again, how big ints and NumPy scalars are spelled.
The format itself is described in ``tensorwire.codec``'s docstring.
"""

from __future__ import annotations

import collections
import struct
import sys
from typing import Any

import numpy as np

from ..errors import DataLossError, InvalidArgumentError

MAGIC = b"TWCD"
VERSION = 1
FLAG_PACKED = 0x01  # payloads follow the header inside the same frame (dumps)
PREFIX = struct.Struct("<4sBBHII")  # magic, version, flags, reserved, header_len, n_payloads
PREFIX_SIZE = PREFIX.size  # 16
TABLE_ENTRY = struct.Struct("<QQ")  # offset, nbytes
ALIGN = 64
MAX_DEPTH = 100  # containers nested deeper than this are refused both ways
MAX_NDIM = 32
MAX_U32 = 0xFFFFFFFF
MAX_STRING_ITEMSIZE = 0x7FFFFFFF  # NumPy refuses wider string dtypes

# One-byte tags of the structure encoding.
T_NONE = 0x00
T_FALSE = 0x01
T_TRUE = 0x02
T_INT = 0x03  # int64 little-endian
T_BIGINT = 0x04  # u32 n + n bytes two's complement little-endian
T_FLOAT = 0x05  # float64
T_COMPLEX = 0x06  # 2 x float64
T_STR = 0x07  # u32 n + UTF-8 (surrogatepass)
T_BYTES = 0x08  # u32 n + bytes
T_LIST = 0x09  # u32 count + items
T_TUPLE = 0x0A  # u32 count + items
T_DICT = 0x0B  # u32 count + (key, value) pairs
T_NAMEDTUPLE = 0x0C  # str module, str qualname, u32 n, n x str field, n values
T_ARRAY = 0x0D  # u8 dtype, [u32 itemsize], u8 ndim, ndim x u64 dims; payload = next table entry
T_SCALAR = 0x0E  # u8 dtype, [u32 itemsize], itemsize raw bytes

# Dtype codes: TensorFlow's DataType numbers where TensorFlow has the type.
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7  # NumPy 'S' (fixed-width bytes); itemsize on the wire
DT_COMPLEX64 = 8
DT_INT64 = 9
DT_BOOL = 10
DT_BFLOAT16 = 14
DT_UINT16 = 17
DT_COMPLEX128 = 18
DT_HALF = 19
DT_UINT32 = 22
DT_UINT64 = 23
# Our own codes sit far above TensorFlow's (it uses 1..30 and 101..130 for reference types).
DT_TW_UNICODE = 240  # NumPy 'U' (UCS-4 little-endian); itemsize in bytes on the wire

# Codes whose itemsize is not fixed by the code and so travels on the wire.
STRING_CODES = frozenset({DT_STRING, DT_TW_UNICODE})

# (kind, itemsize) -> code for the fixed-size types.
KIND_SIZE_TO_CODE: dict[tuple[str, int], int] = {
    ("b", 1): DT_BOOL,
    ("i", 1): DT_INT8,
    ("i", 2): DT_INT16,
    ("i", 4): DT_INT32,
    ("i", 8): DT_INT64,
    ("u", 1): DT_UINT8,
    ("u", 2): DT_UINT16,
    ("u", 4): DT_UINT32,
    ("u", 8): DT_UINT64,
    ("f", 2): DT_HALF,
    ("f", 4): DT_FLOAT,
    ("f", 8): DT_DOUBLE,
    ("c", 8): DT_COMPLEX64,
    ("c", 16): DT_COMPLEX128,
}

# code -> little-endian dtype, for the fixed-size types NumPy always has.
CODE_TO_DTYPE: dict[int, np.dtype[Any]] = {
    code: np.dtype(f"<{kind}{size}") for (kind, size), code in KIND_SIZE_TO_CODE.items()
}
CODE_TO_DTYPE[DT_BOOL] = np.dtype("?")

HOST_IS_LITTLE = sys.byteorder == "little"


def align(n: int) -> int:
    """Round ``n`` up to the payload alignment."""
    return (n + ALIGN - 1) & ~(ALIGN - 1)


# --- dtypes -------------------------------------------------------------------------------


def dtype_code(dt: np.dtype[Any]) -> int:
    """The wire code of ``dt`` (any byte order), or TypeError naming the dtype."""
    kind = dt.kind
    if kind == "S":
        return DT_STRING
    if kind == "U":
        return DT_TW_UNICODE
    code = KIND_SIZE_TO_CODE.get((kind, dt.itemsize))
    if code is not None and dt.fields is None and dt.subdtype is None:
        return code
    if dt.name == "bfloat16" and dt.itemsize == 2:
        return DT_BFLOAT16
    raise TypeError(f"tensorwire.codec cannot encode arrays of dtype {dt!r}")


_bfloat16: np.dtype[Any] | None = None


def _bfloat16_dtype() -> np.dtype[Any]:
    global _bfloat16
    if _bfloat16 is None:
        try:
            import ml_dtypes  # optional: only needed to decode bfloat16
        except ImportError:
            raise InvalidArgumentError(
                "frame holds a bfloat16 tensor but ml_dtypes is not installed "
                "(pip install ml_dtypes)"
            ) from None
        _bfloat16 = np.dtype(ml_dtypes.bfloat16)
    return _bfloat16


_string_dtypes: dict[tuple[int, int], np.dtype[Any]] = {}


def code_dtype(code: int, itemsize: int) -> np.dtype[Any]:
    """The little-endian dtype for a wire code (``itemsize`` only matters for strings).

    Unknown codes are well-formed but unsupported: InvalidArgumentError. A string itemsize
    that cannot be (zero, or not a whole number of UCS-4 characters) is DataLossError.
    """
    dt = CODE_TO_DTYPE.get(code)
    if dt is not None:
        return dt
    if code in STRING_CODES:
        key = (code, itemsize)
        dt = _string_dtypes.get(key)
        if dt is None:
            if itemsize <= 0 or itemsize > MAX_STRING_ITEMSIZE:
                raise DataLossError(f"string dtype with itemsize {itemsize}")
            if code == DT_TW_UNICODE:
                if itemsize % 4:
                    raise DataLossError(f"unicode dtype itemsize {itemsize} is not a multiple of 4")
                dt = np.dtype(f"<U{itemsize // 4}")
            else:
                dt = np.dtype(f"S{itemsize}")
            if len(_string_dtypes) < 4096:  # bounded: sizes come from the wire
                _string_dtypes[key] = dt
        return dt
    if code == DT_BFLOAT16:
        return _bfloat16_dtype()
    raise InvalidArgumentError(f"unsupported dtype code {code}")


def le_dtype(dt: np.dtype[Any]) -> np.dtype[Any]:
    """``dt`` with little-endian byte order (itself when it already is)."""
    if dt.byteorder == ">" or (dt.byteorder == "=" and not HOST_IS_LITTLE):
        return dt.newbyteorder("<")
    return dt


def is_little(dt: np.dtype[Any]) -> bool:
    bo = dt.byteorder
    return bo in "<|" or (bo == "=" and HOST_IS_LITTLE)


def prepare_array(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The array as it goes on the wire: C-contiguous little-endian, copied only if needed."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            "tensorwire.codec cannot encode numpy.ma.MaskedArray (the mask would be lost)"
        )
    dt = a.dtype
    if dt.hasobject:
        raise TypeError(
            f"tensorwire.codec cannot encode arrays of dtype {dt!r}; "
            "convert object arrays of str/bytes with .astype('U') or .astype('S')"
        )
    if not is_little(dt) or not a.flags.c_contiguous:
        # One copy, straight into the wire layout (astype, unlike ascontiguousarray, keeps 0-d).
        return a.astype(le_dtype(dt), order="C")
    return a


# --- rare scalars -------------------------------------------------------------------------


def bigint_bytes(x: int) -> bytes:
    """The shortest two's-complement little-endian spelling of ``x``."""
    n = ((x if x >= 0 else ~x).bit_length() + 8) // 8
    return x.to_bytes(n, "little", signed=True)


def scalar_record(obj: np.generic) -> bytes:
    """T_SCALAR record for a NumPy scalar: tag, dtype code, [itemsize], raw LE bytes."""
    dt = le_dtype(obj.dtype)
    code = dtype_code(dt)
    raw = np.asarray(obj).astype(dt, copy=False).tobytes()
    if code in STRING_CODES:
        if dt.itemsize == 0:  # np.bytes_(b"") / np.str_("") have itemsize 0
            dt = np.dtype("S1") if code == DT_STRING else np.dtype("<U1")
            raw = np.asarray(obj).astype(dt).tobytes()
        return bytes((T_SCALAR, code)) + dt.itemsize.to_bytes(4, "little") + raw
    return bytes((T_SCALAR, code)) + raw


def scalar_from_raw(code: int, itemsize: int, raw: Any) -> np.generic:
    """The NumPy scalar of a T_SCALAR record (``raw`` already bounds-checked)."""
    dt = code_dtype(code, itemsize)
    if code == DT_TW_UNICODE and np.frombuffer(raw, dtype="<u4").max() > 0x10FFFF:
        # NumPy cannot make a str_ of it. (Arrays are views and are not scanned: reading
        # such an element raises in NumPy, it does not crash.)
        raise DataLossError("unicode scalar holds a code point beyond U+10FFFF")
    value: np.generic = np.frombuffer(raw, dtype=dt, count=1)[0]
    return value


# --- namedtuples --------------------------------------------------------------------------

_nt_headers: dict[type, bytes] = {}


def _str_record(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return len(b).to_bytes(4, "little") + b


def namedtuple_header(cls: type) -> bytes:
    """Everything of a T_NAMEDTUPLE record before its values (cached per class)."""
    head = _nt_headers.get(cls)
    if head is None:
        fields = tuple(cls._fields)  # type: ignore[attr-defined]
        parts = [bytes((T_NAMEDTUPLE,)), _str_record(cls.__module__), _str_record(cls.__qualname__)]
        parts.append(len(fields).to_bytes(4, "little"))
        parts.extend(_str_record(f) for f in fields)
        head = b"".join(parts)
        if len(_nt_headers) < 4096:
            _nt_headers[cls] = head
    return head


def is_namedtuple(obj: Any) -> bool:
    fields = getattr(type(obj), "_fields", None)
    # tuple.__len__: the item count the encoders walk, whatever a subclass's __len__ says.
    return isinstance(fields, tuple) and len(fields) == tuple.__len__(obj)


_nt_classes: dict[tuple[str, str, tuple[str, ...]], type] = {}


def resolve_namedtuple(module: str, qualname: str, fields: tuple[str, ...]) -> type:
    """The class a decoded namedtuple comes back as.

    The sender's own class when its module is already imported here and the class found at
    ``qualname`` is a tuple subclass with the same ``_fields``. Decoding never imports a module
    (that would run code named by the wire). Otherwise a ``collections.namedtuple`` with the
    same name and fields, made once per (module, qualname, fields).
    """
    key = (module, qualname, fields)
    known = _nt_classes.get(key)
    if known is not None:
        return known
    cls: type | None = None
    mod = sys.modules.get(module)
    if mod is not None and "<" not in qualname:
        obj: Any = mod
        for part in qualname.split("."):
            # Plain __dict__ lookups: a module __getattr__ (lazy imports) or a descriptor
            # must not run on a name that came from the wire.
            namespace = getattr(obj, "__dict__", None)
            obj = namespace.get(part) if namespace is not None else None
            if obj is None:
                break
        if (
            isinstance(obj, type)
            and issubclass(obj, tuple)
            and tuple(getattr(obj, "_fields", ())) == fields
        ):
            cls = obj
    if cls is None:
        name = qualname.rpartition(".")[2]
        try:
            made: type = collections.namedtuple(name, fields, module=module)  # type: ignore[misc]
        except (ValueError, TypeError) as exc:
            raise DataLossError(
                f"namedtuple {module}:{qualname} with fields {fields!r} is not valid: {exc}"
            ) from None
        cls = made
    if len(_nt_classes) < 4096:  # bounded: names come from the wire
        _nt_classes[key] = cls
    return cls


def make_namedtuple(cls: type, values: list[Any]) -> tuple[Any, ...]:
    # tuple.__new__ fills the fields without running a user-defined __new__.
    return tuple.__new__(cls, values)  # type: ignore[type-var]
