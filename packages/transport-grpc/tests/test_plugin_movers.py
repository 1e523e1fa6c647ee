"""A plugin's mover in the grpc transport's handshake (``kit.handshake``: ``OffersMovers`` on
the listener, ``AsksMovers`` on the channel), on loopback, without the plugin: the offer a
plugin registers reaches only the callers that want it, and a channel hands a plugin what
the server offered from the one Hello it asks."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions
from tensorwire.transport.kit import handshake
from tensorwire_grpc import channel as channel_module
from tensorwire_grpc.server import HELLO_PATH
from tensorwire_testing.proxy import LoopbackProxy
from tensorwire_testing.waiting import eventually

VERBS = "verbs"
OFFER = handshake.MoverOffer(VERBS, 0, 1, b"v1")

service = Service("t.Plugin")
service.add("Echo", lambda frames, context: list(frames))


class CountingOffers:
    """An offer maker that counts how often a Hello asked it."""

    def __init__(self, offers: list[handshake.MoverOffer]) -> None:
        self.offers = offers
        self.asked = 0
        self._lock = threading.Lock()

    def __call__(self) -> list[handshake.MoverOffer]:
        with self._lock:
            self.asked += 1
        return self.offers


@pytest.fixture
def offering(transport):
    """A listener that offers ``verbs`` (with the side channel and shm on, as by default)."""
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions())
    make = CountingOffers([OFFER])
    listener.offer_mover(VERBS, make)
    listener.start()
    yield listener, make
    listener.stop(0)


def _hello(port: int, wants: list[str]) -> list[handshake.MoverOffer]:
    """Ask the listener's Hello as a caller of these wants would, over a bare gRPC channel."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        answer = raw.unary_unary(HELLO_PATH)(handshake.encode_wants(wants), timeout=30)
    return handshake.decode_offers(answer)


def test_a_plugin_offer_is_made_only_to_callers_that_want_it(offering) -> None:
    listener, make = offering
    assert isinstance(listener, handshake.OffersMovers)
    offers = _hello(listener.port, ["tcp", VERBS])
    assert OFFER in offers
    assert handshake.choose_mover({"tcp", VERBS}, offers) == OFFER
    assert make.asked == 1
    # A caller that does not want it (an older one, or a plain grpc channel) never sees it,
    # and the plugin is not even asked.
    for wants in (["tcp"], ["tcp", "shm"], []):
        offers = _hello(listener.port, wants)
        assert VERBS not in {o.mover for o in offers}
        assert any(o.mover == "tcp" for o in offers)
    assert make.asked == 1


def test_a_plugin_may_offer_nothing_and_a_failing_one_costs_only_its_mover(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions())

    def broken() -> list[handshake.MoverOffer]:
        raise RuntimeError("no device")

    listener.offer_mover(VERBS, broken)
    listener.offer_mover("none", lambda: [])
    listener.offer_mover("liar", lambda: [handshake.MoverOffer("other")])
    listener.start()
    try:
        offers = _hello(listener.port, ["tcp", VERBS, "none", "liar", "other"])
        assert [o.mover for o in offers] == ["tcp"]
    finally:
        listener.stop(0)


def test_offer_mover_refuses_bad_names_own_movers_and_a_second_maker(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions())
    try:
        listener.offer_mover(VERBS, lambda: [OFFER])
        with pytest.raises(errors.InvalidArgumentError, match="offered already"):
            listener.offer_mover(VERBS, lambda: [OFFER])
        for own in ("tcp", "shm"):
            with pytest.raises(errors.InvalidArgumentError, match="grpc transport's own"):
                listener.offer_mover(own, lambda: [])
        for bad in ("", "a,b", "v\u00e9rbs", "x" * 256):
            with pytest.raises(errors.InvalidArgumentError, match="mover's name"):
                listener.offer_mover(bad, lambda: [])
    finally:
        listener.stop(0)


def test_a_channel_hands_out_the_offers_of_its_one_hello(transport, offering) -> None:
    listener, make = offering
    with transport.connect(f"127.0.0.1:{listener.port}", TransportOptions()) as channel:
        assert isinstance(channel, handshake.AsksMovers)
        assert channel.mover_offers([VERBS], timeout=30) == [OFFER]
        # A large call learns the channel's own movers from the same answer, and asking
        # again asks no one: the maker ran for one Hello.
        payload = np.arange(1 << 20, dtype=np.uint8)
        reply = channel.call("t.Plugin", "Echo", [payload], timeout=30)
        assert np.array_equal(np.frombuffer(reply[0], np.uint8), payload)
        assert channel.mover_offers([VERBS], timeout=30) == [OFFER]
        # Only what was asked for: the channel's own offers are there too, when wanted.
        assert {o.mover for o in channel.mover_offers([VERBS, "tcp"])} == {VERBS, "tcp"}
        assert channel.mover_offers([]) == []
        assert make.asked == 1


