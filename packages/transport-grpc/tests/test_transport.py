"""What the grpc transport does beyond the conformance suite: the plugin, channel reuse,
compression on the wire, parked large responses, options, restarts and interpreter exit."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, TransportRegistry
from tensorwire_grpc import options as opts
from tensorwire_grpc.transport import GrpcTransport
from tensorwire_testing.conformance import BaseEchoTests, BaseErrorTests, BaseStreamTests

MiB = 1 << 20

echo = Service("t.Echo")
echo.unary("Echo")(lambda frames, context: frames)
echo.unary("Zeros")(lambda frames, context: [np.zeros(int(bytes(frames[0])), np.uint8)])


@pytest.fixture
def listener(transport):
    listener = transport.serve("127.0.0.1:0", [echo], TransportOptions())
    listener.start()
    yield listener
    listener.stop(0)


# -- the plugin ------------------------------------------------------------------------------
def test_entry_point_provides_the_grpc_protocol() -> None:
    registry = TransportRegistry()
    assert "grpc" in registry.protocols()
    assert isinstance(registry.get("grpc"), GrpcTransport)
    assert registry.infos["grpc"].distribution == "tensorwire-grpc"


def test_plugin_discovery_does_not_import_grpc() -> None:
    code = textwrap.dedent(
        """
        import sys
        from tensorwire.transport import TransportRegistry
        registry = TransportRegistry()
        assert "grpc" in registry.protocols(), registry.protocols()
        assert "grpc" not in sys.modules, "discovery imported grpc"
        registry.get("grpc")
        assert "grpc" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_status_reports_the_grpc_version(transport) -> None:
    import grpc

    assert transport.status()["grpc_version"] == grpc.__version__


# -- channels --------------------------------------------------------------------------------
def test_equal_options_share_one_grpc_channel(transport, listener) -> None:
    a = transport.connect(listener.address, TransportOptions(token="a"))
    b = transport.connect(listener.address, TransportOptions(token="b"))
    assert transport.open_channels() == 1
    c = transport.connect(listener.address, TransportOptions(compression="gzip"))
    assert transport.open_channels() == 2
    for channel in (a, b, c):
        assert bytes(channel.call("t.Echo", "Echo", [b"x"], timeout=10)[0]) == b"x"
    a.close()
    assert transport.open_channels() == 2
    assert bytes(b.call("t.Echo", "Echo", [b"still"], timeout=10)[0]) == b"still"
    b.close()
    c.close()
    assert transport.open_channels() == 0


def _server_restarted_on_its_port(transport):
    """A channel that found its server gone (so gRPC backs off, >= 1 s, before trying
    again), and a new server started on the same port: ``(channel, new server)``."""
    first = transport.serve("127.0.0.1:0", [echo], TransportOptions())
    first.start()
    channel = transport.connect(first.address, TransportOptions())
    assert channel.call("t.Echo", "Echo", [b"1"], timeout=10)
    first.stop(0)
    with pytest.raises(errors.UnavailableError):
        channel.call("t.Echo", "Echo", [b"2"], timeout=5)
    second = transport.serve(first.address, [echo], TransportOptions())
    second.start()
    return channel, second


def test_reconnects_to_a_task_restarted_on_its_port(transport) -> None:
    channel, second = _server_restarted_on_its_port(transport)
    try:
        deadline = time.monotonic() + 10
        while True:  # the channel reconnects by itself (backoff settings: see options)
            try:
                assert channel.call("t.Echo", "Echo", [b"3"], timeout=5)
                break
            except errors.UnavailableError:
                assert time.monotonic() < deadline, "no reconnect within 10 s"
                time.sleep(0.1)
    finally:
        second.stop(0)


def test_a_new_caller_does_not_inherit_a_channel_in_reconnect_backoff(transport) -> None:
    old, second = _server_restarted_on_its_port(transport)
    try:
        # A caller that connects now reaches it at once: it gets its own gRPC channel.
        new = transport.connect(second.address, TransportOptions())
        assert bytes(new.call("t.Echo", "Echo", [b"3"], timeout=5)[0]) == b"3"
        assert transport.open_channels() == 1  # the fresh one replaced the unreachable one
        new.close()
        old.close()
        assert transport.open_channels() == 0
    finally:
        second.stop(0)


