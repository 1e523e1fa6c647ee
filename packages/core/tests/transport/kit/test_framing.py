"""The byte layout of tensorwire messages (kit.framing): round trips, alignment, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport.kit import framing


def _frames(*sizes: int) -> list[bytes]:
    return [bytes((i + j) % 251 for j in range(n)) for i, n in enumerate(sizes)]


def _roundtrip(frames, *, inline_bytes: int, chunk_bytes: int, flags: int = 0):
    views, total = framing.as_byte_views(frames)
    messages = list(
        framing.encode(
            views, total, inline_bytes=inline_bytes, chunk_bytes=chunk_bytes, flags=flags
        )
    )
    reassembler = framing.Reassembler()
    results = [r for r in map(reassembler.feed, messages) if r is not None]
    reassembler.finish()
    return messages, results, reassembler


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64, 1000])
@pytest.mark.parametrize("sizes", [(), (0,), (0, 0), (5,), (0, 10, 0, 3, 0), (100, 1, 257)])
def test_chunked_round_trip(sizes: tuple[int, ...], chunk_bytes: int) -> None:
    frames = _frames(*sizes)
    messages, results, _ = _roundtrip(frames, inline_bytes=0, chunk_bytes=chunk_bytes)
    assert [[bytes(f) for f in r] for r in results] == [frames]
    # An empty message fits any inline limit; everything else is chunked at limit 0.
    assert messages[0][0] == (framing.CHUNKED if sizes else framing.INLINE)
    assert all(len(m) <= chunk_bytes for m in messages[1:])
    assert sum(map(len, messages[1:])) == sum(sizes)


def test_small_message_is_one_inline_grpc_message() -> None:
    frames = _frames(3, 0, 4)
    messages, results, _ = _roundtrip(frames, inline_bytes=1000, chunk_bytes=10)
    assert len(messages) == 1 and messages[0][0] == framing.INLINE
    assert [bytes(f) for f in results[0]] == frames


def test_inline_limit_counts_payload_and_lengths() -> None:
    views, total = framing.as_byte_views(_frames(10, 10))  # 20 bytes + 16 bytes of lengths

    def kind(inline_bytes: int) -> int:
        encoded = framing.encode(views, total, inline_bytes=inline_bytes, chunk_bytes=8)
        return next(iter(encoded))[0]

    assert kind(36) == framing.INLINE
    assert kind(35) == framing.CHUNKED


@pytest.mark.parametrize("inline", [False, True])
@pytest.mark.parametrize("sizes", [(1, 3, 0, 100, 65), (0, framing.SMALL_MESSAGE_BYTES, 5)])
def test_received_frames_are_aligned_writable_memoryviews(sizes, inline: bool) -> None:
    frames = _frames(*sizes)
    inline_bytes = 10 * sum(sizes) + 100 if inline else 0
    _, (got,), _ = _roundtrip(frames, inline_bytes=inline_bytes, chunk_bytes=7777)
    small = inline and sum(sizes) <= framing.SMALL_MESSAGE_BYTES
    alignment = 16 if small else framing.ALIGNMENT
    assert [bytes(f) for f in got] == frames
    for frame in got:
        assert isinstance(frame, memoryview) and not frame.readonly
        if frame.nbytes:
            assert np.frombuffer(frame, np.uint8).ctypes.data % alignment == 0


def test_flags_travel_with_the_manifest() -> None:
    for inline_bytes in (0, 10_000):
        _, _, reassembler = _roundtrip(
            _frames(4), inline_bytes=inline_bytes, chunk_bytes=2, flags=framing.FLAG_STREAM
        )
        assert reassembler.flags == framing.FLAG_STREAM


def test_several_messages_in_one_stream() -> None:
    first, second = _frames(5, 9), _frames(0, 2)
    views1, total1 = framing.as_byte_views(first)
    views2, total2 = framing.as_byte_views(second)
    stream = [
        *framing.encode(views1, total1, inline_bytes=0, chunk_bytes=4),
        *framing.encode(views2, total2, inline_bytes=100, chunk_bytes=4),
        *framing.encode([], 0, inline_bytes=0, chunk_bytes=4),
    ]
    reassembler = framing.Reassembler()
    results = [r for r in map(reassembler.feed, stream) if r is not None]
    assert [[bytes(f) for f in r] for r in results] == [first, second, []]


def test_non_byte_buffers_are_flattened() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    views, total = framing.as_byte_views([array, bytearray(b"ab")])
    assert total == 26 and all(v.format == "B" and v.ndim == 1 for v in views)


@pytest.mark.parametrize("bad", [b"bytes", "text", memoryview(b"mv")])
def test_a_single_buffer_is_not_a_message(bad) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="list of frames"):
        framing.as_byte_views(bad)


def test_non_contiguous_frame_is_invalid() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="frame 1"):
        framing.as_byte_views([b"ok", np.arange(10, dtype=np.uint8)[::2]])


def test_pending_message_carries_its_ticket() -> None:
    ticket = bytes(range(framing.TICKET_BYTES))
    message = framing.encode_pending(ticket)
    assert message[0] == framing.PENDING and message[8:] == ticket


@pytest.mark.parametrize(
    "message, match",
    [
        (b"", "header"),
        (b"\x01\x00\x00\x00", "header"),
        (struct.pack("<BBHI", 9, 0, 0, 0), "kind 9"),
        (struct.pack("<BBHI", framing.INLINE, 0, 0, 1000), "1000 frames"),
        (struct.pack("<BBHIQ", framing.INLINE, 0, 0, 1, 10) + b"short", "10 payload bytes"),
        (struct.pack("<BBHIQ", framing.INLINE, 0, 0, 1, 1) + b"long!", "1 payload bytes"),
    ],
)
def test_bad_inline_messages_are_data_loss(message: bytes, match: str) -> None:
    with pytest.raises(errors.DataLossError, match=match):
        framing.decode_inline(message)


def test_chunk_overflow_is_data_loss() -> None:
    reassembler = framing.Reassembler()
    assert reassembler.feed(struct.pack("<BBHIQ", framing.CHUNKED, 0, 0, 1, 4)) is None
    with pytest.raises(errors.DataLossError, match="more than the message announced"):
        reassembler.feed(b"too long")


def test_stream_ending_inside_a_message_is_data_loss() -> None:
    reassembler = framing.Reassembler()
    reassembler.feed(struct.pack("<BBHIQ", framing.CHUNKED, 0, 0, 1, 4))
    reassembler.feed(b"ab")
    with pytest.raises(errors.DataLossError, match="2 bytes before the end"):
        reassembler.finish()


@pytest.mark.parametrize("message", [b"\x01", b"\x01\x00\x00"], ids=["1-byte", "3-byte"])
def test_a_first_chunk_too_short_for_an_inline_header_is_data_loss(message: bytes) -> None:
    # Found by the fuzz: an IndexError here ended the gRPC call as UNKNOWN, with a traceback.
    with pytest.raises(errors.DataLossError, match="header is"):
        framing.Reassembler().feed(message)


def test_announced_size_above_the_limit_is_refused_before_allocating() -> None:
    reassembler = framing.Reassembler(max_bytes=1000)
    with pytest.raises(errors.ResourceExhaustedError, match="1000"):
        reassembler.feed(struct.pack("<BBHIQ", framing.CHUNKED, 0, 0, 1, 1 << 50))


def test_an_impossible_announced_size_is_resource_exhausted() -> None:
    reassembler = framing.Reassembler()
    with pytest.raises(errors.ResourceExhaustedError, match="cannot allocate"):
        reassembler.feed(struct.pack("<BBHIQ", framing.CHUNKED, 0, 0, 1, 1 << 60))


def test_large_frames_get_buffers_of_their_own() -> None:
    big = framing.OWN_BUFFER_BYTES
    frames = _frames(3, big, 5, big + 1, 0)
    _, (got,), _ = _roundtrip(frames, inline_bytes=0, chunk_bytes=big // 3)
    assert [bytes(f) for f in got] == frames
    arrays = [np.frombuffer(f, np.uint8) for f in got]
    owners = {id(a.base.obj) if a.base is not None else None for a in arrays[1:4:2]}
    assert len(owners) == 2  # the two large frames do not share memory
    for array in arrays:
        if array.size:
            assert array.ctypes.data % framing.ALIGNMENT == 0


def test_too_many_frames_are_refused_from_the_header_alone() -> None:
    """Only the 8-byte header: the refusal comes before the lengths are read."""
    header = struct.pack("<BBHI", framing.INLINE, 0, 0, framing.MAX_FRAMES + 1)
    with pytest.raises(errors.ResourceExhaustedError, match=f"limit of {framing.MAX_FRAMES}"):
        framing.read_manifest(header)
    with pytest.raises(errors.ResourceExhaustedError, match="frames"):
        framing.Reassembler().feed(struct.pack("<BBHI", framing.CHUNKED, 0, 0, 1 << 20))


def test_each_frame_counts_its_overhead_against_the_limit() -> None:
    per_frame = framing.FRAME_OVERHEAD_BYTES
    assert framing.check_size([10, 20], 30 + 2 * per_frame) == 30
    with pytest.raises(errors.ResourceExhaustedError, match="each frame counts"):
        framing.check_size([10, 20], 30 + 2 * per_frame - 1)
    empty = framing.encode_inline([memoryview(b"")] * 100)
    with pytest.raises(errors.ResourceExhaustedError, match="100 frames"):
        framing.decode_inline(empty, max_bytes=99 * per_frame)
    assert len(framing.decode_inline(empty, max_bytes=100 * per_frame)) == 100
