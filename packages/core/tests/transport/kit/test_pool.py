"""Receive buffers are recycled only when nothing refers to them any more."""

from __future__ import annotations

import numpy as np
from tensorwire.transport.kit import framing
from tensorwire.transport.kit.pool import MIN_POOLED_BYTES, BufferPool

SIZE = 2 * MIN_POOLED_BYTES


def test_a_free_buffer_is_reused() -> None:
    pool = BufferPool(max_bytes=10 * SIZE)
    first = pool.take(SIZE)
    address = first.ctypes.data
    del first
    assert pool.take(SIZE).ctypes.data == address


def test_a_buffer_in_use_is_never_handed_out_again() -> None:
    pool = BufferPool(max_bytes=10 * SIZE)
    first = pool.take(SIZE)
    view = memoryview(first)[10:20]  # a frame the user still holds
    array = np.frombuffer(view, np.uint8)
    del first, view
    second = pool.take(SIZE)
    assert second.ctypes.data != array.ctypes.data - 10
    del array  # now the first one is free again
    third = pool.take(SIZE)
    assert third.ctypes.data != second.ctypes.data


def test_small_buffers_are_not_pooled() -> None:
    pool = BufferPool(max_bytes=10 * SIZE)
    pool.take(100)
    assert pool.stats()["buffers"] == 0


def test_pool_keeps_within_its_budget() -> None:
    pool = BufferPool(max_bytes=SIZE * 2)
    held = [pool.take(SIZE) for _ in range(3)]
    assert pool.stats()["bytes"] <= SIZE * 2
    del held
    pool.take(SIZE)
    assert pool.stats()["bytes"] <= SIZE * 2


def test_a_much_larger_free_buffer_is_not_wasted_on_a_small_message() -> None:
    pool = BufferPool(max_bytes=100 * SIZE)
    big = pool.take(20 * SIZE)
    address = big.ctypes.data
    del big
    assert pool.take(SIZE).ctypes.data != address


def test_zero_budget_turns_pooling_off() -> None:
    pool = BufferPool(max_bytes=0)
    pool.take(SIZE)
    assert pool.stats()["buffers"] == 0


def test_received_frames_keep_their_bytes_while_later_messages_arrive() -> None:
    # The frames of an earlier message stay intact while the pool serves later ones.
    payloads = [bytes([i]) * SIZE for i in range(4)]
    kept = []
    for data in payloads:
        views, total = framing.as_byte_views([data])
        reassembler = framing.Reassembler()
        for message in framing.encode(views, total, inline_bytes=0, chunk_bytes=MIN_POOLED_BYTES):
            result = reassembler.feed(message)
        kept.append(result[0])
    assert [bytes(f) for f in kept] == payloads
