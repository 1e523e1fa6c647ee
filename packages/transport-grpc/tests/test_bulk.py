"""The bulk TCP side channel of the grpc transport: used when it should be, byte-exact both
ways, falls back to gRPC chunks when it cannot be used, proves the token, survives
concurrency, and turns a peer killed mid-transfer into ``UnavailableError`` in time."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, security
from tensorwire.transport.base import RESPONSE_BYTES_METADATA_KEY
from tensorwire_grpc import bulk
from tensorwire_grpc import options as opts
from tensorwire_grpc.wire import Wire

from .test_transport import CountingProxy

MiB = 1024 * 1024
ON = {"bulk_tcp": True, "shm": False}  # the TCP mover itself (shm would come first)

service = Service("t.Bulk")
service.unary("Echo")(lambda frames, context: frames)
service.unary("Zeros")(lambda frames, context: [np.zeros(int(bytes(frames[0])), np.uint8)])


@service.unary("Context")
def _context(frames, context):
    remaining = context.time_remaining()
    described = f"{context.peer}|{context.metadata.get('x-test', '')}|{remaining}"
    return [described.encode(), frames[-1]]


@service.unary("Fail")
def _fail(frames, context):
    raise errors.FailedPreconditionError(f"refused {len(frames[0])} bytes")


@service.unary("Sleep")
def _sleep(frames, context):
    time.sleep(float(bytes(frames[0])))
    return [frames[1]]


@service.stream("Repeat")
def _repeat(frames, context):
    count = int(bytes(frames[0]))
    for i in range(count):
        yield [np.full(3 * MiB + i, i, np.uint8), frames[1]]


def _payload(nbytes: int, seed: int = 0) -> np.ndarray:
    return (np.arange(nbytes // 4, dtype=np.uint32) * 2654435761 + seed).astype(np.uint32)


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.fixture
def served(transport):
    """A listener with the side channel on, reached through a proxy that counts gRPC bytes."""
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    listener.start()
    proxy = CountingProxy(listener.port)
    yield listener, proxy
    proxy.close()
    listener.stop(0)


def test_defaults_and_option_validation() -> None:
    assert opts.bulk_tcp(TransportOptions()) is opts.DEFAULT_BULK_TCP
    assert opts.bulk_tcp(TransportOptions(extra={"bulk_tcp": False})) is False
    assert opts.bulk_tcp(TransportOptions(tls_root_ca="ca.pem", extra=ON)) is False
    assert opts.bulk_tcp(TransportOptions(compression="gzip", extra=ON)) is False
    assert opts.bulk_threshold(TransportOptions()) == opts.DEFAULT_BULK_THRESHOLD_BYTES
    with pytest.raises(errors.InvalidArgumentError, match="bulk_tcp"):
        opts.bulk_tcp(TransportOptions(extra={"bulk_tcp": "yes"}))
    with pytest.raises(errors.InvalidArgumentError, match="bulk_tcp_threshold_bytes"):
        opts.bulk_threshold(TransportOptions(extra={"bulk_tcp_threshold_bytes": 0}))


def test_environment_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(opts.BULK_TCP_ENV, "0")
    monkeypatch.setenv(opts.BULK_THRESHOLD_ENV, "12345")
    assert opts.bulk_tcp(TransportOptions()) is False
    assert opts.bulk_tcp(TransportOptions(extra=ON)) is True  # explicit options win
    assert opts.bulk_threshold(TransportOptions()) == 12345


def test_large_messages_both_ways_are_byte_exact_and_skip_grpc(transport, served) -> None:
    listener, proxy = served
    assert listener.bulk is not None
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    big = _payload(48 * MiB)
    odd = np.frombuffer(os.urandom(MiB + 7), np.uint8)
    frames = [b"header", big, b"", odd, np.arange(10, dtype=np.float64)]
    got = channel.call("t.Bulk", "Echo", frames, timeout=60)
    assert [bytes(g) for g in got[:3]] == [b"header", big.tobytes(), b""]
    assert bytes(got[3]) == odd.tobytes()
    assert np.array_equal(np.frombuffer(got[4], np.float64), np.arange(10.0))
    # Frames with a buffer of their own start on a page, where copies from a socket are fastest.
    assert _address(got[1]) % 4096 == 0 and _address(got[3]) % 4096 == 0
    assert got[1].readonly is False
    # 96+ MiB moved; gRPC carried only descriptors.
    assert proxy.bytes < MiB, proxy.bytes
    assert len(listener.pending) == 0
    channel.close()


def _raw_connection(port: int) -> Wire:
    """A side-channel connection made by hand (no token), past the handshake."""
    wire = Wire(socket.create_connection(("127.0.0.1", port), timeout=5))
    deadline = time.monotonic() + 5
    assert wire.read(4 + bulk.protocol.NONCE_BYTES, deadline)[:4] == bulk.protocol.MAGIC
    wire.send([bulk.protocol.MAGIC + bytes(bulk.protocol.MAC_BYTES)], deadline)
    assert wire.read(1, deadline) == b"\x00"
    return wire


def test_large_frames_start_on_page_boundaries_of_their_message(served) -> None:
    """The answer's large frame follows zero padding up to a multiple of 4096 bytes after
    the status byte; small frames get none. (The kernel copies such a frame between page-
    aligned buffers, about twice as fast as at some other offsets.)"""
    listener, _ = served
    wire = _raw_connection(listener.bulk.port)
    small, big = b"hello", _payload(bulk.protocol.ALIGNED_FRAME_BYTES + 12, seed=3)
    try:
        name = b"/t.Bulk/Echo"
        views = [memoryview(small), memoryview(big).cast("B")]
        head = (
            bytes([bulk.protocol.OP_CALL])
            + bulk.protocol.CALL_HEAD.pack(len(name), 0, 10_000)
            + name
            + bulk.protocol.encode_lengths(views)
        )
        wire.send(bulk.protocol.message_parts(head, views), time.monotonic() + 5)
        deadline = time.monotonic() + 10
        header = wire.read(1 + 4 + 16, deadline)
        assert header[0] == 0
        assert bulk.protocol.U32.unpack(header[1:5]) == (2,)
        assert struct.unpack("<2Q", header[5:]) == (len(small), big.nbytes)
        assert wire.read(len(small), deadline) == small
        padding = bulk.protocol.FRAME_ALIGNMENT - len(header) - len(small)
        assert wire.read(padding, deadline) == bytes(padding)
        received = memoryview(bytearray(big.nbytes))
        wire.read_into(received, deadline)
        assert bytes(received) == big.tobytes()
        # Nothing follows: the next answer starts right after the frame.
        assert wire.clean()
    finally:
        wire.close()


def _grpc_bytes_of_one_small_call(channel, proxy) -> int:
    before = proxy.bytes
    # Metadata of the caller's keeps a small call on gRPC (else it takes the side channel).
    channel.call("t.Bulk", "Zeros", [b"1"], timeout=30, metadata={"x-test": "grpc"})
    cost = proxy.bytes - before
    assert cost > 40, cost  # HEADERS, DATA and trailers both ways
    return cost


def test_a_large_call_goes_whole_over_the_side_channel(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    channel.call("t.Bulk", "Echo", [_payload(MiB)], timeout=30)  # learns the side port
    one_call = _grpc_bytes_of_one_small_call(channel, proxy)
    before = proxy.bytes
    big = _payload(3 * MiB, seed=5)
    for _ in range(3):
        (got,) = channel.call("t.Bulk", "Echo", [big], timeout=30)
        assert bytes(got) == big.tobytes()
    # No gRPC call at all (no descriptor call, no push acknowledgement): at most a control
    # frame gRPC sends by itself (a 17-byte HTTP/2 PING), far less than one call costs.
    assert proxy.bytes - before < one_call
    assert len(listener.bulk.arrivals) == 0 and len(listener.pending) == 0
    channel.close()


def test_an_announced_large_response_takes_the_side_channel(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    hint = {RESPONSE_BYTES_METADATA_KEY: str(4 * MiB)}
    channel.call("t.Bulk", "Zeros", [b"16"], timeout=30, metadata=hint)  # Hello, then CALL
    one_call = _grpc_bytes_of_one_small_call(channel, proxy)
    before = proxy.bytes
    (zeros,) = channel.call("t.Bulk", "Zeros", [str(4 * MiB).encode()], timeout=30, metadata=hint)
    assert zeros.nbytes == 4 * MiB and not np.any(np.frombuffer(zeros, np.uint8))
    assert proxy.bytes - before < one_call  # no gRPC call (see above)
    # Without the hint the call is a small one, which takes the side channel whole too.
    (zeros,) = channel.call("t.Bulk", "Zeros", [str(4 * MiB).encode()], timeout=30)
    assert zeros.nbytes == 4 * MiB
    assert proxy.bytes - before < one_call
    # With other metadata it is a gRPC call whose response is fetched over TCP.
    other = {"x-test": "grpc"}
    (zeros,) = channel.call("t.Bulk", "Zeros", [str(4 * MiB).encode()], timeout=30, metadata=other)
    assert zeros.nbytes == 4 * MiB
    assert 0 < proxy.bytes - before < MiB
    # A hint that is not a number is ignored, not an error.
    bad = {RESPONSE_BYTES_METADATA_KEY: "lots"}
    (zeros,) = channel.call("t.Bulk", "Zeros", [b"8"], timeout=30, metadata=bad)
    assert zeros.nbytes == 8
    channel.close()


def test_side_channel_calls_keep_errors_context_and_deadlines(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    big = _payload(MiB)
    channel.call("t.Bulk", "Echo", [big], timeout=30)
    peer = channel._shared.known_bulk_peer(None)
    assert peer is not None and peer.calls
    # The handler's class and message come back as they do over gRPC.
    with pytest.raises(errors.FailedPreconditionError, match=f"refused {big.nbytes} bytes"):
        channel.call("t.Bulk", "Fail", [big], timeout=30)
    # The handler sees the caller's metadata, a peer address and the deadline.
    described, echoed = channel.call(
        "t.Bulk", "Context", [big], timeout=20, metadata={"x-test": "yes"}
    )
    where, label, remaining = bytes(described).decode().split("|")
    assert where.startswith("ipv4:127.0.0.1:") and label == "yes"
    assert 15 < float(remaining) <= 20
    assert bytes(echoed) == big.tobytes()
    # A call that outlives its deadline fails in time with DeadlineExceededError ...
    start = time.monotonic()
    with pytest.raises(errors.DeadlineExceededError):
        channel.call("t.Bulk", "Sleep", [b"3", big], timeout=0.5)
    assert time.monotonic() - start < 2.5
    # ... and the channel still works afterwards (the broken connection was not pooled).
    (got,) = channel.call("t.Bulk", "Sleep", [b"0", big], timeout=30)
    assert bytes(got) == big.tobytes()
    # An unknown method and a streaming one are refused over the side channel as over gRPC.
    with pytest.raises(errors.UnimplementedError):
        bulk.call(peer, "/t.Bulk/Nope", [memoryview(big)], (), time.monotonic() + 10, None)
    with pytest.raises(errors.InvalidArgumentError, match="streaming"):
        bulk.call(peer, "/t.Bulk/Repeat", [memoryview(big)], (), time.monotonic() + 10, None)
    channel.close()


def test_stop_lets_side_channel_calls_in_flight_finish_within_grace(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    listener.start()
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    big = _payload(MiB)
    channel.call("t.Bulk", "Echo", [big], timeout=30)
    future = channel.call_async("t.Bulk", "Sleep", [b"1", big], timeout=30)
    time.sleep(0.3)
    listener.stop(grace=5)
    (got,) = future.result(10)
    assert bytes(got) == big.tobytes()
    with pytest.raises(errors.UnavailableError):
        channel.call("t.Bulk", "Echo", [big], timeout=10)
    channel.close()


def test_large_stream_messages_come_over_the_side_channel(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    tail = _payload(2 * MiB, seed=7)
    messages = list(channel.stream("t.Bulk", "Repeat", [b"5", tail], timeout=60))
    assert len(messages) == 5
    for i, (block, echoed) in enumerate(messages):
        assert block.nbytes == 3 * MiB + i and not np.any(np.frombuffer(block, np.uint8) != i)
        assert bytes(echoed) == tail.tobytes()
    assert proxy.bytes < MiB, proxy.bytes
    channel.close()


def test_async_call_uses_the_side_channel(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    big = _payload(8 * MiB, seed=3)
    (got,) = channel.call_async("t.Bulk", "Echo", [big], timeout=30).result(60)
    assert bytes(got) == big.tobytes()
    assert proxy.bytes < MiB
    channel.close()


def test_unreachable_side_port_falls_back_to_grpc_chunks(transport, served) -> None:
    listener, proxy = served
    listener.bulk.close()  # the advertised port now refuses connections
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    big = _payload(16 * MiB, seed=1)
    for _ in range(2):
        (got,) = channel.call("t.Bulk", "Echo", [big], timeout=30)
        assert bytes(got) == big.tobytes()
    (zeros,) = channel.call("t.Bulk", "Zeros", [str(12 * MiB).encode()], timeout=30)
    assert zeros.nbytes == 12 * MiB
    assert proxy.bytes > 2 * 2 * 16 * MiB  # everything went through gRPC
    channel.close()


def test_server_without_side_channel_is_served_over_grpc(transport) -> None:
    off = TransportOptions(extra={"bulk_tcp": False})
    listener = transport.serve("127.0.0.1:0", [service], off)
    listener.start()
    try:
        assert listener.bulk is None
        channel = transport.connect(listener.address, TransportOptions(extra=ON))
        big = _payload(8 * MiB)
        (got,) = channel.call("t.Bulk", "Echo", [big], timeout=30)
        assert bytes(got) == big.tobytes()
        messages = list(channel.stream("t.Bulk", "Repeat", [b"2", big], timeout=30))
        assert bytes(messages[1][1]) == big.tobytes()
        channel.close()
    finally:
        listener.stop(0)


def test_tls_listener_opens_no_side_port(transport, certs) -> None:
    options = TransportOptions(tls_cert=certs.server_cert, tls_key=certs.server_key, extra=ON)
    listener = transport.serve("127.0.0.1:0", [service], options)
    try:
        assert listener.bulk is None
    finally:
        listener.stop(0)


# -- the token ----------------------------------------------------------------------------------
def _handshake(port: int, mac: bytes) -> tuple[int, str, bytes]:
    """The verdict's status code and message, and what a push sent after it got back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        wire = Wire(sock)
        deadline = time.monotonic() + 5
        hello = wire.read(4 + bulk.protocol.NONCE_BYTES, deadline)
        assert hello[:4] == bulk.protocol.MAGIC
        sock.sendall(bulk.protocol.MAGIC + mac)
        code = wire.read(1, deadline)[0]
        message = ""
        if code:
            (size,) = struct.unpack("<I", wire.read(4, deadline))
            message = wire.read(size, deadline).decode()
        # A refused connection is closed; sending a push anyway gets nothing back.
        try:
            sock.sendall(bytes([bulk.protocol.OP_PUSH]) + bytes(64))
            rest = sock.recv(16)
        except OSError:
            rest = b""
        return code, message, rest


