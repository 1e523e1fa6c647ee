"""The shared-memory mover of the grpc transport: large calls and stream messages move
through shared memory between processes of one host (read in place), errors, deadlines and
limits hold as on every path, a peer that cannot reach the listener (another network
namespace, a name that is not there) falls back to TCP and gRPC, and a peer killed with
``kill -9`` mid-transfer leaves nothing behind and fails the survivor's call in time."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, shm
from tensorwire.transport.base import RESPONSE_BYTES_METADATA_KEY
from tensorwire_grpc import options as opts
from tensorwire_grpc import shm_mover
from tensorwire_testing import eventually, netns

MiB = 1024 * 1024
DEADLINE_SECONDS = 60.0
TOKEN = "shm-mover-token"
#: The mover alone: every message of at least 1 byte, the TCP side channel off.
EVERY_MESSAGE = {"shm": True, "bulk_tcp": False, "bulk_tcp_threshold_bytes": 1}

service = Service("t.Shm")
service.unary("Echo")(lambda frames, context: frames)
service.unary("Zeros")(lambda frames, context: [np.zeros(int(bytes(frames[0])), np.uint8)])


@service.unary("Context")
def _context(frames, context):
    return [context.metadata.get("x-test", "").encode(), str(context.deadline is not None).encode()]


@service.unary("Fail")
def _fail(frames, context):
    raise errors.FailedPreconditionError(f"refused {len(frames[0])} bytes")


@service.unary("Sleep")
def _sleep(frames, context):
    time.sleep(float(bytes(frames[0])))
    return [b"slept"]


@service.stream("Repeat")
def _repeat(frames, context):
    size = int(bytes(frames[1])) if len(frames) > 1 else MiB
    for i in range(int(bytes(frames[0]))):
        yield [np.full(size + i, i, np.uint8)]


def _options(max_message_bytes: int | None = None, **extra: object) -> TransportOptions:
    return TransportOptions(
        token=TOKEN, max_message_bytes=max_message_bytes, extra={**EVERY_MESSAGE, **extra}
    )


def _in_a_segment(view: memoryview) -> bool:
    """Whether ``view`` lies inside a shared-memory segment this process maps."""
    array = np.frombuffer(view, np.uint8)
    start = int(array.__array_interface__["data"][0])
    return any(lo <= start and start + array.nbytes <= hi for lo, hi in shm.mapped_ranges())


def _counts() -> tuple[int, int]:
    gc.collect()
    return shm.memfd_mappings(), shm.memfd_descriptors()


def _wait_counts(expected: tuple[int, int]) -> None:
    def check() -> None:
        assert _counts() == expected

    eventually(check, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))


def _dev_shm() -> set[str]:
    """The shared-memory files in ``/dev/shm``. Not POSIX semaphores (``sem.*``) nor
    directories: tests running beside this one in other processes make those (a DataLoader's
    multiprocessing semaphores, the journal tests' tmpfs directories), and the medium makes
    neither, so they say nothing about a leak of ours."""
    if not os.path.isdir("/dev/shm"):
        return set()
    with os.scandir("/dev/shm") as entries:
        return {
            e.name
            for e in entries
            if e.is_file(follow_symlinks=False) and not e.name.startswith("sem.")
        }


@pytest.fixture
def served(transport):
    listener = transport.serve("127.0.0.1:0", [service], _options())
    listener.start()
    yield listener
    listener.stop(0)


def test_options_default_on_off_switch_and_tls_rule(
    transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert opts.shm(TransportOptions())
    assert transport.status()["shm"] is True
    assert not opts.shm(TransportOptions(extra={"shm": False}))
    monkeypatch.setenv(opts.SHM_ENV, "0")
    assert not opts.shm(TransportOptions())
    assert opts.shm(TransportOptions(extra={"shm": True}))
    monkeypatch.delenv(opts.SHM_ENV)
    # Under TLS only a token proves the peer of the abstract socket.
    assert not opts.shm(TransportOptions(tls_root_ca="ca.pem"))
    assert opts.shm(TransportOptions(tls_root_ca="ca.pem", token="t"))
    with pytest.raises(errors.InvalidArgumentError, match="shm"):
        opts.shm(TransportOptions(extra={"shm": "yes"}))


def test_large_calls_and_stream_messages_are_read_in_place(transport, served) -> None:
    assert served.shm is not None
    channel = transport.connect(served.address, _options())
    big = np.arange(4 * MiB, dtype=np.uint32)
    got = channel.call("t.Shm", "Echo", [b"head", big, b""], timeout=DEADLINE_SECONDS)
    assert bytes(got[0]) == b"head" and bytes(got[2]) == b""
    assert np.array_equal(np.frombuffer(got[1], np.uint32), big)
    assert _in_a_segment(got[1]), "the response was copied, not read in place"
    messages = list(channel.stream("t.Shm", "Repeat", [b"3"], timeout=DEADLINE_SECONDS))
    assert [m[0].nbytes for m in messages] == [MiB, MiB + 1, MiB + 2]
    assert [bytes(m[0][:1]) for m in messages] == [b"\x00", b"\x01", b"\x02"]
    assert all(_in_a_segment(m[0]) for m in messages), "a stream message was not moved by shm"
    channel.close()


def test_a_whole_stream_moves_through_shared_memory(transport) -> None:
    # Above the mover threshold or not, every message of a stream comes through the one
    # connection of its call (none is a gRPC message plus a fetch), as many as the window.
    listener = transport.serve("127.0.0.1:0", [service], _options(bulk_tcp_threshold_bytes=MiB))
    listener.start()
    try:
        channel = transport.connect(listener.address, _options(bulk_tcp_threshold_bytes=MiB))
        messages = list(channel.stream("t.Shm", "Repeat", [b"20", b"100"], timeout=60))
        assert [m[0].nbytes for m in messages] == [100 + i for i in range(20)]
        assert all(_in_a_segment(m[0]) for m in messages)
        # Stopping early closes the stream's connection; the next stream gets another.
        stream = channel.stream("t.Shm", "Repeat", [b"1000", b"100"], timeout=60)
        assert bytes(next(stream)[0][:1]) == b"\x00"
        stream.close()
        again = list(channel.stream("t.Shm", "Repeat", [b"2", b"100"], timeout=60))
        assert len(again) == 2 and _in_a_segment(again[1][0])
        channel.close()
    finally:
        listener.stop(0)


def test_errors_metadata_and_deadlines_hold(transport, served) -> None:
    channel = transport.connect(served.address, _options())
    with pytest.raises(errors.FailedPreconditionError, match="refused 7 bytes"):
        channel.call("t.Shm", "Fail", [b"x" * 7], timeout=DEADLINE_SECONDS)
    got = channel.call(
        "t.Shm", "Context", [b"x"], timeout=DEADLINE_SECONDS, metadata={"x-test": "hello"}
    )
    assert [bytes(g) for g in got] == [b"hello", b"True"]
    with pytest.raises(errors.DeadlineExceededError):
        channel.call("t.Shm", "Sleep", [b"5"], timeout=0.5)
    # The connection that timed out was dropped; the next call still works.
    assert bytes(channel.call("t.Shm", "Echo", [b"ok"], timeout=DEADLINE_SECONDS)[0]) == b"ok"
    channel.close()


def test_message_limits_are_refused_with_the_reason(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], _options(2 * MiB))
    listener.start()
    try:
        channel = transport.connect(listener.address, _options())
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            channel.call("t.Shm", "Echo", [np.zeros(3 * MiB, np.uint8)], timeout=DEADLINE_SECONDS)
        small = transport.connect(listener.address, _options(MiB))
        with pytest.raises(errors.ResourceExhaustedError, match="max_message_bytes"):
            small.call("t.Shm", "Zeros", [str(MiB + 1).encode()], timeout=DEADLINE_SECONDS)
        channel.close()
        small.close()
    finally:
        listener.stop(0)


def test_an_unreachable_listener_falls_back_to_tcp(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], _options(bulk_tcp=True))
    listener.start()
    try:
        # The name offered is one nobody listens on: what a peer on another host, or in
        # another network namespace, finds.
        assert listener.shm is not None
        listener.shm.address = shm.ADDRESS_PREFIX + "0" * 32
        channel = transport.connect(listener.address, _options(bulk_tcp=True))
        big = np.arange(MiB, dtype=np.uint32)
        got = channel.call("t.Shm", "Echo", [big], timeout=DEADLINE_SECONDS)
        assert np.array_equal(np.frombuffer(got[0], np.uint32), big)
        assert not _in_a_segment(got[0])
        shared = channel._shared  # type: ignore[attr-defined]
        assert shared.shm_peer(TOKEN) is None
        assert shared.known_bulk_peer(TOKEN) is not None
        channel.close()
    finally:
        listener.stop(0)


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tensorwire.transport import Service, TransportOptions
    from tensorwire_grpc.transport import GrpcTransport

    service = Service("t.Shm")
    service.unary("Echo")(lambda frames, context: frames)

    @service.unary("Hold")
    def _hold(frames, context):
        held = frames  # the request stays mapped here, lent by the caller
        print("HOLDING", flush=True)
        time.sleep(120)
        return held

    extra = {"shm": True, "bulk_tcp": sys.argv[2] == "tcp", "bulk_tcp_threshold_bytes": 1}
    listener = GrpcTransport().serve(
        sys.argv[1] + ":0", [service], TransportOptions(token="@TOKEN@", extra=extra)
    )
    listener.start()
    print("ADDRESS", listener.address, flush=True)
    time.sleep(300)
    """
).replace("@TOKEN@", TOKEN)

CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tensorwire.transport import TransportOptions
    from tensorwire.transport.base import RESPONSE_BYTES_METADATA_KEY
    from tensorwire_grpc.transport import GrpcTransport

    extra = {"shm": True, "bulk_tcp": sys.argv[2] == "tcp", "bulk_tcp_threshold_bytes": 1}
    # insecure: the token crosses a private bridge between two test namespaces in plaintext.
    options = TransportOptions(token="@TOKEN@", extra=extra, insecure=True)
    channel = GrpcTransport().connect(sys.argv[1], options)
    if sys.argv[3] == "hold":
        size = 64 << 20
        held = channel.call(
            "t.Shm", "Zeros", [str(size).encode()], timeout=60,
            metadata={RESPONSE_BYTES_METADATA_KEY: str(size)},
        )
        print("HOLDING", len(held[0]), flush=True)
        time.sleep(300)
    big = np.arange(1 << 18, dtype=np.uint32)
    got = channel.call("t.Shm", "Echo", [big], timeout=60)
    assert np.array_equal(np.frombuffer(got[0], np.uint32), big)
    shared = channel._shared
    by_shm = shared.shm_peer("@TOKEN@") is not None
    print("RESULT", by_shm, shared.known_bulk_peer("@TOKEN@") is not None, flush=True)
    """
).replace("@TOKEN@", TOKEN)


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _line(process: subprocess.Popen[str], marker: str) -> str:
    """The first line of ``process`` that starts with ``marker`` (its output is read until
    then; a process that ends first fails the test)."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(marker):
            return line
    raise AssertionError(f"the process ended (code {process.wait(30)}) before {marker!r}")


