"""Small unary calls over the side channel (LEAN, ``bulk.protocol``): taken once the side
port is known (asked in the background after the first call), byte-exact, with the token
proved per connection; gRPC when the side channel is unreachable, off, or at its bound of
calls; deadlines, cancellation, a wrong token and a killed peer as on every other path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
from tensorwire import errors
from tensorwire.observe import CallMeter
from tensorwire.transport import Service, TransportOptions
from tensorwire_grpc import bulk
from tensorwire_grpc.wire import Wire

#: Bound on every wait; generous, for a loaded machine.
DEADLINE = 30.0
TOKEN = "lean-secret"

service = Service("t.Lean")
service.unary("Echo")(lambda frames, context: frames)


@service.unary("Remaining")
def _remaining(frames, context):
    remaining = context.time_remaining()
    return [repr(remaining).encode()]


class _Gate:
    """What ``Block`` waits on: ``entered`` is set once a call is in the handler."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


_gate = _Gate()


@service.unary("Block")
def _block(frames, context):
    _gate.entered.set()
    _gate.release.wait(DEADLINE)
    return frames


@pytest.fixture(autouse=True)
def gate() -> Iterator[_Gate]:
    global _gate
    _gate = _Gate()
    yield _gate
    _gate.release.set()


@pytest.fixture
def served(transport) -> Iterator[tuple[object, CallMeter]]:
    meter = CallMeter()
    options = TransportOptions(token=TOKEN, call_meter=meter, extra={"bulk_tcp": True})
    listener = transport.serve("127.0.0.1:0", [service], options)
    listener.start()
    yield listener, meter
    listener.stop(0)


def _paths(meter: CallMeter) -> dict[tuple[str, str], int]:
    return {(s.method, s.path): s.calls for s in meter.snapshot()}


def _client(**extra: object) -> TransportOptions:
    return TransportOptions(token=TOKEN, extra={"bulk_tcp": True, **extra})


