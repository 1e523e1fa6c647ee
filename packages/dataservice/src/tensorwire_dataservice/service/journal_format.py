"""How the dispatcher's journal and snapshot files are framed on disk (format version 2).

This module only encodes and checks bytes; ``journal`` owns the files.

File header (20 bytes, integers little-endian)::

    magic       8 bytes  b"TWJRNL\\x00\\x02" (journal) or b"TWSNAP\\x00\\x02" (snapshot)
    generation  u64      the generation in the file name, checked on read
    header_crc  u32      CRC-32 of the 16 bytes before

then frames, back to back::

    length       u32     payload bytes, at most MAX_RECORD_BYTES (2 GiB) in a journal
    payload_crc  u32     CRC-32 of the payload
    header_crc   u32     CRC-32 of the 8 bytes before
    payload              ``tensorwire.codec.dumps`` of one value
    end          4 bytes b"TWE\\x01", never zero

Torn tail or corruption
-----------------------
A crash can leave the last write torn: a prefix of it, possibly followed by zeros. Because
the header has its own checksum, a length is trusted only when it is intact, and because every
frame ends with non-zero bytes, a frame that was written completely always has non-zero data
up to its last byte. So a frame that fails a check at offset ``o`` is a **torn tail** exactly
when the file holds nothing but zeros from some point inside that frame (inside its header,
when the header itself is damaged) to the end of the file: that frame was never fully written,
nothing after it was ever written, and no caller was told it was durable. Anything else (a
damaged frame followed by other data, or a complete frame whose checksum fails) is
**corruption**: ``scan`` raises ``DataLossError`` naming the file and offset, and nothing is
cut. The one undecidable case is corruption that turns the last bytes of the last frame into
zeros; it is read as a torn write, which it is indistinguishable from.

Version 1 (``journal.log`` before snapshots existed) framed records as ``u32 length, u32
crc32(payload), payload``. ``scan_v1`` reads it with the same zero rule, except that a
length running past the end of the file has no checksum of its own and is taken as torn.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

from tensorwire import errors

__all__ = [
    "JOURNAL_MAGIC",
    "SNAPSHOT_MAGIC",
    "MAX_RECORD_BYTES",
    "MAX_FRAME_BYTES",
    "FILE_HEADER_SIZE",
    "Frame",
    "Scan",
    "check_record_size",
    "file_header",
    "frame",
    "read_file_header",
    "scan",
    "scan_v1",
]

JOURNAL_MAGIC = b"TWJRNL\x00\x02"
SNAPSHOT_MAGIC = b"TWSNAP\x00\x02"
# A journal record is refused above this; a snapshot frame (a chunk of items, each of which
# was once a journal record) may use the whole range of the length field.
MAX_RECORD_BYTES = 1 << 31
MAX_FRAME_BYTES = (1 << 32) - 1

_FILE_HEADER = struct.Struct("<8sQI")
_FRAME_HEADER = struct.Struct("<III")
_V1_HEADER = struct.Struct("<II")
_END = b"TWE\x01"
FILE_HEADER_SIZE = _FILE_HEADER.size
FRAME_OVERHEAD = _FRAME_HEADER.size + len(_END)


def check_record_size(nbytes: int, limit: int | None = None) -> None:
    """Raise ``ResourceExhaustedError`` if a payload of ``nbytes`` may not be framed."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    if nbytes > limit:
        raise errors.ResourceExhaustedError(
            f"the dispatcher's journal cannot hold a record of {nbytes} bytes: the limit is "
            f"{limit} bytes; nothing was journaled or changed (a registered dataset definition "
            "must stay below the limit)"
        )


