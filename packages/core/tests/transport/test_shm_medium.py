"""The shared-memory medium inside one process: handshake, limits, recycling, zero copy.

Both ends run here (the listener's on a thread), over a real abstract Unix socket with real
memfds; test_shm_processes.py does the same between two processes and kills them.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from tensorwire import codec, errors
from tensorwire.transport.kit.spinning import Spinner
from tensorwire.transport.shm import (
    PROCESS_BUDGET,
    ShmBudget,
    ShmConnection,
    ShmLimits,
    ShmListener,
    connect,
    protocol,
)
from tensorwire_testing import eventually

from .shm_counts import counts, inside_a_segment, wait_counts

DEADLINE_SECONDS = 30.0


def _deadline() -> float:
    return time.monotonic() + DEADLINE_SECONDS


def _pair(
    server_token: str | None = "t0ken",
    client_token: str | None = "t0ken",
    server_limits: ShmLimits | None = None,
    client_limits: ShmLimits | None = None,
    client_budget: ShmBudget = PROCESS_BUDGET,
) -> tuple[ShmConnection, ShmConnection]:
    with ShmListener(server_token, server_limits) as listener:
        accepted: list[ShmConnection | errors.OpError] = []

        def accept() -> None:
            try:
                accepted.append(listener.accept(_deadline()))
            except errors.OpError as exc:  # handed to the test
                accepted.append(exc)

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            client = connect(
                listener.address,
                client_token,
                limits=client_limits,
                deadline=_deadline(),
                budget=client_budget,
            )
        finally:
            thread.join(DEADLINE_SECONDS)
        server = accepted[0]
        if isinstance(server, errors.OpError):
            client.close()
            raise server
        return server, client


@pytest.fixture
def pair() -> Iterator[tuple[ShmConnection, ShmConnection]]:
    server, client = _pair()
    try:
        yield server, client
    finally:
        client.close()
        server.close()


def _address(array_: np.ndarray) -> int:
    return int(array_.__array_interface__["data"][0])


def test_decode_returns_arrays_inside_the_mapping(pair):
    server, client = pair
    sent = {"x": np.arange(1 << 18, dtype=np.float32), "y": [np.ones((3, 5), np.int64)]}
    client.send(codec.encode(sent), deadline=_deadline())
    got = codec.decode(server.receive(_deadline()).frames)
    np.testing.assert_array_equal(got["x"], sent["x"])
    np.testing.assert_array_equal(got["y"][0], sent["y"][0])
    assert inside_a_segment(got["x"]) and inside_a_segment(got["y"][0])
    assert got["x"].flags.writeable  # the segment is the receiver's until it lets go


def test_loads_of_one_frame_is_zero_copy_too(pair):
    server, client = pair
    client.send([codec.dumps(np.arange(100_000, dtype=np.int32))], deadline=_deadline())
    got = codec.loads(server.receive(_deadline()).frames[0])
    assert inside_a_segment(got)
    np.testing.assert_array_equal(got, np.arange(100_000, dtype=np.int32))


def test_tag_and_empty_messages_travel_without_a_segment(pair):
    server, client = pair
    client.send([b"", b""], tag=b"method", deadline=_deadline())
    message = server.receive(_deadline())
    assert message.tag == b"method" and [bytes(f) for f in message.frames] == [b"", b""]
    assert client.pool.created == 0


def test_both_sides_send(pair):
    server, client = pair
    server.send([b"from server"], deadline=_deadline())
    client.send([b"from client"], deadline=_deadline())
    assert bytes(client.receive(_deadline()).frames[0]) == b"from server"
    assert bytes(server.receive(_deadline()).frames[0]) == b"from client"


def test_segments_are_reused_once_released(pair):
    server, client = pair
    for i in range(10):
        client.send([np.full(1 << 20, i, np.uint8)], deadline=_deadline())
        frame = server.receive(_deadline()).frames[0]
        assert frame[0] == i and frame[-1] == i
        del frame  # the release goes back as the view dies
        eventually(
            lambda: _assert_free(client), timeout=DEADLINE_SECONDS, retry_on=(AssertionError,)
        )
    assert client.pool.created == 1


def _assert_free(connection: ShmConnection) -> None:
    connection.poll()  # nobody reads the connection meanwhile: its releases wait there
    assert not connection.pool._lent


def test_a_held_segment_is_not_reused_and_the_pool_is_bounded():
    server, client = _pair(client_limits=ShmLimits(max_pool_bytes=2 << 20))
    try:
        client.send([np.zeros(1 << 20, np.uint8)], deadline=_deadline())
        client.send([np.ones(1 << 20, np.uint8)], deadline=_deadline())
        first = server.receive(_deadline()).frames[0]
        second = server.receive(_deadline()).frames[0]
        assert client.pool.created == 2
        with pytest.raises(errors.DeadlineExceededError, match="max_pool_bytes"):
            client.send([np.ones(1 << 20, np.uint8)], deadline=time.monotonic() + 0.2)
        assert first[0] == 0 and second[0] == 1  # neither was overwritten
        del first
        client.send([np.full(1 << 20, 7, np.uint8)], deadline=_deadline())
        assert server.receive(_deadline()).frames[0][5] == 7
        assert client.pool.created == 2 and second[0] == 1
    finally:
        client.close()
        server.close()


def test_a_message_larger_than_the_peer_maps_is_refused_before_any_segment():
    server, client = _pair(server_limits=ShmLimits(max_mapped_bytes=1 << 20))
    try:
        with pytest.raises(errors.ResourceExhaustedError, match="max_pool_bytes"):
            client.send([np.zeros(2 << 20, np.uint8)], deadline=_deadline())
        assert client.pool.created == 0
    finally:
        client.close()
        server.close()


def test_max_message_bytes_is_checked_before_sending():
    server, client = _pair(client_limits=ShmLimits(max_message_bytes=1000))
    try:
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            client.send([bytes(600), bytes(401)], deadline=_deadline())
        assert client.pool.created == 0
    finally:
        client.close()
        server.close()


def test_max_message_bytes_is_checked_on_receipt():
    server, client = _pair(server_limits=ShmLimits(max_message_bytes=1000))
    try:
        client.send([bytes(1001)], deadline=_deadline())  # the client has no such limit
        with pytest.raises(errors.ResourceExhaustedError, match="1001 bytes"):
            server.receive(_deadline())
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(
    ("server_token", "client_token", "refusal"),
    [
        ("t0ken", None, errors.PermissionDeniedError),
        ("t0ken", "wrong", errors.PermissionDeniedError),
    ],
)
def test_a_peer_without_the_token_is_refused_with_the_reason(server_token, client_token, refusal):
    with pytest.raises(refusal, match="did not prove this server's cluster token"):
        _pair(server_token, client_token)


def test_a_listener_without_the_token_cannot_fool_the_client():
    with pytest.raises(errors.PermissionDeniedError, match="did not prove the cluster token"):
        _pair(server_token=None, client_token="t0ken")


def test_connect_to_a_name_nobody_listens_on_is_unavailable():
    with pytest.raises(errors.UnavailableError, match="another host"):
        connect("tensorwire-shm-" + "0" * 32, None, deadline=_deadline())
    with pytest.raises(errors.InvalidArgumentError, match="not a shared-memory listener"):
        connect("/tmp/socket", None)


def _forged_segment(size: int, seal: bool = True) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    fd = os.memfd_create("tensorwire-shm", flags)
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def _send_raw(connection: ShmConnection, packet: bytes, fd: int | None = None) -> None:
    ancillary = []
    if fd is not None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    connection._sock.sendmsg([packet], ancillary)


@pytest.mark.parametrize(
    ("announced", "actual", "seal", "error", "match"),
    [
        (100 << 30, 4096, True, errors.ResourceExhaustedError, "107374182400 bytes"),
        (4096, 4096, False, errors.DataLossError, "not sealed"),
        (8192, 4096, True, errors.DataLossError, "announced a segment of 8192"),
    ],
    ids=["100GiB", "unsealed", "smaller-than-announced"],
)
def test_a_bad_segment_is_refused_before_mapping(announced, actual, seal, error, match):
    server, client = _pair()
    try:
        before = counts()
        fd = _forged_segment(actual, seal)
        try:
            _send_raw(client, protocol.SEGMENT.pack(protocol.OP_SEGMENT, 1, announced), fd)
        finally:
            os.close(fd)
        with pytest.raises(error, match=match):
            server.receive(_deadline())
        assert server.closed
        wait_counts(before)  # the descriptor was closed, nothing was mapped
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(
    "packet",
    [
        protocol.MESSAGE.pack(protocol.OP_MESSAGE, 5, 0, 1) + protocol.FRAME.pack(0, 10),
        protocol.MESSAGE.pack(protocol.OP_MESSAGE, 0, 0, 2),
        protocol.MESSAGE.pack(protocol.OP_MESSAGE, 0, 0, 1 << 20),
        bytes([9, 0, 0]),
    ],
    ids=["unknown-segment", "short-table", "too-many-frames", "unknown-op"],
)
def test_a_malformed_packet_fails_the_connection_with_a_reason(pair, packet):
    server, client = pair
    _send_raw(client, packet)
    with pytest.raises(errors.DataLossError):
        server.receive(_deadline())
    with pytest.raises(errors.DataLossError):
        server.send([b"x"], deadline=_deadline())


def test_a_frame_overrunning_its_segment_is_refused(pair):
    server, client = pair
    client.send([bytes(100)], deadline=_deadline())  # passes segment 1 (64 KiB)
    server.receive(_deadline())
    _send_raw(
        client,
        protocol.MESSAGE.pack(protocol.OP_MESSAGE, 1, 0, 1) + protocol.FRAME.pack(65000, 1000),
    )
    with pytest.raises(errors.DataLossError, match="overruns segment 1"):
        server.receive(_deadline())


def test_receive_waits_no_longer_than_its_deadline(pair):
    server, _ = pair
    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceededError, match="before the deadline"):
        server.receive(time.monotonic() + 0.1)
    assert time.monotonic() - start < DEADLINE_SECONDS


def test_closing_one_side_frees_both_and_fails_the_other():
    before = counts()
    server, client = _pair()
    client.send([np.zeros(1 << 20, np.uint8)], deadline=_deadline())
    frame = server.receive(_deadline()).frames[0]
    assert counts() != before
    client.close()
    with pytest.raises(errors.UnavailableError, match="closed"):
        server.receive(_deadline())
    assert frame[0] == 0  # still readable: the view keeps its mapping
    del frame
    server.close()
    wait_counts(before)


def test_frames_may_be_arrays_of_any_dtype_but_must_be_contiguous(pair):
    server, client = pair
    frame = np.arange(12, dtype=np.float16).reshape(3, 4)
    client.send([frame, b"abc"], deadline=_deadline())
    got = server.receive(_deadline()).frames
    assert bytes(got[0]) == frame.tobytes() and bytes(got[1]) == b"abc"
    with pytest.raises(errors.InvalidArgumentError, match="C-contiguous"):
        client.send([frame[:, ::2]], deadline=_deadline())


def test_messages_nobody_received_are_dropped_when_the_connection_is_closed():
    # The peer's end leaves its last messages to be received (see the next test); closing
    # this side drops those nobody took, and their mappings with them.
    before = counts()
    server, client = _pair()
    client.send([np.zeros(1 << 20, np.uint8)], deadline=_deadline())

    def arrived() -> None:
        server.poll()  # nobody waits on the server: poll reads what came
        assert not server._inbox.empty()

    eventually(arrived, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
    client.close()

    def ended() -> None:
        assert not server.poll()  # the server read the end

    eventually(ended, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
    server.close()
    with pytest.raises(errors.UnavailableError, match="closed"):
        server.receive(_deadline())
    wait_counts(before)


def test_a_flood_of_unreceived_messages_fails_the_connection_instead_of_growing():
    server, client = _pair(server_limits=ShmLimits(max_queued_messages=4))
    try:
        for _ in range(5):
            client.send([], tag=b"flood", deadline=_deadline())

        def failed() -> None:
            assert not server.poll()

        eventually(failed, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
        with pytest.raises(errors.ResourceExhaustedError, match="max_queued_messages"):
            server.receive(_deadline())
    finally:
        client.close()
        server.close()


def test_concurrent_senders_on_one_connection_each_arrive_intact(pair):
    server, client = pair
    senders, each = 4, 25

    def send(k: int) -> None:
        for i in range(each):
            client.send(
                [np.full(100_000 + k, i, np.uint8)], tag=bytes([k, i]), deadline=_deadline()
            )

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for thread in threads:
        thread.start()
    seen = set()
    for _ in range(senders * each):
        message = server.receive(_deadline())
        k, i = message.tag
        frame = np.frombuffer(message.frames[0], np.uint8)
        assert frame.size == 100_000 + k and (frame == i).all()
        seen.add((k, i))
        del message, frame
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert len(seen) == senders * each


def test_what_the_receiver_wrote_is_overwritten_by_the_next_message_in_that_segment(pair):
    server, client = pair
    client.send(codec.encode(np.ones(1 << 18, np.float32)), deadline=_deadline())
    got = codec.decode(server.receive(_deadline()).frames)
    got *= 5  # the receiver's to write until it lets go
    del got
    eventually(lambda: _assert_free(client), timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
    client.send(codec.encode(np.full(1 << 18, 2, np.float32)), deadline=_deadline())
    again = codec.decode(server.receive(_deadline()).frames)
    assert client.pool.created == 1 and (again == 2).all()


def test_the_process_budget_bounds_all_connections_together_and_refuses_at_once():
    budget = ShmBudget(2 << 20)
    server_a, client_a = _pair(client_budget=budget)
    server_b, client_b = _pair(client_budget=budget)
    try:
        client_a.send([bytes((1 << 20) + 1)], deadline=_deadline())  # 2 MiB segment: all of it
        held = server_a.receive(_deadline()).frames
        start = time.monotonic()
        with pytest.raises(errors.ResourceExhaustedError, match="ShmBudget"):
            client_b.send([bytes(100)], deadline=time.monotonic() + DEADLINE_SECONDS)
        assert time.monotonic() - start < DEADLINE_SECONDS  # refused, not waited for
        assert client_b.pool.created == 0 and budget.used == 2 << 20
        del held
    finally:
        for connection in (client_a, server_a, client_b, server_b):
            connection.close()
    assert budget.used == 0  # closing gave every byte back


def test_a_pool_retires_its_own_free_segments_to_stay_in_the_budget():
    server, client = _pair(client_budget=ShmBudget(3 << 20))
    try:
        client.send([bytes(1 << 20)], deadline=_deadline())  # 2 MiB segment
        server.receive(_deadline())
        eventually(
            lambda: _assert_free(client), timeout=DEADLINE_SECONDS, retry_on=(AssertionError,)
        )
        client.send([bytes(5 << 19)], deadline=_deadline())  # needs 3 MiB: the 2 MiB goes
        assert bytes(server.receive(_deadline()).frames[0][:4]) == bytes(4)
        assert client.pool.created == 2 and client.pool.total_bytes == 3 << 20
    finally:
        client.close()
        server.close()


def test_the_accept_deadline_bounds_the_wait_for_a_peer_not_its_handshake():
    # A server polls accept() with short deadlines; a peer queued just before one ends
    # must still get its whole handshake (HANDSHAKE_SECONDS), not what was left.
    with ShmListener("t0ken") as listener:
        made: list[ShmConnection | errors.OpError] = []

        def dial() -> None:
            try:
                made.append(connect(listener.address, "t0ken", deadline=_deadline()))
            except errors.OpError as exc:  # handed to the test
                made.append(exc)

        thread = threading.Thread(target=dial)
        thread.start()
        try:
            # The peer is queued once the listening socket is readable.
            ready, _, _ = select.select([listener._sock], [], [], DEADLINE_SECONDS)
            assert ready
            server = listener.accept(deadline=time.monotonic())  # no time left to wait
        finally:
            thread.join(DEADLINE_SECONDS)
        (client,) = made
        assert isinstance(client, ShmConnection), client
        client.send([b"ping"], deadline=_deadline())
        assert bytes(server.receive(_deadline()).frames[0]) == b"ping"
        client.close()
        server.close()


def test_messages_sent_just_before_the_peer_closed_are_still_received():
    # A server that answers and then stops at once: the answer must not be lost to the
    # end of the connection that follows it.
    server, client = _pair()
    server.send([b"last"], tag=b"answer", deadline=_deadline())
    server.close()

    def closed() -> None:
        assert not client.poll()

    eventually(closed, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
    message = client.receive(_deadline())
    assert (message.tag, bytes(message.frames[0])) == (b"answer", b"last")
    with pytest.raises(errors.UnavailableError, match="peer closed"):
        client.receive(_deadline())
    del message
    client.close()
    with pytest.raises(errors.UnavailableError):
        client.receive(_deadline())


def test_a_spinning_receiver_gets_messages_and_then_the_end_of_the_connection():
    # Spinning takes what the reader delivered without sleeping; the end of the connection
    # (the inbox's closing item) must come through a spin too, not be swallowed by it.
    server, client = _pair()
    server.spinner.seconds = client.spinner.seconds = 0.01
    try:
        for i in range(20):
            client.send([np.full(1 << 16, i, np.uint8)], tag=b"q", deadline=_deadline())
            request = server.receive(_deadline())
            assert request.frames[0][0] == i
            server.send([b"answer"], tag=b"a", deadline=_deadline())
            assert bytes(client.receive(_deadline()).frames[0]) == b"answer"
            del request
        client.close()

        def closed() -> None:
            assert not server.poll()

        eventually(closed, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
        for _ in range(2):  # and to every later receive
            with pytest.raises(errors.UnavailableError, match="closed"):
                server.receive(_deadline())
    finally:
        client.close()
        server.close()


def test_no_thread_per_connection_and_poll_takes_what_came_meanwhile():
    threads = threading.active_count()
    pairs = [_pair() for _ in range(4)]
    try:
        assert threading.active_count() == threads  # the waiter reads: no reader threads
        server, client = pairs[0]
        client.send([np.ones(1 << 16, np.uint8)], tag=b"m", deadline=_deadline())
        message = server.receive(_deadline())
        del message  # its release waits in the client's socket until the client reads

        def released() -> None:
            assert client.poll()
            assert not client.pool._lent

        eventually(released, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
        server.close()

        def ended() -> None:
            assert not client.poll()

        eventually(ended, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
        with pytest.raises(errors.UnavailableError, match="peer closed"):
            client.receive(_deadline())
    finally:
        for server, client in pairs:
            client.close()
            server.close()


def test_a_sender_waiting_for_room_reads_the_release_itself():
    server, client = _pair(client_limits=ShmLimits(max_pool_bytes=1 << 20))
    try:
        client.send([np.zeros(1 << 20, np.uint8)], deadline=_deadline())
        held = [server.receive(_deadline())]
        # The pool is full until the server drops its message, which it does from another
        # thread while the client waits in send; nobody else reads the client's socket.
        dropper = threading.Thread(target=held.clear)
        dropper.start()
        client.send([np.ones(1 << 20, np.uint8)], deadline=_deadline())
        dropper.join(DEADLINE_SECONDS)
        assert server.receive(_deadline()).frames[0][0] == 1
        assert client.pool.created == 1
    finally:
        client.close()
        server.close()


def test_concurrent_receivers_each_get_every_message_once(pair):
    server, client = pair
    count, receivers = 200, 4
    got: list[int] = []
    lock = threading.Lock()

    def receive(n: int) -> None:
        for _ in range(n):
            message = server.receive(_deadline())
            with lock:
                got.append(int(bytes(message.tag)))

    threads = [
        threading.Thread(target=receive, args=(count // receivers,)) for _ in range(receivers)
    ]
    for thread in threads:
        thread.start()
    for i in range(count):
        client.send([np.full(64, i % 256, np.uint8)], tag=str(i).encode(), deadline=_deadline())
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert sorted(got) == list(range(count))


def test_a_receive_told_not_to_spin_sleeps_at_once(pair):
    # (ShmPeer waits so for the answer to a large copy.)
    server, client = pair
    attempts: list[int] = []

    class Counting(Spinner):
        def spin(self, attempt):  # type: ignore[no-untyped-def]
            attempts.append(1)
            return super().spin(attempt)

    client.spinner = Counting(60.0)
    server.send([b"one"], tag=b"a", deadline=_deadline())
    assert bytes(client.receive(_deadline(), spin=False).frames[0]) == b"one"
    assert attempts == []
    server.send([b"two"], tag=b"a", deadline=_deadline())
    assert bytes(client.receive(_deadline()).frames[0]) == b"two"
    assert attempts == [1]


def test_connections_read_on_one_thread_share_its_packet_buffer():
    """A packet is read into its thread's buffer (room for the largest packet, about
    130 KiB) and copied out at its size: connections do not keep that room each."""
    packet_bytes = ShmLimits().packet_bytes()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        pairs = [_pair() for _ in range(8)]
        try:
            for number, (_server, client) in enumerate(pairs):
                client.send(
                    [np.full(64, number, np.uint8)], tag=b"%d" % number, deadline=_deadline()
                )
            for number, (server, _client) in enumerate(pairs):
                message = server.receive(_deadline())
                assert message.tag == b"%d" % number
                assert bytes(message.frames[0]) == bytes([number]) * 64
                del message
            held, _ = tracemalloc.get_traced_memory()
            assert held - before < 3 * packet_bytes, f"{held - before} bytes held by 8 pairs"
        finally:
            for server, client in pairs:
                client.close()
                server.close()
    finally:
        tracemalloc.stop()