def _until_lean(channel, meter: CallMeter) -> None:
    """Make small calls until one took the side channel (the port is learned in the
    background after the first)."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        channel.call("t.Lean", "Echo", [b"warm"], timeout=DEADLINE)
        if _paths(meter).get(("/t.Lean/Echo", "side_channel")):
            return
    pytest.fail("no small call took the side channel")


def test_small_calls_take_the_side_channel_once_its_port_is_known(transport, served) -> None:
    listener, meter = served
    with transport.connect(listener.address, _client()) as channel:
        channel.call("t.Lean", "Echo", [b"first"], timeout=DEADLINE)
        assert _paths(meter) == {("/t.Lean/Echo", "grpc"): 1}  # first contact: gRPC
        _until_lean(channel, meter)
        before = _paths(meter)
        frames = [b"head", b"", os.urandom(1000), bytearray(b"\x00" * 7)]
        for _ in range(20):
            got = channel.call("t.Lean", "Echo", frames, timeout=DEADLINE)
            assert [bytes(g) for g in got] == [bytes(f) for f in frames]
            assert all(not g.readonly for g in got)
        # The largest lean request: one frame of 64 KiB, which gets padding before it.
        largest = os.urandom(bulk.protocol.LEAN_MAX_BYTES)
        (echoed,) = channel.call("t.Lean", "Echo", [b"", largest], timeout=DEADLINE)[1:]
        assert bytes(echoed) == largest
        (nothing,) = channel.call("t.Lean", "Echo", [b""], timeout=DEADLINE)
        assert bytes(nothing) == b""
        assert channel.call("t.Lean", "Echo", [], timeout=DEADLINE) == []
        after = _paths(meter)
        lean = ("/t.Lean/Echo", "side_channel")
        assert after[lean] - before[lean] == 23
        assert after.get(("/t.Lean/Echo", "grpc")) == before.get(("/t.Lean/Echo", "grpc"))
        # Metadata of the caller's keeps a call on gRPC (the lean framing carries none).
        channel.call("t.Lean", "Echo", [b"m"], timeout=DEADLINE, metadata={"x-k": "v"})
        assert _paths(meter)[("/t.Lean/Echo", "grpc")] == before[("/t.Lean/Echo", "grpc")] + 1
        # call_async takes it too.
        future = channel.call_async("t.Lean", "Echo", [b"async"], timeout=DEADLINE)
        assert bytes(future.result(DEADLINE)[0]) == b"async"
        assert _paths(meter)[lean] == after[lean] + 1


def test_small_calls_stay_on_grpc_when_turned_off(transport, served) -> None:
    listener, meter = served
    client = _client(bulk_tcp_small_calls=False)
    with transport.connect(listener.address, client) as channel:
        for _ in range(50):
            channel.call("t.Lean", "Echo", [b"x"], timeout=DEADLINE)
    assert _paths(meter) == {("/t.Lean/Echo", "grpc"): 50}


def test_the_deadline_reaches_the_handler_and_ends_the_call(transport, served, gate) -> None:
    listener, meter = served
    with transport.connect(listener.address, _client()) as channel:
        _until_lean(channel, meter)
        (remaining,) = channel.call("t.Lean", "Remaining", [], timeout=DEADLINE)
        assert 0 < float(bytes(remaining)) <= DEADLINE
        with pytest.raises(errors.DeadlineExceededError):
            channel.call("t.Lean", "Block", [b"x"], timeout=0.5)
        assert gate.entered.is_set()  # it went to the handler, and the caller gave up
        gate.release.set()
        # The connection the deadline broke is not reused: the next call works.
        assert bytes(channel.call("t.Lean", "Echo", [b"y"], timeout=DEADLINE)[0]) == b"y"
    assert _paths(meter)[("/t.Lean/Remaining", "side_channel")] == 1


def test_closing_the_channel_cancels_a_call_in_flight(transport, served, gate) -> None:
    listener, meter = served
    channel = transport.connect(listener.address, _client())
    _until_lean(channel, meter)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(channel.call("t.Lean", "Block", [b"x"], timeout=DEADLINE))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert gate.entered.wait(DEADLINE)
    channel.close()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    (result,) = outcome
    assert isinstance(result, errors.CancelledError), repr(result)


def test_at_its_bound_of_calls_the_server_sends_small_calls_to_grpc(
    transport, served, gate
) -> None:
    listener, meter = served
    listener.bulk.max_lean_calls = 1
    with transport.connect(listener.address, _client()) as channel:
        _until_lean(channel, meter)
        before = _paths(meter)
        blocked = channel.call_async("t.Lean", "Block", [b"held"], timeout=DEADLINE)
        assert gate.entered.wait(DEADLINE)
        # The side channel runs one call at most: this one is refused there, before its
        # handler runs, and made over gRPC.
        assert bytes(channel.call("t.Lean", "Echo", [b"z"], timeout=DEADLINE)[0]) == b"z"
        assert listener.bulk.lean_busy == 1
        gate.release.set()
        assert bytes(blocked.result(DEADLINE)[0]) == b"held"
    after = _paths(meter)
    grpc = ("/t.Lean/Echo", "grpc")
    assert after[grpc] == before[grpc] + 1
    assert after[("/t.Lean/Block", "side_channel")] == 1


def test_an_unreachable_side_channel_leaves_small_calls_on_grpc(transport, served) -> None:
    listener, meter = served
    with transport.connect(listener.address, _client()) as channel:
        _until_lean(channel, meter)
        listener.bulk.close()  # the port and every connection gone; gRPC still serves
        before = _paths(meter)
        for _ in range(5):
            assert bytes(channel.call("t.Lean", "Echo", [b"g"], timeout=DEADLINE)[0]) == b"g"
    after = _paths(meter)
    assert after[("/t.Lean/Echo", "grpc")] == before[("/t.Lean/Echo", "grpc")] + 5
    assert after[("/t.Lean/Echo", "side_channel")] == before[("/t.Lean/Echo", "side_channel")]


def test_a_wrong_token_is_refused_with_the_reason(transport, served) -> None:
    listener, _ = served
    peer = bulk.BulkPeer("127.0.0.1", listener.bulk.port, "not-the-token")
    with pytest.raises(bulk.BulkUnavailable, match="did not prove the cluster token"):
        peer.acquire(time.monotonic() + DEADLINE)
    peer.close()
    # A channel with that token never gets a side-channel call served: gRPC refuses it.
    client = TransportOptions(token="not-the-token", extra={"bulk_tcp": True})
    with transport.connect(listener.address, client) as channel:
        for _ in range(3):
            with pytest.raises(errors.PermissionDeniedError):
                channel.call("t.Lean", "Echo", [b"x"], timeout=DEADLINE)


def _lean_connection(port: int) -> Wire:
    """A side-channel connection made by hand, the token proved."""
    from tensorwire.transport import security

    wire = Wire(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
    deadline = time.monotonic() + DEADLINE
    nonce = wire.read(4 + bulk.protocol.NONCE_BYTES, deadline)[4:]
    wire.send([bulk.protocol.MAGIC + security.token_proof(TOKEN, nonce)], deadline)
    assert wire.read(1, deadline) == b"\x00"
    return wire


def test_an_oversized_lean_request_is_refused_from_its_header(served) -> None:
    listener, _ = served
    wire = _lean_connection(listener.bulk.port)
    try:
        name = b"/t.Lean/Echo"
        size = bulk.protocol.LEAN_MAX_BYTES + 1
        head = bulk.protocol.LEAN_REQUEST.pack(bulk.protocol.OP_LEAN, len(name), 1, 0, size)
        wire.send([head + name + bulk.protocol.U32.pack(size)], time.monotonic() + DEADLINE)
        status, n, length = bulk.protocol.LEAN_ANSWER.unpack(
            wire.read(bulk.protocol.LEAN_ANSWER.size, time.monotonic() + DEADLINE)
        )
        assert (status, n) == (errors.InvalidArgumentError.code_value, 0)
        message = wire.read(length, time.monotonic() + DEADLINE).decode()
        assert f"the limit is {bulk.protocol.LEAN_MAX_BYTES}" in message
    finally:
        wire.close()


def test_an_unknown_method_is_answered_and_the_connection_kept(served) -> None:
    listener, _ = served
    wire = _lean_connection(listener.bulk.port)
    try:
        for _ in range(2):
            name = b"/t.Lean/Nope"
            head = bulk.protocol.LEAN_REQUEST.pack(bulk.protocol.OP_LEAN, len(name), 0, 0, 0)
            wire.send([head + name], time.monotonic() + DEADLINE)
            status, _, length = bulk.protocol.LEAN_ANSWER.unpack(
                wire.read(bulk.protocol.LEAN_ANSWER.size, time.monotonic() + DEADLINE)
            )
            assert status == errors.UnimplementedError.code_value
            assert "/t.Lean/Nope" in wire.read(length, time.monotonic() + DEADLINE).decode()
    finally:
        wire.close()


PEER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tensorwire.transport import Service, TransportOptions
    from tensorwire_grpc.transport import GrpcTransport

    service = Service("t.Lean")
    service.unary("Echo")(lambda frames, context: frames)

    @service.unary("Hang")
    def hang(frames, context):
        print("IN HANDLER", flush=True)
        time.sleep(120)
        return frames

    listener = GrpcTransport().serve(
        "127.0.0.1:0", [service], TransportOptions(extra={"bulk_tcp": True})
    )
    listener.start()
    print("ADDRESS", listener.address, flush=True)
    time.sleep(120)
    """
)


