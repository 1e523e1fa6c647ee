"""The grpc listener's limit on calls served at once (``grpc_max_workers``): calls past it are
refused at once with the reason and the option, never queued behind waiting calls."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from tensorwire import errors
from tensorwire.transport.base import TransportOptions
from tensorwire_grpc import options as opts
from tensorwire_grpc import status
from tensorwire_grpc.channel import GrpcChannel
from tensorwire_grpc.server import GrpcListener
from tensorwire_grpc.transport import GrpcTransport
from tensorwire_testing.conformance import SERVICE, ConformanceState, make_service, within
from tensorwire_testing.waiting import eventually

#: Bound on every wait; generous, for a loaded machine.
DEADLINE = 30.0
LIMIT = 4


@pytest.fixture
def state() -> Iterator[ConformanceState]:
    state = ConformanceState()
    yield state
    state.release.set()


@pytest.fixture(params=[True, False], ids=["bulk", "no-bulk"])
def limited(
    request: pytest.FixtureRequest, transport: GrpcTransport, state: ConformanceState
) -> Iterator[GrpcListener]:
    # The gRPC limit: streams through shared memory run on the mover's connection threads
    # (at most shm_mover.MAX_SERVER_CONNECTIONS), so the mover is off here.
    extra = {"grpc_max_workers": LIMIT, "bulk_tcp": request.param, "shm": False}
    options = TransportOptions(extra=extra)
    listener = transport.serve("127.0.0.1:0", [make_service(state)], options)
    listener.start()
    yield listener
    state.release.set()
    listener.stop(0)


def _settled_channel(transport: GrpcTransport, listener: GrpcListener) -> GrpcChannel:
    """A channel to ``listener`` whose background Hello is over. A channel's first call
    asks the server for its movers in the background, which takes one of the LIMIT threads
    for a moment: a test that fills them while it runs may see its last call refused
    instead of the one past the limit (a failure seen under heavy load)."""
    channel = transport.connect(listener.address, TransportOptions())
    channel.call(SERVICE, "Echo", [b"first"], timeout=DEADLINE)
    assert channel._shared.wait_for_hellos(DEADLINE)

    # The limit counts a call until its thread is back in the server's pool, a moment after
    # the caller has its answer: under load the Echo and the Hello above were still counted
    # when the test filled the limit, and two of its four waiting calls were refused.
    def settled() -> None:
        assert listener._pool.busy == 0, f"the server still counts {listener._pool.busy} calls"

    eventually(settled, timeout=DEADLINE, retry_on=(AssertionError,), interval=0.005)
    return channel


def test_a_call_past_the_limit_is_refused_with_the_reason(
    limited: GrpcListener, transport: GrpcTransport, state: ConformanceState
) -> None:
    channel = _settled_channel(transport, limited)
    waiting = [
        channel.call_async(SERVICE, "Wait", [str(i).encode()], timeout=DEADLINE * 2)
        for i in range(LIMIT)
    ]
    try:
        assert state.wait_for_waiting(LIMIT, DEADLINE) == LIMIT
        with pytest.raises(errors.ResourceExhaustedError) as info:
            within(DEADLINE, lambda: channel.call(SERVICE, "Echo", [b"x"], timeout=DEADLINE))
        message = str(info.value)
        assert f"already serving {LIMIT} calls and streams" in message
        assert "grpc_max_workers" in message and opts.MAX_WORKERS_ENV in message
        assert limited.address in message
        # Streams count and are refused alike.
        with pytest.raises(errors.ResourceExhaustedError, match="grpc_max_workers"):
            within(
                DEADLINE,
                lambda: list(channel.stream(SERVICE, "Count", [b"3"], timeout=DEADLINE)),
            )
    finally:
        state.release.set()
    assert [bytes(f.result(timeout=DEADLINE)[0]) for f in waiting] == [
        str(i).encode() for i in range(LIMIT)
    ]
    # Once they are done, calls are served again.
    assert [bytes(f) for f in channel.call(SERVICE, "Echo", [b"back"], timeout=DEADLINE)] == [
        b"back"
    ]


def test_waiting_streams_count_against_the_limit(
    limited: GrpcListener, transport: GrpcTransport, state: ConformanceState
) -> None:
    channel = _settled_channel(transport, limited)
    streams = [
        channel.stream(SERVICE, "WaitStream", [str(i).encode()], timeout=DEADLINE * 2)
        for i in range(LIMIT)
    ]
    try:
        assert within(DEADLINE, lambda: [bytes(next(s)[0]) for s in streams]) == [
            str(i).encode() for i in range(LIMIT)
        ]
        with pytest.raises(errors.ResourceExhaustedError, match="grpc_max_workers"):
            within(DEADLINE, lambda: channel.call(SERVICE, "Echo", [b"x"], timeout=DEADLINE))
    finally:
        state.release.set()
    assert (
        within(DEADLINE, lambda: [[bytes(m[0]) for m in s] for s in streams]) == [[b"end"]] * LIMIT
    )


def test_the_limit_comes_from_the_environment_when_options_do_not_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert opts.max_workers(TransportOptions()) == opts.DEFAULT_MAX_WORKERS
    monkeypatch.setenv(opts.MAX_WORKERS_ENV, "123")
    assert opts.max_workers(TransportOptions()) == 123
    assert opts.max_workers(TransportOptions(extra={"grpc_max_workers": 7})) == 7
    monkeypatch.setenv(opts.MAX_WORKERS_ENV, "many")
    with pytest.raises(errors.InvalidArgumentError, match=opts.MAX_WORKERS_ENV):
        opts.max_workers(TransportOptions())
    monkeypatch.delenv(opts.MAX_WORKERS_ENV)
    with pytest.raises(errors.InvalidArgumentError, match="grpc_max_workers"):
        opts.max_workers(TransportOptions(extra={"grpc_max_workers": 0}))


class _Refused(grpc.RpcError, grpc.Call):
    """What a gRPC call refused by the server's ``maximum_concurrent_rpcs`` raises."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return status.GRPC_LIMIT_DETAILS

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_grpcs_own_refusal_is_explained() -> None:
    error = status.to_op_error(_Refused(), "/S/M", "127.0.0.1:5", None)
    assert isinstance(error, errors.ResourceExhaustedError)
    assert "grpc_max_workers" in error.message and status.GRPC_LIMIT_DETAILS in error.message


