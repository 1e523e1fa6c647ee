"""The limits tensorwire is measured against: memcpy in this process, the others each in a
child process over loopback.

- memcpy: ``np.copyto`` between two warm, page-aligned buffers (``Memcpy``), what a
  same-host transfer through shared memory is bound by;
- raw TCP: one process ``sendall``s a buffer, the other ``recv_into``s a preallocated one;
  both page-aligned: the kernel's copies run much slower at some relative offsets (a
  receive buffer 16 bytes past a page boundary, as ``bytearray`` gives, moved 16 MiB at
  2.4 GB/s here against 4.1 GB/s page-aligned), and the limit should be the best case;
- raw grpcio: a server streaming ``bytes`` chunks (4 MiB) to a client, and a unary echo of
  a small ``bytes`` payload, with grpcio's identity (de)serializers.

Each peer (``TcpPeer``, ``GrpcPeer``) starts its other end with ``python
benchmarks/_limits.py <role> ...`` and reads the port it prints, so the figures cross
processes exactly like tensorwire's do. Peers stay up, so a benchmark can interleave their
rounds with its own and compare figures taken under the same load.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures

from tensorwire_grpc.core_logging import apply_default

# The raw-grpcio baselines import grpc themselves, not through tensorwire_grpc: give them
# tensorwire's default (gRPC's C core silent unless GRPC_VERBOSITY / GRPC_TRACE is set)
# before anything here imports grpc; the peers spawned from here inherit it.
apply_default()

CHUNK = 4 << 20
_SERVICE = "bench.Raw"
PAGE = 4096


def repeats(nbytes: int) -> int:
    """Transfers of ``nbytes`` timed together as one figure: ~64 MiB moved, at least one, so
    that small sizes are not timed below the clock's and the scheduler's noise."""
    return max(1, (64 << 20) // nbytes)


def page_aligned(nbytes: int) -> memoryview:
    """``nbytes`` of writable memory starting at a page boundary, every page touched."""
    import numpy as np

    raw = np.ones(nbytes + PAGE, np.uint8)
    start = (-raw.ctypes.data) % PAGE
    return memoryview(raw[start : start + nbytes])


def _spawn(
    *args: str, wrap: Callable[[list[str]], list[str]] = list
) -> tuple[subprocess.Popen[str], int]:
    command = wrap([sys.executable, __file__, *args])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)


# -- persistent peers, for measurements interleaved with tensorwire's ----------------------
class Memcpy:
    """Copies between two warm, page-aligned buffers of each size asked for, in this process
    (no child: nothing crosses), kept between calls so a round copies into touched pages."""

    def __init__(self) -> None:
        self._buffers: dict[int, tuple[memoryview, memoryview]] = {}

    def copy(self, nbytes: int, times: int = 1) -> None:
        """Copy ``nbytes`` ``times`` times (one timed batch of small copies)."""
        import numpy as np

        pair = self._buffers.get(nbytes)
        if pair is None:
            pair = self._buffers[nbytes] = (page_aligned(nbytes), page_aligned(nbytes))
        source, destination = (np.frombuffer(view, np.uint8) for view in pair)
        for _ in range(times):
            np.copyto(destination, source)


class TcpPeer:
    """A child process that sends any number of bytes over one loopback TCP connection on
    request (an 8-byte size, then ``sendall``), received into a preallocated buffer.

    ``host`` and ``wrap``: the sender listens on ``host`` instead, started by the command
    ``wrap`` makes of its own (``VirtualHost.wrap``: in another network namespace)."""

    def __init__(
        self, host: str = "127.0.0.1", wrap: Callable[[list[str]], list[str]] = list
    ) -> None:
        self._process, port = _spawn("tcp", host, wrap=wrap)
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffers: dict[int, memoryview] = {}

    def receive(self, nbytes: int) -> None:
        buffer = self._buffers.get(nbytes)
        if buffer is None:
            buffer = self._buffers[nbytes] = page_aligned(nbytes)
        self._sock.sendall(nbytes.to_bytes(8, "little"))
        got = 0
        while got < nbytes:
            n = self._sock.recv_into(buffer[got:])
            if not n:
                raise RuntimeError("peer closed early")
            got += n

    def close(self) -> None:
        self._sock.close()
        _stop(self._process)


class GrpcPeer:
    """A raw grpcio server in a child process: ``stream(nbytes)`` and ``echo(payload)``."""

    def __init__(self) -> None:
        import grpc

        self._process, port = _spawn("grpc")
        self._channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
        )
        self._stream = self._channel.unary_stream(f"/{_SERVICE}/Stream")
        self._echo = self._channel.unary_unary(f"/{_SERVICE}/Echo")
        self._buffers: dict[int, memoryview] = {}

    def stream(self, nbytes: int) -> None:
        """Receive ``nbytes`` in 4 MiB chunks into one preallocated buffer."""
        buffer = self._buffers.get(nbytes)
        if buffer is None:
            buffer = self._buffers[nbytes] = page_aligned(nbytes)
        offset = 0
        for chunk in self._stream(str(nbytes).encode(), timeout=300):
            buffer[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        assert offset == nbytes

    def echo(self, payload: bytes) -> None:
        self._echo(payload, timeout=10)

    def close(self) -> None:
        self._channel.close()
        _stop(self._process)


# -- raw TCP -------------------------------------------------------------------------------
def tcp_send_server(host: str = "127.0.0.1") -> None:
    listener = socket.create_server((host, 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    source = memoryview(b"")
    while True:
        header = b""
        while len(header) < 8:  # the size of the next transfer; EOF when the client hangs up
            part = conn.recv(8 - len(header))
            if not part:
                conn.close()
                return
            header += part
        size = int.from_bytes(header, "little")
        if len(source) < size:
            source = page_aligned(size)
        conn.sendall(source[:size])


# -- raw grpcio ----------------------------------------------------------------------------
def grpc_server() -> None:
    import grpc

    payloads: dict[int, bytes] = {}

    def stream(request: bytes, context: object):  # type: ignore[no-untyped-def]
        nbytes = int(request)
        chunk = payloads.setdefault(CHUNK, bytes(CHUNK))
        sent = 0
        while sent < nbytes:
            n = min(CHUNK, nbytes - sent)
            yield chunk if n == CHUNK else chunk[:n]
            sent += n

    def echo(request: bytes, context: object) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def percentile(values: list[float], q: float) -> float:
    if q == 50:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "tcp":
        tcp_send_server(*sys.argv[2:3])  # optionally the address to listen on
    elif role == "grpc":
        grpc_server()
    else:
        raise SystemExit(f"unknown role {role!r}")
