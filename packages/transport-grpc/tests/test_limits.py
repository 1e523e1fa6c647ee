"""What a peer can make a grpc server hold, and how refusals reach it.

- A call without the token is refused before gRPC reads its request, and no single gRPC
  message above the server's receive limit is accepted (memory before authentication).
- A message's frame count is bounded and each frame counts against ``max_message_bytes``
  (amplification), on gRPC and on the side channel.
- The side channel answers every refusal at once with a status and a reason, and keeps
  accepting connections after accept() failed.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions
from tensorwire.transport.kit import framing
from tensorwire_grpc import bulk
from tensorwire_grpc import options as opts
from tensorwire_grpc.server import FETCH_PATH, HELLO_PATH
from tensorwire_grpc.wire import Wire

from .test_bulk import _raw_connection

MiB = 1 << 20
ON = {"bulk_tcp": True, "shm": False}  # the TCP mover itself (shm would come first)
OFF = {"bulk_tcp": False, "shm": False}  # the gRPC paths alone
SERVICE = "t.Limits"

service = Service(SERVICE)
#: Calls that reached a handler, by method name.
handled: dict[str, int] = {}


@service.unary("Count")
def _count(frames, context):
    handled["Count"] = handled.get("Count", 0) + 1
    return [str(len(frames)).encode()]


service.unary("Echo")(lambda frames, context: frames)


@service.stream("Repeat")
def _repeat(frames, context):
    handled["Repeat"] = handled.get("Repeat", 0) + 1
    yield frames


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    handled.clear()


@pytest.fixture
def serve(transport):
    """``serve(**options)``: a started listener of ``service``, stopped afterwards."""
    listeners = []

    def start(**kwargs):
        listener = transport.serve("127.0.0.1:0", [service], TransportOptions(**kwargs))
        listener.start()
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.stop(0)


@pytest.fixture
def raw_channel() -> Iterator[grpc.Channel]:
    """``raw_channel(address)``: a plain gRPC channel that sends messages of any size."""
    channels: list[grpc.Channel] = []

    def connect(address: str) -> grpc.Channel:
        channel = grpc.insecure_channel(address, [("grpc.max_send_message_length", -1)])
        channels.append(channel)
        return channel

    yield connect
    for channel in channels:
        channel.close()


def _inline(lengths: list[int], payload: bytes = b"") -> bytes:
    """An INLINE request announcing ``lengths`` (the payload as given, possibly short)."""
    head = struct.pack("<BBHI", framing.INLINE, 0, 0, len(lengths))
    return head + struct.pack(f"<{len(lengths)}Q", *lengths) + payload


# -- memory before authentication --------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (f"/{SERVICE}/Count", "stream_unary"),
        (f"/{SERVICE}/Repeat:stream", "stream_stream"),
        (FETCH_PATH, "stream_stream"),
        (HELLO_PATH, "stream_unary"),
    ],
)
def test_a_call_without_the_token_is_refused_before_its_request_is_read(
    serve, raw_channel, path: str, kind: str
) -> None:
    """The request never comes; the refusal does, so the server did not wait to read it."""
    listener = serve(token="s3cret", extra=ON)
    release = threading.Event()

    def never() -> Iterator[bytes]:
        release.wait(60)
        return
        yield b""  # a generator that sends nothing until released

    multicallable = getattr(raw_channel(listener.address), kind)(path)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            answer = multicallable(never(), timeout=30)
            if kind == "stream_stream":
                list(answer)
    finally:
        release.set()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
    assert "token" in caught.value.details()
    assert not handled


MEMORY_SERVER = textwrap.dedent(
    """
    import resource, sys
    from tensorwire.transport import Service, TransportOptions
    from tensorwire_grpc.transport import GrpcTransport

    service = Service("t.Limits")
    service.unary("Echo")(lambda frames, context: frames)
    listener = GrpcTransport().serve("127.0.0.1:0", [service], TransportOptions(token="s3cret"))
    listener.start()
    print("ADDRESS", listener.address, flush=True)
    for line in sys.stdin:  # each line asks for the peak resident size so far, in KiB
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    """
)


def test_requests_without_the_token_do_not_grow_the_server(raw_channel) -> None:
    """Three 96 MiB requests without a token: the server's peak memory barely moves (it
    grew by more than the requests' size when it read them before checking the token)."""
    server = subprocess.Popen(
        [sys.executable, "-c", MEMORY_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("ADDRESS"), line

        def peak_kib() -> int:
            server.stdin.write("rss\n")
            server.stdin.flush()
            return int(server.stdout.readline())

        call = raw_channel(line.split()[1]).unary_unary(f"/{SERVICE}/Echo")
        before = peak_kib()
        request = _inline([96 * MiB], bytes(96 * MiB))
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=60)
            assert caught.value.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ), caught.value
        grown_mib = (peak_kib() - before) / 1024
        assert grown_mib < 48, f"the server grew by {grown_mib:.0f} MiB for 288 MiB refused"
    finally:
        server.kill()
        server.wait(30)
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()


