# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled tensor codec (Cython); ``_codec_py`` is its pure-Python twin.

Same bytes as the twin, byte for byte (the golden vectors in the tests hold both to it). The hot
paths are here in C: walking the structure, packing and checking the header, building array
views with ``PyArray_NewFromDescr`` (no ``np.ndarray`` constructor). Everything rare (big ints,
NumPy scalars, namedtuple classes, string and bfloat16 dtypes, copying non-contiguous or
big-endian input) goes through the helpers in ``_format``, which the twin uses too, so that
policy exists once. The format is described in ``tensorwire.codec``.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc

cimport numpy as cnp

import numpy as np

import sys

from ..errors import DataLossError, InvalidArgumentError
from ..frameworks import FrameworkArray
from .. import frameworks as FW
from . import _format as F

cnp.import_array()

__all__ = ["dumps", "loads", "encode", "decode"]

# The format's numbers, taken from _format (the twin's source of truth) so they cannot drift.
cdef uint8_t T_NONE = F.T_NONE
cdef uint8_t T_FALSE = F.T_FALSE
cdef uint8_t T_TRUE = F.T_TRUE
cdef uint8_t T_INT = F.T_INT
cdef uint8_t T_BIGINT = F.T_BIGINT
cdef uint8_t T_FLOAT = F.T_FLOAT
cdef uint8_t T_COMPLEX = F.T_COMPLEX
cdef uint8_t T_STR = F.T_STR
cdef uint8_t T_BYTES = F.T_BYTES
cdef uint8_t T_LIST = F.T_LIST
cdef uint8_t T_TUPLE = F.T_TUPLE
cdef uint8_t T_DICT = F.T_DICT
cdef uint8_t T_NAMEDTUPLE = F.T_NAMEDTUPLE
cdef uint8_t T_ARRAY = F.T_ARRAY
cdef uint8_t T_SCALAR = F.T_SCALAR
cdef uint8_t T_TENSOR = F.T_TENSOR
cdef int FW_TORCH = FW.TORCH
cdef uint8_t VERSION = F.VERSION
cdef uint8_t VERSION_PLAIN = F.VERSION_PLAIN
cdef uint8_t FLAG_PACKED = F.FLAG_PACKED
cdef int MAX_DEPTH = F.MAX_DEPTH
cdef int MAX_NDIM = F.MAX_NDIM
cdef uint8_t DT_STRING = F.DT_STRING
cdef uint8_t DT_TW_UNICODE = F.DT_TW_UNICODE
cdef uint8_t DT_TW_RAW = F.DT_TW_RAW
cdef bytes MAGIC = F.MAGIC
cdef Py_ssize_t PREFIX_SIZE = F.PREFIX_SIZE
cdef Py_ssize_t ENTRY_SIZE = F.TABLE_ENTRY.size
cdef Py_ssize_t ALIGN = F.ALIGN
cdef uint64_t MAX_U32 = F.MAX_U32
cdef bint HOST_IS_LITTLE = F.HOST_IS_LITTLE
cdef uint64_t INTP_MAX = <uint64_t>np.iinfo(np.intp).max
cdef Py_ssize_t NOGIL_COPY = 1 << 16  # copies at least this big release the GIL
cdef Py_ssize_t HUGEPAGE_ADVICE = 4 << 20  # frames this big get huge-page advice (as NumPy)

# Wire code -> little-endian descriptor for the fixed-size dtypes (borrowed from _format).
cdef PyObject* DESCRS[256]
cdef int _i
for _i in range(256):
    DESCRS[_i] = NULL
for _code, _dt in F.CODE_TO_DTYPE.items():
    DESCRS[<int>_code] = <PyObject*>_dt

# (kind, itemsize) -> wire code for fixed-size dtypes, as a switch (a dict lookup on a dtype
# hashes the dtype each time, which costs more than the whole tiny-array encode).
cdef inline int fixed_code(char kind, Py_ssize_t size) noexcept:
    if kind == b"f":
        if size == 4: return F_DT_FLOAT
        if size == 8: return F_DT_DOUBLE
        if size == 2: return F_DT_HALF
    elif kind == b"i":
        if size == 8: return F_DT_INT64
        if size == 4: return F_DT_INT32
        if size == 2: return F_DT_INT16
        if size == 1: return F_DT_INT8
    elif kind == b"u":
        if size == 1: return F_DT_UINT8
        if size == 2: return F_DT_UINT16
        if size == 4: return F_DT_UINT32
        if size == 8: return F_DT_UINT64
    elif kind == b"b":
        if size == 1: return F_DT_BOOL
    elif kind == b"c":
        if size == 8: return F_DT_COMPLEX64
        if size == 16: return F_DT_COMPLEX128
    return -1

cdef int F_DT_FLOAT = F.DT_FLOAT
cdef int F_DT_DOUBLE = F.DT_DOUBLE
cdef int F_DT_HALF = F.DT_HALF
cdef int F_DT_INT8 = F.DT_INT8
cdef int F_DT_INT16 = F.DT_INT16
cdef int F_DT_INT32 = F.DT_INT32
cdef int F_DT_INT64 = F.DT_INT64
cdef int F_DT_UINT8 = F.DT_UINT8
cdef int F_DT_UINT16 = F.DT_UINT16
cdef int F_DT_UINT32 = F.DT_UINT32
cdef int F_DT_UINT64 = F.DT_UINT64
cdef int F_DT_BOOL = F.DT_BOOL
cdef int F_DT_COMPLEX64 = F.DT_COMPLEX64
cdef int F_DT_COMPLEX128 = F.DT_COMPLEX128