def test_side_channel_requires_the_token(transport) -> None:
    options = TransportOptions(token="s3cret", extra=ON)
    listener = transport.serve("127.0.0.1:0", [service], options)
    listener.start()
    try:
        port = listener.bulk.port
        # No proof, a proof of the wrong token: refused, and nothing of theirs is read.
        for proof in (bytes(bulk.protocol.MAC_BYTES), security.token_proof("wrong", b"x" * 16)):
            code, message, rest = _handshake(port, proof)
            assert (code, rest) == (int(errors.Code.UNAUTHENTICATED), b"")
            assert "did not prove the cluster token" in message
        with pytest.raises(bulk.BulkUnavailable, match="token"):
            bulk.BulkPeer("127.0.0.1", port, "wrong").acquire(time.monotonic() + 5)
        assert listener.bulk.arrivals.held_bytes == 0
        # A channel with the wrong token is refused by gRPC as before.
        bad = transport.connect(listener.address, TransportOptions(token="wrong", extra=ON))
        with pytest.raises(errors.PermissionDeniedError):
            bad.call("t.Bulk", "Echo", [_payload(4 * MiB)], timeout=10)
        bad.close()
        # The right token moves large messages over the side channel.
        good = transport.connect(listener.address, options)
        big = _payload(4 * MiB, seed=9)
        (got,) = good.call("t.Bulk", "Echo", [big], timeout=30)
        assert bytes(got) == big.tobytes()
        assert good._shared.known_bulk_peer("s3cret") is not None
        good.close()
    finally:
        listener.stop(0)


