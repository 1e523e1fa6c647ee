"""The grpc transport beside the limits it is bound by, measured in one run.

    python benchmarks/transport.py            # 1, 16, 256 MiB and 16-byte calls
    python benchmarks/transport.py --quick    # 1 and 16 MiB, fewer calls
    python benchmarks/transport.py --bulk off # without the bulk TCP side channel
    python benchmarks/transport.py --sizes 0.25,0.5,1,2,4 --bulk-threshold 262144

A server process hosts a tensorwire ``grpc`` listener; the raw references are the peers of
``benchmarks/_limits.py``, each in its own process. The client measures, interleaved so that
drift on a noisy machine hits all alike:

- raw TCP: N bytes peer -> client into a preallocated buffer;
- raw grpcio: server streaming of N bytes in 4 MiB ``bytes`` chunks, copied into a
  preallocated buffer, and unary echo of 16 bytes;
- tensorwire grpc: a unary call returning an N-byte array held by the server, its size
  announced as a session announces a variable read (down), and one
  sending an N-byte array to it (up), and a 16-byte echo.

Throughput is the best of several runs; latency percentiles are over all calls. Ratios are
ours / raw (higher is better for throughput, lower is better for latency).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _limits  # noqa: E402
from tensorwire.transport.base import RESPONSE_BYTES_METADATA_KEY  # noqa: E402

MiB = 1 << 20


# -- server process -----------------------------------------------------------------------
def serve(extra: dict[str, object]) -> None:
    from tensorwire.transport import Service, TransportOptions, get_transport

    arrays: dict[int, np.ndarray] = {}
    svc = Service("bench.Ours")

    @svc.unary("Echo")
    def echo(frames, context):  # type: ignore[no-untyped-def]
        return frames

    @svc.unary("Get")
    def get(frames, context):  # type: ignore[no-untyped-def]
        size = int(bytes(frames[0]))
        if size not in arrays:
            arrays[size] = np.ones(size, dtype=np.uint8)
        return [arrays[size]]

    @svc.unary("Put")
    def put(frames, context):  # type: ignore[no-untyped-def]
        return [str(sum(f.nbytes for f in frames)).encode()]

    options = TransportOptions(extra=extra)
    listener = get_transport("grpc").serve("127.0.0.1:0", [svc], options)
    listener.start()
    print(listener.port, flush=True)
    sys.stdin.read()  # until the client closes our stdin
    listener.stop(0)


def _extra(args: argparse.Namespace) -> dict[str, object]:
    extra: dict[str, object] = {}
    if args.inline_bytes:
        extra["grpc_inline_bytes"] = args.inline_bytes
    if args.chunk_bytes:
        extra["grpc_chunk_bytes"] = args.chunk_bytes
    if args.bulk != "default":
        extra["bulk_tcp"] = args.bulk == "on"
    if args.bulk_threshold:
        extra["bulk_tcp_threshold_bytes"] = args.bulk_threshold
    return extra


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The options the server process needs too."""
    command = []
    if args.inline_bytes:
        command += ["--inline-bytes", str(args.inline_bytes)]
    if args.chunk_bytes:
        command += ["--chunk-bytes", str(args.chunk_bytes)]
    command += ["--bulk", args.bulk]
    if args.bulk_threshold:
        command += ["--bulk-threshold", str(args.bulk_threshold)]
    return command


