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

    return svc


#: Small calls stay on gRPC (not over the side channel once its port is known).
SMALL_ON_GRPC = TransportOptions(extra={"bulk_tcp_small_calls": False})


def _stats(protocol: str, calls, client: TransportOptions = SMALL_ON_GRPC) -> list:
    """The call meter's rows after making ``calls`` ((method, request size) pairs)."""
    meter = CallMeter()
    transport = get_transport(protocol)
    listener = transport.serve("127.0.0.1:0", [_service()], TransportOptions(call_meter=meter))
    listener.start()
    try:
        with transport.connect(listener.address, client) as channel:
            for method, size in calls:
                if method == "MovedStream":
                    assert len(list(channel.stream("P", method, [b"x"], timeout=30))) == 2
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
    paths = _paths("grpc", [("Plain", LARGE), ("Plain", 16)], TransportOptions())
    assert paths == {("/P/Plain", "side_channel"): 2}


@pytest.mark.parametrize("method", ["Moved", "MovedStream"])
def test_inproc_counts_a_call_under_the_path_its_context_names(method: str) -> None:
    paths = _paths("inproc", [(method, 16), ("Plain", 16)])
    assert paths == {(f"/P/{method}", "rdma"): 1, ("/P/Plain", "inproc"): 1}


@pytest.mark.parametrize("protocol", ["grpc", "inproc"])
def test_bytes_a_layer_above_moved_are_counted_with_the_call(protocol: str) -> None:
    (stats,) = _stats(protocol, [("MovedBytes", 10)])
    assert (stats.path, stats.request_bytes, stats.response_bytes) == ("rdma", 1010, 2004)