# The (kind, size) table in _format is the authority; refuse to load if the switch disagrees.
for (_kind, _size), _code in F.KIND_SIZE_TO_CODE.items():
    if fixed_code(ord(_kind), _size) != _code:
        raise ImportError(f"_codec_c dtype table disagrees with _format for {_kind}{_size}")

cdef object U8_DESCR = np.dtype(np.uint8)


# --- little-endian packing ----------------------------------------------------------------

cdef inline void put_u32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v & 0xFF)
    p[1] = <char>((v >> 8) & 0xFF)
    p[2] = <char>((v >> 16) & 0xFF)
    p[3] = <char>((v >> 24) & 0xFF)

cdef inline void put_u64(char* p, uint64_t v) noexcept nogil:
    put_u32(p, <uint32_t>(v & 0xFFFFFFFFu))
    put_u32(p + 4, <uint32_t>(v >> 32))

cdef inline uint32_t get_u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline uint64_t get_u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>get_u32(p)) | ((<uint64_t>get_u32(p + 4)) << 32)

cdef inline uint64_t double_bits(double d) noexcept nogil:
    cdef uint64_t v = 0
    memcpy(&v, &d, 8)
    return v

cdef inline double bits_double(uint64_t v) noexcept nogil:
    cdef double d = 0
    memcpy(&d, &v, 8)
    return d

cdef inline Py_ssize_t align_up(Py_ssize_t n) noexcept nogil:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


# --- encoding -----------------------------------------------------------------------------

cdef enum:
    INLINE_CAP = 512

cdef struct Writer:
    char* buf
    Py_ssize_t len
    Py_ssize_t cap
    bint has_tensor  # a T_TENSOR record was written: the frame is format version 2
    char inline_buf[INLINE_CAP]

cdef inline void w_init(Writer* w) noexcept:
    w.buf = w.inline_buf
    w.len = 0
    w.cap = INLINE_CAP
    w.has_tensor = False

cdef inline void w_free(Writer* w) noexcept:
    if w.buf != w.inline_buf:
        PyMem_Free(w.buf)
    w.buf = w.inline_buf

cdef int w_grow(Writer* w, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap = w.cap * 2
    cdef char* p
    while cap < w.len + n:
        cap *= 2
    if w.buf == w.inline_buf:
        p = <char*>PyMem_Malloc(cap)
        if p != NULL:
            memcpy(p, w.buf, w.len)
    else:
        p = <char*>PyMem_Realloc(w.buf, cap)
    if p == NULL:
        raise MemoryError()
    w.buf = p
    w.cap = cap
    return 0

cdef inline char* w_take(Writer* w, Py_ssize_t n) except NULL:
    # Room for n more bytes; returns where they go.
    if w.len + n > w.cap:
        w_grow(w, n)
    cdef char* p = w.buf + w.len
    w.len += n
    return p

cdef inline int w_tag(Writer* w, uint8_t tag) except -1:
    w_take(w, 1)[0] = <char>tag
    return 0

cdef int w_blob(Writer* w, uint8_t tag, const char* data, Py_ssize_t n, str what) except -1:
    if <uint64_t>n > MAX_U32:
        raise ValueError(f"{what} of length {n} is too long for tensorwire.codec (max 2**32-1)")
    cdef char* p = w_take(w, 5 + n)
    p[0] = <char>tag
    put_u32(p + 1, <uint32_t>n)
    memcpy(p + 5, data, n)
    return 0

cdef int w_raw(Writer* w, bytes b) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(w_take(w, n), PyBytes_AS_STRING(b), n)
    return 0

cdef int enc_count(Writer* w, uint8_t tag, Py_ssize_t n, int depth, str what) except -1:
    if depth >= MAX_DEPTH:
        raise ValueError(f"structure nested deeper than {MAX_DEPTH} levels")
    if <uint64_t>n > MAX_U32:
        raise ValueError(f"{what} of length {n} is too long for tensorwire.codec (max 2**32-1)")
    cdef char* p = w_take(w, 5)
    p[0] = <char>tag
    put_u32(p + 1, <uint32_t>n)
    return 0

cdef int enc_int(Writer* w, object obj) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(obj, &overflow)
    cdef char* p
    cdef bytes b
    if overflow == 0:
        p = w_take(w, 9)
        p[0] = <char>T_INT
        put_u64(p + 1, <uint64_t>v)
    else:
        b = F.bigint_bytes(obj)
        w_blob(w, T_BIGINT, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "int")
    return 0

cdef int enc_float(Writer* w, double d) except -1:
    cdef char* p = w_take(w, 9)
    p[0] = <char>T_FLOAT
    put_u64(p + 1, double_bits(d))
    return 0

cdef int enc_complex(Writer* w, object obj) except -1:
    cdef double re = PyComplex_RealAsDouble(obj)
    cdef double im = PyComplex_ImagAsDouble(obj)
    cdef char* p = w_take(w, 17)
    p[0] = <char>T_COMPLEX
    put_u64(p + 1, double_bits(re))
    put_u64(p + 9, double_bits(im))
    return 0

cdef int enc_str(Writer* w, object obj) except -1:
    cdef Py_ssize_t n = 0
    cdef const char* s
    cdef bytes b
    try:
        s = PyUnicode_AsUTF8AndSize(obj, &n)
    except UnicodeEncodeError:
        # Lone surrogates: spelled the way the twin spells them.
        b = (<str>obj).encode("utf-8", "surrogatepass")
        return w_blob(w, T_STR, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "str")
    return w_blob(w, T_STR, s, n, "str")

cdef int enc_array(Writer* w, object obj, list arrays, bint raw_ok=False) except -1:
    cdef cnp.ndarray a = <cnp.ndarray>obj
    cdef cnp.dtype dt = <cnp.dtype>cnp.PyArray_DESCR(a)
    cdef char bo = dt.byteorder
    cdef int code = -1
    cdef Py_ssize_t itemsize = dt.itemsize
    cdef char kind = dt.kind
    cdef bint little = bo == b"<" or bo == b"|" or (bo == b"=" and HOST_IS_LITTLE)
    if (little and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_CheckExact(a)):
        if kind == b"S":
            code = DT_STRING
        elif kind == b"U":
            code = DT_TW_UNICODE
        else:
            code = fixed_code(kind, itemsize)
    if code < 0:
        # Slow path: subclasses, copies (non-contiguous, big-endian), bfloat16, raw framework
        # dtypes, refusals.
        a = <cnp.ndarray>F.prepare_array(obj)
        dt = <cnp.dtype>cnp.PyArray_DESCR(a)
        code = F.dtype_code(dt, raw_ok)
        itemsize = dt.itemsize
    cdef int ndim = cnp.PyArray_NDIM(a)
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef bint is_string = code == DT_STRING or code == DT_TW_UNICODE or code == DT_TW_RAW
    cdef char* p = w_take(w, 3 + (4 if is_string else 0) + 8 * ndim)
    p[0] = <char>T_ARRAY
    p[1] = <char><uint8_t>code
    p += 2
    if is_string:
        put_u32(p, <uint32_t>itemsize)
        p += 4
    p[0] = <char>ndim
    p += 1
    cdef int i
    for i in range(ndim):
        put_u64(p + 8 * i, <uint64_t>dims[i])
    arrays.append(a)
    return 0

cdef int enc(Writer* w, object obj, list arrays, int depth) except -1:
    cdef type t = type(obj)
    if obj is None:
        return w_tag(w, T_NONE)
    if t is bool:
        return w_tag(w, T_TRUE if obj is True else T_FALSE)
    if t is int:
        return enc_int(w, obj)
    if t is float:
        return enc_float(w, PyFloat_AS_DOUBLE(obj))
    if t is str:
        return enc_str(w, obj)
    if cnp.PyArray_CheckExact(obj):
        return enc_array(w, obj, arrays)
    if t is dict:
        return enc_dict(w, <dict>obj, arrays, depth)
    if t is list:
        enc_count(w, T_LIST, len(<list>obj), depth, "sequence")
        for v in <list>obj:
            enc(w, v, arrays, depth + 1)
        return 0
    if t is tuple:
        enc_count(w, T_TUPLE, len(<tuple>obj), depth, "sequence")
        for v in <tuple>obj:
            enc(w, v, arrays, depth + 1)
        return 0
    if t is bytes:
        return w_blob(w, T_BYTES, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj), "bytes")
    if t is complex:
        return enc_complex(w, obj)
    return enc_other(w, obj, arrays, depth)