def test_the_token_never_crosses_the_side_channel(transport, monkeypatch) -> None:
    """Connections prove the token by HMAC; calls over them carry none of it (the server
    puts its own in the call's metadata for the usual check)."""
    sent: list[bytes] = []
    real_send = Wire.send

    def recording_send(self, parts, deadline):
        sent.append(b"".join(bytes(p) for p in parts))
        return real_send(self, parts, deadline)

    monkeypatch.setattr(Wire, "send", recording_send)
    token = "t0ken-that-must-stay-home"
    options = TransportOptions(token=token, extra=ON)
    listener = transport.serve("127.0.0.1:0", [service], options)
    listener.start()
    channel = transport.connect(listener.address, options)
    try:
        big = _payload(2 * MiB, seed=5)
        for _ in range(3):  # whole calls over the side channel, both directions large
            (got,) = channel.call("t.Bulk", "Echo", [big], timeout=30)
            assert bytes(got) == big.tobytes()
        assert channel._shared.known_bulk_peer(token) is not None
        assert sent, "nothing went over the side channel"
        assert not [m for m in sent if token.encode() in m]
    finally:
        channel.close()
        listener.stop(0)


def test_tickets_are_single_use_and_unknown_ones_fail(transport, served) -> None:
    listener, _ = served
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, None)
    deadline = time.monotonic() + 10
    ticket = bulk.push(peer, [memoryview(b"abc")], deadline, "test")
    assert bytes(bulk.take_arrival(listener.bulk.arrivals, ticket)[0]) == b"abc"
    with pytest.raises(errors.DataLossError, match="gone"):
        bulk.take_arrival(listener.bulk.arrivals, ticket)
    with pytest.raises(errors.NotFoundError):
        bulk.fetch(peer, os.urandom(16), deadline, None, "test")
    peer.close()


