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

from .. import frameworks
from ..errors import DataLossError, InvalidArgumentError

MAGIC = b"TWCD"
# Version 2 added one record, T_TENSOR (a framework tensor: torch, JAX). A frame is written as
# version 2 only when it holds such a record; every other frame is still written as version 1,
# byte for byte as before, so readers of version 1 keep reading them. A version-1 reader given
# a version-2 frame fails clearly, before reading anything: InvalidArgumentError "unsupported
# codec format version 2 (this build reads 1)". This build reads both.
VERSION = 2  # the newest version this build writes and reads
VERSION_PLAIN = 1  # what frames without framework tensors are written as
READABLE_VERSIONS = frozenset({1, 2})
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
# Version 2: u8 framework, str dtype name (u32 n + UTF-8, the framework's own), then one
# T_ARRAY record (its tag included) holding the tensor's bytes.
T_TENSOR = 0x0F

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
DT_FLOAT8_E5M2 = 24
DT_FLOAT8_E4M3FN = 25
DT_FLOAT8_E4M3FNUZ = 26
DT_FLOAT8_E4M3B11FNUZ = 27
DT_FLOAT8_E5M2FNUZ = 28
DT_INT4 = 29
DT_UINT4 = 30
# Our own codes sit far above TensorFlow's (it uses 1..30 and 101..130 for reference types).
DT_TW_UNICODE = 240  # NumPy 'U' (UCS-4 little-endian); itemsize in bytes on the wire
DT_TW_FLOAT8_E8M0FNU = 241  # ml_dtypes float8_e8m0fnu (torch has it; TensorFlow does not)
# Raw bytes of a framework dtype NumPy has no type for (torch complex32, bits8, uint3, ...):
# NumPy 'V' with the itemsize on the wire; only inside T_TENSOR, which names the dtype.
DT_TW_RAW = 250

# Codes whose itemsize is not fixed by the code and so travels on the wire.
STRING_CODES = frozenset({DT_STRING, DT_TW_UNICODE})
SIZED_CODES = STRING_CODES | {DT_TW_RAW}

# The ml_dtypes types (NumPy kind 'V', one or two bytes), by dtype name. Decoding one of them
# needs ml_dtypes; nothing else does.
ML_DTYPE_CODES: dict[str, int] = {
    "bfloat16": DT_BFLOAT16,
    "float8_e5m2": DT_FLOAT8_E5M2,
    "float8_e4m3fn": DT_FLOAT8_E4M3FN,
    "float8_e4m3fnuz": DT_FLOAT8_E4M3FNUZ,
    "float8_e4m3b11fnuz": DT_FLOAT8_E4M3B11FNUZ,
    "float8_e5m2fnuz": DT_FLOAT8_E5M2FNUZ,
    "int4": DT_INT4,
    "uint4": DT_UINT4,
    "float8_e8m0fnu": DT_TW_FLOAT8_E8M0FNU,
}
CODE_TO_ML_NAME = {code: name for name, code in ML_DTYPE_CODES.items()}

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


def _is_plain_void(dt: np.dtype[Any]) -> bool:
    return dt.kind == "V" and dt.fields is None and dt.subdtype is None and dt.type is np.void


def dtype_code(dt: np.dtype[Any], raw_ok: bool = False) -> int:
    """The wire code of ``dt`` (any byte order), or TypeError naming the dtype.

    ``raw_ok``: plain ``V<n>`` arrays are raw bytes of a framework dtype (inside T_TENSOR only).
    """
    kind = dt.kind
    if kind == "S":
        return DT_STRING
    if kind == "U":
        return DT_TW_UNICODE
    if dt.type.__module__.startswith("ml_dtypes"):
        # Before the (kind, size) table: ml_dtypes types say kind "V" or "f" (float8_e5m2).
        code = ML_DTYPE_CODES.get(dt.name)
        if code is not None:
            return code
        raise TypeError(f"tensorwire.codec cannot encode arrays of dtype {dt!r}")
    code = KIND_SIZE_TO_CODE.get((kind, dt.itemsize))
    if code is not None and dt.fields is None and dt.subdtype is None:
        return code
    if raw_ok and _is_plain_void(dt) and 0 < dt.itemsize <= MAX_STRING_ITEMSIZE:
        return DT_TW_RAW
    raise TypeError(f"tensorwire.codec cannot encode arrays of dtype {dt!r}")


_ml_dtypes: dict[int, np.dtype[Any]] = {}