def test_the_servers_receive_limit_is_finite_and_follows_the_options() -> None:
    default = opts.server_receive_bytes(TransportOptions())
    assert opts.DEFAULT_INLINE_BYTES < default <= opts.DEFAULT_INLINE_BYTES + 2 * MiB
    bigger = TransportOptions(extra={"grpc_chunk_bytes": 32 * MiB})
    assert opts.server_receive_bytes(bigger) > 32 * MiB
    assert opts.server_receive_bytes(TransportOptions(max_message_bytes=1000)) < 2 * MiB
    arguments = dict(opts.server_arguments(TransportOptions()))
    assert arguments["grpc.max_receive_message_length"] == default


def test_a_grpc_message_above_the_receive_limit_is_refused_with_the_reason(
    transport, serve
) -> None:
    listener = serve(extra=OFF)
    # A client that sends 16 MiB as one gRPC message, past the server's limit.
    inline = transport.connect(
        listener.address, TransportOptions(extra={**OFF, "grpc_inline_bytes": 64 * MiB})
    )
    big = np.arange(4 * MiB, dtype=np.uint32)
    with pytest.raises(errors.ResourceExhaustedError, match="grpc_inline_bytes"):
        inline.call(SERVICE, "Echo", [big], timeout=60)
    # The same 16 MiB from a client with default options travel in chunks.
    default = transport.connect(listener.address, TransportOptions(extra=OFF))
    (got,) = default.call(SERVICE, "Echo", [big], timeout=60)
    assert bytes(got) == big.tobytes()


# -- amplification -------------------------------------------------------------------------------
def test_a_request_of_too_many_frames_is_refused_from_its_manifest(serve, raw_channel) -> None:
    """2**17 empty frames in a 1 MiB request: refused, saying so, before any frame exists."""
    listener = serve(extra=ON)
    channel = raw_channel(listener.address)
    many = [0] * (framing.MAX_FRAMES * 2)
    with pytest.raises(grpc.RpcError) as inline:
        channel.unary_unary(f"/{SERVICE}/Count")(_inline(many), timeout=30)
    chunked_manifest = struct.pack(f"<BBHI{len(many)}Q", framing.CHUNKED, 0, 0, len(many), *many)
    with pytest.raises(grpc.RpcError) as chunked:
        chunks = channel.stream_stream(f"/{SERVICE}/Count:chunked")
        list(chunks(iter([chunked_manifest]), timeout=30))
    for caught in (inline.value, chunked.value):
        assert caught.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught
        assert f"limit of {framing.MAX_FRAMES} frames" in caught.details()
    assert not handled


def test_each_frame_counts_against_max_message_bytes(transport, serve) -> None:
    listener = serve(max_message_bytes=MiB, extra=ON)
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    # No payload at all, but 4096 frames cost the receiver about 2 MiB.
    with pytest.raises(errors.ResourceExhaustedError, match="each frame counts"):
        channel.call(SERVICE, "Count", [b""] * 4096, timeout=30)
    assert bytes(channel.call(SERVICE, "Count", [b""] * 64, timeout=30)[0]) == b"64"
    assert handled == {"Count": 1}


def test_a_message_of_too_many_frames_is_not_sent(transport, serve) -> None:
    listener = serve(extra=ON)
    channel = transport.connect(listener.address, TransportOptions(extra=ON))
    with pytest.raises(errors.InvalidArgumentError, match=f"at most {framing.MAX_FRAMES} frames"):
        channel.call(SERVICE, "Count", [b""] * (framing.MAX_FRAMES + 1), timeout=30)
    assert not handled