# -- client process -------------------------------------------------------------------------
def _best(fn: Callable[[], object], size: int, best: dict[str, float], key: str) -> None:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    best[key] = max(best.get(key, 0.0), size / seconds / 1e9)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in microseconds."""
    return _limits.percentile(samples, 50) * 1e6, _limits.percentile(samples, 99) * 1e6


def _throughputs(  # type: ignore[no-untyped-def]
    size: int, rounds: int, tcp: _limits.TcpPeer, raw: _limits.GrpcPeer, ours
) -> dict[str, float]:
    """Best GB/s of each way of moving ``size`` bytes, runs interleaved."""
    upload = np.ones(size, dtype=np.uint8)
    request = str(size).encode()
    # Announce the response's size, as a session does for a variable read.
    hint = {RESPONSE_BYTES_METADATA_KEY: str(size)}

    def tcp_down() -> None:
        tcp.receive(size)

    def grpc_down() -> None:
        raw.stream(size)

    def ours_down() -> None:
        (frame,) = ours.call("bench.Ours", "Get", [request], metadata=hint)
        assert frame.nbytes == size

    def ours_up() -> None:
        ours.call("bench.Ours", "Put", [upload])

    ways = {"tcp": tcp_down, "grpc": grpc_down, "down": ours_down, "up": ours_up}
    for fn in ways.values():
        fn()  # warm up: connections, server-side caches
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, fn in ways.items():
            _best(fn, size, best, key)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 16 MiB only, fewer calls")
    parser.add_argument("--sizes", type=str, default=None, help="comma-separated MiB sizes")
    parser.add_argument("--rounds", type=int, default=None, help="runs per size (best kept)")
    parser.add_argument("--calls", type=int, default=None, help="16-byte calls per side")
    parser.add_argument("--inline-bytes", type=int, default=None)
    parser.add_argument("--chunk-bytes", type=int, default=None)
    parser.add_argument(
        "--bulk",
        choices=("default", "on", "off"),
        default="default",
        help="the bulk TCP side channel (extra['bulk_tcp']) on both sides",
    )
    parser.add_argument(
        "--bulk-threshold",
        type=int,
        default=None,
        help="extra['bulk_tcp_threshold_bytes'] on both sides",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(_extra(args))
        return

    import grpc
    from tensorwire.transport import TransportOptions, get_transport

    sizes = [1, 16] if args.quick else [1, 16, 256]
    if args.sizes:
        sizes = [float(s) for s in args.sizes.split(",")]  # type: ignore[misc]
    calls = args.calls or (500 if args.quick else 2000)

    command = [sys.executable, __file__, "--serve", *_forwarded(args)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        our_port = int(server.stdout.readline())
        tcp = _limits.TcpPeer()
        raw = _limits.GrpcPeer()
        options = TransportOptions(extra=_extra(args))
        ours = get_transport("grpc").connect(f"127.0.0.1:{our_port}", options)

        print(f"# tensorwire grpc transport vs raw references, {time.strftime('%Y-%m-%d %H:%M')}")
        print(
            f"# grpcio {grpc.__version__}, python {sys.version.split()[0]}, "
            f"inline={args.inline_bytes or 'default'} chunk={args.chunk_bytes or 'default'} "
            f"bulk={args.bulk} bulk_threshold={args.bulk_threshold or 'default'}"
        )
        print()
        header = (
            f"{'size':>8} {'raw TCP':>9} {'raw grpc':>9} {'ours down':>10} {'ours up':>9}"
            f" {'down/grpc':>10} {'up/grpc':>8} {'down/TCP':>9} {'up/TCP':>7}"
        )
        print(header + "   (GB/s, best of rounds)")
        for mib in sizes:
            size = int(mib * MiB)
            rounds = args.rounds or (3 if size >= 128 * MiB else 7)
            best = _throughputs(size, rounds, tcp, raw, ours)
            print(
                f"{mib:>5g}MiB {best['tcp']:>9.2f} {best['grpc']:>9.2f} {best['down']:>10.2f}"
                f" {best['up']:>9.2f} {best['down'] / best['grpc']:>10.2f}"
                f" {best['up'] / best['grpc']:>8.2f} {best['down'] / best['tcp']:>9.2f}"
                f" {best['up'] / best['tcp']:>7.2f}",
                flush=True,
            )

        payload16 = b"0123456789abcdef"
        raw_samples: list[float] = []
        our_samples: list[float] = []
        for _ in range(100):  # warm up
            raw.echo(payload16)
            ours.call("bench.Ours", "Echo", [payload16])
        block = 100
        for _ in range(max(1, calls // block)):
            for _ in range(block):
                start = time.perf_counter()
                raw.echo(payload16)
                raw_samples.append(time.perf_counter() - start)
            for _ in range(block):
                start = time.perf_counter()
                ours.call("bench.Ours", "Echo", [payload16])
                our_samples.append(time.perf_counter() - start)
        raw_p50, raw_p99 = _percentiles(raw_samples)
        our_p50, our_p99 = _percentiles(our_samples)
        print()
        print(f"16-byte unary echo ({len(our_samples)} calls each, microseconds)")
        print(f"{'':>14} {'p50':>8} {'p99':>8}")
        print(f"{'raw grpcio':>14} {raw_p50:>8.0f} {raw_p99:>8.0f}")
        print(f"{'ours':>14} {our_p50:>8.0f} {our_p99:>8.0f}")
        print(f"{'ours/raw':>14} {our_p50 / raw_p50:>8.2f} {our_p99 / raw_p99:>8.2f}")
        print()
        print("goals (issue 3): big transfers >= 0.9x raw grpc streaming; no size 1-256 MiB")
        print("below 0.5x raw TCP; 16-byte call p50 <= 1.2x raw grpcio unary echo.")
        ours.close()
        raw.close()
        tcp.close()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
