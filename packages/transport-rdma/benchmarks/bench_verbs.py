"""grpc+verbs against grpc for 1, 16 and 64 MiB tensors, with the bytes that crossed gRPC.

Needs an active verbs device, so it runs inside the Soft-RoCE guest::

    python3 packages/transport-rdma/harness/run_vm.py --command \
        '.cache/rdma-guest/venv/bin/python packages/transport-rdma/benchmarks/bench_verbs.py'

Each size is sent (``Put``: the tensor in the request) and fetched (``Get``: the tensor in the
response), server and client in one process over loopback. Under the guest's CPU emulation
absolute numbers mean little; the gRPC byte counts are the point: above the RDMA threshold
no tensor byte crosses gRPC. ``grpc`` runs with its TCP side channel off (``bulk_tcp``), so
that its row is gRPC itself, every byte through it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from tensorwire import codec, errors
from tensorwire.transport import Service, TransportOptions, get_transport

MiB = 1 << 20


def service(tensors: dict[int, np.ndarray]) -> Service:
    svc = Service("Bench")

    @svc.unary("Put")
    def put(frames, context):
        return [b"ok"]

    @svc.unary("Get")
    def get(frames, context):
        return codec.encode(tensors[int(bytes(frames[0]))])

    return svc


def measure(protocol: str, sizes: list[int], repeats: int) -> list[dict[str, object]]:
    tensors = {n: np.random.default_rng(n).random(n // 4, dtype=np.float32) for n in sizes}
    transport = get_transport(protocol)
    options = TransportOptions()
    if protocol == "grpc":
        options = TransportOptions(extra={"bulk_tcp": False})  # gRPC itself, see above
    listener = transport.serve("127.0.0.1:0", [service(tensors)], options)
    listener.start()
    rows = []
    try:
        with transport.connect(f"127.0.0.1:{listener.port}", options) as ch:
            # Under CPU emulation gRPC's first connection attempt can miss its (short)
            # connect timeout; a benchmark may wait for the connection, a test may not.
            give_up = time.monotonic() + 60
            while True:
                try:
                    ch.call("Bench", "Put", [b"warm-up"], timeout=10)
                    break
                except errors.UnavailableError:
                    if time.monotonic() > give_up:
                        raise
                    time.sleep(0.5)
            for n in sizes:
                frames = codec.encode(tensors[n])
                got = codec.decode(ch.call("Bench", "Get", [str(n).encode()], timeout=300))
                assert np.array_equal(got, tensors[n]), "Get returned different bytes"
                del got
                for op in ("Put", "Get"):
                    stats0 = getattr(transport, "stats", None)
                    before = stats0.snapshot()["grpc_bytes"] if stats0 else 0
                    wire = 0
                    start = time.perf_counter()
                    for _ in range(repeats):
                        if op == "Put":
                            reply = ch.call("Bench", "Put", frames, timeout=300)
                            wire += sum(memoryview(f).nbytes for f in frames)
                        else:
                            reply = ch.call("Bench", "Get", [str(n).encode()], timeout=300)
                            wire += len(str(n))
                        wire += sum(r.nbytes for r in reply)
                        del reply
                    seconds = (time.perf_counter() - start) / repeats
                    if stats0 is not None:
                        crossed = (stats0.snapshot()["grpc_bytes"] - before) // repeats
                    else:
                        crossed = wire // repeats  # plain gRPC: every byte crosses it
                    rows.append(
                        {
                            "protocol": protocol,
                            "op": op,
                            "MiB": n // MiB,
                            "ms": round(seconds * 1e3, 1),
                            "MB/s": round(n / seconds / 1e6, 1),
                            "grpc_bytes_per_op": crossed,
                        }
                    )
    finally:
        listener.stop(0)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,16,64", help="MiB, comma separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ns = p.parse_args()
    sizes = [int(s) * MiB for s in ns.sizes.split(",")]
    rows = []
    for protocol in ("grpc", "grpc+verbs"):
        rows += measure(protocol, sizes, ns.repeats)
    if ns.json:
        print(json.dumps(rows))
        return 0
    print("| protocol | op | MiB | ms/op | MB/s | bytes over gRPC per op |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['protocol']} | {r['op']} | {r['MiB']} | {r['ms']} | {r['MB/s']} | "
            f"{r['grpc_bytes_per_op']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
