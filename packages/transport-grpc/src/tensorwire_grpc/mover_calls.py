"""What the grpc listener hands a mover's server (the TCP side channel's ``bulk.server``,
``shm_mover``): how to run a call, a stream, and how to park or take a response. One set of
signatures, so that every mover serves calls exactly as gRPC does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["ParkResponse", "ServeCall", "ServeStream", "TakeResponse"]

#: ``take(ticket) -> (views, total)`` of a parked response; raises an ``OpError``.
TakeResponse = Callable[[bytes], "tuple[list[memoryview], int]"]
#: ``park(views, total, deadline) -> ticket``: park a response for another mover to fetch.
ParkResponse = Callable[[list[memoryview], int, "float | None"], bytes]
#: ``serve_call(name, frames, metadata, deadline, peer) -> (views, total)``: runs a unary
#: method; raises an ``OpError``.
ServeCall = Callable[
    [str, list[memoryview], dict[str, str], "float | None", str], "tuple[list[memoryview], int]"
]
#: ``serve_stream(name, frames, metadata, deadline, peer) -> iterator of (views, total)``.
ServeStream = Callable[
    [str, list[memoryview], dict[str, str], "float | None", str],
    "Iterator[tuple[list[memoryview], int]]",
]