def test_a_mover_asked_after_the_first_hello_is_asked_for_once_more(transport, offering) -> None:
    listener, make = offering
    with transport.connect(f"127.0.0.1:{listener.port}", TransportOptions()) as channel:
        payload = np.arange(1 << 20, dtype=np.uint8)
        channel.call("t.Plugin", "Echo", [payload], timeout=30)  # a Hello for tcp and shm
        assert make.asked == 0
        assert channel.mover_offers([VERBS], timeout=30) == [OFFER]
        assert channel.mover_offers([VERBS], timeout=30) == [OFFER]
        assert make.asked == 1


def test_a_server_that_does_not_offer_the_mover_gives_no_offers(transport) -> None:
    listener = transport.serve("127.0.0.1:0", [service], TransportOptions())
    listener.start()
    try:
        with transport.connect(f"127.0.0.1:{listener.port}", TransportOptions()) as channel:
            assert channel.mover_offers([VERBS], timeout=30) == []
            # Nor under TLS-like settings where the channel has no movers of its own.
        plain = TransportOptions(extra={"bulk_tcp": False, "shm": False})
        with transport.connect(f"127.0.0.1:{listener.port}", plain) as channel:
            assert channel.mover_offers([VERBS], timeout=30) == []
    finally:
        listener.stop(0)


def test_a_server_without_the_handshake_gives_no_offers_and_is_asked_once(transport) -> None:
    # An older peer: a gRPC server that serves no Hello at all (it answers UNIMPLEMENTED).
    asked = []

    class Counting(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            asked.append(handler_call_details.method)
            return None  # UNIMPLEMENTED

    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[Counting()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with transport.connect(f"127.0.0.1:{port}", TransportOptions()) as channel:
            assert channel.mover_offers([VERBS], timeout=30) == []
            assert channel.mover_offers([VERBS], timeout=30) == []
        assert asked == [HELLO_PATH]
    finally:
        server.stop(None)


def test_a_hello_that_found_no_server_is_asked_again_by_the_next_caller(
    transport, monkeypatch
) -> None:
    # Were the failure kept for the retry period (made an hour here), a caller asking right
    # after the server came up would take the control plane all that time.
    monkeypatch.setattr(channel_module, "_HELLO_RETRY_SECONDS", 3600.0)
    first = transport.serve("127.0.0.1:0", [service], TransportOptions())
    port = first.port
    first.stop(0)  # nothing listens there now
    with transport.connect(f"127.0.0.1:{port}", TransportOptions()) as channel:
        assert channel.mover_offers([VERBS], timeout=5) == []
        listener = transport.serve(f"127.0.0.1:{port}", [service], TransportOptions())
        listener.offer_mover(VERBS, lambda: [OFFER])
        listener.start()
        try:

            def offered() -> list[handshake.MoverOffer]:
                offers = channel.mover_offers([VERBS], timeout=5)
                if not offers:  # gRPC may still be backing off its reconnect
                    raise errors.UnavailableError("not offered yet")
                return offers

            assert eventually(offered, timeout=60) == [OFFER]
        finally:
            listener.stop(0)


def test_a_hello_asked_while_the_first_connection_is_made_is_asked_again(
    transport, offering
) -> None:
    listener, _ = offering
    # The first connection attempt is accepted and left silent: it times out before the
    # server's SETTINGS frame, as a first connection on a loaded or emulated machine can.
    proxy = LoopbackProxy(f"127.0.0.1:{listener.port}")
    proxy.silent = 1
    try:
        # Plain options: the channel's own movers would reach the listener around the proxy.
        options = TransportOptions(extra={"bulk_tcp": False, "shm": False})
        with transport.connect(f"127.0.0.1:{proxy.port}", options) as channel:
            assert channel.mover_offers([VERBS], timeout=30) == [OFFER]
        assert len(proxy.held) == 1  # the first attempt did meet the silent connection
    finally:
        proxy.close()
