"""grpc+verbs on real verbs: large frames move by RDMA, byte-exact, and never cross gRPC.

Runs where a verbs device is active (inside the Soft-RoCE guest of
``packages/transport-rdma/harness/run_vm.py``); skipped elsewhere by the conftest.
Each test runs over both control planes: ``grpc`` (the real one) and ``inproc`` (the same
RDMA data path with an in-process control plane).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, default_registry, get_transport

pytestmark = pytest.mark.rdma

MiB = 1 << 20


def _digest(frames) -> list[str]:
    return [hashlib.sha256(memoryview(f)).hexdigest() for f in frames]


def make_service() -> Service:
    svc = Service("Test")

    @svc.unary("Echo")
    def echo(frames, context):
        return list(frames)

    @svc.unary("Digest")
    def digest(frames, context):
        return [json.dumps(_digest(frames)).encode()]

    @svc.unary("Make")
    def make(frames, context):
        sizes = json.loads(bytes(frames[0]))
        return [_pattern(n, seed) for seed, n in enumerate(sizes)]

    @svc.stream("Stream")
    def stream(frames, context):
        n, size = json.loads(bytes(frames[0]))
        for i in range(n):
            yield [json.dumps(i).encode(), _pattern(size, i)]

    @svc.unary("Fail")
    def fail(frames, context):
        raise errors.InvalidArgumentError(f"refused {len(frames)} frames")

    return svc


def _pattern(nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def _has(protocol: str) -> bool:
    return protocol in default_registry.protocols()


@pytest.fixture(params=["grpc", "inproc"])
def control(request) -> str:
    if not _has(request.param):
        pytest.skip(f"the {request.param!r} transport is not installed")
    return request.param


@pytest.fixture
def options(control) -> TransportOptions:
    return TransportOptions(extra={"rdma_control_protocol": control})


@pytest.fixture
def transport():
    return get_transport("grpc+verbs")


@pytest.fixture
def server(transport, options):
    listener = transport.serve("127.0.0.1:0", [make_service()], options)
    listener.start()
    yield listener
    listener.stop(0)


@pytest.fixture
def channel(transport, server, options):
    ch = transport.connect(f"127.0.0.1:{server.port}", options)
    yield ch
    ch.close()


@pytest.mark.parametrize("size", [1 * MiB, 16 * MiB, 64 * MiB], ids=["1MiB", "16MiB", "64MiB"])
def test_large_frames_round_trip_byte_exact_without_crossing_grpc(transport, channel, size):
    header = b"header"
    payload = _pattern(size, 7)
    before = transport.stats.snapshot()
    reply = channel.call("Test", "Echo", [header, payload], timeout=120)
    after = transport.stats.snapshot()
    assert bytes(reply[0]) == header
    assert reply[1].nbytes == size
    assert np.array_equal(np.frombuffer(reply[1], np.uint8), payload)
    crossed = after["grpc_bytes"] - before["grpc_bytes"]
    # Both ways only the header frames and small RDMA descriptors crossed gRPC.
    assert crossed < 4096, crossed
    assert after["rdma_bytes"] - before["rdma_bytes"] == 2 * size


def test_small_frames_stay_on_grpc_and_order_is_kept(transport, channel):
    frames = [b"a", _pattern(3 * MiB, 1), b"", b"c" * 1000, _pattern(256 * 1024, 2)]
    before = transport.stats.snapshot()
    reply = channel.call("Test", "Digest", frames, timeout=60)
    assert json.loads(bytes(reply[0])) == _digest(frames)
    crossed = transport.stats.snapshot()["grpc_bytes"] - before["grpc_bytes"]
    assert 1001 <= crossed < 1001 + 4096


def test_large_response_to_small_request(channel):
    reply = channel.call("Test", "Make", [json.dumps([5 * MiB, 10, 2 * MiB]).encode()], timeout=60)
    assert [r.nbytes for r in reply] == [5 * MiB, 10, 2 * MiB]
    for seed, r in enumerate(reply):
        assert np.array_equal(np.frombuffer(r, np.uint8), _pattern(r.nbytes, seed))


def test_streaming_messages_carry_large_frames(channel):
    got = list(channel.stream("Test", "Stream", [json.dumps([3, 2 * MiB]).encode()], timeout=120))
    assert [json.loads(bytes(m[0])) for m in got] == [0, 1, 2]
    for i, m in enumerate(got):
        assert np.array_equal(np.frombuffer(m[1], np.uint8), _pattern(2 * MiB, i))


def test_server_errors_keep_their_class(channel):
    with pytest.raises(errors.InvalidArgumentError, match="refused 2 frames"):
        channel.call("Test", "Fail", [b"x", _pattern(MiB, 0)], timeout=30)
    # The connection is still good afterwards.
    assert channel.call("Test", "Echo", [b"ok"], timeout=30)[0] == b"ok"


def test_registration_stays_off_the_hot_path(transport, channel):
    payload = _pattern(4 * MiB, 3)
    channel.call("Test", "Digest", [payload], timeout=60)
    resources = next(iter(transport._verbs.values()))
    registrations = resources.pool.made
    hits = resources.regcache.hits
    for _ in range(3):
        reply = channel.call("Test", "Echo", [payload], timeout=60)
        assert np.array_equal(np.frombuffer(reply[0], np.uint8), payload)
        del reply  # the received buffer returns to the pool
    assert resources.regcache.hits >= hits + 3  # the sender's buffer was registered once
    # Receive buffers came from the pool: at most one more buffer for the echo direction.
    assert resources.pool.made <= registrations + 2


def test_calls_whose_payload_moved_by_rdma_are_counted_as_rdma(transport, control):
    from tensorwire.observe import CallMeter

    meter = CallMeter()
    options = TransportOptions(call_meter=meter, extra={"rdma_control_protocol": control})
    listener = transport.serve("127.0.0.1:0", [make_service()], options)
    listener.start()
    try:
        with transport.connect(f"127.0.0.1:{listener.port}", options) as ch:
            ch.call("Test", "Digest", [_pattern(2 * MiB, 1)], timeout=60)  # request by RDMA
            ch.call("Test", "Make", [b"[2097152]"], timeout=60)  # response by RDMA
            ch.call("Test", "Digest", [b"small"], timeout=60)  # nothing large: no RDMA
    finally:
        listener.stop(0)
    stats = {(s.method, s.path): s for s in meter.snapshot()}
    plain = "grpc" if control == "grpc" else "inproc"
    assert stats[("/Test/Digest", "rdma")].calls == 1
    assert stats[("/Test/Make", "rdma")].calls == 1
    assert stats[("/Test/Digest", plain)].calls == 1
    # The bytes RDMA moved count too, not only what crossed the control plane.
    assert stats[("/Test/Digest", "rdma")].request_bytes >= 2 * MiB
    assert stats[("/Test/Make", "rdma")].response_bytes >= 2 * MiB


def test_received_frames_survive_later_transfers(channel):
    first = channel.call("Test", "Echo", [_pattern(2 * MiB, 11)], timeout=60)[0]
    kept = np.frombuffer(first, np.uint8)
    for seed in (12, 13, 14):
        channel.call("Test", "Echo", [_pattern(2 * MiB, seed)], timeout=60)
    assert np.array_equal(kept, _pattern(2 * MiB, 11))


def test_a_queue_pair_in_error_is_replaced(transport, channel):
    channel.call("Test", "Echo", [_pattern(MiB, 1)], timeout=60)
    qp = channel._qp
    import pyverbs.enums as e
    from pyverbs.qp import QPAttr

    qp.qp.modify(QPAttr(qp_state=e.IBV_QPS_ERR), e.IBV_QP_STATE)
    # The READ of the reply on the dead QP fails as UnavailableError, not a hang ...
    with pytest.raises(errors.UnavailableError):
        channel.call("Test", "Make", [json.dumps([MiB]).encode()], timeout=30)
    # ... and the next call connects a fresh queue pair.
    reply = channel.call("Test", "Echo", [_pattern(MiB, 2)], timeout=60)
    assert np.array_equal(np.frombuffer(reply[0], np.uint8), _pattern(MiB, 2))
    assert channel._qp is not qp


def test_deadline_bounds_an_rdma_transfer(channel):
    with pytest.raises((errors.DeadlineExceededError, errors.UnavailableError)):
        channel.call("Test", "Echo", [_pattern(64 * MiB, 5)], timeout=0.05)
    reply = channel.call("Test", "Echo", [b"after"], timeout=30)
    assert bytes(reply[0]) == b"after"


def _echoes_over_plain_grpc(ch) -> None:
    payload = _pattern(2 * MiB, 9)
    reply = ch.call("Test", "Echo", [payload], timeout=60)
    assert np.array_equal(np.frombuffer(reply[0], np.uint8), payload)
    assert ch.rdma is False


def test_peer_without_rdma_negotiates_down(transport, control, options):
    plain = get_transport(control).serve("127.0.0.1:0", [make_service()], options)
    plain.start()
    try:
        with transport.connect(f"127.0.0.1:{plain.port}", options) as ch:
            _echoes_over_plain_grpc(ch)
    finally:
        plain.stop(0)


def test_a_server_that_offers_no_verbs_is_not_asked_to_connect(transport, control, options):
    # This side has the device; the server's cannot be opened, so its handshake offers no
    # verbs: the channel goes to gRPC without a Connect (counted by the server's meter).
    from tensorwire.observe import CallMeter

    meter = CallMeter()
    server_options = TransportOptions(
        call_meter=meter,
        extra={"rdma_control_protocol": control, "rdma_device": "nosuch9", "rdma_fallback": True},
    )
    listener = transport.serve("127.0.0.1:0", [make_service()], server_options)
    listener.start()
    try:
        with transport.connect(f"127.0.0.1:{listener.port}", options) as ch:
            _echoes_over_plain_grpc(ch)
    finally:
        listener.stop(0)
    assert sorted({s.method for s in meter.snapshot()}) == ["/Test/Echo"]


def test_plain_client_can_call_a_verbs_server(server, control, options):
    with get_transport(control).connect(f"127.0.0.1:{server.port}", options) as ch:
        payload = _pattern(2 * MiB, 4)
        reply = ch.call("Test", "Echo", [payload], timeout=60)
        assert np.array_equal(np.frombuffer(reply[0], np.uint8), payload)


def test_unknown_device_is_named(transport, control):
    opts = TransportOptions(extra={"rdma_control_protocol": control, "rdma_device": "nosuch9"})
    with pytest.raises(errors.FailedPreconditionError, match="'nosuch9'.*devices here: rxe0"):
        transport.connect("127.0.0.1:1", opts)


def test_gid_is_roce_v2_and_ipv4_mapped(transport, server):
    resources = next(iter(transport._verbs.values()))
    gid = resources.device.gid
    assert gid.gid_type == "RoCE v2"
    assert gid.gid.startswith("0000:0000:0000:0000:0000:ffff:")


def test_status_reports_the_device(transport):
    status = transport.status()["verbs"]
    assert [d["name"] for d in status["devices"]] == ["rxe0"]
    assert status["devices"][0]["ports"][0]["active"] is True


_SERVER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from tensorwire.transport import Service, TransportOptions, get_transport
    svc = Service("Test")
    @svc.unary("Make")
    def make(frames, context):
        return [np.ones(int(bytes(frames[0])), np.uint8)]
    opts = TransportOptions(extra={"rdma_control_protocol": "grpc"})
    listener = get_transport("grpc+verbs").serve("127.0.0.1:0", [svc], opts)
    listener.start()
    print(listener.port, flush=True)
    time.sleep(600)
""")


