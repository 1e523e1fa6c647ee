"""The bulk side channel's wire protocol: large calls over plain TCP beside the gRPC channel.

(The server is ``bulk.server``, the client ``bulk.client``; this module is their common
language: constants, layouts, and the encoders and readers both sides use.)

gRPC Python moves about 1 GB/s on loopback while a plain socket moves three times that, and
one gRPC round trip (about 300 us) costs as much as moving a whole MiB over TCP. So a unary
call whose request or expected response has at least ``bulk_tcp_threshold_bytes`` does not
travel through gRPC at all: the whole call (method, metadata, deadline, request, then status
and response) goes over a pooled TCP connection between the same two processes (CALL).
Large messages of calls that stay on gRPC (streams, older peers) still skip gRPC's body
path: their frames are pushed or fetched over TCP and the gRPC call carries only a
descriptor (a random 16-byte ticket and the frame lengths). gRPC stays the control plane:
it finds the side port, carries every small call and stream, and is the fallback whenever
the side channel cannot be used; handlers run through the same ``invoke`` either way.

The listener opens one extra listening socket on its host (port 0) and tells channels its
port through ``/tensorwire.grpc.Bulk/Hello`` (a unary gRPC call, token-checked like every
call; its request and answer are the mover handshake of ``tensorwire.transport.kit.handshake``,
where this side channel is the mover ``tcp``). A channel asks once, when it first has
something large to move, and falls back to the chunked gRPC path by itself when the server
has no side channel (an older peer, the feature off, TLS) or the port cannot be reached.

Connections are always opened by the channel and pooled per peer (``BulkPeer``). Each
connection starts with a handshake that proves the cluster token: the server sends
``MAGIC`` and a random nonce, the client answers ``MAGIC`` and ``HMAC-SHA256(token, nonce)``,
the server answers one zero byte, or a status (u8 code, u32 length, message) and closes the
connection before any request is read. A server at its connection limit sends
``REFUSED_MAGIC`` and a status instead of its nonce. Then, one at a time, requests on the
connection::

    PUSH   u8 op=1, 16-byte ticket, u32 ttl ms (0 = none), u32 n, n x u64 lengths, payload
           -> u8 status (0 = ok, else an error code), u32 message length, message
    FETCH  u8 op=2, 16-byte ticket
           -> u8 status; ok: u32 n, n x u64 lengths, payload; else u32 length, message
    CALL   u8 op=3, u16 name length, u32 metadata length, u32 timeout ms (0 = none),
           name ("/service/method"), metadata (utf-8 "key\0value\0..."), u32 n,
           n x u64 lengths, payload
           -> u8 status; ok: u32 n, n x u64 lengths, payload; else u32 length, message
    LEAN   u8 op=4, u8 name length, u16 n, u32 timeout ms (0 = none), u32 payload bytes,
           name, n x u32 lengths, payload
           -> u8 status, u16 n, u32 bytes; ok: n x u32 lengths, payload; else (n = 0)
           that many bytes of message. Status ``LEAN_BUSY``: not run, make it over gRPC.

LEAN is CALL for small calls (issue 15): once a channel knows a server's side port (it asks
in the background after its first call), every unary call without metadata of its own and
with at most ``LEAN_MAX_BYTES`` of request takes it. gRPC Python spends about 300 us on a
round trip that a socket does in tens: what is left per call is one fixed header packed
and unpacked with one ``struct`` each, the method's name looked up as bytes, and the frames
copied out of the read-ahead buffer (a whole small request arrives with one ``recv``). No
metadata, nothing to decode: the connection proved the token, the caller's deadline is the
timeout field. The server runs at most its ``grpc_max_workers`` side-channel calls at once;
past that it answers ``LEAN_BUSY`` (the request read, the connection in step) and the
caller makes the call over gRPC, so a handler waiting for another call never waits behind
it. A response larger than ``LEAN_MAX_BYTES`` (or than the caller's ``max_message_bytes``)
is still answered on the connection (one round trip instead of a gRPC call and a FETCH):
the caller checks the size from the header before reading it.

A payload is its frames in order, each frame of ``ALIGNED_FRAME_BYTES`` or more preceded
by the zero bytes that make it start a multiple of ``FRAME_ALIGNMENT`` bytes after the
first byte of its message (both sides compute them from the lengths). The kernel copies a
message into its socket memory starting afresh at a page boundary, and copies between
buffers at unlucky relative offsets run at half speed: a 1 MiB response after a 73-byte
header took 450 us instead of 180 us on loopback here, for exactly the same bytes.

Refusals: a request the server will not take (more than ``framing.MAX_FRAMES`` frames, more
bytes than ``max_message_bytes`` with ``framing.FRAME_OVERHEAD_BYTES`` counted per frame, no
room for a push, an oversized name or metadata block, an unknown op, memory that cannot be
allocated) is answered at once, from its header, with a status and a message saying which
limit it exceeded; then the server closes the connection without reading the payload (the
caller, still sending, reads the status after its send fails; see
``client._send_request``). So a request announcing 2**40 bytes costs the server one header,
not a wait for bytes that never come. Errors of the handler a CALL ran keep the connection,
which is in step.

The accept loop survives failures (EMFILE in a burst of connections, a thread that cannot
start): it logs, backs off up to ``connection_server.ACCEPT_RETRY_MAX_SECONDS`` and accepts
again; the connections waiting in the backlog are served once it can.

CALL runs the unary method on the connection's thread, through the listener's
``serve_call`` (token, arity and error mapping as for gRPC calls); its status codes are
those of ``tensorwire.errors``, so the caller raises the handler's class and message.

PUSH is a large request: the server receives it into aligned, pooled memory (the receive
buffers of ``tensorwire.transport.kit.framing``) and keeps it in a ticket store
(``kit.tickets``, ``BulkServer.arrivals``) until the gRPC call that names the ticket takes
it, or the caller's deadline passes. FETCH takes a large response the server parked in the
listener's ticket store (the same tickets the gRPC ``Fetch`` uses).
Senders hand a header and the frames' memoryviews to one gathered ``sendmsg`` (no joins,
no copies); receivers read the small fields from a read-ahead buffer and ``recv_into`` the
final memory (``wire``). Lengths are announced first and checked, every socket
operation has a timeout from the call's deadline, and a peer dying mid-transfer surfaces as
``UnavailableError`` (``DeadlineExceededError`` when the deadline passes first).

With TLS configured the side channel is not used at all (neither side opens or uses it):
it would have to repeat the same certificate rules over ``ssl``, and TLS caps throughput
anyway. Tokens are proved, never sent.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from tensorwire.transport import security
from tensorwire.transport.kit import framing

from ..wire import Wire

#: Changes with the wire format: a peer speaking another version fails the handshake and
#: its calls use gRPC. TWB2 added the frame alignment.
MAGIC = b"TWB2"
#: Sent instead of MAGIC by a server that will not serve the connection, then a status.
REFUSED_MAGIC = b"TWB!"
NONCE_BYTES = 16
MAC_BYTES = security.TOKEN_PROOF_BYTES
OP_PUSH = 1
OP_FETCH = 2
OP_CALL = 3
#: Frames this large start at a multiple of FRAME_ALIGNMENT bytes into their message.
ALIGNED_FRAME_BYTES = 64 * 1024
FRAME_ALIGNMENT = 4096
ZEROS = memoryview(bytes(FRAME_ALIGNMENT))
#: Timeout of the handshake (and of small control reads on a connection).
CONNECT_SECONDS = 5.0
PUSH_HEAD = struct.Struct("<16sII")
U32 = struct.Struct("<I")
STATUS = struct.Struct("<BI")
CALL_HEAD = struct.Struct("<HII")
OP_LEAN = 4
#: A LEAN request's header after its op byte: name length, n, timeout ms, payload bytes.
LEAN_HEAD = struct.Struct("<BHII")
#: A LEAN request with its op byte (what the client packs in one go).
LEAN_REQUEST = struct.Struct("<BBHII")
#: A LEAN answer's header: status, n, bytes.
LEAN_ANSWER = struct.Struct("<BHI")
#: Requests (and announced responses) larger than this take CALL or gRPC, not LEAN.
LEAN_MAX_BYTES = 64 * 1024
#: Frames of a LEAN message at most (u16 count).
LEAN_MAX_FRAMES = 0xFFFF
#: LEAN status: the server is at its bound of calls at once; nothing was run.
LEAN_BUSY = 0xFF
_U32_LENGTHS: dict[int, struct.Struct] = {}
#: Longest method name and metadata block a CALL may announce.
MAX_CALL_NAME_BYTES = 1024
MAX_CALL_METADATA_BYTES = 64 * 1024


class BulkUnavailable(Exception):
    """The side channel cannot be used for this call; nothing was sent: use gRPC."""


def read_lengths(wire: Wire, deadline: float | None, n: int | None = None) -> tuple[int, ...]:
    """The frame lengths that follow the frame count ``n`` (read first when not given);
    ``ResourceExhaustedError`` before reading them when there are too many."""
    if n is None:
        (n,) = U32.unpack(wire.read(4, deadline))
    framing.check_frames(n)
    return struct.unpack(f"<{n}Q", wire.read(8 * n, deadline)) if n else ()


def padding(offset: int, length: int) -> int:
    """Zero bytes before a frame of ``length`` that would start ``offset`` bytes into its
    message (see the module docstring)."""
    return (-offset) % FRAME_ALIGNMENT if length >= ALIGNED_FRAME_BYTES else 0


def message_parts(head: bytes, views: Sequence[memoryview]) -> list[bytes | memoryview]:
    """``head`` then the frames, each large one after its padding: parts for ``Wire.send``."""
    parts: list[bytes | memoryview] = [head]
    offset = len(head)
    for view in views:
        pad = padding(offset, view.nbytes)
        if pad:
            parts.append(ZEROS[:pad])
        parts.append(view)
        offset += pad + view.nbytes
    return parts


def receive_frames(
    wire: Wire, lengths: Sequence[int], offset: int, deadline: float | None
) -> list[memoryview]:
    """The payload's frames, whose first starts ``offset`` bytes into the message."""
    frames = framing.allocate(lengths)
    for frame in frames:
        pad = padding(offset, len(frame))
        if pad:
            wire.skip(pad, deadline)
        wire.read_into(frame, deadline)
        offset += pad + len(frame)
    return frames


