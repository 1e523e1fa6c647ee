"""The bulk side channel: large calls over plain TCP beside the gRPC channel (the mover
``tcp`` of ``tensorwire.transport.kit.handshake``).

Split by role: ``protocol`` (the wire format, written out in its docstring, and what both
sides use to speak it), ``server`` (``BulkServer``: the listening socket and a thread per
connection) and ``client`` (``BulkPeer``: pooled connections, and the requests ``push``,
``fetch``, ``call`` and ``lean_call``, the last for small calls). Frame layout, size
checks, tickets and receive buffers come from ``tensorwire.transport.kit``.
"""

from __future__ import annotations

from . import protocol
from .client import BulkPeer, call, fetch, lean_call, push
from .protocol import BulkUnavailable
from .server import BulkServer, take_arrival

__all__ = [
    "BulkPeer",
    "BulkServer",
    "BulkUnavailable",
    "call",
    "fetch",
    "lean_call",
    "protocol",
    "push",
    "take_arrival",
]