def test_peer_killed_mid_transfer_fails_the_call(transport):
    if not _has("grpc"):
        pytest.skip("needs the grpc transport for a server in another process")
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        opts = TransportOptions(extra={"rdma_control_protocol": "grpc"})
        with transport.connect(f"127.0.0.1:{port}", opts) as ch:
            ch.call("Test", "Make", [b"1000"], timeout=60)  # connected
            import threading

            # The READ of 512 MiB takes seconds here; kill the server while it runs.
            killer = threading.Timer(1.5, proc.kill)
            killer.start()
            start = time.monotonic()
            try:
                with pytest.raises((errors.UnavailableError, errors.DataLossError)):
                    reply = ch.call("Test", "Make", [str(512 * MiB).encode()], timeout=120)
                    # If the READ finished before the kill, the data must still be right.
                    assert np.all(np.frombuffer(reply[0], np.uint8) == 1)
                    raise errors.UnavailableError("transfer finished before the kill")
            finally:
                killer.cancel()
            assert time.monotonic() - start < 60
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_a_server_restarted_on_the_same_port_is_reconnected(transport, options, kind):
    first = transport.serve("127.0.0.1:0", [make_service()], options)
    first.start()
    port = first.port
    with transport.connect(f"127.0.0.1:{port}", options) as ch:
        ch.call("Test", "Echo", [b"before"], timeout=60)
        first.stop(0)
        second = transport.serve(f"127.0.0.1:{port}", [make_service()], options)
        second.start()
        try:
            # The channel's queue pair belongs to the old server; even a call without
            # RDMA frames must notice, reconnect, and get its (large) reply right.
            if kind == "unary":
                reply = ch.call("Test", "Make", [json.dumps([MiB]).encode()], timeout=60)
                got = reply[0]
            else:
                msgs = list(
                    ch.stream("Test", "Stream", [json.dumps([1, MiB]).encode()], timeout=60)
                )
                got = msgs[0][1]
            assert np.array_equal(np.frombuffer(got, np.uint8), _pattern(MiB, 0))
        finally:
            second.stop(0)
