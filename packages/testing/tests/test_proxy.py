"""LoopbackProxy: latency and cut connections between a session and a task."""

from __future__ import annotations

import time

import pytest
import tensorwire as tw
from tensorwire_testing import LoopbackProxy, eventually


@pytest.fixture
def grpc_server(tensorwire_protocol, monkeypatch):
    if tensorwire_protocol == "inproc":
        pytest.skip("the proxy forwards TCP; runs with --tensorwire-protocol=grpc")
    # The grpc transport's movers (side channel, shared memory) would go around the proxy,
    # which forwards the gRPC port only: every call on gRPC, through the proxy (as the
    # proxy's docstring says).
    monkeypatch.setenv("TENSORWIRE_GRPC_BULK_TCP", "0")
    monkeypatch.setenv("TENSORWIRE_GRPC_SHM", "0")
    with tw.Server({"ps": ["localhost:0"]}, protocol=tensorwire_protocol) as server:
        yield server


def test_proxy_forwards_and_delays(grpc_server, tensorwire_protocol):
    with LoopbackProxy(f"localhost:{grpc_server.port}") as proxy:
        with tw.Session(f"{tensorwire_protocol}://{proxy.address}") as sess:
            assert sess.run(abs, -1, device="/job:ps/task:0") == 1
            proxy.delay = 0.3
            start = time.monotonic()
            # The session talks to the task at its cluster address, so go through the
            # proxy explicitly: a session whose target is the proxy.
            sess._call_address(proxy.address, "GetStatus", {}, 10, where="proxy")
            assert time.monotonic() - start >= 0.3


def test_cut_connection_gives_unavailable_not_hang(grpc_server, tensorwire_protocol):
    with LoopbackProxy(f"localhost:{grpc_server.port}") as proxy:
        with tw.Session(f"{tensorwire_protocol}://{proxy.address}") as sess:
            proxy.refuse = True
            proxy.cut()
            start = time.monotonic()
            with pytest.raises((tw.errors.UnavailableError, tw.errors.DeadlineExceededError)):
                sess._call_address(proxy.address, "VarRead", {"name": "x"}, 3, where="proxy")
            assert time.monotonic() - start < 5
            proxy.refuse = False
            # Once the proxy lets connections through again, the channel recovers.
            with pytest.raises(tw.errors.NotFoundError):
                eventually(
                    lambda: sess._call_address(
                        proxy.address, "VarRead", {"name": "x"}, 10, where="proxy"
                    )
                )


def test_silent_connections_are_held_unforwarded_then_the_next_ones_pass():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as upstream:
        with LoopbackProxy(f"127.0.0.1:{upstream.getsockname()[1]}") as proxy:
            proxy.silent = 1
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as first:
                first.sendall(b"lost")

                def held() -> None:
                    assert len(proxy.held) == 1

                eventually(held, timeout=10, retry_on=(AssertionError,))
                assert proxy.silent == 0
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as second:
                    upstream.settimeout(10)
                    forwarded, _ = upstream.accept()  # only the second reached the server
                    with forwarded:
                        second.sendall(b"kept")
                        assert forwarded.recv(4) == b"kept"
                    upstream.settimeout(0.2)
                    with pytest.raises(TimeoutError):
                        upstream.accept()  # the first never did


def test_a_frozen_proxy_forwards_nothing_until_it_thaws_and_a_cut_loses_what_it_held():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as upstream:
        upstream.settimeout(10)
        with LoopbackProxy(f"127.0.0.1:{upstream.getsockname()[1]}") as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                forwarded, _ = upstream.accept()
                with forwarded:
                    forwarded.settimeout(10)
                    client.sendall(b"first")
                    assert forwarded.recv(5) == b"first"
                    proxy.frozen = True
                    client.sendall(b"held")
                    forwarded.settimeout(0.3)
                    with pytest.raises(TimeoutError):
                        forwarded.recv(4)  # frozen: nothing passes
                    proxy.frozen = False
                    forwarded.settimeout(10)
                    assert forwarded.recv(4) == b"held"  # thawed: it passes
                    proxy.frozen = True
                    client.sendall(b"lost")
                    proxy.cut()
                    proxy.frozen = False
                    # What the frozen connection held is gone with it: the server reads
                    # the end of the connection, not the bytes.
                    try:
                        tail = forwarded.recv(4)
                    except ConnectionResetError:
                        tail = b""
                    assert tail == b""