def _end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(30)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def server_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = _start([sys.executable, "-c", SERVER_SCRIPT, "127.0.0.1", "grpc"])
    try:
        yield process, _line(process, "ADDRESS").split()[1]
    finally:
        _end(process)


def test_a_server_killed_mid_transfer_fails_the_call_in_time_and_leaks_nothing(
    transport, server_process
) -> None:
    process, address = server_process
    before, files = _counts(), _dev_shm()
    channel = transport.connect(address, _options())
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(channel.call("t.Shm", "Hold", [np.ones(64 * MiB, np.uint8)], timeout=30))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    _line(process, "HOLDING")  # the server maps the request now, lent by this side
    assert _counts() != before
    os.kill(process.pid, signal.SIGKILL)
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive(), "the call hung after its peer was killed"
    (result,) = outcome
    assert isinstance(result, errors.UnavailableError), repr(result)
    assert "shared-memory" in result.message
    channel.close()
    _wait_counts(before)
    assert _dev_shm() == files


def test_a_caller_killed_holding_a_response_leaks_nothing_here(transport, served) -> None:
    before, files = _counts(), _dev_shm()
    process = _start([sys.executable, "-c", CLIENT_SCRIPT, served.address, "grpc", "hold"])
    try:
        assert _line(process, "HOLDING").split()[1] == str(64 * MiB)
        # The caller holds the response in this server's segment (lent until released).
        assert _counts() != before
        os.kill(process.pid, signal.SIGKILL)
        _wait_counts(before)
        assert _dev_shm() == files
    finally:
        _end(process)