# -- side-channel refusals -----------------------------------------------------------------------
def _status(wire: Wire) -> tuple[int, str]:
    """The status answering a request whose payload was not sent (generous deadline)."""
    code, size = bulk.protocol.STATUS.unpack(
        wire.read(bulk.protocol.STATUS.size, time.monotonic() + 30)
    )
    return code, wire.read(size, time.monotonic() + 30).decode()


def _push_head(lengths: list[int], ttl_ms: int = 3000) -> bytes:
    return (
        bytes([bulk.protocol.OP_PUSH])
        + bulk.protocol.PUSH_HEAD.pack(bytes(16), ttl_ms, len(lengths))
        + struct.pack(f"<{len(lengths)}Q", *lengths)
    )


def _call_head(name: bytes, lengths: list[int], timeout_ms: int = 2000) -> bytes:
    return (
        bytes([bulk.protocol.OP_CALL])
        + bulk.protocol.CALL_HEAD.pack(len(name), 0, timeout_ms)
        + name
        + struct.pack(f"<I{len(lengths)}Q", len(lengths), *lengths)
    )


@pytest.mark.parametrize(
    ("max_bytes", "head", "code", "reason"),
    [
        # 2**40 bytes announced: no room among the pushed requests; the bytes never come.
        (None, _push_head([1 << 40]), errors.Code.RESOURCE_EXHAUSTED, "pushed requests"),
        (MiB, _push_head([8 * MiB]), errors.Code.RESOURCE_EXHAUSTED, "max_message_bytes"),
        (
            MiB,
            _call_head(b"/t.Limits/Echo", [8 * MiB]),
            errors.Code.RESOURCE_EXHAUSTED,
            "max_message_bytes",
        ),
        # The frame count alone, without the lengths it announces.
        (
            None,
            bytes([bulk.protocol.OP_PUSH]) + bulk.protocol.PUSH_HEAD.pack(bytes(16), 3000, 1 << 17),
            errors.Code.RESOURCE_EXHAUSTED,
            f"limit of {framing.MAX_FRAMES} frames",
        ),
        (
            None,
            bytes([bulk.protocol.OP_CALL]) + bulk.protocol.CALL_HEAD.pack(60_000, 0, 0),
            errors.Code.INVALID_ARGUMENT,
            "method name",
        ),
        (None, bytes([99]), errors.Code.INVALID_ARGUMENT, "unknown bulk side-channel operation"),
    ],
    ids=["push-2**40", "push-over-limit", "call-over-limit", "frames", "name", "op"],
)
def test_a_refused_side_channel_request_gets_its_reason_at_once(
    serve, max_bytes: int | None, head: bytes, code: errors.Code, reason: str
) -> None:
    """Only the header is sent; the status comes without waiting for a payload."""
    listener = serve(max_message_bytes=max_bytes, extra=ON)
    wire = _raw_connection(listener.bulk.port)
    try:
        wire.send([head], time.monotonic() + 30)
        got, message = _status(wire)
        assert (got, reason in message) == (int(code), True), message
        # Then the server closes the connection: nothing of the payload is read.
        with pytest.raises(ConnectionError):
            wire.read(1, time.monotonic() + 30)
    finally:
        wire.close()
    assert listener.bulk.arrivals.held_bytes == 0
    assert not handled


def test_a_client_refused_mid_send_gets_the_reason_and_the_next_call_works(serve) -> None:
    listener = serve(max_message_bytes=2 * MiB, extra=ON)
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, None)
    try:
        big = memoryview(np.zeros(64 * MiB, np.uint8))
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            bulk.call(peer, f"/{SERVICE}/Echo", [big], (), time.monotonic() + 60, None)
        (got,) = bulk.call(peer, f"/{SERVICE}/Echo", [memoryview(b"ok")], (), None, None)
        assert bytes(got) == b"ok"
    finally:
        peer.close()


# -- refused connections ------------------------------------------------------------------------
def test_a_connection_beyond_the_limit_is_refused_with_the_reason(serve, monkeypatch) -> None:
    monkeypatch.setattr(bulk.server, "MAX_SERVER_CONNECTIONS", 2)
    listener = serve(extra=ON)
    held = [_raw_connection(listener.bulk.port) for _ in range(2)]
    try:
        # By hand: the refusal replaces the nonce, and it comes at once.
        sock = socket.create_connection(("127.0.0.1", listener.bulk.port), timeout=30)
        wire = Wire(sock)
        try:
            assert wire.read(4, time.monotonic() + 30) == bulk.protocol.REFUSED_MAGIC
            code, message = _status(wire)
            assert code == int(errors.Code.UNAVAILABLE)
            assert "at most 2 side-channel connections" in message
        finally:
            wire.close()
        # A client is told the same, and says so.
        peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, None)
        with pytest.raises(ConnectionError, match="refused the connection: .*at most 2"):
            peer._connect(time.monotonic() + 30)
    finally:
        for wire in held:
            wire.close()


