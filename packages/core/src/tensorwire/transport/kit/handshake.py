"""The capability handshake: how two peers agree on the fastest mover both have.

A *mover* moves payload bytes beside the control plane: ``tcp`` (the grpc transport's side
channel), ``verbs`` (RDMA, in the ``grpc+verbs`` plugin), and whatever comes next (shared
memory between processes on one host). The first time a channel has something large to move
it asks its server once, on the control plane: the request lists the movers the caller can
use (``encode_wants``), the answer offers, for each of those the server runs, how to reach it
(``encode_offers``), and ``choose_mover`` picks, a pure function of both lists, the first
of ``MOVER_PREFERENCE`` (fastest first) that both sides have. A server that offers nothing
(or does not know the question) leaves every call on the control plane.

Answer layout (little endian)::

    u32 tcp port (0: none), u32 tcp feature bits      the first 8 bytes, always
    then per further mover: u8 name length, name (ascii), u32 length, that many bytes

The first 8 bytes are what servers answered before there was a second mover, so a caller
of either age reads a server of either age. A request with no names (an older caller)
wants ``tcp``.

A mover of a plugin that wraps a control-plane transport (``verbs`` in ``grpc+verbs``) joins
the same handshake through two interfaces the control plane's listener and channel
implement: ``OffersMovers`` (the plugin adds its offers to the answer) and ``AsksMovers``
(the plugin reads what the server offered to the movers it wants). The ``grpc`` and
``inproc`` transports implement both.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

from ... import errors

__all__ = [
    "MOVER_PREFERENCE",
    "TCP",
    "FEATURE_CALL",
    "FEATURE_LEAN",
    "AsksMovers",
    "MakeOffers",
    "MoverOffer",
    "OffersMovers",
    "check_mover_name",
    "choose_mover",
    "decode_offers",
    "decode_wants",
    "encode_offers",
    "encode_wants",
]

TCP = "tcp"
#: Movers fastest first: the one both peers have that comes first is used.
MOVER_PREFERENCE = ("verbs", "shm", TCP)
#: Feature bit of a ``tcp`` offer: the side channel serves whole unary calls.
FEATURE_CALL = 1
#: Feature bit of a ``tcp`` offer: it serves small unary calls too, in a lean framing.
FEATURE_LEAN = 2

_TCP = struct.Struct("<II")
_U32 = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class MoverOffer:
    """How a server's mover is reached.

    Args:
      mover: its name (one of ``MOVER_PREFERENCE``).
      port: the port it listens on (0 when it needs none).
      features: feature bits (``FEATURE_CALL`` for ``tcp``).
      detail: anything else a mover needs, opaque here.
    """

    mover: str
    port: int = 0
    features: int = 0
    detail: bytes = b""


#: What a plugin hands the listener for its mover: called for each handshake whose caller
#: wants that mover, it returns the offers to make (none: the mover is not available now).
MakeOffers = Callable[[], Sequence[MoverOffer]]


def check_mover_name(mover: str) -> str:
    """``mover`` if it can be a mover's name in the handshake (ascii, 1-255 characters, no
    comma: the wants are a comma-separated list); else ``InvalidArgumentError``."""
    if (
        not isinstance(mover, str)
        or not 0 < len(mover) < 256
        or not mover.isascii()
        or "," in mover
        or not mover.isprintable()
    ):
        raise errors.InvalidArgumentError(
            f"a mover's name must be 1-255 printable ascii characters without a comma, "
            f"got {mover!r}"
        )
    return mover


@runtime_checkable
class OffersMovers(Protocol):
    """A listener that answers the handshake and takes further movers from plugins."""

    def offer_mover(self, mover: str, offers: MakeOffers) -> None:
        """Answer callers that want ``mover`` with what ``offers()`` returns then (each
        offer named ``mover``). One maker per name; the listener's own movers cannot be
        offered again.

        Raises:
          InvalidArgumentError: a bad name, one of the listener's own movers, or a name
            that already has a maker.
        """
        ...


@runtime_checkable
class AsksMovers(Protocol):
    """A channel that asks its server the handshake, for its own movers and for plugins'."""

    def mover_offers(
        self, wants: Collection[str], *, timeout: float | None = None
    ) -> list[MoverOffer]:
        """What the server offered to the movers in ``wants``: asked once (within
        ``timeout``, a few seconds at most) and kept; empty when it offers none of them, does
        not answer the handshake (an older peer), or cannot be asked now (asked again later).
        """
        ...


