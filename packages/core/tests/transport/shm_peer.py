"""The other process of the shared-memory tests (test_shm_processes.py).

    python shm_peer.py

Listens (token from TENSORWIRE_TEST_SHM_TOKEN), prints its address on one line, accepts
one connection and answers messages by their tag:

    echo        decode the frames and send the structure back; tag "zero-copy" when every
                decoded array lies in a segment mapping of this process, else "copied"
    hold        decode and keep the structure (its segment stays lent); tag "held"
    drop        forget what was held; tag "dropped"
    send N      send an N-byte uint8 array (value i % 251); tag "data"
    stall N     pass a new N-byte segment but never the message, then wait to be killed
    counts      tag "<memfd mappings> <memfd descriptors>" of this process
    fork        fork a child that waits to be killed; tag: its process id

It exits when the connection ends.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading

import numpy as np
from tensorwire import codec, errors
from tensorwire.transport.shm import (
    ShmListener,
    mapped_ranges,
    memfd_descriptors,
    memfd_mappings,
    protocol,
)
from tensorwire.transport.shm.segments import Segment

DEADLINE_SECONDS = 60.0


def in_segments(arrays: list[np.ndarray]) -> bool:
    ranges = mapped_ranges()
    for array in arrays:
        address = array.__array_interface__["data"][0]
        if array.nbytes and not any(
            lo <= address and address + array.nbytes <= hi for lo, hi in ranges
        ):
            return False
    return True


def arrays_in(value: object) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        return [a for v in value.values() for a in arrays_in(v)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in arrays_in(v)]
    return []


def main() -> int:
    listener = ShmListener(os.environ.get("TENSORWIRE_TEST_SHM_TOKEN") or None)
    print(listener.address, flush=True)
    connection = listener.accept()
    held = []
    while True:
        try:
            message = connection.receive()
        except errors.OpError as exc:  # the test ended the connection
            print(f"peer ends: {exc}", file=sys.stderr)
            return 0
        command, _, argument = message.tag.decode().partition(" ")
        if command == "echo":
            value = codec.decode(message.frames)
            tag = b"zero-copy" if in_segments(arrays_in(value)) else b"copied"
            del message
            connection.send(codec.encode(value), tag=tag)
            del value  # releases the request's segment
        elif command == "hold":
            held.append(codec.decode(message.frames))
            del message
            connection.send([], tag=b"held")
        elif command == "drop":
            del message
            held.clear()
            gc.collect()
            connection.send([], tag=b"dropped")
        elif command == "send":
            data = (np.arange(int(argument)) % 251).astype(np.uint8)
            connection.send(codec.encode(data), tag=b"data")
        elif command == "stall":
            segment = Segment(10_000, int(argument))
            head = protocol.SEGMENT.pack(protocol.OP_SEGMENT, segment.id, segment.size)
            connection._send_packet([head], None, fds=[segment.fd])
            threading.Event().wait()
        elif command == "fork":
            child = os.fork()
            if child == 0:
                signal.pause()  # until the test kills it
                os._exit(0)
            connection.send([], tag=str(child).encode())
        elif command == "counts":
            counts = f"{memfd_mappings()} {memfd_descriptors()}".encode()
            connection.send([], tag=counts)
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