@pytest.mark.skipif(
    netns.unavailable_reason() is not None,
    reason=f"{netns.unavailable_reason()}; runs wherever the suite runs as root (CI does)",
)
@pytest.mark.parametrize("fallback", ["tcp", "grpc"])
def test_a_peer_in_another_network_namespace_falls_back(fallback: str) -> None:
    # Same kernel, other network namespaces: the offered abstract name cannot be reached,
    # so the call goes over the side channel (or gRPC) and still works.
    with netns.VirtualNetwork() as network:
        here, there = network.add_host("server"), network.add_host("client")
        server = _start(here.wrap([sys.executable, "-c", SERVER_SCRIPT, here.address, fallback]))
        try:
            address = _line(server, "ADDRESS").split()[1]
            client = _start(
                there.wrap([sys.executable, "-c", CLIENT_SCRIPT, address, fallback, "call"])
            )
            try:
                result = _line(client, "RESULT").split()[1:]
                assert client.wait(DEADLINE_SECONDS) == 0
            finally:
                _end(client)
        finally:
            _end(server)
    assert result == ["False", str(fallback == "tcp")]


def test_the_mover_is_skipped_when_either_side_turns_it_off(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], _options(shm=False))
    listener.start()
    try:
        assert listener.shm is None
        channel = transport.connect(listener.address, _options())
        got = channel.call("t.Shm", "Echo", [np.ones(MiB, np.uint8)], timeout=DEADLINE_SECONDS)
        assert not _in_a_segment(got[0])
        channel.close()
    finally:
        listener.stop(0)
    on = transport.serve("127.0.0.1:0", [service], _options())
    on.start()
    try:
        channel = transport.connect(on.address, _options(shm=False))
        got = channel.call("t.Shm", "Echo", [np.ones(MiB, np.uint8)], timeout=DEADLINE_SECONDS)
        assert not _in_a_segment(got[0])
        assert channel._shared.shm_peer(TOKEN) is None  # type: ignore[attr-defined]
        channel.close()
    finally:
        on.stop(0)


def test_an_announced_response_comes_whole_through_shared_memory(transport, served) -> None:
    channel = transport.connect(served.address, _options(bulk_tcp_threshold_bytes=256 << 10))
    size = 8 * MiB
    got = channel.call(
        "t.Shm",
        "Zeros",
        [str(size).encode()],
        timeout=DEADLINE_SECONDS,
        metadata={RESPONSE_BYTES_METADATA_KEY: str(size)},
    )
    assert got[0].nbytes == size and _in_a_segment(got[0])
    channel.close()


