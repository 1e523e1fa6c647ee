"""The mover handshake: two peers agree on the fastest mover both have."""

from __future__ import annotations

import struct

import pytest
from tensorwire import errors
from tensorwire.transport.kit.handshake import (
    FEATURE_CALL,
    MOVER_PREFERENCE,
    TCP,
    MoverOffer,
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
