"""Shared memory between two processes on one host: the medium a shared-memory mover uses.

A message (a list of frames, e.g. ``tensorwire.codec.encode``'s, plus a small tag) is
copied once into a segment of the sender's, and read in place by the receiver: its frames
arrive as views into the segment, so ``tensorwire.codec.decode`` (or ``loads``) of them
returns arrays whose memory is the segment's. Nothing is copied on the receiving side.

Segments (``segments``)
-----------------------
Anonymous ``memfd_create`` files (``MFD_CLOEXEC | MFD_ALLOW_SEALING``), sized with
``ftruncate`` and sealed against shrinking and growing before they leave the process,
mapped shared with ``mmap``. They have no file-system name, so no process death leaves
anything behind: the kernel frees a segment when the last descriptor and mapping of it are
gone, and a ``kill -9`` drops all of the dead process's. The receiver checks the seals and
the size before mapping (a peer able to shrink a mapped file could make the receiver die of
SIGBUS) and maps at most ``ShmLimits.max_mapped_bytes`` of a peer's segments at once.

Same host, proved
-----------------
A ``ShmListener`` listens on an *abstract* Unix socket (``SOCK_SEQPACKET``) named
``tensorwire-shm-`` + 32 random hex digits, and its side tells that name to the peer over
the control channel (gRPC, already authenticated). The peer connects to it and both prove
the cluster token (``security.token_proof``, an HMAC of the other side's nonce, each side's
proof labelled with its role so neither can be reflected). Why that proves the peer shares
this host, and not just claims to:

- Abstract Unix sockets exist only inside one network namespace of one kernel: a process on
  another host, or in another container with its own network namespace, cannot reach the
  name at all, whatever addresses say (two hosts behind one NAT, a container publishing a
  port on localhost, a proxy, a name that resolves to 127.0.0.1 in one place and elsewhere
  in another: all are told apart).
- A connection that completes is therefore to a process on this kernel; the token proofs
  say it is the cluster member that announced the name and not some other local process
  (another user's, one that read the name from ``/proc/net/unix``, which lists abstract
  names to everyone in the namespace). The random name keeps two listeners, or an old
  listener's name reused, from being confused; the proofs decide trust.
- Descriptors passed with ``SCM_RIGHTS`` work across mount, PID, IPC and user namespaces,
  so nothing more needs to be shared than the network namespace.

Without a token (loopback-only clusters, ``security``'s rule) any local process in the
network namespace may connect, as it may connect to the loopback ports.

Packets
-------
One ``SOCK_SEQPACKET`` packet per message, little-endian (``protocol``)::

    handshake   listener: "TWS1", 16-byte nonce, u64 max_mapped_bytes
                client:   "TWS1", 16-byte nonce, u64 max_mapped_bytes,
                          token_proof(CLIENT_LABEL + listener nonce + client nonce)
                listener: u8 0, token_proof(SERVER_LABEL + client nonce + listener nonce)
                      or: u8 status code, the reason (UTF-8); then it closes
    SEGMENT     u8 1, u32 segment id, u64 size; the memfd as SCM_RIGHTS
    MESSAGE     u8 2, u32 segment id (0: none, every frame empty), u32 tag length,
                u32 n, n x (u64 offset, u64 length), tag
    RELEASE     u8 3, u32 segment id     the receiver is done with the message in it
    RETIRE      u8 4, u32 segment id     the sender dropped it: unmap once unused

Either side may send at any time; the peer's packets are read by whichever of this side's
threads waits for them (a receiver, a sender waiting for a segment to come back, ``poll``).
Frames start at multiples of 64 bytes in their segment (the codec's alignment).
Every count and length is checked before anything is mapped or allocated; a peer that
breaks the protocol has its connection closed with the reason.

Recycling
---------
Each side keeps a ``SegmentPool`` for what it sends, under ``max_pool_bytes``, the peer's
``max_mapped_bytes`` and the process's ``ShmBudget`` (all connections together; refused at
once when spent): a segment is lent from the send until the peer's RELEASE, which the
receiver sends when the last view of the message (and every array decoded from it) is
gone; then it is reused without another descriptor or mapping. When either process dies,
its socket closes; the survivor's next read unmaps its own segments and drops the peer's
(each is unmapped when the last array over it goes), and its calls raise
``UnavailableError`` once the messages the peer sent before (if any) were received. A
forked child closes its copies of every connection's and listener's socket at the fork
(``os.register_at_fork``): a child that outlived its parent (a DataLoader worker) would
otherwise keep the connection open and hide the death.
"""

from __future__ import annotations

from .connection import ShmConnection, ShmLimits, ShmMessage
from .listener import ADDRESS_PREFIX, ShmListener, connect
from .pool import PROCESS_BUDGET, ShmBudget
from .segments import MEMFD_NAME, mapped_ranges, memfd_descriptors, memfd_mappings

__all__ = [
    "ADDRESS_PREFIX",
    "MEMFD_NAME",
    "PROCESS_BUDGET",
    "ShmBudget",
    "ShmConnection",
    "ShmLimits",
    "ShmListener",
    "ShmMessage",
    "connect",
    "memfd_descriptors",
    "memfd_mappings",
    "mapped_ranges",
]
