"""The frame and manifest format: how a tensorwire message (a list of frames) travels as
messages of raw bytes over a control plane (gRPC), and the size checks every path applies.

No transport import here: this module is plain byte layout, so it can be tested on its own
and every mover (the TCP side channel, RDMA, shared memory) shares its limits and its
receive memory.

Every tensorwire message starts with one *manifest* message::

    offset 0  u8   kind      INLINE (1), CHUNKED (2), PENDING (3) or BULK (4)
    offset 1  u8   flags     FLAG_STREAM: the caller wants a server stream back
                             FLAG_BULK_OK: see below
    offset 2  u16  reserved  0
    offset 4  u32  n         number of frames
    offset 8  u64  length of each frame, n of them, little endian
    then      INLINE: the frames' bytes, back to back; PENDING or BULK: a 16-byte ticket

A BULK message is a request whose frames a mover carried beforehand (pushed over the TCP
side channel); it names them by ticket and repeats their lengths. The flag FLAG_BULK_OK on
a request says the caller can fetch large responses through its mover, so the server may
answer with PENDING tickets (in a stream too) instead of chunks. On an INLINE response the
same flag is a hint: the server has a mover and would have used it for this message, had
the caller said it can fetch that way.

A CHUNKED manifest is followed by messages of raw bytes (no header at all) that together
hold the frames back to back, each at most the sender's chunk size. The receiver allocates
the receive memory once, from the announced lengths (see below), and copies every chunk
into place, so there is no repeated concatenation.

Messages up to a few MiB go INLINE because gRPC's per-call cost dominates there (and a
unary call costs about half a streaming one); larger ones are CHUNKED because one huge gRPC
message is slow (gRPC gathers it, then copies it) and doubles peak memory on both sides.
The thresholds are in the grpc transport's ``options`` with their measurements; which
route a call takes is ``routes.choose_call_route``.

A PENDING manifest answers a unary call whose response is too large to send inline: the
caller fetches it (through its mover, or as a CHUNKED stream) with the ticket.

Limits, checked from the manifest before anything else of the message is read or allocated
(``check_frames``, ``check_size``, the one size check of every path, with one wording): a
message has at most ``MAX_FRAMES`` frames, and each frame counts ``FRAME_OVERHEAD_BYTES`` on
top of its bytes against ``TransportOptions.max_message_bytes``. A receiver makes Python
objects per frame (a memoryview, usually a bytearray, its length), about 400 bytes
measured; without these limits an 8 MiB request announcing 2**20 empty frames made a server
allocate about 410 MiB.

Received frames are writable ``memoryview`` s. In a message larger than
``SMALL_MESSAGE_BYTES`` every frame starts at a 64-byte aligned address, so the codec's
aligned payloads stay aligned in memory: frames of ``OWN_BUFFER_BYTES`` or more get a
buffer each from ``pool.default_pool`` (a tensor kept alive pins only itself), starting at
a page boundary, where the kernel's copy from a socket runs fastest; the others share one.
Frames of smaller messages are bytearrays of their own (16-byte aligned, enough for every
NumPy dtype, and much cheaper).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from ... import errors
from . import pool
from .tickets import TICKET_BYTES

__all__ = [
    "INLINE",
    "CHUNKED",
    "PENDING",
    "FLAG_STREAM",
    "BULK",
    "FLAG_BULK_OK",
    "TICKET_BYTES",
    "ALIGNMENT",
    "as_byte_views",
    "decode_metadata",
    "encode",
    "encode_metadata",
    "encode_inline",
    "encode_pending",
    "encode_bulk",
    "read_bulk",
    "allocate",
    "read_manifest",
    "decode_inline",
    "Reassembler",
    "MAX_FRAMES",
    "FRAME_OVERHEAD_BYTES",
    "check_frames",
    "check_size",
]

INLINE = 1
CHUNKED = 2
PENDING = 3
BULK = 4
FLAG_STREAM = 1
FLAG_BULK_OK = 2
ALIGNMENT = 64
#: Frames with a buffer of their own start at this alignment.
PAGE = 4096
#: Inline messages up to this size get a plain bytearray per frame (16-byte aligned).
SMALL_MESSAGE_BYTES = 64 * 1024
#: Frames this large are received into a buffer of their own.
OWN_BUFFER_BYTES = 1024 * 1024
#: Frames one message may have at most (the codec makes one per array, plus a header).
MAX_FRAMES = 1 << 16
#: What each frame counts against ``max_message_bytes`` on top of its own bytes: the
#: receiver's Python objects for it (measured about 400 bytes), rounded up.
FRAME_OVERHEAD_BYTES = 512

_HEADER = struct.Struct("<BBHI")
_HEADER_SIZE = _HEADER.size  # 8
_KINDS = (INLINE, CHUNKED, PENDING, BULK)

_lengths_structs: dict[int, struct.Struct] = {}


def _lengths_struct(n: int) -> struct.Struct:
    s = _lengths_structs.get(n)
    if s is None:
        s = struct.Struct(f"<{n}Q")
        if n <= 64:  # cache the common small counts only
            _lengths_structs[n] = s
    return s


def check_frames(n: int) -> None:
    """Raise ``ResourceExhaustedError`` when a message announces more than
    ``MAX_FRAMES`` frames (before its lengths are even read)."""
    if n > MAX_FRAMES:
        raise errors.ResourceExhaustedError(
            f"a message of {n} frames exceeds the limit of {MAX_FRAMES} frames per message"
        )


def check_size(lengths: Sequence[int], max_bytes: int | None, what: str = "message") -> int:
    """The payload size of a message with these frame lengths, after checking it against
    ``max_bytes`` with ``FRAME_OVERHEAD_BYTES`` counted per frame.

    Raises ``ResourceExhaustedError`` saying which limit was exceeded.
    """
    total = sum(lengths)
    if max_bytes is not None and total + FRAME_OVERHEAD_BYTES * len(lengths) > max_bytes:
        raise errors.ResourceExhaustedError(
            f"{what} of {total} bytes in {len(lengths)} frames exceeds the limit of "
            f"{max_bytes} bytes (TransportOptions.max_message_bytes; each frame counts "
            f"{FRAME_OVERHEAD_BYTES} bytes on top of its own)"
        )
    return total


def as_byte_views(frames: Sequence[Any]) -> tuple[list[memoryview], int]:
    """Flat unsigned-byte views of ``frames`` and their total size.

    Raises ``InvalidArgumentError`` for something that is not a C-contiguous buffer, or
    for more than ``MAX_FRAMES`` frames (the receiver would refuse them).
    """
    if isinstance(frames, (bytes, bytearray, memoryview, str)):
        raise errors.InvalidArgumentError(
            f"a message is a list of frames, not a single {type(frames).__name__}"
        )
    if len(frames) > MAX_FRAMES:
        raise errors.InvalidArgumentError(
            f"a message has at most {MAX_FRAMES} frames; this one has {len(frames)}"
        )
    views = []
    total = 0
    for i, frame in enumerate(frames):
        if type(frame) is bytes:  # the codec's headers: flat and contiguous already
            views.append(memoryview(frame))
            total += len(frame)
            continue
        try:
            view = memoryview(frame)
            if not view.c_contiguous:
                raise TypeError("it is not C-contiguous")
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
        except TypeError as exc:
            raise errors.InvalidArgumentError(
                f"frame {i} ({type(frame).__name__}) is not a C-contiguous buffer: {exc}"
            ) from None
        views.append(view)
        total += view.nbytes
    return views, total


def encode_inline(views: list[memoryview], flags: int = 0) -> bytes:
    """One gRPC message holding the whole tensorwire message."""
    n = len(views)
    head = _HEADER.pack(INLINE, flags, 0, n) + _lengths_struct(n).pack(*map(len, views))
    return b"".join([head, *views])


def encode_pending(ticket: bytes) -> bytes:
    return _HEADER.pack(PENDING, 0, 0, 0) + ticket


def encode_bulk(views: list[memoryview], ticket: bytes, flags: int = 0) -> bytes:
    n = len(views)
    return _HEADER.pack(BULK, flags, 0, n) + _lengths_struct(n).pack(*map(len, views)) + ticket


def read_bulk(message: bytes) -> tuple[int, tuple[int, ...], bytes]:
    """``(flags, frame lengths, ticket)`` of a BULK message; ``DataLossError`` if bad."""
    kind, flags, lengths, end = read_manifest(message)
    if kind != BULK or len(message) != end + TICKET_BYTES:
        raise errors.DataLossError("malformed bulk descriptor")
    return flags, lengths, bytes(message[end:])


def manifest_size(nframes: int) -> int:
    return _HEADER_SIZE + 8 * nframes


def encode(
    views: list[memoryview], total: int, *, inline_bytes: int, chunk_bytes: int, flags: int = 0
) -> Iterator[bytes]:
    """The gRPC messages of one tensorwire message: one INLINE, or a manifest and chunks."""
    n = len(views)
    if total + 8 * n <= inline_bytes:
        yield encode_inline(views, flags)
        return
    yield _HEADER.pack(CHUNKED, flags, 0, n) + _lengths_struct(n).pack(*map(len, views))
    # Gather pieces of consecutive frames into chunks of exactly chunk_bytes (the last may
    # be shorter). bytes.join is the one copy the sender makes; gRPC needs bytes objects.
    pieces: list[memoryview] = []
    size = 0
    for view in views:
        offset = 0
        length = len(view)
        while offset < length:
            take = min(chunk_bytes - size, length - offset)
            pieces.append(view[offset : offset + take])
            size += take
            offset += take
            if size == chunk_bytes:
                yield b"".join(pieces)
                pieces = []
                size = 0
    if pieces:
        yield b"".join(pieces)


def read_manifest(message: bytes) -> tuple[int, int, tuple[int, ...], int]:
    """``(kind, flags, frame lengths, offset of what follows)``; ``DataLossError`` if bad."""
    size = len(message)
    if size < _HEADER_SIZE:
        raise errors.DataLossError(
            f"tensorwire message header is {size} bytes, expected at least {_HEADER_SIZE}"
        )
    kind, flags, _, n = _HEADER.unpack_from(message, 0)
    if kind not in _KINDS:
        raise errors.DataLossError(f"unknown tensorwire message kind {kind}")
    check_frames(n)
    end = _HEADER_SIZE + 8 * n
    if end > size:
        raise errors.DataLossError(
            f"tensorwire message announces {n} frames but is only {size} bytes long"
        )
    lengths = _lengths_struct(n).unpack_from(message, _HEADER_SIZE) if n else ()
    return kind, flags, lengths, end


def _aligned_layout(lengths: Sequence[int]) -> tuple[list[int], int]:
    offsets = []
    position = 0
    for length in lengths:
        offsets.append(position)
        position += (length + ALIGNMENT - 1) & ~(ALIGNMENT - 1)
    return offsets, position


def _address(array: Any) -> int:
    # ctypes.c_char.from_buffer is several times cheaper than ndarray.ctypes.data.
    return ctypes.addressof(ctypes.c_char.from_buffer(array))


def _aligned(nbytes: int, alignment: int = ALIGNMENT) -> memoryview:
    """``nbytes`` of writable memory at an ``alignment``-aligned address (recycled when
    large)."""
    try:
        raw = pool.default_pool.take(nbytes + alignment)
    except (MemoryError, ValueError) as exc:
        raise errors.ResourceExhaustedError(
            f"cannot allocate {nbytes} bytes to receive a message: {exc}"
        ) from None
    skew = (-_address(raw)) % alignment
    return memoryview(raw)[skew : skew + nbytes]  # type: ignore[arg-type]  # ndarray buffer


def _allocate(lengths: Sequence[int]) -> list[memoryview]:
    """Writable frames, each at a 64-byte aligned address, all allocated up front.

    Each frame of ``OWN_BUFFER_BYTES`` or more gets a buffer of its own, so a tensor
    the caller keeps alive pins only its own memory; the smaller frames share one buffer.
    """
    frames: list[memoryview | None] = [None] * len(lengths)
    small = [i for i, length in enumerate(lengths) if length < OWN_BUFFER_BYTES]
    if small:
        offsets, size = _aligned_layout([lengths[i] for i in small])
        shared = _aligned(size)
        for i, offset in zip(small, offsets, strict=True):
            frames[i] = shared[offset : offset + lengths[i]]
    for i, length in enumerate(lengths):
        if length >= OWN_BUFFER_BYTES:
            frames[i] = _aligned(length, PAGE)
    return frames  # type: ignore[return-value]


def allocate(lengths: Sequence[int]) -> list[memoryview]:
    """Writable frames to receive a message with these frame lengths into, laid out as
    ``decode_inline`` lays out frames it copies (see the module docstring)."""
    if sum(lengths) <= SMALL_MESSAGE_BYTES:
        return [memoryview(bytearray(length)) for length in lengths]
    return _allocate(lengths)


def decode_inline(message: bytes, max_bytes: int | None = None) -> list[memoryview]:
    """Frames of an INLINE message (copied into an aligned, writable buffer)."""
    kind, _, lengths, start = read_manifest(message)
    if kind != INLINE:
        raise errors.DataLossError(f"expected an inline tensorwire message, got kind {kind}")
    total = check_size(lengths, max_bytes)
    if start + total != len(message):
        raise errors.DataLossError(
            f"tensorwire message announces {total} payload bytes but carries {len(message) - start}"
        )
    if not lengths:
        return []
    source = memoryview(message)
    if total <= SMALL_MESSAGE_BYTES:
        # A bytearray per frame is several times cheaper than an aligned buffer, and
        # malloc's 16-byte alignment covers every NumPy dtype.
        small = []
        for length in lengths:
            end = start + length
            small.append(memoryview(bytearray(source[start:end])))
            start = end
        return small
    frames = _allocate(lengths)
    for frame in frames:
        end = start + len(frame)
        frame[:] = source[start:end]
        start = end
    return frames


class Reassembler:
    """Turns a sequence of received gRPC messages back into tensorwire messages.

    Feed every received gRPC message to ``feed``; it returns a complete list of
    frames when one finishes, else None. ``finish`` checks nothing is half done.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._frames: list[memoryview] | None = None  # frames of the message in progress
        self._index = 0  # frame being filled
        self._filled = 0  # bytes of that frame already written
        self._missing = 0  # payload bytes still to come
        self.flags = 0  # flags of the last manifest seen

    @property
    def idle(self) -> bool:
        return self._frames is None

    def feed(self, message: bytes) -> list[memoryview] | None:
        if self._frames is None:
            return self._start(message)
        return self._fill(message)

    def _start(self, message: bytes) -> list[memoryview] | None:
        kind = message[0] if message else 0
        if kind == INLINE:
            frames = decode_inline(message, self._max_bytes)  # checks the header's size
            self.flags = message[1]
            return frames
        kind, flags, lengths, end = read_manifest(message)
        if kind != CHUNKED:
            raise errors.DataLossError(f"expected a tensorwire manifest, got kind {kind}")
        if end != len(message):
            raise errors.DataLossError("a chunked tensorwire manifest carries trailing bytes")
        self.flags = flags
        total = check_size(lengths, self._max_bytes)
        frames = _allocate(lengths)
        if total == 0:
            return frames
        self._frames = frames
        self._index = 0
        self._filled = 0
        self._missing = total
        self._skip_empty()
        return None

    def _skip_empty(self) -> None:
        # Move past empty frames so the next copy lands in a frame with room.
        frames = self._frames
        assert frames is not None
        while self._index < len(frames) and len(frames[self._index]) == 0:
            self._index += 1

    def _fill(self, chunk: bytes) -> list[memoryview] | None:
        size = len(chunk)
        if size > self._missing:
            raise errors.DataLossError(
                f"received {size - self._missing} bytes more than the message announced"
            )
        if size == 0:
            raise errors.DataLossError("received an empty chunk")
        frames = self._frames
        assert frames is not None
        source = memoryview(chunk)
        position = 0
        while position < size:
            frame = frames[self._index]
            take = min(len(frame) - self._filled, size - position)
            frame[self._filled : self._filled + take] = source[position : position + take]
            position += take
            self._filled += take
            if self._filled == len(frame):
                self._index += 1
                self._filled = 0
                self._skip_empty()
        self._missing -= size
        if self._missing:
            return None
        self._frames = None
        return frames

    def finish(self) -> None:
        """Raise ``DataLossError`` if the stream ended inside a message."""
        if self._frames is not None:
            missing = self._missing
            self._frames = None
            raise errors.DataLossError(
                f"the stream ended {missing} bytes before the end of a message"
            )


def encode_metadata(metadata: Sequence[tuple[str, str]]) -> bytes:
    """Call metadata as movers carry it beside a call: ``key NUL value NUL`` per pair.

    Examples:
        >>> from tensorwire.transport.kit.framing import decode_metadata, encode_metadata
        >>> decode_metadata(encode_metadata([("k", "v")]), "a call")
        {'k': 'v'}
    """
    return "".join(f"{k}\0{v}\0" for k, v in metadata).encode()


def decode_metadata(data: bytes, what: str) -> dict[str, str]:
    """The metadata ``encode_metadata`` made.

    Args:
      data: the encoded metadata.
      what: names the carrier in an error (``"a bulk call"``).

    Raises:
      DataLossError: ``data`` is not UTF-8 or not pairs.
    """
    try:
        parts = bytes(data).decode().split("\0")
    except UnicodeDecodeError as exc:
        raise errors.DataLossError(f"metadata of {what} is not UTF-8: {exc}") from None
    if len(parts) % 2 != 1 or parts[-1]:
        raise errors.DataLossError(f"malformed metadata in {what}")
    return dict(zip(parts[0:-1:2], parts[1:-1:2], strict=True))