cdef int enc_dict(Writer* w, dict d, list arrays, int depth) except -1:
    enc_count(w, T_DICT, len(d), depth, "dict")
    for k, v in d.items():
        enc(w, k, arrays, depth + 1)
        enc(w, v, arrays, depth + 1)
    return 0

cdef int enc_other(Writer* w, object obj, list arrays, int depth) except -1:
    # Subclasses and NumPy types, in the twin's order (np.float64 is a float, np.str_ a str).
    cdef bytes b
    if type(obj) is TORCH_TENSOR:
        return enc_torch(w, obj, arrays)
    if isinstance(obj, cnp.ndarray):
        return enc_array(w, obj, arrays)
    if isinstance(obj, np.generic):
        return w_raw(w, F.scalar_record(obj))
    if type(obj) is FrameworkArray or hasattr(type(obj), "__dlpack__"):
        return enc_tensor(w, obj, arrays)
    if isinstance(obj, tuple):
        if F.is_namedtuple(obj):
            if depth >= MAX_DEPTH:
                raise ValueError(f"structure nested deeper than {MAX_DEPTH} levels")
            w_raw(w, F.namedtuple_header(type(obj)))
            for v in <tuple>obj:
                enc(w, v, arrays, depth + 1)
            return 0
        enc_count(w, T_TUPLE, len(<tuple>obj), depth, "sequence")
        for v in <tuple>obj:
            enc(w, v, arrays, depth + 1)
        return 0
    if isinstance(obj, dict):
        return enc_dict(w, <dict>obj, arrays, depth)
    if isinstance(obj, list):
        enc_count(w, T_LIST, len(<list>obj), depth, "sequence")
        for v in <list>obj:
            enc(w, v, arrays, depth + 1)
        return 0
    # The base type's own value, whatever a subclass's __int__/__str__/... return.
    if isinstance(obj, int):
        return enc_int(w, int.__index__(obj))
    if isinstance(obj, float):
        return enc_float(w, PyFloat_AS_DOUBLE(obj))
    if isinstance(obj, str):
        return enc_str(w, str.__str__(obj))
    if isinstance(obj, bytes):
        b = bytes(memoryview(obj))
        return w_blob(w, T_BYTES, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "bytes")
    if isinstance(obj, complex):
        return enc_complex(w, obj)
    raise TypeError(f"tensorwire.codec cannot encode objects of type {type(obj).__qualname__}")