def test_pushed_requests_expire(transport, served) -> None:
    listener, _ = served
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, None)
    # The server keeps pushed bytes until the push's deadline plus a second of slack. The
    # deadline leaves the push itself seconds to complete on a loaded machine; past the
    # deadline and the slack (however late this thread wakes), the bytes are gone.
    deadline = time.monotonic() + 3.0
    ticket = bulk.push(peer, [memoryview(b"x" * 100)], deadline, "test")
    time.sleep(max(0.0, deadline + 1.2 - time.monotonic()))
    with pytest.raises(errors.DataLossError):
        bulk.take_arrival(listener.bulk.arrivals, ticket)
    assert listener.bulk.arrivals.held_bytes == 0
    peer.close()


def test_server_message_limit_applies_to_pushes_and_calls(transport) -> None:
    options = TransportOptions(max_message_bytes=2 * MiB, extra=ON)
    listener = transport.serve("127.0.0.1:0", [service], options)
    listener.start()
    try:
        peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, None)
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            bulk.push(peer, [memoryview(_payload(8 * MiB))], time.monotonic() + 10, "test")
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            bulk.call(
                peer,
                "/t.Bulk/Echo",
                [memoryview(_payload(8 * MiB))],
                (),
                time.monotonic() + 10,
                None,
            )
        # The refused bytes were drained: the same connection serves the next call.
        (got,) = bulk.call(peer, "/t.Bulk/Echo", [memoryview(b"ok")], (), None, None)
        assert bytes(got) == b"ok"
        peer.close()
        channel = transport.connect(listener.address, TransportOptions(extra=ON))
        with pytest.raises(errors.ResourceExhaustedError):
            channel.call("t.Bulk", "Echo", [_payload(8 * MiB)], timeout=10)
        channel.close()
    finally:
        listener.stop(0)


