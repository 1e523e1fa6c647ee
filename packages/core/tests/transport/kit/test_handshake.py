"""The mover handshake: two peers agree on the fastest mover both have."""

from __future__ import annotations

import struct

import pytest
from tensorwire import errors
from tensorwire.transport.kit.handshake import (
    FEATURE_CALL,
    MOVER_PREFERENCE,
    TCP,
    AsksMovers,
    MoverOffer,
    OffersMovers,
    check_mover_name,
    choose_mover,
    decode_offers,
    decode_wants,
    encode_offers,
    encode_wants,
)

TCP_OFFER = MoverOffer(TCP, 4000, FEATURE_CALL)
VERBS = MoverOffer("verbs", 0, 0, b"qp")
SHM = MoverOffer("shm", 0, 0, b"/dev/shm")

CASES = [
    # (case, ours, offers, chosen)
    ("both have tcp", {TCP}, [TCP_OFFER], TCP_OFFER),
    ("the fastest shared one wins", {TCP, "verbs"}, [TCP_OFFER, VERBS], VERBS),
    ("order of the offers does not matter", {TCP, "verbs"}, [VERBS, TCP_OFFER], VERBS),
    ("shm beats tcp", {TCP, "shm"}, [SHM, TCP_OFFER], SHM),
    ("only what we can use", {TCP}, [VERBS, TCP_OFFER], TCP_OFFER),
    ("nothing shared", {"shm"}, [TCP_OFFER], None),
    ("nothing offered", {TCP}, [], None),
    ("an unknown mover is ignored", {TCP, "warp"}, [MoverOffer("warp"), TCP_OFFER], TCP_OFFER),
]


@pytest.mark.parametrize(
    ("ours", "offers", "chosen"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_choose_mover(ours, offers, chosen) -> None:
    assert choose_mover(ours, offers) == chosen


def test_preference_is_fastest_first() -> None:
    assert MOVER_PREFERENCE[-1] == TCP


def test_a_tcp_only_answer_is_the_bytes_older_peers_read() -> None:
    assert encode_offers([TCP_OFFER]) == struct.pack("<II", 4000, FEATURE_CALL)
    assert encode_offers([]) == struct.pack("<II", 0, 0)


def test_offers_round_trip() -> None:
    offers = [TCP_OFFER, VERBS, SHM]
    assert decode_offers(encode_offers(offers)) == offers


def test_an_older_servers_answer_is_read() -> None:
    assert decode_offers(struct.pack("<II", 5000, 1)) == [MoverOffer(TCP, 5000, 1)]
    assert decode_offers(struct.pack("<II", 0, 0)) == []


@pytest.mark.parametrize("answer", [b"", b"\x00" * 7, struct.pack("<II", 1, 1) + b"\x05ab"])
def test_a_malformed_answer_is_data_loss(answer: bytes) -> None:
    with pytest.raises(errors.DataLossError):
        decode_offers(answer)


def test_wants_round_trip_and_an_empty_request_wants_tcp() -> None:
    assert decode_wants(encode_wants(["tcp", "shm"])) == {"tcp", "shm"}
    assert decode_wants(b"") == {TCP}


@pytest.mark.parametrize("name", ["", "a,b", "v\u00e9rbs", "x" * 256, "tab\there", 7])
def test_a_mover_name_must_fit_the_wants_list(name) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="mover's name"):
        check_mover_name(name)
    assert check_mover_name("verbs") == "verbs"


def test_inproc_carries_a_plugins_mover_through_the_handshake() -> None:
    # inproc is a control plane ``grpc+verbs`` may run over: it takes and hands out plugins'
    # offers as the grpc transport does.
    from tensorwire.transport import Service, TransportOptions, get_transport

    inproc = get_transport("inproc")
    listener = inproc.serve("inproc-handshake:1", [Service("t.S")], TransportOptions())
    assert isinstance(listener, OffersMovers)
    asked = []
    listener.offer_mover("verbs", lambda: asked.append(1) or [VERBS])
    with pytest.raises(errors.InvalidArgumentError, match="offered already"):
        listener.offer_mover("verbs", lambda: [])
    listener.start()
    channel = inproc.connect("inproc-handshake:1", TransportOptions())
    try:
        assert isinstance(channel, AsksMovers)
        assert channel.mover_offers(["verbs", TCP], timeout=5) == [VERBS]
        assert channel.mover_offers([TCP]) == []  # not wanted: not even asked
        assert asked == [1]
    finally:
        listener.stop(0)
    assert channel.mover_offers(["verbs"]) == []  # no server there any more
    channel.close()