# The fast path for torch tensors (exact torch.Tensor; subclasses take enc_tensor). What it
# writes is what enc_tensor writes; it skips the Python layers in between (export, the
# FrameworkArray, prepare_tensor) and views the tensor's memory through DLPack (one C call
# of torch's, a third of what Tensor.numpy() costs), which at 16 bytes is most of the time.
# TORCH_TENSOR is set when the first torch tensor is recognised: torch is never imported here.
cdef object TORCH_TENSOR = None
cdef object TORCH_TO_DLPACK = None  # torch's C function behind torch.utils.dlpack.to_dlpack
cdef object TORCH_IS_NEG = None
cdef object TORCH_IS_CONJ = None
# torch dtype -> (T_TENSOR record head, NumPy dtype of its bytes, whether it is complex), or
# False for a dtype enc_tensor refuses. Bounded by the dtypes torch has.
cdef dict TORCH_WIRE = {}
cdef int DLPACK_CPU = 1  # DLDeviceType kDLCPU


cdef object torch_wire(object dtype):
    found = FW.torch_wire_dtype(dtype)
    entry = False
    if found is not None:
        entry = (F.tensor_head(FW.TORCH, found[0]), found[1], bool(dtype.is_complex))
    TORCH_WIRE[dtype] = entry
    return entry


cdef object torch_view(object obj, cnp.dtype npdt, bint is_complex):
    # The tensor's memory as an ndarray of npdt (its strides kept, no copy), or None when
    # enc_tensor must look at it: lazy neg/conj bits (the memory does not hold the values),
    # another device, no data pointer, what DLPack cannot express (bits types, sparse).
    if TORCH_IS_NEG(obj) or (is_complex and TORCH_IS_CONJ(obj)):
        return None
    try:
        capsule = TORCH_TO_DLPACK(obj)
    except (RuntimeError, BufferError, TypeError, ValueError):
        return None
    if not PyCapsule_IsValid(capsule, b"dltensor"):
        return None
    cdef tw_DLTensor* t = &(<tw_DLManagedTensor*>PyCapsule_GetPointer(capsule, b"dltensor")).dl_tensor
    cdef Py_ssize_t itemsize = npdt.itemsize
    if (t.device.device_type != DLPACK_CPU or t.data == NULL or t.ndim < 0 or t.ndim > MAX_NDIM
            or <Py_ssize_t>t.dtype.bits * t.dtype.lanes != 8 * itemsize):
        return None
    cdef cnp.npy_intp dims[32]
    cdef cnp.npy_intp strides[32]
    cdef int i
    for i in range(t.ndim):
        dims[i] = <cnp.npy_intp>t.shape[i]
        if t.strides != NULL:
            strides[i] = <cnp.npy_intp>t.strides[i] * itemsize
    Py_INCREF(<PyObject*>npdt)
    arr = PyArray_NewFromDescr(&PyArray_Type, <cnp.PyArray_Descr*>npdt, t.ndim, dims,
                               strides if t.strides != NULL else NULL,
                               <char*>t.data + t.byte_offset, NPY_ARRAY_WRITEABLE, NULL)
    # The capsule holds the tensor (its destructor releases it when the array goes).
    cnp.set_array_base(<cnp.ndarray>arr, capsule)
    return arr


cdef int enc_torch(Writer* w, object obj, list arrays) except -1:
    dtype = obj.dtype
    entry = TORCH_WIRE.get(dtype)
    if entry is None:
        entry = torch_wire(dtype)
    if entry is not False:
        a = torch_view(obj, <cnp.dtype>(<tuple>entry)[1], (<tuple>entry)[2])
        if a is not None:
            w_raw(w, <bytes>(<tuple>entry)[0])
            enc_array(w, a, arrays, True)
            w.has_tensor = True
            return 0
    return enc_tensor(w, obj, arrays)


cdef int torch_found(object torch) except -1:
    # The first torch tensor: arm the fast path (unless this torch lacks what it calls).
    global TORCH_TENSOR, TORCH_TO_DLPACK, TORCH_IS_NEG, TORCH_IS_CONJ
    to_dlpack = getattr(torch._C, "_to_dlpack", None)
    if to_dlpack is not None:
        TORCH_TO_DLPACK = to_dlpack
        TORCH_IS_NEG = torch.Tensor.is_neg
        TORCH_IS_CONJ = torch.Tensor.is_conj
        TORCH_TENSOR = torch.Tensor
    return 0


cdef int enc_tensor(Writer* w, object obj, list arrays) except -1:
    # torch/JAX (a FrameworkArray after export): T_TENSOR head, then the array record.
    if TORCH_TENSOR is None and type(obj) is not FrameworkArray and FW.framework_of(obj) == FW.TORCH:
        torch_found(sys.modules["torch"])
    t = obj if type(obj) is FrameworkArray else F.export_tensor(obj)
    if type(t) is not FrameworkArray:  # another DLPack producer: a plain array
        return enc_array(w, t, arrays, False)
    head, a = F.prepare_tensor(t)
    w_raw(w, <bytes>head)
    enc_array(w, a, arrays, True)
    w.has_tensor = True
    return 0