def test_concurrent_large_calls_are_byte_exact(transport, served) -> None:
    listener, _ = served
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for round_ in range(3):
                data = _payload(6 * MiB + 64 * seed, seed=seed * 10 + round_)
                (got,) = channel.call("t.Bulk", "Echo", [data], timeout=60)
                assert bytes(got) == data.tobytes(), f"worker {seed} round {round_}"
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    # They went over the side channel, on several pooled connections at once.
    peer = channel._shared.known_bulk_peer(None)
    assert peer is not None and len(peer._idle) >= 2
    channel.close()


# -- a peer killed mid-transfer -----------------------------------------------------------------
PEER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    import numpy as np
    from tensorwire.transport import Service, TransportOptions, security
    from tensorwire_grpc.transport import GrpcTransport

    handler = logging.StreamHandler(sys.stdout)
    log = logging.getLogger("tensorwire_grpc.bulk")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    service = Service("t.Bulk")
    service.unary("Echo")(lambda frames, context: frames)
    service.unary("Zeros")(lambda frames, context: [np.zeros(int(bytes(frames[0])), np.uint8)])
    listener = GrpcTransport().serve(
        "127.0.0.1:0", [service], TransportOptions(extra={"bulk_tcp": True})
    )
    listener.start()
    print("ADDRESS", listener.address, flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def peer_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("ADDRESS"), line
        yield process, line.split()[1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        process.stdout.close()


def _kill_when(process: subprocess.Popen[str], marker: str) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        line = process.stdout.readline()
        if not line or marker in line:
            break
    os.kill(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("direction", ["request", "announced response", "fetched response"])
def test_peer_killed_mid_transfer_is_unavailable_in_time(
    transport, peer_process, direction
) -> None:
    process, address = peer_process
    channel = transport.connect(address, TransportOptions(extra=ON))
    size = 512 * MiB
    metadata = None
    if direction == "request":  # a whole call over the side channel, killed while receiving
        frames, method, marker = [np.zeros(size, np.uint8)], "Echo", "bulk call receiving"
    elif direction == "announced response":  # a whole call, killed while sending
        frames, method, marker = [str(size).encode()], "Zeros", "bulk call /t.Bulk/Zeros sending"
        metadata = {RESPONSE_BYTES_METADATA_KEY: str(size)}
    else:  # a gRPC call whose response is fetched over the side channel
        frames, method, marker = [str(size).encode()], "Zeros", "bulk fetch sending"
    outcome: list[BaseException | object] = []

    def call() -> None:
        try:
            outcome.append(channel.call("t.Bulk", method, frames, timeout=30, metadata=metadata))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=call)
    thread.start()
    _kill_when(process, marker)
    thread.join(40)
    assert not thread.is_alive(), "the call hung after its peer was killed"
    assert time.monotonic() - start < 20
    (result,) = outcome
    assert isinstance(result, errors.UnavailableError), repr(result)
    channel.close()


def test_a_large_inline_response_teaches_the_channel_the_side_port(transport, served) -> None:
    listener, proxy = served
    channel = transport.connect(f"127.0.0.1:{proxy.port}", TransportOptions(extra=ON))
    # A small request and a 2 MiB (inline-sized) response: the first goes over gRPC ...
    (first,) = channel.call("t.Bulk", "Zeros", [str(2 * MiB).encode()], timeout=30)
    assert proxy.bytes > 2 * MiB
    before = proxy.bytes
    # ... and says the side channel exists, so the next ones take it.
    for _ in range(3):
        (again,) = channel.call("t.Bulk", "Zeros", [str(2 * MiB).encode()], timeout=30)
        assert again.nbytes == 2 * MiB
    assert proxy.bytes - before < MiB
    channel.close()


def test_stopping_a_stream_early_releases_parked_messages(transport, served) -> None:
    listener, _ = served
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    stream = channel.stream("t.Bulk", "Repeat", [b"50", b"x"], timeout=60)
    first = next(stream)
    assert first[0].nbytes == 3 * MiB
    stream.close()  # cancels the call; the server must not keep waiting for a fetch
    end = time.monotonic() + 10
    while len(listener.pending) and time.monotonic() < end:
        time.sleep(0.05)
    assert len(listener.pending) == 0
    channel.close()


def test_a_restarted_server_is_reached_over_its_new_side_port(transport) -> None:
    first = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    first.start()
    port = first.port
    channel = transport.connect(f"127.0.0.1:{port}", TransportOptions(extra=ON))
    big = _payload(4 * MiB, seed=5)
    assert bytes(channel.call("t.Bulk", "Echo", [big], timeout=30)[0]) == big.tobytes()
    old_side_port = first.bulk.port
    first.stop(0)
    second = transport.serve(f"127.0.0.1:{port}", [service], TransportOptions(extra=ON))
    second.start()
    try:
        assert second.bulk.port != old_side_port
        deadline = time.monotonic() + 30
        # Right after the restart the old side port fails: those calls go by gRPC. The first
        # may also meet gRPC's connection to the stopped server before the channel noticed
        # it was closed: UnavailableError, which callers retry (as TensorFlow's do).
        while True:
            try:
                (got,) = channel.call("t.Bulk", "Echo", [big], timeout=30)
            except errors.UnavailableError:
                assert time.monotonic() < deadline, "the restarted server was never reached"
                time.sleep(0.1)
                continue
            assert bytes(got) == big.tobytes()
            peer = channel._shared.known_bulk_peer(None)
            if peer is not None and peer.port == second.bulk.port:
                break
            assert time.monotonic() < deadline, "never learned the new side port"
            time.sleep(0.5)
    finally:
        channel.close()
        second.stop(0)


def test_stop_closes_the_side_port_and_its_threads(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    listener.start()
    side = listener.bulk
    accept_thread = side.connections.accept_thread
    peer = bulk.BulkPeer("127.0.0.1", side.port, None)
    peer.release(peer.acquire(time.monotonic() + 5), True)  # one idle server connection
    listener.stop(0)
    accept_thread.join(5)
    assert not accept_thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", side.port), timeout=2).close()
    end = time.monotonic() + 5
    while side.connections and time.monotonic() < end:
        time.sleep(0.02)
    assert not side.connections
    peer.close()


@pytest.mark.parametrize("start", [True, False], ids=["started", "never-started"])
def test_stop_returns_once_the_side_channel_holds_nothing(transport, start) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    if start:
        listener.start()
    side = listener.bulk
    serving = [side.connections.accept_thread]
    peer = bulk.BulkPeer("127.0.0.1", side.port, None)
    peer.release(peer.acquire(time.monotonic() + 5), True)  # one idle server connection
    serving += [t for t in threading.enumerate() if t.name == "tensorwire-bulk-conn"]
    listener.stop(0)
    # No polling: these are gone when stop() returns.
    assert [t.name for t in serving if t.is_alive()] == []
    with socket.socket() as sock:
        # As every server binds (the closed connection leaves the port in TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", side.port))
    peer.close()


def test_a_call_with_metadata_that_is_not_utf8_is_refused_and_its_connection_ends(
    transport, caplog: pytest.LogCaptureFixture
) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    listener.start()
    try:
        with socket.create_connection(("127.0.0.1", listener.bulk.port), timeout=30) as sock:
            wire = Wire(sock)
            deadline = time.monotonic() + 30
            wire.read(len(bulk.protocol.MAGIC) + bulk.protocol.NONCE_BYTES, deadline)
            wire.send(
                [bulk.protocol.MAGIC + bytes(bulk.protocol.MAC_BYTES)], deadline
            )  # no token: any MAC
            assert wire.read(1, deadline) == b"\x00"
            name, metadata = b"/t.Bulk/Echo", b"\xff\xfe\0v\0"
            wire.send(
                [
                    bytes([bulk.protocol.OP_CALL])
                    + struct.pack("<HII", len(name), len(metadata), 0)
                    + name
                    + metadata
                    + struct.pack("<I", 0)
                ],
                deadline,
            )
            # Refused with a status saying why, then closed: the request made no sense.
            assert wire.read(1, deadline)[0] == int(errors.DATA_LOSS)
            (size,) = struct.unpack("<I", wire.read(4, deadline))
            assert "UTF-8" in bytes(wire.read(size, deadline)).decode()
            with pytest.raises(ConnectionError):
                wire.read(1, deadline)
    finally:
        listener.stop(0)
    # Ended as a malformed request (debug), not as a server failure with a traceback.
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_an_unexpected_failure_of_a_connection_is_one_warning_line(
    transport, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_push(self, wire, peer):
        raise RuntimeError("a bug in the push path")

    monkeypatch.setattr(bulk.BulkServer, "_push", broken_push)
    caplog.set_level(logging.DEBUG, logger=bulk.__name__)
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions(extra=ON))
    listener.start()
    try:
        wire = _raw_connection(listener.bulk.port)
        wire.send([bytes([bulk.protocol.OP_PUSH])], time.monotonic() + 30)
        # The server logs before it closes the connection, so the log is complete here.
        with pytest.raises(ConnectionError):
            wire.read(1, time.monotonic() + 30)
        wire.close()
    finally:
        listener.stop(0)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    warnings = [r for r in failed if r.levelno == logging.WARNING]
    assert [r.getMessage().split(": ", 1)[1] for r in warnings] == [
        "RuntimeError: a bug in the push path"
    ], caplog.text
    assert warnings[0].exc_info is None
    # The traceback is still there for whoever turns on debug logging.
    assert [r.levelno for r in failed if r.exc_info] == [logging.DEBUG]
