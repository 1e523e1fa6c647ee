"""Which route a call's payload takes: one pure function per direction, tested by tables.

A transport is a control plane (gRPC) plus *movers*, the faster ways two peers agreed on
to move payload bytes (``handshake``): today the TCP side channel, and RDMA in the
``grpc+verbs`` plugin. Before, the choice was re-derived in several functions along a call;
now the channel asks ``choose_call_route`` once, tries the routes in the order given, and
moves on to the next when a mover turns out to be unavailable (its peer has none, it could
not connect: nothing was sent). The last route is always one the control plane takes alone,
so a call never depends on a mover. The server asks ``choose_response_route`` for each
response it sends.

Routes of a request (``CallRoute``):

- ``MOVER_CALL``: the whole unary call (method, metadata, deadline, request, then status
  and response) goes over the mover: one round trip instead of a control call plus a mover
  transfer. For a unary call whose request reaches the mover threshold, or whose caller
  announced its response (``RESPONSE_BYTES_METADATA_KEY``, any size): callers announce
  only responses worth moving (a session: from 64 KiB), and for those the mover's one
  round trip beats the control plane at every size (a 100-200 KiB variable read took
  600-900 us inline over gRPC, about 130 us through shared memory).
- ``MOVER_PUSH``: the request's frames go over the mover first; the control call carries a
  ticket naming them (a BULK manifest, ``framing``).
- ``INLINE``: one control-plane message.
- ``CHUNKED``: a manifest and chunks on a control-plane stream.

Routes of a response (``ResponseRoute``):

- ``PARK_FOR_MOVER``: parked under a ticket for the caller to fetch through its mover (the
  caller said it can, with FLAG_BULK_OK).
- ``INLINE_WITH_HINT``: inline, flagged so that the caller learns this server has a mover
  that would have taken it.
- ``INLINE``; ``CHUNKED`` (a stream's message); ``PARK`` (a unary response too large to
  send inline, fetched as a chunk stream).

A message larger than ``max_message_bytes`` takes a control-plane route, whose size check
reports the limit.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = [
    "CallRoute",
    "ResponseRoute",
    "RouteLimits",
    "choose_call_route",
    "choose_response_route",
    "fits_inline",
]

#: Bytes of manifest each frame adds to an inline message (its u64 length).
MANIFEST_BYTES_PER_FRAME = 8


class CallRoute(enum.Enum):
    """How a request travels (see the module docstring)."""

    MOVER_CALL = "mover_call"
    MOVER_PUSH = "mover_push"
    INLINE = "inline"
    CHUNKED = "chunked"


class ResponseRoute(enum.Enum):
    """How a response travels (see the module docstring)."""

    PARK_FOR_MOVER = "park_for_mover"
    INLINE_WITH_HINT = "inline_with_hint"
    INLINE = "inline"
    CHUNKED = "chunked"
    PARK = "park"


@dataclasses.dataclass(frozen=True)
class RouteLimits:
    """What a route choice depends on besides the message: one side's settings.

    Args:
      inline_bytes: the largest message (payload plus 8 bytes per frame) sent as one
        control-plane message.
      mover_threshold_bytes: messages of at least this many payload bytes take a mover.
      max_message_bytes: the largest message allowed (None: no limit).
      mover: whether this side may use a mover at all (off, or under TLS: False).
    """

    inline_bytes: int
    mover_threshold_bytes: int
    max_message_bytes: int | None = None
    mover: bool = True


def fits_inline(total: int, nframes: int, limits: RouteLimits) -> bool:
    """Whether a message of ``total`` payload bytes in ``nframes`` frames goes inline."""
    return total + MANIFEST_BYTES_PER_FRAME * nframes <= limits.inline_bytes


def _mover_may_carry(total: int, limits: RouteLimits) -> bool:
    return limits.mover and (limits.max_message_bytes is None or total <= limits.max_message_bytes)


def choose_call_route(
    total: int,
    nframes: int,
    limits: RouteLimits,
    *,
    streaming: bool = False,
    expected_response_bytes: int = 0,
) -> tuple[CallRoute, ...]:
    """The routes to try for a request, in order; the last needs no mover.

    Args:
      total: the request's payload bytes.
      nframes: its frame count.
      limits: the caller's settings.
      streaming: the call wants a stream of responses (no ``MOVER_CALL``).
      expected_response_bytes: the response size the caller announced (0: none).

    Returns:
      One to three routes.

    Examples:
        >>> from tensorwire.transport.kit.routes import RouteLimits, choose_call_route
        >>> limits = RouteLimits(inline_bytes=4 << 20, mover_threshold_bytes=256 << 10)
        >>> [r.value for r in choose_call_route(100, 2, limits)]
        ['inline']
        >>> [r.value for r in choose_call_route(1 << 20, 2, limits)]
        ['mover_call', 'mover_push', 'inline']
    """
    routes: list[CallRoute] = []
    if _mover_may_carry(total, limits):
        threshold = limits.mover_threshold_bytes
        if not streaming and (total >= threshold or expected_response_bytes > 0):
            routes.append(CallRoute.MOVER_CALL)
        if total >= threshold:
            routes.append(CallRoute.MOVER_PUSH)
    routes.append(CallRoute.INLINE if fits_inline(total, nframes, limits) else CallRoute.CHUNKED)
    return tuple(routes)


def choose_response_route(
    total: int,
    nframes: int,
    limits: RouteLimits,
    *,
    caller_fetches_by_mover: bool,
    streaming: bool = False,
) -> ResponseRoute:
    """The route of one response message.

    Args:
      total: the response's payload bytes.
      nframes: its frame count.
      limits: the server's settings (``mover``: the server has one running).
      caller_fetches_by_mover: the request said the caller can fetch through the mover.
      streaming: the message is one of a stream's (never ``PARK`` or a hint).

    Returns:
      The route.

    Examples:
        >>> from tensorwire.transport.kit.routes import RouteLimits, choose_response_route
        >>> limits = RouteLimits(inline_bytes=4 << 20, mover_threshold_bytes=256 << 10)
        >>> choose_response_route(1 << 20, 1, limits, caller_fetches_by_mover=True).value
        'park_for_mover'
    """
    inline = fits_inline(total, nframes, limits)
    if limits.mover and total >= limits.mover_threshold_bytes:
        if caller_fetches_by_mover:
            return ResponseRoute.PARK_FOR_MOVER
        if inline and not streaming:
            return ResponseRoute.INLINE_WITH_HINT
    if inline:
        return ResponseRoute.INLINE
    return ResponseRoute.CHUNKED if streaming else ResponseRoute.PARK