cdef Py_ssize_t write_header(char* out, Writer* w, list arrays, bint packed) except -1:
    # Prefix + table + structure into out; returns where the header ends.
    cdef Py_ssize_t n = len(arrays)
    cdef Py_ssize_t header_len = PREFIX_SIZE + ENTRY_SIZE * n + w.len
    memcpy(out, PyBytes_AS_STRING(MAGIC), 4)
    out[4] = <char>(VERSION if w.has_tensor else VERSION_PLAIN)
    out[5] = <char>(FLAG_PACKED if packed else 0)
    out[6] = 0
    out[7] = 0
    put_u32(out + 8, <uint32_t>header_len)
    put_u32(out + 12, <uint32_t>n)
    cdef Py_ssize_t pos = header_len, off = 0, nbytes, k
    cdef char* entry = out + PREFIX_SIZE
    for k in range(n):
        nbytes = cnp.PyArray_NBYTES(<cnp.ndarray>arrays[k])
        if packed:
            off = align_up(pos)
            pos = off + nbytes
        put_u64(entry, <uint64_t>off)
        put_u64(entry + 8, <uint64_t>nbytes)
        entry += ENTRY_SIZE
    memcpy(entry, w.buf, w.len)
    return header_len


cdef Py_ssize_t header_size(Writer* w, Py_ssize_t n) except -1:
    cdef Py_ssize_t header_len = PREFIX_SIZE + ENTRY_SIZE * n + w.len
    if <uint64_t>header_len > MAX_U32:
        raise ValueError(f"header of {header_len} bytes is too large for tensorwire.codec")
    return header_len


def dumps(obj):
    """One contiguous frame: header, then each payload at a 64-byte aligned offset."""
    cdef Writer w
    cdef list arrays = []
    cdef Py_ssize_t header_len, total, k, n, pos, off, nbytes
    cdef char* out
    cdef char* src
    cdef cnp.ndarray a
    w_init(&w)
    try:
        enc(&w, obj, arrays, 0)
        n = len(arrays)
        header_len = header_size(&w, n)
        total = header_len
        for k in range(n):
            total = align_up(total) + cnp.PyArray_NBYTES(<cnp.ndarray>arrays[k])
        result = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(result)
        if total >= HUGEPAGE_ADVICE:
            tw_advise_hugepages(out, total)
        pos = write_header(out, &w, arrays, True)
    finally:
        w_free(&w)
    for k in range(n):
        a = <cnp.ndarray>arrays[k]
        off = align_up(pos)
        nbytes = cnp.PyArray_NBYTES(a)
        src = <char*>cnp.PyArray_DATA(a)
        if off > pos:
            memset(out + pos, 0, off - pos)
        if nbytes >= NOGIL_COPY:
            with nogil:
                memcpy(out + off, src, nbytes)
        else:
            memcpy(out + off, src, nbytes)
        pos = off + nbytes
    return result


cdef object byte_view(cnp.ndarray a):
    # A flat uint8 view of the array's own memory, as a memoryview (no copy).
    cdef cnp.npy_intp nbytes = cnp.PyArray_NBYTES(a)
    Py_INCREF(<PyObject*>U8_DESCR)
    flat = PyArray_NewFromDescr(&PyArray_Type, <cnp.PyArray_Descr*>U8_DESCR, 1, &nbytes, NULL,
                                cnp.PyArray_DATA(a),
                                NPY_ARRAY_WRITEABLE if cnp.PyArray_ISWRITEABLE(a) else 0,
                                NULL)
    cnp.set_array_base(<cnp.ndarray>flat, a)
    return PyMemoryView_FromObject(flat)


def encode(obj):
    """Frame 0 is the header; then one frame per array, viewing the array's memory."""
    cdef Writer w
    cdef list arrays = []
    cdef Py_ssize_t header_len, n
    w_init(&w)
    try:
        enc(&w, obj, arrays, 0)
        n = len(arrays)
        header_len = header_size(&w, n)
        header = PyBytes_FromStringAndSize(NULL, header_len)
        write_header(PyBytes_AS_STRING(header), &w, arrays, False)
    finally:
        w_free(&w)
    cdef list frames = [header]
    for a in arrays:
        frames.append(byte_view(<cnp.ndarray>a))
    return frames


# --- decoding -----------------------------------------------------------------------------

cdef struct Payload:
    char* data
    Py_ssize_t nbytes
    PyObject* owner  # the frame's memoryview; borrowed, the caller keeps it alive
    bint writable

cdef enum:
    INLINE_PAYLOADS = 8

cdef struct Reader:
    const unsigned char* buf  # the header frame
    Py_ssize_t pos
    Py_ssize_t end
    Payload* payloads
    Py_ssize_t n_payloads
    Py_ssize_t next_array
    int version
    bint numpy  # framework tensors come back as NumPy arrays
    bint relay  # ... or as FrameworkArray, to be sent on unchanged
    PyObject* device  # ... or on this device; NULL: the host (borrowed from loads/decode)
    Payload inline_payloads[INLINE_PAYLOADS]


cdef object frame_view(object buffer):
    # A memoryview holding the buffer export for as long as any decoded array lives.
    try:
        mv = PyMemoryView_FromObject(buffer)
    except TypeError:
        raise TypeError(
            f"tensorwire.codec needs a bytes-like frame, not {type(buffer).__qualname__}"
        ) from None
    if not PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(mv), b"C"):
        raise InvalidArgumentError("tensorwire.codec frame buffer is not C-contiguous")
    return mv


cdef int truncated(Reader* r, Py_ssize_t n, str what) except -1:
    raise DataLossError(
        f"header truncated: {what} needs {n} bytes at offset {r.pos}, {r.end - r.pos} left"
    )

cdef inline const unsigned char* r_take(Reader* r, Py_ssize_t n, str what) except NULL:
    cdef Py_ssize_t pos = r.pos
    if n > r.end - pos:
        truncated(r, n, what)
    r.pos = pos + n
    return r.buf + pos

