"""Wire: the side channel's buffered reads and gathered writes, over real socket pairs."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from tensorwire.transport.kit import spinning
from tensorwire_grpc import wire as wire_module
from tensorwire_grpc.wire import Wire


@pytest.fixture
def pair() -> Iterator[tuple[Wire, Wire]]:
    a, b = socket.socketpair()
    yield Wire(a), Wire(b)
    a.close()
    b.close()


class CountingSocket:
    """A socket that counts the system calls made on it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.recvs = 0
        self.sends = 0

    def recv_into(self, view: memoryview) -> int:
        self.recvs += 1
        return self._sock.recv_into(view)

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.sends += 1
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_small_fields_come_from_one_recv_and_frames_land_in_place() -> None:
    a, b = socket.socketpair()
    try:
        sender = Wire(a)
        counting = CountingSocket(b)
        receiver = Wire(counting)
        payload = np.frombuffer(os.urandom(1 << 20), np.uint8)
        fields = [b"\x03", b"\x00\x01\x02\x03", b"name", b"\xff" * 8]
        done = threading.Thread(target=sender.send, args=([*fields, payload], None))
        done.start()
        assert [receiver.read(len(f), None) for f in fields] == fields
        assert counting.recvs == 1  # four fields, one system call
        target = memoryview(bytearray(payload.nbytes))
        receiver.read_into(target, None)
        done.join(10)
        assert bytes(target) == payload.tobytes()
        assert receiver.buffered == 0
    finally:
        a.close()
        b.close()


def test_a_header_and_its_frames_go_in_one_sendmsg() -> None:
    a, b = socket.socketpair()
    try:
        counting = CountingSocket(a)
        sender = Wire(counting)
        parts = [b"head", b"", memoryview(b"x" * 100), np.arange(10, dtype=np.float64)]
        sender.send(parts, time.monotonic() + 5)
        assert counting.sends == 1
        expected = b"head" + b"x" * 100 + np.arange(10, dtype=np.float64).tobytes()
        assert Wire(b).read(len(expected), time.monotonic() + 5) == expected
    finally:
        a.close()
        b.close()


def test_partial_sends_resume_at_the_right_byte(pair: tuple[Wire, Wire]) -> None:
    sender, receiver = pair
    # More than a socket buffer, in typed (non-byte) views: sendmsg returns short counts.
    parts = [np.arange(n, dtype=np.uint32) * 7 for n in (3, 1 << 20, 5, 1 << 19)]
    expected = b"".join(p.tobytes() for p in parts)
    got = bytearray(len(expected))
    reader = threading.Thread(target=receiver.read_into, args=(memoryview(got), None))
    reader.start()
    sender.send(parts, time.monotonic() + 30)
    reader.join(30)
    assert bytes(got) == expected


def test_fields_larger_than_the_read_ahead_and_skips(pair: tuple[Wire, Wire]) -> None:
    sender, receiver = pair
    big = os.urandom(wire_module.READ_AHEAD_BYTES * 3 + 5)
    threading.Thread(target=sender.send, args=([b"ab", big, b"z" * 70_000, b"end"], None)).start()
    deadline = time.monotonic() + 10
    assert receiver.read(2, deadline) == b"ab"
    assert receiver.read(len(big), deadline) == big
    receiver.skip(70_000, deadline)
    assert receiver.read(3, deadline) == b"end"


def test_a_field_straddling_the_buffer_end_is_read_whole(pair: tuple[Wire, Wire]) -> None:
    sender, receiver = pair
    first = b"a" * (wire_module.READ_AHEAD_BYTES - 3)
    sender.send([first, b"0123456789"], time.monotonic() + 5)
    time.sleep(0.05)  # everything arrives, so the first recv fills the buffer to its end
    deadline = time.monotonic() + 5
    assert receiver.read(len(first), deadline) == first
    assert receiver.read(10, deadline) == b"0123456789"


def test_deadlines_and_a_closed_peer(pair: tuple[Wire, Wire]) -> None:
    sender, receiver = pair
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        receiver.read(1, time.monotonic() + 0.2)
    assert time.monotonic() - start < 2
    with pytest.raises(TimeoutError):
        receiver.read(1, time.monotonic() - 1)  # already passed: no wait at all
    sender.send([b"abc"], None)
    sender.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError, match="closed"):
        receiver.read(5, time.monotonic() + 5)
    with pytest.raises(ConnectionError):
        receiver.read_into(memoryview(bytearray(4)), time.monotonic() + 5)


def test_clean_says_whether_an_idle_connection_can_be_reused(pair: tuple[Wire, Wire]) -> None:
    sender, receiver = pair
    assert receiver.clean()
    sender.send([b"unexpected"], None)
    time.sleep(0.05)
    assert not receiver.clean()  # bytes nobody asked for: out of step
    receiver.read(4, None)
    assert not receiver.clean()  # read ahead and not consumed
    receiver.read(6, None)
    assert receiver.clean()
    sender.close()
    time.sleep(0.05)
    assert not receiver.clean()  # the peer closed it


class CountingPoller:
    """A ``select.poll`` object that counts the sleeps (``poll`` calls) made on it."""

    def __init__(self, poller: object) -> None:
        self._poller = poller
        self.polls = 0

    def poll(self, timeout: int | None = None) -> list[tuple[int, int]]:
        self.polls += 1
        return self._poller.poll(timeout)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._poller, name)


