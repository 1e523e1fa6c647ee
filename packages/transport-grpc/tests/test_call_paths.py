"""The call meter's ``path`` label: how each call's payload moved, as the transport saw it,
unless a layer above moved it itself (``CallContext.payload_path``, set by grpc+verbs)."""

from __future__ import annotations

import pytest
from tensorwire.observe import CallMeter
from tensorwire.transport import Service, TransportOptions, get_transport

LARGE = 1 << 20  # above the side channel's threshold, below the inline limit


def _service() -> Service:
    svc = Service("P")

    @svc.unary("Plain")
    def plain(frames, context):
        return [bytes(len(frames[0]))]

    @svc.unary("Moved")
    def moved(frames, context):
        context.payload_path = "rdma"  # as the grpc+verbs plugin does when it moved bytes
        return [bytes(len(frames[0]))]

    @svc.unary("MovedBytes")
    def moved_bytes(frames, context):
        # As grpc+verbs does: it read 1000 request bytes and will write 2000 of the response
        # by RDMA; only the rest crosses the transport.
        context.payload_path = "rdma"
        context.payload_bytes_in += 1000
        context.payload_bytes_out += 2000
        return [b"head"]

    @svc.stream("MovedStream")
    def moved_stream(frames, context):
        context.payload_path = "rdma"
        yield [b"one"]
        yield [b"two"]

    @svc.stream("Stream")
    def stream(frames, context):
        yield [bytes(len(frames[0]))]
        yield [bytes(len(frames[0]))]

    return svc


#: Small calls stay on gRPC (not over the side channel once its port is known); large ones
#: take the TCP side channel (not the shared-memory mover, which this host would offer).
SMALL_ON_GRPC = TransportOptions(extra={"bulk_tcp_small_calls": False, "shm": False})


def _stats(protocol: str, calls, client: TransportOptions = SMALL_ON_GRPC) -> list:
    """The call meter's rows after making ``calls`` ((method, request size) pairs)."""
    meter = CallMeter()
    transport = get_transport(protocol)
    listener = transport.serve("127.0.0.1:0", [_service()], TransportOptions(call_meter=meter))
    listener.start()
    try:
        with transport.connect(listener.address, client) as channel:
            for method, size in calls:
                if method in ("MovedStream", "Stream"):
                    assert len(list(channel.stream("P", method, [bytes(size)], timeout=30))) == 2
                else:
                    channel.call("P", method, [bytes(size)], timeout=30)
    finally:
        listener.stop(0)
    return meter.snapshot()


def _paths(
    protocol: str, calls, client: TransportOptions = SMALL_ON_GRPC
) -> dict[tuple[str, str], int]:
    return {(s.method, s.path): s.calls for s in _stats(protocol, calls, client)}


def test_grpc_counts_a_call_under_the_path_its_context_names() -> None:
    paths = _paths("grpc", [("Moved", 16), ("Moved", LARGE), ("MovedStream", 0), ("Plain", 16)])
    assert paths == {
        ("/P/Moved", "rdma"): 2,  # the side channel carried the large one: still rdma
        ("/P/MovedStream", "rdma"): 1,
        ("/P/Plain", "grpc"): 1,
    }


def test_side_channel_calls_keep_their_label() -> None:
    paths = _paths("grpc", [("Plain", LARGE), ("Plain", 16)])
    assert paths == {("/P/Plain", "side_channel"): 1, ("/P/Plain", "grpc"): 1}


def test_small_calls_after_the_side_port_is_known_are_side_channel_calls() -> None:
    # The large call learned the port; the small one then took the side channel (LEAN).
    no_shm = TransportOptions(extra={"shm": False})
    paths = _paths("grpc", [("Plain", LARGE), ("Plain", 16)], no_shm)
    assert paths == {("/P/Plain", "side_channel"): 2}


@pytest.mark.parametrize(("shm", "path"), [(True, "shm"), (False, "side_channel")])
def test_large_calls_on_one_host_are_counted_under_the_mover_that_carried_them(
    shm: bool, path: str
) -> None:
    # Both processes on this host: with the mover on, the call goes whole through shared
    # memory; with it off, over the TCP side channel.
    client = TransportOptions(extra={"bulk_tcp_small_calls": False, "shm": shm})
    paths = _paths("grpc", [("Plain", LARGE), ("Plain", 16)], client)
    assert paths == {("/P/Plain", path): 1, ("/P/Plain", "grpc"): 1}


def test_streams_through_shared_memory_are_shm_calls() -> None:
    client = TransportOptions(extra={"shm": True})
    (stats,) = _stats("grpc", [("Stream", LARGE)], client)
    assert (stats.path, stats.request_bytes, stats.response_bytes) == ("shm", LARGE, 2 * LARGE)


@pytest.mark.parametrize("method", ["Moved", "MovedStream"])
def test_inproc_counts_a_call_under_the_path_its_context_names(method: str) -> None:
    paths = _paths("inproc", [(method, 16), ("Plain", 16)])
    assert paths == {(f"/P/{method}", "rdma"): 1, ("/P/Plain", "inproc"): 1}


@pytest.mark.parametrize("protocol", ["grpc", "inproc"])
def test_bytes_a_layer_above_moved_are_counted_with_the_call(protocol: str) -> None:
    (stats,) = _stats(protocol, [("MovedBytes", 10)])
    assert (stats.path, stats.request_bytes, stats.response_bytes) == ("rdma", 1010, 2004)