cdef inline Py_ssize_t r_u32(Reader* r, str what) except -1:
    return <Py_ssize_t>get_u32(r_take(r, 4, what))

cdef Py_ssize_t r_count(Reader* r, str what, Py_ssize_t min_item) except -1:
    cdef Py_ssize_t n = r_u32(r, what)
    if n * min_item > r.end - r.pos:
        raise DataLossError(
            f"{what} of {n} items cannot fit in the {r.end - r.pos} header bytes left"
        )
    return n

cdef object r_str(Reader* r, str what):
    if r.end - r.pos < 4:  # the length's name is spelled only for the error, not per string
        truncated(r, 4, what + " length")
    cdef Py_ssize_t n = r_u32(r, what)
    cdef const unsigned char* p = r_take(r, n, what)
    try:
        return PyUnicode_DecodeUTF8(<const char*>p, n, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DataLossError(
            f"{what} at offset {r.pos - n} is not valid UTF-8: {exc.reason}"
        ) from None


cdef cnp.dtype r_dtype(Reader* r, int* code):
    # Reads a dtype code (+ itemsize for strings) and returns the little-endian dtype.
    cdef int c = r_take(r, 1, "dtype code")[0]
    code[0] = c
    if DESCRS[c] != NULL:
        return <cnp.dtype><object>DESCRS[c]
    cdef Py_ssize_t size = 0
    if c == DT_STRING or c == DT_TW_UNICODE or c == DT_TW_RAW:
        size = r_u32(r, "itemsize")
    return <cnp.dtype>F.code_dtype(c, size)


cdef object r_array(Reader* r):
    cdef int code = 0
    cdef cnp.dtype dt = r_dtype(r, &code)
    cdef Py_ssize_t itemsize = dt.itemsize
    cdef int ndim = r_take(r, 1, "ndim")[0]
    if ndim > MAX_NDIM:
        raise InvalidArgumentError(f"array of {ndim} dimensions (at most {MAX_NDIM})")
    cdef const unsigned char* p = r_take(r, 8 * ndim, "shape")
    cdef Py_ssize_t k = r.next_array
    if k >= r.n_payloads:
        raise DataLossError(f"array {k} has no payload (the table lists {r.n_payloads})")
    r.next_array = k + 1
    cdef Payload* pl = &r.payloads[k]
    cdef cnp.npy_intp dims[32]
    cdef uint64_t d, nonzero = <uint64_t>itemsize, need
    cdef bint has_zero = False, too_big = False
    cdef int i
    for i in range(ndim):
        d = get_u64(p + 8 * i)
        dims[i] = <cnp.npy_intp>d
        if d == 0:
            has_zero = True
        elif d > INTP_MAX or nonzero > INTP_MAX // d:
            too_big = True
        else:
            nonzero *= d
    if too_big:
        raise DataLossError(
            f"array {k} of shape {_shape(p, ndim)} and dtype {dt} is too big"
        )
    need = 0 if has_zero else nonzero
    if need != <uint64_t>pl.nbytes:
        raise DataLossError(
            f"array {k} of shape {_shape(p, ndim)} and dtype {dt} needs {need} bytes "
            f"but its payload has {pl.nbytes}"
        )
    Py_INCREF(<PyObject*>dt)
    arr = PyArray_NewFromDescr(&PyArray_Type, <cnp.PyArray_Descr*>dt, ndim, dims, NULL, pl.data,
                               NPY_ARRAY_WRITEABLE if pl.writable else 0, NULL)
    cnp.set_array_base(<cnp.ndarray>arr, <object>pl.owner)
    return arr


cdef tuple _shape(const unsigned char* p, int ndim):
    return tuple([get_u64(p + 8 * i) for i in range(ndim)])


cdef object r_value(Reader* r, int depth):
    cdef uint8_t tag = r_take(r, 1, "tag")[0]
    cdef const unsigned char* p
    cdef Py_ssize_t n, i, itemsize
    cdef cnp.dtype dt
    cdef int code = 0
    cdef dict d
    cdef list items
    if tag == T_STR:
        return r_str(r, "str")
    if tag == T_ARRAY:
        return r_array(r)
    if tag == T_INT:
        p = r_take(r, 8, "int")
        return PyLong_FromLongLong(<long long>get_u64(p))
    if tag == T_FLOAT:
        p = r_take(r, 8, "float")
        return PyFloat_FromDouble(bits_double(get_u64(p)))
    if tag == T_NONE:
        return None
    if tag == T_FALSE:
        return False
    if tag == T_TRUE:
        return True
    if tag == T_DICT or tag == T_LIST or tag == T_TUPLE or tag == T_NAMEDTUPLE:
        if depth >= MAX_DEPTH:
            raise InvalidArgumentError(f"structure nested deeper than {MAX_DEPTH} levels")
        if tag == T_DICT:
            n = r_count(r, "dict", 2)
            d = {}
            for i in range(n):
                k = r_value(r, depth + 1)
                v = r_value(r, depth + 1)
                try:
                    d[k] = v
                except TypeError:
                    raise DataLossError(
                        f"dict key of type {type(k).__qualname__} is not hashable"
                    ) from None
            return d
        if tag == T_LIST:
            n = r_count(r, "list", 1)
            items = []
            for i in range(n):
                items.append(r_value(r, depth + 1))
            return items
        if tag == T_TUPLE:
            n = r_count(r, "tuple", 1)
            t = PyTuple_New(n)
            for i in range(n):
                v = r_value(r, depth + 1)
                Py_INCREF(<PyObject*>v)
                PyTuple_SET_ITEM(t, i, <PyObject*>v)
            return t
        return r_namedtuple(r, depth)
    if tag == T_BYTES:
        n = r_u32(r, "bytes length")
        p = r_take(r, n, "bytes")
        return PyBytes_FromStringAndSize(<const char*>p, n)
    if tag == T_SCALAR:
        dt = r_dtype(r, &code)
        itemsize = dt.itemsize
        p = r_take(r, itemsize, "scalar")
        return F.scalar_from_raw(code, itemsize, PyBytes_FromStringAndSize(<const char*>p, itemsize))
    if tag == T_BIGINT:
        n = r_u32(r, "int length")
        p = r_take(r, n, "int")
        return int.from_bytes(PyBytes_FromStringAndSize(<const char*>p, n), "little", signed=True)
    if tag == T_COMPLEX:
        p = r_take(r, 16, "complex")
        return PyComplex_FromDoubles(bits_double(get_u64(p)), bits_double(get_u64(p + 8)))
    if tag == T_TENSOR and r.version >= 2:
        return r_tensor(r)
    raise DataLossError(f"unknown tag 0x{tag:02x} at offset {r.pos - 1}")


# torch.from_numpy once a torch tensor has been decoded (None before; False: no torch here).
cdef object TORCH_FROM_NUMPY = None


cdef object r_tensor(Reader* r):
    global TORCH_FROM_NUMPY
    cdef int framework = r_take(r, 1, "tensor framework")[0]
    name = r_str(r, "tensor dtype name")
    if r_take(r, 1, "tensor array tag")[0] != T_ARRAY:
        raise DataLossError(f"tensor record at offset {r.pos - 1} does not hold an array")
    cdef Py_ssize_t code_at = r.pos  # r_array reads the dtype code there (bounds-checked)
    arr = r_array(r)
    if framework == FW_TORCH and not r.numpy and not r.relay and r.device == NULL:
        if TORCH_FROM_NUMPY is None:
            TORCH_FROM_NUMPY = FW.torch_from_numpy() or False
        # The fixed-size dtypes of the wire are exactly those NumPy and torch share: what
        # frameworks.restore does for them, without the Python calls in between.
        if TORCH_FROM_NUMPY is not False and DESCRS[r.buf[code_at]] != NULL:
            return TORCH_FROM_NUMPY(arr)
    device = None if r.device == NULL else <object>r.device
    return F.tensor_value(framework, name, arr, r.numpy, r.relay, device)


cdef object r_namedtuple(Reader* r, int depth):
    module = r_str(r, "namedtuple module")
    qualname = r_str(r, "namedtuple name")
    cdef Py_ssize_t n = r_count(r, "namedtuple fields", 5)
    fields = tuple([r_str(r, "namedtuple field") for _ in range(n)])
    cls = F.resolve_namedtuple(module, qualname, fields)
    values = [r_value(r, depth + 1) for _ in range(n)]
    return F.make_namedtuple(cls, values)


cdef int parse_prefix(const unsigned char* p, Py_ssize_t size, int* flags,
                      Py_ssize_t* header_len, Py_ssize_t* n, int* version) except -1:
    if size < PREFIX_SIZE:
        raise DataLossError(
            f"frame of {size} bytes is shorter than the {PREFIX_SIZE}-byte codec header"
        )
    if memcmp4(p, PyBytes_AS_STRING(MAGIC)):
        raise DataLossError(
            f"bad magic {PyBytes_FromStringAndSize(<const char*>p, 4)!r}: "
            "not a tensorwire codec frame"
        )
    if p[4] != VERSION and p[4] != VERSION_PLAIN:
        F.check_version(p[4])  # raises, naming the versions this build reads
    version[0] = p[4]
    if p[5] & ~FLAG_PACKED:
        raise InvalidArgumentError(f"unknown codec flags 0x{p[5]:02x}")
    if p[6] or p[7]:
        raise DataLossError("reserved header bytes are not zero")
    flags[0] = p[5]
    header_len[0] = <Py_ssize_t>get_u32(p + 8)
    n[0] = <Py_ssize_t>get_u32(p + 12)
    if header_len[0] > size:
        raise DataLossError(
            f"header length {header_len[0]} exceeds the frame's {size} bytes (truncated)"
        )
    if header_len[0] < PREFIX_SIZE or n[0] > (header_len[0] - PREFIX_SIZE) // ENTRY_SIZE:
        raise DataLossError(
            f"payload table of {n[0]} entries does not fit in a header of {header_len[0]} bytes"
        )
    return 0

cdef inline bint memcmp4(const unsigned char* a, const char* b) noexcept:
    return a[0] != <unsigned char>b[0] or a[1] != <unsigned char>b[1] or \
        a[2] != <unsigned char>b[2] or a[3] != <unsigned char>b[3]


cdef int reader_init(Reader* r, const unsigned char* buf, Py_ssize_t header_len,
                     Py_ssize_t n, int version, bint numpy, bint relay,
                     object device) except -1:
    r.buf = buf
    r.version = version
    r.numpy = numpy
    r.relay = relay
    r.device = NULL if device is None else <PyObject*>device
    r.pos = PREFIX_SIZE + ENTRY_SIZE * n
    r.end = header_len
    r.n_payloads = n
    r.next_array = 0
    if n <= INLINE_PAYLOADS:
        r.payloads = r.inline_payloads
    else:
        r.payloads = <Payload*>PyMem_Malloc(n * sizeof(Payload))
        if r.payloads == NULL:
            raise MemoryError()
    return 0

cdef inline void reader_free(Reader* r) noexcept:
    if r.payloads != r.inline_payloads and r.payloads != NULL:
        PyMem_Free(r.payloads)
    r.payloads = NULL


cdef object finish(Reader* r):
    value = r_value(r, 0)
    if r.pos != r.end:
        raise DataLossError(f"{r.end - r.pos} trailing bytes after the structure in the header")
    if r.next_array != r.n_payloads:
        raise DataLossError(
            f"payload table lists {r.n_payloads} payloads but the structure uses {r.next_array}"
        )
    return value


def loads(buffer, *, bint numpy=False, bint relay=False, object device=None):
    """Decode one frame made by ``dumps``; arrays are views into ``buffer``.

    ``numpy=True`` returns framework tensors (torch, JAX) as NumPy arrays; ``relay=True`` as
    ``tensorwire.frameworks.FrameworkArray`` (re-encoded as they came, framework not needed);
    ``device`` places them on that device (``tensorwire.frameworks.device_for``).
    """
    if device is not None:
        F.check_device_switch(numpy, relay, device)
    mv = frame_view(buffer)
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    cdef const unsigned char* base = <const unsigned char*>view.buf
    cdef Py_ssize_t size = view.len
    cdef int flags = 0, version = 0
    cdef Py_ssize_t header_len = 0, n = 0, k, end, off, nbytes, expect
    cdef uint64_t off64, nb64
    cdef const unsigned char* entry
    cdef Reader r
    parse_prefix(base, size, &flags, &header_len, &n, &version)
    if not flags & FLAG_PACKED:
        if n:
            raise InvalidArgumentError(
                f"frame is a split header with {n} payload frames; use decode(frames)"
            )
        if header_len != size:
            raise DataLossError(f"{size - header_len} trailing bytes after the header")
    reader_init(&r, base, header_len, n, version, numpy, relay, device)
    try:
        end = header_len
        entry = base + PREFIX_SIZE
        for k in range(n):
            off64 = get_u64(entry)
            nb64 = get_u64(entry + 8)
            entry += ENTRY_SIZE
            expect = align_up(end)
            if off64 != <uint64_t>expect:
                raise DataLossError(
                    f"payload {k} at offset {off64}, expected the aligned offset {expect}"
                )
            if expect > size or nb64 > <uint64_t>(size - expect):
                raise DataLossError(
                    f"payload {k} of {nb64} bytes at offset {off64} runs past "
                    f"the frame's {size} bytes (truncated)"
                )
            off = expect
            nbytes = <Py_ssize_t>nb64
            r.payloads[k].data = <char*>base + off
            r.payloads[k].nbytes = nbytes
            r.payloads[k].owner = <PyObject*>mv
            r.payloads[k].writable = not view.readonly
            end = off + nbytes
        if end != size:
            raise DataLossError(f"{size - end} trailing bytes after the last payload")
        return finish(&r)
    finally:
        reader_free(&r)


def decode(frames, *, bint numpy=False, bint relay=False, object device=None):
    """Decode ``encode``'s frames (a single ``dumps`` frame is accepted too).

    ``numpy``, ``relay`` and ``device`` as for ``loads``.
    """
    if device is not None:
        F.check_device_switch(numpy, relay, device)
    cdef list fl
    if type(frames) is list:
        fl = <list>frames
    else:
        try:
            fl = list(frames)
        except TypeError:
            raise TypeError(
                f"tensorwire.codec.decode needs a list of frames, not {type(frames).__qualname__}"
            ) from None
    if not fl:
        raise DataLossError("no frames to decode")
    mv = frame_view(fl[0])
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    cdef const unsigned char* base = <const unsigned char*>view.buf
    cdef Py_ssize_t size = view.len
    cdef int flags = 0, version = 0
    cdef Py_ssize_t header_len = 0, n = 0, k
    cdef const unsigned char* entry
    cdef Py_buffer* pview
    cdef Reader r
    parse_prefix(base, size, &flags, &header_len, &n, &version)
    if flags & FLAG_PACKED:
        if len(fl) != 1:
            raise DataLossError(f"packed frame followed by {len(fl) - 1} extra frames")
        return loads(fl[0], numpy=numpy, relay=relay, device=device)
    if header_len != size:
        raise DataLossError(f"{size - header_len} trailing bytes after the header")
    if len(fl) != n + 1:
        raise DataLossError(f"header lists {n} payloads but {len(fl) - 1} payload frames came")
    cdef list views = []  # keeps every payload memoryview alive while arrays are made
    reader_init(&r, base, header_len, n, version, numpy, relay, device)
    try:
        entry = base + PREFIX_SIZE
        for k in range(n):
            if get_u64(entry) != 0:
                raise DataLossError(
                    f"payload {k} has offset {get_u64(entry)} in a split message (must be 0)"
                )
            pmv = frame_view(fl[k + 1])
            views.append(pmv)
            pview = PyMemoryView_GET_BUFFER(pmv)
            if get_u64(entry + 8) != <uint64_t>pview.len:
                raise DataLossError(
                    f"payload {k} should have {get_u64(entry + 8)} bytes but its frame has "
                    f"{pview.len}"
                )
            entry += ENTRY_SIZE
            r.payloads[k].data = <char*>pview.buf
            r.payloads[k].nbytes = pview.len
            r.payloads[k].owner = <PyObject*>pmv
            r.payloads[k].writable = not pview.readonly
        return finish(&r)
    finally:
        reader_free(&r)