def encode_lengths(views: Sequence[memoryview]) -> bytes:
    return U32.pack(len(views)) + struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))


def answer_parts(views: Sequence[memoryview]) -> list[bytes | memoryview]:
    """The parts of an ok answer to a FETCH or CALL."""
    return message_parts(b"\x00" + encode_lengths(views), views)


def status_bytes(code: int, message: str = "") -> bytes:
    data = message.encode()[:4096]
    return STATUS.pack(code, len(data)) + data


def u32_lengths(n: int) -> struct.Struct:
    """The struct of ``n`` u32 frame lengths (cached: a LEAN message packs one per call)."""
    found = _U32_LENGTHS.get(n)
    if found is None:
        found = struct.Struct(f"<{n}I")
        if n <= 64:
            _U32_LENGTHS[n] = found
    return found


def lean_answer(views: Sequence[memoryview], total: int) -> list[bytes | memoryview]:
    """The parts of an ok LEAN answer."""
    n = len(views)
    head = LEAN_ANSWER.pack(0, n, total) + u32_lengths(n).pack(*map(len, views))
    return message_parts(head, views)


def lean_status(code: int, message: str = "") -> bytes:
    """A LEAN answer carrying an error status (or ``LEAN_BUSY``) and its message."""
    data = message.encode()[:4096]
    return LEAN_ANSWER.pack(code, 0, len(data)) + data


def read_message(wire: Wire, deadline: float | None) -> str:
    """The message of a status whose code byte was read: u32 length, then utf-8."""
    (size,) = U32.unpack(wire.read(4, deadline))
    return wire.read(size, deadline).decode(errors="replace")


NOT_PROVEN = (
    "the connection did not prove the cluster token (wrong token, none, or not a tensorwire "
    "client of this wire version)"
)
