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


class _Registrations:
    """What a pool's ``register`` hook sees: one handle per buffer, closed by the pool."""

    def __init__(self) -> None:
        self.made: list[_Handle] = []

    def __call__(self, array: np.ndarray) -> _Handle:
        handle = _Handle(array.ctypes.data)
        self.made.append(handle)
        return handle


class _Handle:
    def __init__(self, address: int) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_registered_buffer_is_registered_once_and_reused() -> None:
    registrations = _Registrations()
    pool = BufferPool(max_bytes=10 * SIZE, register=registrations)
    array, handle = pool.take_registered(SIZE)
    assert handle.address == array.ctypes.data
    del array
    again, same = pool.take_registered(SIZE)
    assert same is handle and len(registrations.made) == 1 and pool.made == 1


def test_a_registering_pool_pools_small_buffers_too() -> None:
    pool = BufferPool(max_bytes=10 * SIZE, register=_Registrations())
    pool.take_registered(64 * 1024)
    assert pool.stats()["buffers"] == 1


def test_a_discarded_buffer_is_closed_and_never_handed_out_again() -> None:
    registrations = _Registrations()
    pool = BufferPool(max_bytes=10 * SIZE, register=registrations)
    array, handle = pool.take_registered(SIZE)
    pool.discard(array)
    assert handle.closed
    del array
    _, other = pool.take_registered(SIZE)
    assert other is not handle and len(registrations.made) == 2


def test_a_registering_pool_keeps_buffers_in_use_beyond_its_budget_and_trims_free_ones() -> None:
    registrations = _Registrations()
    pool = BufferPool(max_bytes=SIZE, register=registrations)
    held = [pool.take_registered(SIZE) for _ in range(3)]  # all in use: all kept
    assert pool.stats()["buffers"] == 3
    del held
    pool.take_registered(4 * SIZE)  # no free one fits: the free ones beyond budget go
    assert [h.closed for h in registrations.made[:3]] == [True, True, True]
    assert pool.stats()["buffers"] == 1


def test_clear_closes_every_registration() -> None:
    registrations = _Registrations()
    pool = BufferPool(max_bytes=10 * SIZE, register=registrations)
    kept = pool.take_registered(SIZE)
    pool.clear()
    assert registrations.made[0].closed
    assert kept[0].nbytes == SIZE  # a user's buffer lives on