def test_the_side_port_handshake_is_answered_at_the_call_limit(
    transport: GrpcTransport, state: ConformanceState
) -> None:
    """Channels ask for the side port in the background after their first call; at the
    limit that must neither be refused nor take the place of a caller's call."""
    from tensorwire.transport.kit import handshake
    from tensorwire_grpc.server import HELLO_PATH

    options = TransportOptions(extra={"grpc_max_workers": 1, "bulk_tcp": True})
    listener = transport.serve("127.0.0.1:0", [make_service(state)], options)
    listener.start()
    small_on_grpc = TransportOptions(extra={"bulk_tcp_small_calls": False})
    channel = transport.connect(listener.address, small_on_grpc)
    try:
        waiting = channel.call_async(SERVICE, "Wait", [b"w"], timeout=DEADLINE * 2)
        assert state.wait_for_waiting(1, DEADLINE) == 1
        with grpc.insecure_channel(listener.address) as raw:
            answer = raw.unary_unary(HELLO_PATH)(b"tcp", timeout=DEADLINE)
        (offer,) = handshake.decode_offers(answer)
        assert offer.port == listener.bulk.port
        assert offer.features & handshake.FEATURE_LEAN
        with pytest.raises(errors.ResourceExhaustedError, match="grpc_max_workers"):
            within(DEADLINE, lambda: channel.call(SERVICE, "Echo", [b"x"], timeout=DEADLINE))
        state.release.set()
        assert bytes(waiting.result(timeout=DEADLINE)[0]) == b"w"
    finally:
        state.release.set()
        channel.close()
        listener.stop(0)