# -- compression -----------------------------------------------------------------------------
class CountingProxy:
    """Forwards one loopback port to another and counts the bytes in both directions."""

    def __init__(self, target_port: int) -> None:
        self.bytes = 0
        self._lock = threading.Lock()
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                with self._lock:
                    self.bytes += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_compression_option_is_honoured_on_the_wire(transport, compression: str) -> None:
    # Without the movers: every byte must cross the counted gRPC connection.
    options = TransportOptions(compression=compression, extra={"bulk_tcp": False, "shm": False})
    listener = transport.serve("127.0.0.1:0", [echo], options)
    listener.start()
    proxy = CountingProxy(listener.port)
    try:
        channel = transport.connect(f"127.0.0.1:{proxy.port}", options)
        zeros = np.zeros(2 * MiB, np.uint8)
        (got,) = channel.call("t.Echo", "Echo", [zeros], timeout=30)  # inline each way
        (big,) = channel.call("t.Echo", "Zeros", [str(12 * MiB).encode()], timeout=30)  # chunked
        assert got.nbytes == 2 * MiB and big.nbytes == 12 * MiB
        assert not np.frombuffer(big, np.uint8).any()
        channel.close()
        if compression == "gzip":
            assert proxy.bytes < MiB
        else:
            assert proxy.bytes > 16 * MiB
    finally:
        proxy.close()
        listener.stop(0)


def test_unknown_compression_is_invalid(transport) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="brotli"):
        transport.serve("127.0.0.1:0", [echo], TransportOptions(compression="brotli"))
    with pytest.raises(errors.InvalidArgumentError, match="brotli"):
        transport.connect("127.0.0.1:1", TransportOptions(compression="brotli"))


# -- large responses to unary calls ------------------------------------------------------------
def test_a_large_unary_response_is_fetched_and_released(transport, listener) -> None:
    channel = transport.connect(listener.address, TransportOptions())
    size = opts.DEFAULT_INLINE_BYTES + 3
    (frame,) = channel.call("t.Echo", "Zeros", [str(size).encode()], timeout=30)
    assert frame.nbytes == size
    assert len(listener.pending) == 0


def test_fetching_an_unknown_ticket_is_not_found(transport, listener) -> None:
    import grpc

    with grpc.insecure_channel(listener.address) as raw:
        fetch = raw.unary_stream("/tensorwire.grpc.Pending/Fetch")
        with pytest.raises(grpc.RpcError) as info:
            list(fetch(b"\0" * 16, timeout=10))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- options and binding -----------------------------------------------------------------------
def test_bad_transport_specific_option_is_invalid(transport) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="grpc_chunk_bytes"):
        transport.connect("127.0.0.1:1", TransportOptions(extra={"grpc_chunk_bytes": 0}))


def test_keepalive_arguments_follow_the_options() -> None:
    arguments = dict(opts.channel_arguments(TransportOptions(keepalive_ms=1234)))
    assert arguments["grpc.keepalive_time_ms"] == 1234
    off = dict(opts.channel_arguments(TransportOptions(keepalive_ms=0)))
    assert "grpc.keepalive_time_ms" not in off
    server = dict(opts.server_arguments(TransportOptions(keepalive_ms=1234)))
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= 1234
    assert server["grpc.so_reuseport"] == 0


def test_port_in_use_says_so(transport, listener) -> None:
    with pytest.raises(errors.UnavailableError, match=f"{listener.port}.*in use"):
        transport.serve(listener.address, [echo], TransportOptions())


def test_port_held_by_a_plain_socket_is_refused(transport) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(errors.UnavailableError, match=str(port)):
            transport.serve(f"127.0.0.1:{port}", [echo], TransportOptions())


def test_localhost_port_zero(transport) -> None:
    listener = transport.serve("localhost:0", [echo], TransportOptions())
    listener.start()
    try:
        assert listener.port > 0 and listener.address == f"localhost:{listener.port}"
        channel = transport.connect(listener.address, TransportOptions())
        assert bytes(channel.call("t.Echo", "Echo", [b"lh"], timeout=10)[0]) == b"lh"
    finally:
        listener.stop(0)


def test_reserved_service_name_is_refused(transport) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="tensorwire.grpc.Pending"):
        transport.serve("127.0.0.1:0", [Service("tensorwire.grpc.Pending")], TransportOptions())


# -- interpreter exit ----------------------------------------------------------------------------
EXIT_SCRIPT = textwrap.dedent(
    """
    import threading, time
    from tensorwire.transport import Service, TransportOptions, get_transport

    svc = Service("x.Block")
    entered = threading.Event()

    @svc.unary("Block")
    def block(frames, context):
        entered.set()
        threading.Event().wait(60)  # a handler that would hold the process for a minute
        return []

    @svc.stream("Forever")
    def forever(frames, context):
        for i in range(10**9):
            yield [str(i).encode()]
            time.sleep(0.01)

    transport = get_transport("grpc")
    listener = transport.serve("127.0.0.1:0", [svc], TransportOptions())
    listener.start()
    channel = transport.connect(listener.address, TransportOptions())
    stream = channel.stream("x.Block", "Forever", [])
    next(stream)
    channel.call_async("x.Block", "Block", [])
    assert entered.wait(10)
    print("exiting", flush=True)
    # no stop(), no close(): the interpreter must still exit promptly
    """
)


