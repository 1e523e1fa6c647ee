"""The part the movers' servers share (``connection_server``), on a plain TCP listener: the
side channel's and the shared-memory mover's own tests cover it through their protocols."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest
from tensorwire import errors
from tensorwire.transport.base import TOKEN_METADATA_KEY
from tensorwire_grpc.connection_server import CallsInFlight, ConnectionServer, with_server_token

DEADLINE_SECONDS = 30.0
CONNECTION_THREAD = "tensorwire-test-conn"


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(DEADLINE_SECONDS)
    parts = []
    while chunk := sock.recv(4096):
        parts.append(chunk)
    return b"".join(parts)


def _answer_served(conn: socket.socket) -> None:
    with conn:
        conn.sendall(b"served")


def _shut(conn: socket.socket) -> None:
    # As the movers' own: the connection may have just ended (its thread closed it).
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _TcpServer:
    """A listener whose connections ``serve`` serves (a refused one gets the reason)."""

    def __init__(
        self, serve: Callable[[socket.socket], None] = _answer_served, max_connections: int = 8
    ) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: ConnectionServer[socket.socket] = ConnectionServer(
            f"test server on port {self.port}",
            accept=lambda: self.sock.accept()[0],
            serve=serve,
            refuse=self._refuse,
            shut=_shut,
            stop_listening=self._stop_listening,
            max_connections=max_connections,
            kind="test",
            wait_when_full=False,
            accept_thread_name=f"tensorwire-test-{self.port}",
            connection_thread_name=CONNECTION_THREAD,
            log=logging.getLogger(__name__),
        )
        self.connections.start()

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        with conn:
            conn.sendall(reason.encode())

    def _stop_listening(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def answer(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), DEADLINE_SECONDS) as client:
            return _read_all(client)


def test_a_connection_no_thread_can_start_for_is_refused_with_the_reason_and_the_next_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    start = threading.Thread.start
    failed: list[threading.Thread] = []

    def start_but_fail_once(thread: threading.Thread) -> None:
        if thread.name == CONNECTION_THREAD and not failed:
            failed.append(thread)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_but_fail_once)
    caplog.set_level(logging.WARNING, logger=__name__)
    server = _TcpServer()
    try:
        refusal = server.answer().decode()
        assert "cannot start a thread for it now (can't start new thread)" in refusal
        # The loop backed off and accepts again.
        assert server.answer() == b"served"
    finally:
        server.connections.close(DEADLINE_SECONDS)
    assert not server.connections.accept_thread.is_alive()
    messages = [record.getMessage() for record in caplog.records]
    retrying = "cannot start a connection thread: can't start new thread; retrying"
    assert any(retrying in m for m in messages), messages
    assert any("accepts connections again after 1 failures" in m for m in messages), messages


def test_a_connection_beyond_the_limit_is_refused_with_the_reason() -> None:
    server = _TcpServer(max_connections=0)
    try:
        assert server.answer() == b"the server serves at most 0 test connections at once; " + (
            b"this call uses gRPC"
        )
    finally:
        server.connections.close(DEADLINE_SECONDS)


def test_close_shuts_the_connections_and_joins_every_thread() -> None:
    served = threading.Event()

    def serve_until_shut(conn: socket.socket) -> None:
        with conn:
            served.set()
            conn.recv(1)  # returns once close() shuts the connection

    server = _TcpServer(serve_until_shut)
    client = socket.create_connection(("127.0.0.1", server.port), DEADLINE_SECONDS)
    try:
        assert served.wait(DEADLINE_SECONDS)
        threads = [t for t in threading.enumerate() if t.name == CONNECTION_THREAD]
        assert len(server.connections) == 1 and threads
        server.connections.close(DEADLINE_SECONDS)
        # No polling: gone when close() returns.
        assert [t.name for t in threads if t.is_alive()] == []
        assert not server.connections.accept_thread.is_alive()
        assert len(server.connections) == 0
    finally:
        client.close()


def test_calls_are_refused_once_draining_and_those_running_are_waited_for() -> None:
    calls = CallsInFlight()
    assert calls.begin("/t.S/M")
    drained = threading.Thread(target=calls.drain, args=(DEADLINE_SECONDS,))
    drained.start()
    calls.end()
    drained.join(DEADLINE_SECONDS)
    assert not drained.is_alive() and calls.count == 0
    with pytest.raises(errors.UnavailableError, match="/t.S/M: the server is stopping"):
        calls.begin("/t.S/M")


def test_drain_gives_up_on_a_call_at_the_end_of_the_grace() -> None:
    calls = CallsInFlight()
    calls.begin("/t.S/M")
    start = time.monotonic()
    calls.drain(0.05)
    assert calls.count == 1 and time.monotonic() - start < DEADLINE_SECONDS


def test_a_call_without_room_is_not_counted_and_is_counted_as_refused() -> None:
    calls = CallsInFlight()
    assert calls.begin("/t.S/M", busy=lambda running: running >= 1)
    assert not calls.begin("/t.S/M", busy=lambda running: running >= 1)
    assert (calls.count, calls.refused_busy) == (1, 1)


@pytest.mark.parametrize("token", ["s3cret", None])
def test_a_call_over_a_proven_connection_carries_the_servers_token(token: str | None) -> None:
    metadata = {TOKEN_METADATA_KEY: "sent by the caller", "k": "v"}
    expected = {"k": "v"} if token is None else {"k": "v", TOKEN_METADATA_KEY: token}
    assert with_server_token(metadata, token) == expected
