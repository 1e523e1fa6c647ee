"""The packets of a shared-memory connection (see the package docstring for the spec)."""

from __future__ import annotations

import struct

__all__ = [
    "MAGIC",
    "NONCE_BYTES",
    "OP_SEGMENT",
    "OP_MESSAGE",
    "OP_RELEASE",
    "OP_RETIRE",
    "HELLO",
    "PROVE",
    "ACCEPT",
    "STATUS",
    "SEGMENT",
    "MESSAGE",
    "FRAME",
    "SEGMENT_ID",
    "CLIENT_LABEL",
    "SERVER_LABEL",
    "FRAME_ALIGNMENT",
    "frame_offsets",
]

#: Changes with the packet format: a peer speaking another version fails the handshake.
MAGIC = b"TWS1"
NONCE_BYTES = 16
OP_SEGMENT = 1
OP_MESSAGE = 2
OP_RELEASE = 3
OP_RETIRE = 4
#: What each side proves the token over, before the two nonces, so that one side's answer
#: cannot be played back as the other's.
CLIENT_LABEL = b"tensorwire-shm client"
SERVER_LABEL = b"tensorwire-shm server"
#: Frames start at multiples of this inside a segment (the codec's payload alignment).
FRAME_ALIGNMENT = 64

#: Server, first: magic, nonce, the most bytes of the client's segments it will map.
HELLO = struct.Struct(f"<4s{NONCE_BYTES}sQ")
#: Client: magic, nonce, the most bytes of the server's segments it will map; then the
#: 32-byte proof follows.
PROVE = struct.Struct(f"<4s{NONCE_BYTES}sQ")
#: Server, last: status 0, then its own 32-byte proof; or a status code and a message.
STATUS = struct.Struct("<B")
ACCEPT = STATUS
#: op, segment id, size; the memfd travels with it (SCM_RIGHTS).
SEGMENT = struct.Struct("<BIQ")
#: op, segment id (0: no segment, every frame empty), tag length, frame count; then the
#: frames' (offset, length) pairs, then the tag.
MESSAGE = struct.Struct("<BIII")
FRAME = struct.Struct("<QQ")
#: RELEASE and RETIRE: op, segment id.
SEGMENT_ID = struct.Struct("<BI")


def frame_offsets(lengths: list[int]) -> tuple[list[int], int]:
    """Where each frame of these lengths starts in a segment, and the bytes they need.

    Examples:
        >>> from tensorwire.transport.shm.protocol import frame_offsets
        >>> frame_offsets([10, 0, 100])
        ([0, 64, 64], 164)
    """
    offsets = []
    end = 0
    for length in lengths:
        start = -(-end // FRAME_ALIGNMENT) * FRAME_ALIGNMENT
        offsets.append(start)
        end = start + length
    return offsets, end