def frame(payload: bytes | memoryview) -> bytes:
    """One frame around ``payload`` (whose size the caller has checked)."""
    head = struct.pack("<II", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + bytes(payload) + _END


def file_header(magic: bytes, generation: int) -> bytes:
    head = struct.pack("<8sQ", magic, generation)
    return head + struct.pack("<I", zlib.crc32(head))


def read_file_header(data: bytes, path: str, magic: bytes) -> int:
    """The generation in ``data``'s file header; ``DataLossError`` if it is not one."""
    if len(data) < _FILE_HEADER.size:
        raise errors.DataLossError(
            f"{path}: {len(data)} bytes is too short for a file header; the file is damaged"
        )
    found, generation, crc = _FILE_HEADER.unpack_from(data, 0)
    if found != magic or zlib.crc32(data[:16]) != crc:
        raise errors.DataLossError(
            f"{path}: bad file header at byte 0 (expected magic {magic!r}); the file is damaged"
        )
    return int(generation)


@dataclasses.dataclass(frozen=True)
class Frame:
    offset: int  # where the frame starts in its file
    payload: memoryview


@dataclasses.dataclass(frozen=True)
class Scan:
    frames: list[Frame]
    end: int  # where the last whole frame ends: the file's valid length
    torn: str  # why the bytes after ``end`` were judged a torn write ("" when there are none)


def scan(data: bytes, path: str, start: int = FILE_HEADER_SIZE) -> Scan:
    """The frames of ``data`` from ``start``; a torn tail is reported, corruption raised."""
    view = memoryview(data)
    frames: list[Frame] = []
    offset = start
    size = len(data)
    while offset < size:
        problem, extent = _check_frame(data, view, offset)
        if problem:
            _raise_unless_torn(data, path, offset, extent, problem)
            return Scan(frames, offset, f"{problem} at byte {offset}")
        length = _FRAME_HEADER.unpack_from(data, offset)[0]
        body = offset + _FRAME_HEADER.size
        frames.append(Frame(offset, view[body : body + length]))
        offset = body + length + len(_END)
    return Scan(frames, offset, "")


def _check_frame(data: bytes, view: memoryview, offset: int) -> tuple[str, int]:
    """("", 0) for a sound frame, else (what is wrong, where the frame would have ended)."""
    header_end = offset + _FRAME_HEADER.size
    if header_end > len(data):
        return "incomplete frame header", header_end
    length, payload_crc, header_crc = _FRAME_HEADER.unpack_from(data, offset)
    if zlib.crc32(view[offset : offset + 8]) != header_crc:
        return "frame header checksum mismatch", header_end
    end = header_end + length + len(_END)
    if end > len(data):
        return f"frame of {length} bytes runs past the end of the file", end
    if data[end - len(_END) : end] != _END:
        return "frame end marker missing", end
    if zlib.crc32(view[header_end : header_end + length]) != payload_crc:
        return "payload checksum mismatch", end
    return "", 0


def _raise_unless_torn(data: bytes, path: str, offset: int, extent: int, problem: str) -> None:
    # Torn: from some point inside the failing frame to the end of the file, only zeros.
    nonzero_end = len(data.rstrip(b"\x00"))
    if nonzero_end < extent:
        return
    raise errors.DataLossError(
        f"{path} is corrupt at byte {offset}: {problem}, and data follows that a torn write "
        f"cannot explain ({len(data)} bytes in the file). The dispatcher will not start from "
        "a damaged journal, since dropping records could hand out their ids again: restore "
        "the work_dir from a backup, or move it away to start empty"
    )


def scan_v1(data: bytes, path: str) -> Scan:
    """The records of a version-1 ``journal.log`` (no file header, 8-byte frame header)."""
    view = memoryview(data)
    frames: list[Frame] = []
    offset = 0
    size = len(data)
    while offset < size:
        body = offset + _V1_HEADER.size
        if body > size:
            return Scan(frames, offset, f"incomplete record header at byte {offset}")
        length, crc = _V1_HEADER.unpack_from(data, offset)
        if length > MAX_RECORD_BYTES or body + length > size:
            # Unprotected length: indistinguishable from a torn write.
            return Scan(frames, offset, f"record runs past the end of the file at byte {offset}")
        if zlib.crc32(view[body : body + length]) != crc:
            problem = "checksum mismatch"
            _raise_unless_torn(data, path, offset, body + length, problem)
            return Scan(frames, offset, f"{problem} at byte {offset}")
        frames.append(Frame(offset, view[body : body + length]))
        offset = body + length
    return Scan(frames, offset, "")
