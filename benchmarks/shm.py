"""Same-host transfers through shared memory, beside memcpy measured in the same run (issue 15).

    python benchmarks/shm.py [--sizes-mib 16 256] [--rounds 15] [--quick] [--report-only]

This process sends a float32 array to a child process over a ``tensorwire.transport.shm``
connection; one transfer is: ``codec.encode`` (views, no copy), ``send`` (the one copy into
a recycled segment, then a packet), the child's ``receive`` + ``codec.decode`` (arrays over
the mapping, no copy), the child dropping the array (the segment's release), and a small
acknowledgement back. Timed from before the encode to the acknowledgement; the child does
not read the array's bytes (a consumer would; so does memcpy's destination). Beside it, in
each round: ``np.copyto`` between two warm buffers of the same size (``_limits.Memcpy``).
One warm-up transfer per size first (it makes the segment and faults its pages in), then
``--rounds`` rounds (at least 5); the medians are reported, and their ratio against issue
15's goal for same-host large transfers (>= 0.6x memcpy). Exit 3 when a ratio is missed
(``--report-only``: exit 0 anyway).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _limits  # noqa: E402
from tensorwire import codec  # noqa: E402
from tensorwire.transport.shm import ShmConnection, ShmLimits, ShmListener, connect  # noqa: E402

MiB = 1 << 20
GOAL = 0.6
LIMITS = ShmLimits(max_pool_bytes=2 << 30, max_mapped_bytes=2 << 30)
DEADLINE_SECONDS = 120.0


def child() -> int:
    """Receive, decode, drop, acknowledge; until the connection ends."""
    listener = ShmListener(None, LIMITS)
    print(listener.address, flush=True)
    connection = listener.accept(time.monotonic() + DEADLINE_SECONDS)
    listener.close()
    while True:
        try:
            message = connection.receive()
        except Exception:  # noqa: BLE001 - the parent closed the connection: done
            return 0
        value = codec.decode(message.frames)
        shape = value.shape
        del message, value  # releases the segment before the acknowledgement
        connection.send([], tag=repr(shape).encode())


def transfer(connection: ShmConnection, array: np.ndarray) -> float:
    start = time.perf_counter()
    deadline = time.monotonic() + DEADLINE_SECONDS
    connection.send(codec.encode(array), deadline=deadline)
    ack = connection.receive(deadline)
    elapsed = time.perf_counter() - start
    if ack.tag != repr(array.shape).encode():
        raise RuntimeError(f"the child decoded {ack.tag!r}, expected {array.shape}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    parser.add_argument("--report-only", action="store_true", help="exit 0 on a missed goal")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # nox -s bench passes its arguments to every script
    if args.child:
        return child()
    rounds = 5 if args.quick else max(5, args.rounds)

    process = subprocess.Popen(
        [sys.executable, __file__, "--child"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        connection = connect(
            address, None, limits=LIMITS, deadline=time.monotonic() + DEADLINE_SECONDS
        )
        memcpy = _limits.Memcpy()
        arrays = {size: np.ones(size * MiB // 4, np.float32) for size in args.sizes_mib}
        shm_seconds: dict[int, list[float]] = {size: [] for size in args.sizes_mib}
        copy_seconds: dict[int, list[float]] = {size: [] for size in args.sizes_mib}
        for array in arrays.values():  # warm-up: segments made, pages faulted in
            transfer(connection, array)
            memcpy.copy(array.nbytes)
        for _ in range(rounds):
            for size, array in arrays.items():
                shm_seconds[size].append(transfer(connection, array))
                start = time.perf_counter()
                memcpy.copy(array.nbytes)
                copy_seconds[size].append(time.perf_counter() - start)
        connection.close()
    finally:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    print(f"shared memory between two processes, median of {rounds} rounds (GB/s)")
    print(f"  {'size':>8} {'shm':>8} {'memcpy':>8} {'ratio':>7}  goal >= {GOAL}x memcpy")
    missed = False
    for size in args.sizes_mib:
        nbytes = size * MiB
        shm = nbytes / statistics.median(shm_seconds[size]) / 1e9
        copy = nbytes / statistics.median(copy_seconds[size]) / 1e9
        ratio = shm / copy
        missed |= ratio < GOAL
        verdict = "met" if ratio >= GOAL else "MISSED"
        print(f"  {size:>5}MiB {shm:>8.2f} {copy:>8.2f} {ratio:>6.2f}x  {verdict}")
    print(f"  segments made by the sender: {connection.pool.created} (reused after warm-up)")
    return 3 if missed and not args.report_only else 0


if __name__ == "__main__":
    sys.exit(main())
