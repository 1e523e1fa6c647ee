# C declarations used by the compiled codec (_codec_c.pyx) that Cython's bundled
# cpython/numpy declarations do not provide, or provide with reference semantics that do not
# fit: PyArray_NewFromDescr steals its descriptor, so it takes a raw PyArray_Descr pointer.

from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t
cimport numpy as cnp

cdef extern from "Python.h":
    bint PyCapsule_IsValid(object capsule, const char* name)
    void* PyCapsule_GetPointer(object capsule, const char* name) except? NULL
    object PyMemoryView_FromObject(object obj)
    Py_buffer* PyMemoryView_GET_BUFFER(object mview)
    int PyBuffer_IsContiguous(const Py_buffer* view, char order)
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    object PyLong_FromLongLong(long long v)
    object PyFloat_FromDouble(double v)
    double PyFloat_AS_DOUBLE(object obj)
    object PyComplex_FromDoubles(double real, double imag)
    double PyComplex_RealAsDouble(object obj) except? -1.0
    double PyComplex_ImagAsDouble(object obj) except? -1.0
    object PyBytes_FromStringAndSize(const char* v, Py_ssize_t len)
    char* PyBytes_AS_STRING(object b)
    Py_ssize_t PyBytes_GET_SIZE(object b)
    object PyTuple_New(Py_ssize_t n)
    void PyTuple_SET_ITEM(object t, Py_ssize_t i, PyObject* v)
    void Py_INCREF(PyObject* o)

cdef extern from "numpy/arrayobject.h":
    PyTypeObject PyArray_Type
    # Steals a reference to descr (a raw pointer, so the caller increfs it first).
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)
    int NPY_ARRAY_WRITEABLE

cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #include <stdint.h>
    /* Ask for transparent huge pages over the 2 MiB-aligned middle of a fresh, large buffer
       before filling it, as NumPy does for its own large allocations: page faults on 4 KiB
       pages otherwise cost more than the copy itself. Advice only; errors are ignored. */
    static void tw_advise_hugepages(char *p, Py_ssize_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        const uintptr_t hp = (uintptr_t)1 << 21;
        uintptr_t start = ((uintptr_t)p + hp - 1) & ~(hp - 1);
        uintptr_t end = ((uintptr_t)p + (uintptr_t)n) & ~(hp - 1);
        if (end > start) {
            (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
        }
    #else
        (void)p; (void)n;
    #endif
    }
    """
    void tw_advise_hugepages(char* p, Py_ssize_t n) nogil

cdef extern from *:
    """
    #include <stdint.h>
    /* DLPack's C ABI (dlpack.h; this layout is the same in every version since 0.2), spelled
       out so that the build needs no header: what a "dltensor" capsule points to. */
    typedef struct { int32_t device_type; int32_t device_id; } tw_DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } tw_DLDataType;
    typedef struct {
        void *data;
        tw_DLDevice device;
        int32_t ndim;
        tw_DLDataType dtype;
        int64_t *shape;
        int64_t *strides;
        uint64_t byte_offset;
    } tw_DLTensor;
    typedef struct tw_DLManagedTensor {
        tw_DLTensor dl_tensor;
        void *manager_ctx;
        void (*deleter)(struct tw_DLManagedTensor *self);
    } tw_DLManagedTensor;
    """
    ctypedef struct tw_DLDevice:
        int32_t device_type
        int32_t device_id
    ctypedef struct tw_DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct tw_DLTensor:
        void* data
        tw_DLDevice device
        int32_t ndim
        tw_DLDataType dtype
        int64_t* shape
        int64_t* strides
        uint64_t byte_offset
    ctypedef struct tw_DLManagedTensor:
        tw_DLTensor dl_tensor
