"""Every validation of a received frame: the error class and what the message says.

Frames are built here by hand from the documented layout (not by the codec), so these tests
also pin the format description in ``tensorwire.codec``.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
from tensorwire.errors import DataLossError, InvalidArgumentError

F32 = 1  # DT_FLOAT


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def array_rec(code: int, shape: tuple[int, ...], itemsize: int | None = None) -> bytes:
    rec = bytes([0x0D, code])
    if itemsize is not None:
        rec += struct.pack("<I", itemsize)
    return rec + bytes([len(shape)]) + b"".join(struct.pack("<Q", d) for d in shape)


def frame(
    tree: bytes,
    payloads: tuple[bytes, ...] = (),
    *,
    magic=b"TWCD",
    version=1,
    flags=1,
    reserved=0,
    header_len=None,
    n=None,
    offsets=None,
    sizes=None,
    tail=b"",
) -> bytes:
    """A dumps-style frame: prefix, table, structure, 64-aligned payloads, optional tail."""
    count = len(payloads) if n is None else n
    hl = 16 + 16 * len(payloads) + len(tree)
    pos, offs = hl, []
    for p in payloads:
        pos = (pos + 63) // 64 * 64
        offs.append(pos)
        pos += len(p)
    offs = offsets or offs
    sizes = sizes or [len(p) for p in payloads]
    out = bytearray(
        struct.pack(
            "<4sBBHII",
            magic,
            version,
            flags,
            reserved,
            hl if header_len is None else header_len,
            count,
        )
    )
    for o, z in zip(offs, sizes, strict=True):
        out += struct.pack("<QQ", o, z)
    out += tree
    for o, p in zip(offs, payloads, strict=True):
        out += bytes(max(0, o - len(out))) + p
    return bytes(out) + tail


def split(tree: bytes, payloads: tuple[bytes, ...]) -> list[bytes]:
    """An encode-style message: header frame (offsets 0), then one frame per payload."""
    hl = 16 + 16 * len(payloads) + len(tree)
    head = bytearray(struct.pack("<4sBBHII", b"TWCD", 1, 0, 0, hl, len(payloads)))
    for p in payloads:
        head += struct.pack("<QQ", 0, len(p))
    return [bytes(head + tree), *payloads]


GOOD_ARRAY = (array_rec(F32, (2,)), (np.array([1.0, 2.0], np.float32).tobytes(),))


def test_hand_built_frames_decode(codec):
    """The helpers here follow the documented format: a good frame decodes."""
    out = codec.loads(frame(*GOOD_ARRAY))
    assert out.tolist() == [1.0, 2.0]
    assert codec.dumps(np.array([1.0, 2.0], np.float32)) == frame(*GOOD_ARRAY)
    assert codec.decode(split(*GOOD_ARRAY)).tolist() == [1.0, 2.0]


def bad(codec, data, exc, match):
    with pytest.raises(exc, match=match):
        if isinstance(data, list):
            codec.decode(data)
        else:
            codec.loads(data)


def test_short_frame(codec):
    bad(codec, b"TWC", DataLossError, "3 bytes is shorter than the 16-byte codec header")
    bad(codec, b"", DataLossError, "shorter than")


def test_bad_magic(codec):
    bad(codec, frame(b"\x00", magic=b"PK\x03\x04"), DataLossError, r"bad magic b'PK\\x03\\x04'")


def test_other_version(codec):
    bad(
        codec,
        frame(b"\x00", version=3),
        InvalidArgumentError,
        "unsupported codec format version 3 .this build reads 1, 2",
    )


def test_tensor_record_in_a_version_1_frame_is_data_loss(codec):
    # T_TENSOR exists from version 2 on; in a version-1 frame it is an unknown tag.
    rec = b"\x0f\x01" + (0).to_bytes(4, "little") + array_rec(1, (1,))
    bad(codec, frame(rec, (bytes(4),), version=1), DataLossError, "unknown tag 0x0f")


def test_tensor_record_without_an_array_is_data_loss(codec):
    rec = b"\x0f\x01" + (0).to_bytes(4, "little") + b"\x00"
    bad(codec, frame(rec, version=2), DataLossError, "tensor record .* does not hold an array")


def test_raw_dtype_with_zero_itemsize_is_data_loss(codec):
    rec = b"\x0f\x01" + (0).to_bytes(4, "little") + array_rec(250, (1,), itemsize=0)
    bad(codec, frame(rec, (b"",), version=2), DataLossError, "raw dtype with itemsize 0")


def test_unknown_flags(codec):
    bad(codec, frame(b"\x00", flags=0x81), InvalidArgumentError, "unknown codec flags 0x81")


def test_reserved_bytes(codec):
    bad(codec, frame(b"\x00", reserved=1), DataLossError, "reserved header bytes are not zero")


def test_header_length_past_the_frame(codec):
    bad(
        codec,
        frame(b"\x00", header_len=1000),
        DataLossError,
        "header length 1000 exceeds the frame's 17 bytes",
    )


def test_header_length_below_the_prefix(codec):
    bad(codec, frame(b"\x00", header_len=3), DataLossError, "does not fit in a header of 3")


def test_payload_table_larger_than_the_header(codec):
    bad(codec, frame(b"\x00", n=5), DataLossError, "payload table of 5 entries does not fit")


def test_misaligned_payload_offset(codec):
    tree, payloads = GOOD_ARRAY
    bad(
        codec,
        frame(tree, payloads, offsets=[40]),
        DataLossError,
        "payload 0 at offset 40, expected the aligned offset 64",
    )


def test_truncated_payload(codec):
    good = frame(*GOOD_ARRAY)
    bad(
        codec,
        good[:-1],
        DataLossError,
        "payload 0 of 8 bytes at offset 64 runs past the frame's 71",
    )


def test_huge_payload_size(codec):
    tree, payloads = GOOD_ARRAY
    bad(codec, frame(tree, payloads, sizes=[2**64 - 1]), DataLossError, "runs past")


def test_trailing_bytes_after_the_payloads(codec):
    bad(
        codec,
        frame(*GOOD_ARRAY, tail=b"junk"),
        DataLossError,
        "4 trailing bytes after the last payload",
    )


def test_trailing_bytes_after_a_payloadless_header(codec):
    bad(codec, frame(b"\x00", tail=b"xy"), DataLossError, "2 trailing bytes after the last payload")
    bad(
        codec,
        frame(b"\x00", flags=0, tail=b"xy"),
        DataLossError,
        "2 trailing bytes after the header",
    )


def test_trailing_bytes_inside_the_header(codec):
    bad(codec, frame(b"\x00\x00"), DataLossError, "1 trailing bytes after the structure")


def test_unknown_tag(codec):
    bad(codec, frame(b"\x7f"), DataLossError, "unknown tag 0x7f at offset 16")


def test_empty_structure(codec):
    bad(codec, frame(b""), DataLossError, "header truncated: tag needs 1 bytes")


def test_unknown_dtype_code(codec):
    bad(
        codec,
        frame(array_rec(99, (1,)), (b"\x00",)),
        InvalidArgumentError,
        "unsupported dtype code 99",
    )


def test_shape_that_does_not_match_the_payload(codec):
    bad(
        codec,
        frame(array_rec(F32, (5,)), (bytes(16),)),
        DataLossError,
        r"array 0 of shape \(5,\) and dtype float32 needs 20 bytes but its payload has 16",
    )


def test_shape_product_overflow(codec):
    bad(codec, frame(array_rec(F32, (2**62, 2**62)), (bytes(16),)), DataLossError, "too big")
    bad(codec, frame(array_rec(F32, (2**64 - 1,)), (bytes(16),)), DataLossError, "too big")
    bad(codec, frame(array_rec(F32, (0, 2**63)), (b"",)), DataLossError, "too big")


def test_too_many_dimensions(codec):
    bad(
        codec,
        frame(array_rec(F32, (1,) * 33), (bytes(4),)),
        InvalidArgumentError,
        "array of 33 dimensions .at most 32",
    )


def test_truncated_shape(codec):
    bad(
        codec,
        frame(array_rec(F32, (1, 1))[:-3], (bytes(4),)),
        DataLossError,
        "shape needs 16 bytes",
    )


def test_bad_string_itemsizes(codec):
    bad(
        codec,
        frame(array_rec(240, (1,), itemsize=6), (bytes(6),)),
        DataLossError,
        "unicode dtype itemsize 6 is not a multiple of 4",
    )
    bad(
        codec,
        frame(array_rec(7, (1,), itemsize=0), (b"",)),
        DataLossError,
        "string dtype with itemsize 0",
    )


def test_more_arrays_than_payloads(codec):
    bad(
        codec,
        frame(b"\x09\x02\x00\x00\x00" + array_rec(F32, (1,)) * 2, (bytes(4),)),
        DataLossError,
        r"array 1 has no payload \(the table lists 1\)",
    )


def test_more_payloads_than_arrays(codec):
    bad(
        codec,
        frame(b"\x00", (bytes(4),)),
        DataLossError,
        "payload table lists 1 payloads but the structure uses 0",
    )


def test_nesting_beyond_the_limit(codec):
    deep = b"\x09\x01\x00\x00\x00" * 101 + b"\x00"
    bad(codec, frame(deep), InvalidArgumentError, "structure nested deeper than 100 levels")
    ok = b"\x09\x01\x00\x00\x00" * 100 + b"\x00"
    assert codec.loads(frame(ok)) is not None


def test_string_length_past_the_header(codec):
    bad(
        codec,
        frame(b"\x07" + struct.pack("<I", 50) + b"abc"),
        DataLossError,
        "header truncated: str needs 50 bytes at offset 21, 3 left",
    )


def test_invalid_utf8(codec):
    bad(
        codec,
        frame(b"\x07" + struct.pack("<I", 2) + b"\xc3\x28"),
        DataLossError,
        "str at offset 21 is not valid UTF-8",
    )


def test_counts_larger_than_the_header(codec):
    bad(
        codec,
        frame(b"\x09" + struct.pack("<I", 2**32 - 1)),
        DataLossError,
        "list of 4294967295 items cannot fit",
    )
    bad(
        codec,
        frame(b"\x0b" + struct.pack("<I", 3) + b"\x00" * 5),
        DataLossError,
        "dict of 3 items cannot fit",
    )


def test_unhashable_dict_key(codec):
    tree = b"\x0b\x01\x00\x00\x00" + b"\x09\x00\x00\x00\x00" + b"\x00"
    bad(codec, frame(tree), DataLossError, "dict key of type list is not hashable")


def test_invalid_namedtuple_fields(codec):
    tree = b"\x0c" + s("m") + s("T") + struct.pack("<I", 1) + s("not an identifier") + b"\x00"
    bad(codec, frame(tree), DataLossError, "namedtuple m:T with fields .* is not valid")


def test_truncated_scalars(codec):
    bad(codec, frame(b"\x05\x00\x00"), DataLossError, "float needs 8 bytes")
    bad(codec, frame(b"\x0e\x02\x00"), DataLossError, "scalar needs 8 bytes")
    bad(codec, frame(b"\x04" + struct.pack("<I", 9) + b"\x01"), DataLossError, "int needs 9 bytes")


def test_split_frame_count_mismatch(codec):
    frames = split(*GOOD_ARRAY)
    bad(codec, frames[:1], DataLossError, "header lists 1 payloads but 0 payload frames came")
    bad(codec, frames + [b"x"], DataLossError, "header lists 1 payloads but 2 payload frames came")


def test_split_payload_of_the_wrong_length(codec):
    head, payload = split(*GOOD_ARRAY)
    bad(
        codec,
        [head, payload[:-1]],
        DataLossError,
        "payload 0 should have 8 bytes but its frame has 7",
    )


def test_split_header_with_an_offset(codec):
    head, payload = split(*GOOD_ARRAY)
    head = head[:16] + struct.pack("<Q", 64) + head[24:]
    bad(codec, [head, payload], DataLossError, "payload 0 has offset 64 in a split message")


def test_split_header_given_to_loads(codec):
    head, _ = split(*GOOD_ARRAY)
    bad(codec, head, InvalidArgumentError, "split header with 1 payload frames; use decode")


def test_packed_frame_with_extra_frames(codec):
    bad(codec, [frame(*GOOD_ARRAY), b""], DataLossError, "packed frame followed by 1 extra")


def test_no_frames(codec):
    bad(codec, [], DataLossError, "no frames to decode")


def test_not_a_buffer(codec):
    with pytest.raises(TypeError, match="needs a bytes-like frame, not str"):
        codec.loads("TWCD")
    with pytest.raises(TypeError, match="needs a list of frames, not int"):
        codec.decode(3)


def test_non_contiguous_buffer(codec):
    buf = np.frombuffer(frame(b"\x00") * 2, np.uint8)[::2]
    bad(codec, buf, InvalidArgumentError, "not C-contiguous")


BFLOAT16_WITHOUT_ML_DTYPES = """
import sys
sys.modules["ml_dtypes"] = None  # as if not installed
from tensorwire import codec
from tensorwire.errors import InvalidArgumentError
impl = codec.codec_c if sys.argv[1] == "c" else codec.codec_py
frame = bytes.fromhex(sys.argv[2])
try:
    impl.loads(frame)
except InvalidArgumentError as exc:
    print(exc)
"""


def test_bfloat16_without_ml_dtypes_is_invalid_argument(codec):
    name = "c" if codec.__name__.endswith("_c") else "py"
    data = frame(array_rec(14, (1,)), (bytes(2),))
    proc = subprocess.run(
        [sys.executable, "-c", BFLOAT16_WITHOUT_ML_DTYPES, name, data.hex()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bfloat16 tensor but ml_dtypes is not installed" in proc.stdout


def test_string_itemsize_beyond_numpy(codec):
    bad(
        codec,
        frame(array_rec(7, (1,), itemsize=2**32 - 1), (b"",)),
        DataLossError,
        "string dtype with itemsize 4294967295",
    )


def test_unicode_scalar_beyond_the_last_code_point(codec):
    tree = b"\x0e\xf0" + struct.pack("<I", 4) + struct.pack("<I", 0x110000)
    bad(codec, frame(tree), DataLossError, "code point beyond U\\+10FFFF")