def test_a_killed_peer_is_unavailable_within_the_deadline(transport) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("ADDRESS"), line
        address = line.split()[1]
        options = TransportOptions(extra={"bulk_tcp": True})
        with transport.connect(address, options) as channel:
            end = time.monotonic() + DEADLINE
            while channel._lean_peer() is None and time.monotonic() < end:
                channel.call("t.Lean", "Echo", [b"warm"], timeout=DEADLINE)
            assert channel._lean_peer() is not None, "the side port was never learned"
            outcome: list[object] = []

            def call() -> None:
                try:
                    outcome.append(channel.call("t.Lean", "Hang", [b"x"], timeout=DEADLINE))
                except BaseException as exc:  # noqa: BLE001 - checked below
                    outcome.append(exc)

            thread = threading.Thread(target=call)
            thread.start()
            assert process.stdout.readline().startswith("IN HANDLER")
            os.kill(process.pid, signal.SIGKILL)
            thread.join(DEADLINE + 10)
            assert not thread.is_alive(), "the call hung after its peer was killed"
            (result,) = outcome
            assert isinstance(result, errors.UnavailableError), repr(result)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(DEADLINE)
        process.stdout.close()


def test_both_ends_of_the_side_channel_spin_as_the_environment_says(transport, monkeypatch) -> None:
    from tensorwire_grpc import options as opts

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv(opts.SPIN_ENV, "700")
    meter = CallMeter()
    server = TransportOptions(token=TOKEN, call_meter=meter, extra={"bulk_tcp": True})
    listener = transport.serve("127.0.0.1:0", [service], server)
    listener.start()
    try:
        with transport.connect(listener.address, _client()) as channel:
            _until_lean(channel, meter)
            assert listener.bulk.spin_seconds == 700e-6
            assert channel._shared.known_bulk_peer(TOKEN).spin_seconds == 700e-6
        monkeypatch.setenv(opts.SPIN_ENV, "many")
        with pytest.raises(errors.InvalidArgumentError, match="TENSORWIRE_GRPC_SPIN_US"):
            transport.connect(listener.address, _client())
    finally:
        listener.stop(0)