def _ml_dtype(code: int) -> np.dtype[Any]:
    dt = _ml_dtypes.get(code)
    if dt is None:
        name = CODE_TO_ML_NAME[code]
        try:
            import ml_dtypes  # optional: only needed to decode bfloat16/float8/int4
        except ImportError:
            raise InvalidArgumentError(
                f"frame holds a {name} tensor but ml_dtypes is not installed "
                "(pip install ml_dtypes)"
            ) from None
        kind = getattr(ml_dtypes, name, None)
        if kind is None:
            raise InvalidArgumentError(
                f"frame holds a {name} tensor but this ml_dtypes ({ml_dtypes.__version__}) "
                "has no such type (upgrade ml_dtypes)"
            )
        dt = _ml_dtypes[code] = np.dtype(kind)
    return dt


_string_dtypes: dict[tuple[int, int], np.dtype[Any]] = {}


def code_dtype(code: int, itemsize: int) -> np.dtype[Any]:
    """The little-endian dtype for a wire code (``itemsize`` only matters for strings).

    Unknown codes are well-formed but unsupported: InvalidArgumentError. A string itemsize
    that cannot be (zero, or not a whole number of UCS-4 characters) is DataLossError.
    """
    dt = CODE_TO_DTYPE.get(code)
    if dt is not None:
        return dt
    if code in SIZED_CODES:
        key = (code, itemsize)
        dt = _string_dtypes.get(key)
        if dt is None:
            if itemsize <= 0 or itemsize > MAX_STRING_ITEMSIZE:
                what = "raw" if code == DT_TW_RAW else "string"
                raise DataLossError(f"{what} dtype with itemsize {itemsize}")
            if code == DT_TW_UNICODE:
                if itemsize % 4:
                    raise DataLossError(f"unicode dtype itemsize {itemsize} is not a multiple of 4")
                dt = np.dtype(f"<U{itemsize // 4}")
            elif code == DT_TW_RAW:
                dt = np.dtype(f"V{itemsize}")
            else:
                dt = np.dtype(f"S{itemsize}")
            if len(_string_dtypes) < 4096:  # bounded: sizes come from the wire
                _string_dtypes[key] = dt
        return dt
    if code in CODE_TO_ML_NAME:
        return _ml_dtype(code)
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


def prepare_tensor(t: Any) -> tuple[bytes, np.ndarray[Any, Any]]:
    """T_TENSOR's record head (tag, framework, dtype name) and the array for a tensor.

    ``t`` is a ``frameworks.FrameworkArray``. The array's record follows the head, written
    like any array's (the encoders call ``prepare_array`` when it is not C-contiguous).
    """
    head = tensor_head(t.framework, t.dtype_name)
    array = t.array
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    return head, array


_tensor_heads: dict[tuple[int, str], bytes] = {}


def tensor_head(framework: int, dtype_name: str) -> bytes:
    """T_TENSOR's record head: tag, framework id, dtype name (cached per pair)."""
    head = _tensor_heads.get((framework, dtype_name))
    if head is None:
        if not 0 < framework < 256:
            raise ValueError(f"framework id {framework} does not fit the wire")
        head = bytes((T_TENSOR, framework)) + _str_record(dtype_name)
        if len(_tensor_heads) < 1024:
            _tensor_heads[(framework, dtype_name)] = head
    return head


def export_tensor(obj: Any) -> Any:
    """A framework tensor as a ``FrameworkArray`` (torch, JAX) or an ndarray (other DLPack)."""
    return frameworks.export(obj)


def tensor_value(
    framework: int,
    dtype_name: str,
    array: np.ndarray[Any, Any],
    numpy: bool,
    relay: bool,
    device: Any = None,
) -> Any:
    """What a decoded T_TENSOR record becomes: the framework's tensor (on ``device`` when
    given), ``array`` itself (``numpy``), or a ``FrameworkArray`` (``relay``: it goes out
    again as it came)."""
    if relay:
        return frameworks.FrameworkArray(framework, dtype_name, array)
    if numpy:
        return array
    return frameworks.restore(framework, dtype_name, array, device)


def check_device_switch(numpy: bool, relay: bool, device: Any) -> None:
    """Refuses ``device=`` beside ``numpy=True``/``relay=True``: those return host memory."""
    if numpy or relay:
        switch = "numpy=True" if numpy else "relay=True"
        raise ValueError(
            f"device={device!r} cannot be combined with {switch}, which returns host "
            "(NumPy) memory; pass one or the other"
        )


def check_version(version: int) -> None:
    if version not in READABLE_VERSIONS:
        raise InvalidArgumentError(
            f"unsupported codec format version {version} (this build reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))})"
        )


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
    return tuple.__new__(cls, values)