def test_a_connection_without_the_proof_is_refused_with_the_reason(serve) -> None:
    listener = serve(token="s3cret", extra=ON)
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, "wrong")
    with pytest.raises(ConnectionError, match="did not prove the cluster token"):
        peer._connect(time.monotonic() + 30)


def test_refused_connections_do_not_flood_the_log(serve, caplog) -> None:
    """Fifty failed handshakes: one warning, the rest at debug level, none lost."""
    listener = serve(token="s3cret", extra=ON)
    caplog.set_level(logging.DEBUG, logger=bulk.__name__)
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, "wrong")
    for _ in range(50):
        with pytest.raises(ConnectionError):
            peer._connect(time.monotonic() + 30)

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "did not prove" in r.getMessage()]

    # The server logs after answering: wait (bounded) until it logged all fifty.
    deadline = time.monotonic() + 30
    while len(refusals()) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(refusals()) == 50
    assert [r.levelno for r in refusals()].count(logging.WARNING) == 1


# -- the accept loop -----------------------------------------------------------------------------
ACCEPT_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, resource, socket, threading, time
    import numpy as np
    from tensorwire.transport import Service, TransportOptions
    from tensorwire_grpc import bulk
    from tensorwire_grpc.transport import GrpcTransport
    from tensorwire_grpc.wire import Wire

    warnings = []

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("tensorwire_grpc.bulk").addHandler(Keep(logging.WARNING))
    service = Service("t.Accept")
    service.unary("Echo")(lambda frames, context: frames)
    ON = TransportOptions(extra={"bulk_tcp": True, "shm": False})
    listener = GrpcTransport().serve("127.0.0.1:0", [service], ON)
    listener.start()
    port = listener.bulk.port

    def accepting():
        name = f"tensorwire-bulk-{port}"
        return any(t.name == name and t.is_alive() for t in threading.enumerate())

    # Run out of file descriptors, then connect twice. The accept() already waiting holds
    # a descriptor (Linux takes it before waiting) and serves the first connection; the
    # next accept() fails at once (EMFILE), and the second connection waits in the backlog.
    first, second = socket.socket(), socket.socket()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    spare = []
    try:
        while True:
            spare.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    first.connect(("127.0.0.1", port))
    end = time.monotonic() + 60
    while not warnings and accepting() and time.monotonic() < end:
        time.sleep(0.01)
    second.connect(("127.0.0.1", port))
    result = {"warnings": list(warnings), "accepting": accepting()}
    for fd in spare:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    # The connection that waited in the backlog is served once descriptors are free...
    for name, sock in (("first", first), ("second", second)):
        try:
            size = len(bulk.protocol.MAGIC) + bulk.protocol.NONCE_BYTES
            hello = Wire(sock).read(size, time.monotonic() + 30)
            result[name] = hello[:4] == bulk.protocol.MAGIC
        except (OSError, ConnectionError) as exc:
            result[name] = repr(exc)
        sock.close()
    # ... and a new client's large call goes over the side channel, not gRPC.
    transport = GrpcTransport()
    channel = transport.connect(listener.address, ON)
    big = np.arange(1 << 18, dtype=np.uint32)
    (got,) = channel.call("t.Accept", "Echo", [big], timeout=60)
    peer = channel._shared.known_bulk_peer(None)
    result["echoed"] = bytes(got) == big.tobytes()
    result["side_channel"] = peer is not None and peer.failures == 0
    print("RESULT", json.dumps(result), flush=True)
    channel.close()
    transport.close()
    listener.stop(0)
    """
)


def test_the_side_channel_keeps_accepting_after_accept_fails() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ACCEPT_SCRIPT], capture_output=True, text=True, timeout=240
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}: {done.stdout}\n{done.stderr}"
    result = json.loads(lines[0][len("RESULT ") :])
    assert any("cannot accept a connection" in w for w in result["warnings"]), result
    assert result["accepting"], result
    assert result["first"] is True and result["second"] is True, result
    assert result["echoed"] and result["side_channel"], result