def test_interpreter_exits_with_a_listener_running_and_calls_in_flight() -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout
    assert time.monotonic() - start < 30


class TestTinyChunksConformance(BaseEchoTests, BaseStreamTests, BaseErrorTests):
    """Conformance with a 64-byte inline limit and 4 KiB chunks, so that even small
    messages take the chunked and parked-response paths."""

    @pytest.fixture
    def server_options(self) -> TransportOptions:
        return TransportOptions(extra={"grpc_inline_bytes": 64, "grpc_chunk_bytes": 4096})

    @pytest.fixture
    def channel_options(self) -> TransportOptions:
        return TransportOptions(extra={"grpc_inline_bytes": 64, "grpc_chunk_bytes": 4096})


# -- what a foreign or broken client gets ------------------------------------------------------
def test_token_is_checked_before_the_request_is_read(transport) -> None:
    import grpc

    listener = transport.serve("127.0.0.1:0", [echo], TransportOptions(token="tok"))
    listener.start()
    try:
        with grpc.insecure_channel(listener.address) as raw:
            call = raw.unary_unary("/t.Echo/Echo")
            with pytest.raises(grpc.RpcError) as info:
                call(b"garbage", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                call(b"garbage", timeout=10, metadata=(("tensorwire-token", "tok"),))
            assert info.value.code() == grpc.StatusCode.DATA_LOSS
            assert "header" in info.value.details()
    finally:
        listener.stop(0)


def test_a_truncated_chunk_stream_is_data_loss(transport, listener) -> None:
    import struct

    import grpc

    manifest = struct.pack("<BBHIQ", 2, 0, 0, 1, 100)  # CHUNKED, one frame of 100 bytes
    with grpc.insecure_channel(listener.address) as raw:
        call = raw.stream_stream("/t.Echo/Echo:chunked")
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([manifest, b"only 16 bytes..."]), timeout=10))
        assert info.value.code() == grpc.StatusCode.DATA_LOSS


def _has_ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_ipv6_address(transport) -> None:
    listener = transport.serve("[::1]:0", [echo], TransportOptions())
    listener.start()
    try:
        assert listener.address == f"[::1]:{listener.port}"
        channel = transport.connect(listener.address, TransportOptions())
        assert bytes(channel.call("t.Echo", "Echo", [b"v6"], timeout=10)[0]) == b"v6"
    finally:
        listener.stop(0)


# -- a peer process that dies ----------------------------------------------------------------
PEER_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from tensorwire.transport import Service, TransportOptions, get_transport

    svc = Service("x.Peer")

    @svc.stream("Forever")
    def forever(frames, context):
        for i in range(10**9):
            yield [str(i).encode()]
            time.sleep(0.01)

    @svc.unary("Hang")
    def hang(frames, context):
        threading.Event().wait(60)
        return []

    listener = get_transport("grpc").serve("127.0.0.1:0", [svc], TransportOptions())
    listener.start()
    print(listener.port, flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def peer_process():
    process = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield process, f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=30)


def test_peer_killed_mid_stream_is_unavailable(transport, peer_process) -> None:
    process, address = peer_process
    stream = transport.connect(address, TransportOptions()).stream("x.Peer", "Forever", [])
    assert bytes(next(stream)[0]) == b"0"
    process.kill()
    start = time.monotonic()
    with pytest.raises(errors.UnavailableError):
        for _ in range(10_000):
            next(stream)
    assert time.monotonic() - start < 10


def test_peer_killed_during_a_call_is_unavailable(transport, peer_process) -> None:
    process, address = peer_process
    channel = transport.connect(address, TransportOptions())
    future = channel.call_async("x.Peer", "Hang", [])
    time.sleep(0.3)  # let the call reach the handler
    process.kill()
    with pytest.raises(errors.UnavailableError):
        future.result(timeout=10)


def test_a_method_first_used_after_the_channel_closed_is_refused_not_a_crash() -> None:
    """gRPC's C core dies of SIGSEGV registering a method on a closed channel; a call
    racing the channel's close (a background call, a Hello) must get CancelledError. In a
    child process, so that the crash this guards against fails the test, not the run."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        from tensorwire import errors
        from tensorwire.transport import TransportOptions
        from tensorwire_grpc.channel import SharedChannel

        shared = SharedChannel("127.0.0.1:1", TransportOptions())
        shared.close()
        try:
            shared.unary_unary("/never.Used/Before")
        except errors.CancelledError as exc:
            print("refused:", exc.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "refused: /never.Used/Before: the channel to 127.0.0.1:1 is closed" in done.stdout
