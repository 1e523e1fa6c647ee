# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled copy kernel of ``copying``: large copies with non-temporal stores.

A mover's copy into memory its peer reads (a shared-memory segment) writes megabytes the
copying process never reads again. Ordinary stores first read each destination line into
the cache (to own it), then evict other data to hold it; non-temporal stores write the line
to memory directly. Here, copying 1 MiB pieces into 4 MiB shared segments taken in turn,
that kept 16-18 GB/s where ``np.copyto`` (glibc's ``memmove``, which streams only far larger
single copies) fell from 20 to 11 GB/s once six or more segments were in turn; a 16 MiB
``run(identity)`` between two processes went from 0.81-0.88x to 1.17-1.21x of memcpy.

``copying`` uses it for copies of ``copying.STREAM_BYTES`` or more only: a smaller one
lands in the cache, where its reader finds it. Without SSE2 (not x86) ``STREAMING`` is
False and ``copying`` copies with NumPy.
"""

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #define TW_STREAMING 1
    static void tw_stream_copy(unsigned char *dst, const unsigned char *src, size_t n) {
        /* Up to the destination's first 16-byte boundary with memcpy (streaming stores
           need aligned destinations), then 64 bytes (a cache line) at a time, the tail
           with memcpy again. */
        size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
        if (head > n) head = n;
        memcpy(dst, src, head);
        dst += head;
        src += head;
        n -= head;
        size_t body = n & ~(size_t)63;
        for (size_t i = 0; i < body; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
            _mm_stream_si128((__m128i *)(dst + i), a);
            _mm_stream_si128((__m128i *)(dst + i + 16), b);
            _mm_stream_si128((__m128i *)(dst + i + 32), c);
            _mm_stream_si128((__m128i *)(dst + i + 48), d);
        }
        /* Streaming stores are weakly ordered: all of them are visible before anything
           this thread does next (the packet that tells the peer the message is there). */
        _mm_sfence();
        memcpy(dst + body, src + body, n - body);
    }
    #else
    #define TW_STREAMING 0
    static void tw_stream_copy(unsigned char *dst, const unsigned char *src, size_t n) {
        memcpy(dst, src, n);
    }
    #endif
    """
    void tw_stream_copy(unsigned char *dst, const unsigned char *src, size_t n) nogil
    int TW_STREAMING

__all__ = ["STREAMING", "stream_copy"]

#: Whether ``stream_copy`` streams (SSE2) or is a plain memcpy.
STREAMING = bool(TW_STREAMING)


def stream_copy(unsigned char[::1] target, const unsigned char[::1] source):
    """Copy ``source`` into ``target`` (equal-sized contiguous byte buffers) with
    non-temporal stores, without the GIL."""
    cdef size_t n = <size_t>target.shape[0]
    if <size_t>source.shape[0] != n:
        raise ValueError(
            f"stream_copy of {source.shape[0]} bytes into a target of {target.shape[0]}"
        )
    if n == 0:
        return
    with nogil:
        tw_stream_copy(&target[0], &source[0], n)