def _spinning_pair(spin_seconds: float) -> tuple[Wire, Wire, CountingPoller]:
    a, b = socket.socketpair()
    receiver = Wire(b, spin_seconds)
    poller = CountingPoller(receiver._poller)
    receiver._poller = poller  # type: ignore[assignment]
    return Wire(a), receiver, poller


@pytest.mark.parametrize("spin_seconds", [0.0, 0.01])
def test_a_spinning_wire_takes_bytes_that_are_there_without_sleeping(
    spin_seconds: float,
) -> None:
    sender, receiver, poller = _spinning_pair(spin_seconds)
    try:
        for _ in range(3):
            sender.send([b"abc"], None)
            assert receiver.read(3, time.monotonic() + 10) == b"abc"
        # Without spinning, each read sleeps in poll first, even with its bytes there.
        assert poller.polls == (0 if spin_seconds else 3)
    finally:
        sender.close()
        receiver.close()


def test_a_spin_that_runs_out_turns_spinning_off_for_the_next_waits() -> None:
    sender, receiver, poller = _spinning_pair(0.001)
    try:
        with pytest.raises(TimeoutError):
            receiver.read(1, time.monotonic() + 0.05)  # nothing comes: spins, then sleeps
        assert poller.polls == 1
        # Answers that come later than a spin would last (a bound of 1 ns: every one),
        # so each skipped wait stays skipped.
        receiver.spinner.seconds = 1e-9
        for i in range(spinning.SKIPPED_AFTER_MISS):
            sender.send([b"x"], None)
            assert receiver.read(1, time.monotonic() + 10) == b"x"
            assert poller.polls == 2 + i  # no spin: each read sleeps in poll first
        receiver.spinner.seconds = 60.0
        sender.send([b"y"], None)
        assert receiver.read(1, time.monotonic() + 10) == b"y"
        assert poller.polls == 1 + spinning.SKIPPED_AFTER_MISS  # spinning again
    finally:
        sender.close()
        receiver.close()


def test_a_skipped_wait_answered_within_the_spin_resumes_spinning() -> None:
    sender, receiver, poller = _spinning_pair(60.0)
    try:
        receiver.spinner.skipping = spinning.SKIPPED_AFTER_MISS  # as after a spin ran out
        sender.send([b"x"], None)
        assert receiver.read(1, time.monotonic() + 10) == b"x"
        assert poller.polls == 1  # skipped: it slept, and the answer was there at once
        sender.send([b"y"], None)
        assert receiver.read(1, time.monotonic() + 10) == b"y"
        assert poller.polls == 1  # so the next wait spins again
    finally:
        sender.close()
        receiver.close()


def test_how_long_wires_spin_is_set_by_the_environment(monkeypatch) -> None:
    from tensorwire import errors
    from tensorwire_grpc import options

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(options.SPIN_ENV, raising=False)
    assert options.spin_seconds() == options.DEFAULT_SPIN_US / 1e6
    monkeypatch.setenv(options.SPIN_ENV, "200")
    assert options.spin_seconds() == 200e-6
    monkeypatch.setenv(options.SPIN_ENV, "0")
    assert options.spin_seconds() == 0.0
    for bad in ("fast", "-1", "2000000"):
        monkeypatch.setenv(options.SPIN_ENV, bad)
        with pytest.raises(errors.InvalidArgumentError, match="TENSORWIRE_GRPC_SPIN_US"):
            options.spin_seconds()
    # One CPU: a spinner would only hold back the peer it waits for.
    monkeypatch.setenv(options.SPIN_ENV, "200")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert options.spin_seconds() == 0.0


class _SignallingSocket(CountingSocket):
    """Sets ``took`` once a ``recv_into`` returned bytes."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.took = threading.Event()

    def recv_into(self, view: memoryview) -> int:
        n = super().recv_into(view)
        if n:
            self.took.set()
        return n


@pytest.mark.parametrize("over_loopback", [False, True])
def test_over_a_link_the_rest_of_a_large_frame_is_waited_for_asleep(over_loopback: bool) -> None:
    a, b = socket.socketpair()
    signalling = _SignallingSocket(b)
    receiver = Wire(signalling, 60.0)  # type: ignore[arg-type]
    poller = CountingPoller(receiver._poller)
    receiver._poller = poller  # type: ignore[assignment]
    assert not receiver.spins_for_bodies  # a Unix socket pair: no IP peer, so not loopback
    receiver.spins_for_bodies = over_loopback
    sender = Wire(a)
    payload = np.frombuffer(os.urandom(4 * wire_module.SPIN_BODY_BYTES), np.uint8)

    def send() -> None:
        sender.send([payload[:1000]], None)
        # The rest only once the receiver has the first bytes: it then waits for the rest.
        if signalling.took.wait(30):
            sender.send([payload[1000:]], None)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        target = memoryview(bytearray(payload.nbytes))
        receiver.read_into(target, time.monotonic() + 30)
        assert bytes(target) == payload.tobytes()
        # The first bytes are spun for either way; the rest of the frame is slept for in
        # poll over a link, spun for on loopback.
        assert (poller.polls == 0) == over_loopback, poller.polls
    finally:
        thread.join(30)
        sender.close()
        receiver.close()


def test_a_wire_spins_for_frame_bodies_only_on_loopback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with client, accepted:
        assert Wire(client).spins_for_bodies and Wire(accepted).spins_for_bodies
    a, b = socket.socketpair()
    with a, b:
        assert not Wire(a).spins_for_bodies
