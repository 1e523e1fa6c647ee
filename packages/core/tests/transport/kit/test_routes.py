"""The route choice is a pure function: a table of cases says what each message takes."""

from __future__ import annotations

import pytest
from tensorwire.transport.kit.routes import (
    CallRoute,
    ResponseRoute,
    RouteLimits,
    choose_call_route,
    choose_response_route,
)

KiB = 1 << 10
MiB = 1 << 20
INLINE = 4 * MiB
THRESHOLD = 256 * KiB
ON = RouteLimits(inline_bytes=INLINE, mover_threshold_bytes=THRESHOLD)
OFF = RouteLimits(inline_bytes=INLINE, mover_threshold_bytes=THRESHOLD, mover=False)
CAPPED = RouteLimits(inline_bytes=INLINE, mover_threshold_bytes=THRESHOLD, max_message_bytes=MiB)

MC, MP, IN, CH = CallRoute.MOVER_CALL, CallRoute.MOVER_PUSH, CallRoute.INLINE, CallRoute.CHUNKED

CALL_CASES = [
    # (case, total, frames, limits, streaming, expected response, routes)
    ("tiny call", 16, 2, ON, False, 0, (IN,)),
    ("just under the threshold", THRESHOLD - 1, 1, ON, False, 0, (IN,)),
    ("at the threshold", THRESHOLD, 1, ON, False, 0, (MC, MP, IN)),
    ("large request", 16 * MiB, 2, ON, False, 0, (MC, MP, CH)),
    ("small request, large response announced", 16, 1, ON, False, MiB, (MC, IN)),
    # Announced at all: worth moving (inline over gRPC, 100-200 KiB took 5x longer).
    ("small request, 100 KiB response announced", 16, 1, ON, False, 100 * KiB, (MC, IN)),
    ("small request, 1 KiB response announced", 16, 1, ON, False, KiB, (MC, IN)),
    ("small request, no response announced", 16, 1, ON, False, 0, (IN,)),
    ("stream, large request", 16 * MiB, 1, ON, True, 0, (MP, CH)),
    ("stream, large response announced", 16, 1, ON, True, MiB, (IN,)),
    ("mover off, large request", 16 * MiB, 1, OFF, False, MiB, (CH,)),
    ("mover off, small request", 100, 1, OFF, False, 0, (IN,)),
    ("inline limit counts 8 bytes per frame", INLINE - 8, 1, OFF, False, 0, (IN,)),
    ("one byte over the inline limit", INLINE - 7, 1, OFF, False, 0, (CH,)),
    ("over max_message_bytes: the control plane reports it", 2 * MiB, 1, CAPPED, False, 0, (IN,)),
    ("over max_message_bytes and inline", 8 * MiB, 1, CAPPED, False, 0, (CH,)),
    ("within max_message_bytes", 512 * KiB, 1, CAPPED, False, 0, (MC, MP, IN)),
]


@pytest.mark.parametrize(
    ("total", "nframes", "limits", "streaming", "expected", "routes"),
    [case[1:] for case in CALL_CASES],
    ids=[case[0] for case in CALL_CASES],
)
def test_call_routes(total, nframes, limits, streaming, expected, routes) -> None:
    chosen = choose_call_route(
        total, nframes, limits, streaming=streaming, expected_response_bytes=expected
    )
    assert chosen == routes


PM, IH, RI, RC, PK = (
    ResponseRoute.PARK_FOR_MOVER,
    ResponseRoute.INLINE_WITH_HINT,
    ResponseRoute.INLINE,
    ResponseRoute.CHUNKED,
    ResponseRoute.PARK,
)

RESPONSE_CASES = [
    # (case, total, limits, caller fetches by mover, streaming, route)
    ("small", 100, ON, True, False, RI),
    ("large, caller fetches by mover", MiB, ON, True, False, PM),
    ("large, caller cannot: inline with the hint", MiB, ON, False, False, IH),
    ("huge, caller cannot: parked for a chunked fetch", 16 * MiB, ON, False, False, PK),
    ("huge, caller fetches by mover", 16 * MiB, ON, True, False, PM),
    ("no mover on the server", MiB, OFF, True, False, RI),
    ("no mover, huge", 16 * MiB, OFF, True, False, PK),
    ("stream message, caller fetches by mover", MiB, ON, True, True, PM),
    ("stream message, caller cannot: no hint", MiB, ON, False, True, RI),
    ("huge stream message, caller cannot", 16 * MiB, ON, False, True, RC),
    ("huge stream message, no mover", 16 * MiB, OFF, True, True, RC),
]


@pytest.mark.parametrize(
    ("total", "limits", "by_mover", "streaming", "route"),
    [case[1:] for case in RESPONSE_CASES],
    ids=[case[0] for case in RESPONSE_CASES],
)
def test_response_routes(total, limits, by_mover, streaming, route) -> None:
    chosen = choose_response_route(
        total, 1, limits, caller_fetches_by_mover=by_mover, streaming=streaming
    )
    assert chosen is route


def test_the_last_call_route_never_needs_a_mover() -> None:
    for total in (0, 1, THRESHOLD, INLINE, 64 * MiB):
        for expected in (0, MiB):
            for streaming in (False, True):
                routes = choose_call_route(
                    total, 3, ON, streaming=streaming, expected_response_bytes=expected
                )
                assert routes[-1] in (IN, CH)
                assert all(r in (MC, MP) for r in routes[:-1])


@pytest.mark.parametrize("total", [0, 1, 1000, THRESHOLD - 1])
def test_a_small_call_without_metadata_is_inline(total: int) -> None:
    # The grpc channel's fast path skips asking: it relies on this answer.
    assert choose_call_route(total, 3, ON) == (IN,)