def encode_wants(movers: Iterable[str]) -> bytes:
    """The request of the handshake: the movers the caller can use."""
    return ",".join(movers).encode("ascii")


def decode_wants(request: bytes) -> frozenset[str]:
    """The movers a caller can use (an empty request: ``tcp``, as older callers)."""
    if not request:
        return frozenset((TCP,))
    try:
        return frozenset(name for name in bytes(request).decode("ascii").split(",") if name)
    except UnicodeDecodeError:
        raise errors.InvalidArgumentError("malformed mover list in a handshake") from None


def encode_offers(offers: Sequence[MoverOffer]) -> bytes:
    """The answer of the handshake (see the module docstring for the layout)."""
    tcp = next((o for o in offers if o.mover == TCP), None)
    parts = [_TCP.pack(tcp.port, tcp.features) if tcp is not None else _TCP.pack(0, 0)]
    for offer in offers:
        if offer.mover == TCP:
            continue
        name = offer.mover.encode("ascii")
        body = _TCP.pack(offer.port, offer.features) + offer.detail
        parts += [bytes((len(name),)), name, _U32.pack(len(body)), body]
    return b"".join(parts)


def decode_offers(answer: bytes) -> list[MoverOffer]:
    """The offers in a handshake answer.

    Raises:
      DataLossError: the answer is not laid out as the module docstring says.
    """
    data = memoryview(answer)
    if len(data) < _TCP.size:
        raise errors.DataLossError(f"a mover handshake answer of {len(data)} bytes is too short")
    port, features = _TCP.unpack_from(data, 0)
    offers = [MoverOffer(TCP, port, features)] if port else []
    position = _TCP.size
    try:
        while position < len(data):
            size = data[position]
            name = bytes(data[position + 1 : position + 1 + size]).decode("ascii")
            position += 1 + size
            (length,) = _U32.unpack_from(data, position)
            body = data[position + 4 : position + 4 + length]
            position += 4 + length
            if len(body) != length or length < _TCP.size:
                raise ValueError("truncated offer")
            port, features = _TCP.unpack_from(body, 0)
            offers.append(MoverOffer(name, port, features, bytes(body[_TCP.size :])))
    except (ValueError, IndexError, struct.error) as exc:
        raise errors.DataLossError(f"malformed mover handshake answer: {exc}") from None
    return offers


def choose_mover(ours: Collection[str], offers: Sequence[MoverOffer]) -> MoverOffer | None:
    """The fastest mover both sides have: the first of ``MOVER_PREFERENCE`` in ``ours``
    that ``offers`` contains; None when they share none.

    Args:
      ours: the movers this side can use.
      offers: what the other side offered.

    Returns:
      The offer to use, or None (the control plane carries everything).

    Examples:
        >>> from tensorwire.transport.kit.handshake import MoverOffer, choose_mover
        >>> offers = [MoverOffer("tcp", 4000), MoverOffer("verbs")]
        >>> choose_mover({"tcp", "verbs"}, offers).mover
        'verbs'
        >>> choose_mover({"tcp"}, offers).port
        4000
        >>> choose_mover({"shm"}, offers) is None
        True
    """
    offered = {offer.mover: offer for offer in offers}
    for mover in MOVER_PREFERENCE:
        if mover in ours and mover in offered:
            return offered[mover]
    return None