def test_under_tls_the_mover_needs_a_token(transport, certs) -> None:
    # Mutual TLS alone: no token to prove the peer of the abstract socket, so no mover.
    mtls = TransportOptions(
        tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    listener = transport.serve("127.0.0.1:0", [service], mtls)
    try:
        assert listener.shm is None and listener.bulk is None
    finally:
        listener.stop(0)
    # TLS with a token: the token proof authenticates the peer; the bytes stay on the host.
    server = TransportOptions(
        tls_cert=certs.server_cert, tls_key=certs.server_key, token=TOKEN, extra=EVERY_MESSAGE
    )
    listener = transport.serve("127.0.0.1:0", [service], server)
    listener.start()
    try:
        assert listener.shm is not None and listener.bulk is None
        client = TransportOptions(tls_root_ca=certs.ca, token=TOKEN, extra=EVERY_MESSAGE)
        channel = transport.connect(listener.address, client)
        got = channel.call("t.Shm", "Echo", [np.ones(MiB, np.uint8)], timeout=DEADLINE_SECONDS)
        assert _in_a_segment(got[0])
        channel.close()
    finally:
        listener.stop(0)


def test_connections_past_the_server_limit_use_another_way(
    transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One connection at most: a second stream while the first is open is not accepted; its
    # handshake times out and it goes by gRPC, and works.
    monkeypatch.setattr(shm_mover, "MAX_SERVER_CONNECTIONS", 1)
    listener = transport.serve("127.0.0.1:0", [service], _options())
    listener.start()
    try:
        channel = transport.connect(listener.address, _options())
        first = channel.stream("t.Shm", "Repeat", [b"1000", b"100"], timeout=60)
        assert _in_a_segment(next(first)[0])
        second = list(channel.stream("t.Shm", "Repeat", [b"3", b"100"], timeout=60))
        assert [m[0].nbytes for m in second] == [100, 101, 102]
        assert not any(_in_a_segment(m[0]) for m in second)
        first.close()
        channel.close()
    finally:
        listener.stop(0)


def test_a_restarted_server_is_reached_through_its_new_listener(transport) -> None:
    # The TCP side channel off: nothing else would make the channel ask the server again.
    first = transport.serve("127.0.0.1:0", [service], _options())
    first.start()
    port = first.port
    channel = transport.connect(f"127.0.0.1:{port}", _options())
    big = np.arange(MiB, dtype=np.uint32)
    assert _in_a_segment(channel.call("t.Shm", "Echo", [big], timeout=DEADLINE_SECONDS)[0])
    assert first.shm is not None
    old_name = first.shm.address
    first.stop(0)
    second = transport.serve(f"127.0.0.1:{port}", [service], _options())
    second.start()
    try:
        assert second.shm is not None and second.shm.address != old_name

        def through_the_new_listener() -> None:
            (got,) = channel.call("t.Shm", "Echo", [big], timeout=DEADLINE_SECONDS)
            assert np.array_equal(np.frombuffer(got, np.uint32), big)
            assert _in_a_segment(got)

        # Right after the restart the old listener is gone: calls go by gRPC (the first may
        # meet gRPC's connection to the stopped server: UnavailableError, which callers
        # retry) until the channel asks the server again, a retry period later.
        eventually(
            through_the_new_listener,
            timeout=DEADLINE_SECONDS,
            retry_on=(AssertionError, errors.UnavailableError),
        )
        peer = channel._shared.shm_peer(TOKEN)  # type: ignore[attr-defined]
        assert peer is not None and peer.address == second.shm.address
    finally:
        channel.close()
        second.stop(0)


def test_idle_connections_are_closed_and_the_server_lets_go_of_them(
    transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle connection costs the server two threads, a socket and segments: the caller
    # closes it after CLIENT_IDLE_SECONDS, and the next call connects again.
    monkeypatch.setattr(shm_mover, "CLIENT_IDLE_SECONDS", 0.2)
    listener = transport.serve("127.0.0.1:0", [service], _options())
    listener.start()
    try:
        assert listener.shm is not None
        channel = transport.connect(listener.address, _options())
        big = np.ones(MiB, np.uint8)
        assert _in_a_segment(channel.call("t.Shm", "Echo", [big], timeout=DEADLINE_SECONDS)[0])

        def none_left() -> None:
            assert not listener.shm.connections  # type: ignore[union-attr]

        eventually(none_left, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
        assert _in_a_segment(channel.call("t.Shm", "Echo", [big], timeout=DEADLINE_SECONDS)[0])
        channel.close()
    finally:
        listener.stop(0)


def test_a_call_moving_a_large_payload_waits_for_its_answer_asleep(
    transport, served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spinning caller would hold a CPU the server's copy helpers want, for nothing: the
    # answer to a copy of PARALLEL_BYTES or more comes later than any spin.
    from tensorwire.transport.kit import copying

    spins = _record_spins(monkeypatch)
    channel = transport.connect(served.address, _options())
    large = copying.PARALLEL_BYTES
    try:
        channel.call("t.Shm", "Echo", [np.zeros(large, np.uint8)], timeout=DEADLINE_SECONDS)
        channel.call(
            "t.Shm",
            "Zeros",
            [str(large).encode()],
            timeout=DEADLINE_SECONDS,
            metadata={RESPONSE_BYTES_METADATA_KEY: str(large)},
        )
        channel.call("t.Shm", "Echo", [np.zeros(large // 4, np.uint8)], timeout=DEADLINE_SECONDS)
    finally:
        channel.close()
    assert spins == [False, False, True]


def test_a_stream_reader_spins_for_the_first_message_only(
    transport, served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the first message a stream's reader waits for its producer asleep: spinning
    # through those waits held a core (the data-service reader's) for no throughput.
    spins = _record_spins(monkeypatch)
    channel = transport.connect(served.address, _options())
    try:
        messages = list(channel.stream("t.Shm", "Repeat", [b"5"], timeout=DEADLINE_SECONDS))
    finally:
        channel.close()
    assert len(messages) == 5 and all(_in_a_segment(m[0]) for m in messages)
    # Five messages and the end of the stream; each wait is the reader's own.
    assert spins == [True, False, False, False, False, False], spins


def _record_spins(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each ``ShmConnection.receive`` of this thread may spin, in order (the
    server's threads receive too: theirs are not recorded)."""
    spins: list[bool] = []
    receive = shm.ShmConnection.receive
    caller = threading.get_ident()

    def recording(self, deadline=None, *, spin=True):  # type: ignore[no-untyped-def]
        if threading.get_ident() == caller:
            spins.append(spin)
        return receive(self, deadline, spin=spin)

    monkeypatch.setattr(shm.ShmConnection, "receive", recording)
    return spins
