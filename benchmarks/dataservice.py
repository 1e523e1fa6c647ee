"""tf.data service throughput and latency, beside its limits, in one run (issue 4).

    python benchmarks/dataservice.py [--protocol grpc] [--quick]
    python benchmarks/dataservice.py --token [--quick]   # with a cluster token vs without
    python benchmarks/dataservice.py --metrics [--quick] # servers with a metrics port
    python benchmarks/dataservice.py --positions [--quick]  # exactly-once bookkeeping's price

The dispatcher and the workers run as ``tensorwire dispatcher`` / ``tensorwire worker``
processes (their own interpreters, as in production); this process is the client. Reported:

- ``range(N).map(x*2)`` at batch 1 and at batch 256, in parallel_epochs and
  distributed_epoch, as elements/s or batches/s, next to the same pipeline iterated locally;
- 1 MiB float32 elements as MB/s, next to raw grpcio server streaming measured here;
- the time from creating the iterator (job start) to the first element;
- 2 workers against 1.

``--token`` measures the price of authentication instead: two services side by side, one
whose processes (dispatcher, worker, this client) share a cluster token and one without, the
data-service figures above taken on each in alternation (best of several rounds, so load
that comes and goes on a shared machine hits both alike), and the ratio with/without.

``--positions`` measures the price of exactly-once bookkeeping (issue 11): the same pipeline,
once deterministic (its elements carry positions that readers record and report, so a lost
worker's elements are replayed exactly once) and once not (at most once, no positions),
through one service in alternating rounds, at batch 1 and 256 in both modes. The two differ
only in a ``shuffle(1)`` being seeded or not: an identity either way, but an unseeded one
makes the pipeline non-deterministic.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _limits  # noqa: E402
import tensorwire as tw  # noqa: E402
from tensorwire_testing.data_service import DataServiceProcess  # noqa: E402

MiB = 1 << 20
MODES = ("parallel_epochs", "distributed_epoch")


def double(x):
    return x * 2


def pipeline(n: int, batch: int):
    ds = tw.data.Dataset.range(n).map(double)
    return ds.batch(batch) if batch > 1 else ds


def drain(ds) -> tuple[int, float]:
    start = time.perf_counter()
    count = 0
    for _ in ds.as_numpy_iterator():
        count += 1
    return count, time.perf_counter() - start


def drain_steady(ds) -> tuple[int, float]:
    """Like ``drain``, from the first element on: elements after the first and the
    seconds they took (a throughput without the job's start-up)."""
    iterator = ds.as_numpy_iterator()
    next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in iterator:
        count += 1
    return count, time.perf_counter() - start


def best_rate(make, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        count, seconds = drain(make())
        best = max(best, count / seconds)
    return best


TOKEN = "benchmark-token"
#: Extra flags of every server process (``--metrics`` adds a metrics port).
SERVER_ARGS: list[str] = []


class Cluster:
    def __init__(self, protocol: str, num_workers: int, token: str | None = None) -> None:
        self.protocol = protocol
        self.token = token
        env = {k: v for k, v in os.environ.items() if k != "TENSORWIRE_CLUSTER_TOKEN"}
        if token is not None:
            env["TENSORWIRE_CLUSTER_TOKEN"] = token
        self.dispatcher = DataServiceProcess(
            "dispatcher", ["--protocol", protocol, *SERVER_ARGS], env=env
        ).start()
        self.workers = [
            DataServiceProcess(
                "worker",
                [
                    "--protocol",
                    protocol,
                    "--dispatcher_address",
                    self.dispatcher.address,
                    *SERVER_ARGS,
                ],
                env=env,
            ).start()
            for _ in range(num_workers)
        ]
        self.target = f"{protocol}://{self.dispatcher.address}"

    def distribute(self, ds, mode: str):
        # This process reads with the token of the service it reads from.
        tw.data.service.configure_client(cluster_token=self.token)
        return ds.apply(tw.data.service.distribute(mode, self.target))

    def stop(self) -> None:
        for p in self.workers + [self.dispatcher]:
            p.terminate()


def first_element_ms(cluster: Cluster, repeats: int = 15) -> tuple[float, float]:
    ds = cluster.distribute(tw.data.Dataset.range(10**9).map(double), "parallel_epochs")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        it = iter(ds)
        next(it)
        times.append((time.perf_counter() - start) * 1e3)
        it.close()
    return statistics.median(times), min(times)


def batch1_rate(cluster: Cluster, mode: str, n: int, repeats: int) -> float:
    """Elements/s of ``range(n).map(x*2)`` through ``cluster`` in ``mode``."""
    return best_rate(lambda: cluster.distribute(pipeline(n, 1), mode), repeats)


def batch256_rate(cluster: Cluster, mode: str, batches: int, repeats: int) -> float:
    """Batches/s of ``batches`` batches of 256 through ``cluster`` in ``mode``."""
    return best_rate(lambda: cluster.distribute(pipeline(batches * 256, 256), mode), repeats)


def big_elements(count: int) -> tw.data.Dataset:
    """``count`` 1 MiB float32 elements."""
    element = np.random.default_rng(0).random(MiB // 4).astype(np.float32)
    return tw.data.Dataset.from_tensors(element).repeat(count)


def big_element_mbs(cluster: Cluster, big_ds: tw.data.Dataset) -> float:
    """MB/s of ``big_elements`` through ``cluster`` (parallel_epochs), one pass."""
    return best_rate(lambda: cluster.distribute(big_ds, "parallel_epochs"), 1) * MiB / 1e6


def service_figures(cluster: Cluster, n1: int, nb: int, big: int) -> dict[str, float]:
    """The data-service figures of one round on ``cluster`` (one worker), higher is better."""
    figures = {}
    for mode in MODES:
        figures[f"batch 1, {mode} (el/s)"] = batch1_rate(cluster, mode, n1, 1)
        figures[f"batch 256, {mode} (batch/s)"] = batch256_rate(cluster, mode, nb, 1)
    figures["1 MiB float32 elements (MB/s)"] = big_element_mbs(cluster, big_elements(big))
    median, _ = first_element_ms(cluster, repeats=9)
    figures["first element (1/s, from the median ms)"] = 1e3 / median
    return figures


def compare_token(protocol: str, rounds: int, n1: int, nb: int, big: int) -> None:
    clusters = {"without": Cluster(protocol, 1), "with token": Cluster(protocol, 1, TOKEN)}
    best: dict[str, dict[str, float]] = {label: {} for label in clusters}
    try:
        for r in range(rounds):
            order = list(clusters) if r % 2 == 0 else list(reversed(clusters))
            for label in order:
                for name, value in service_figures(clusters[label], n1, nb, big).items():
                    best[label][name] = max(best[label].get(name, 0.0), value)
            print(f"round {r + 1}/{rounds} done", flush=True)
    finally:
        for cluster in clusters.values():
            cluster.stop()
        tw.data.service.configure_client()
    print("\n| measurement | without a token | with a token | ratio |\n| --- | --- | --- | --- |")
    for name, off in best["without"].items():
        on = best["with token"][name]
        print(f"| {name} | {off:,.1f} | {on:,.1f} | {on / off:.2f}x |")


def positioned(ds: tw.data.Dataset, on: bool) -> tw.data.Dataset:
    """``ds`` with an identity shuffle, seeded (positions on) or not (positions off)."""
    return ds.shuffle(1, seed=0 if on else None)


def positions_rate(cluster: Cluster, mode: str, n: int, batch: int, on: bool) -> float:
    """Elements (batch 1) or batches/s of ``range(n).map(x*2)``, positions ``on`` or off."""
    return best_rate(lambda: cluster.distribute(positioned(pipeline(n, batch), on), mode), 1)


def compare_positions(protocol: str, rounds: int, n1: int, nb: int) -> None:
    cluster = Cluster(protocol, 1)
    best: dict[bool, dict[str, float]] = {True: {}, False: {}}
    try:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                for mode in MODES:
                    figures = {
                        f"batch 1, {mode} (el/s)": positions_rate(cluster, mode, n1, 1, on),
                        f"batch 256, {mode} (batch/s)": positions_rate(
                            cluster, mode, nb * 256, 256, on
                        ),
                    }
                    for name, value in figures.items():
                        best[on][name] = max(best[on].get(name, 0.0), value)
            print(f"round {r + 1}/{rounds} done", flush=True)
    finally:
        cluster.stop()
    print(
        "\n| measurement | at most once (no positions) | exactly once (positions) | ratio |"
        "\n| --- | --- | --- | --- |"
    )
    for name, off in best[False].items():
        on = best[True][name]
        print(f"| {name} | {off:,.1f} | {on:,.1f} | {on / off:.2f}x (goal >= 0.9x) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="grpc")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument(
        "--token",
        action="store_true",
        help="compare the service with a cluster token and without, interleaved in this run",
    )
    parser.add_argument(
        "--positions",
        action="store_true",
        help="compare a deterministic pipeline (exactly once, positions) with a "
        "non-deterministic one (at most once), interleaved in this run",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="with --token or --positions: alternating rounds (default 3, 6 without --quick)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="give every server a metrics port (never scraped): what counting calls costs",
    )
    args = parser.parse_args()
    if args.metrics:
        SERVER_ARGS.extend(["--metrics_port", "0"])
    repeats = 1 if args.quick else 3
    n1 = 100_000 if args.quick else 300_000
    nb = 400 if args.quick else 1500
    big = 200 if args.quick else 1000
    if args.positions or args.token:
        rounds = args.rounds or (3 if args.quick else 6)
        what = (
            "exactly once (positions) against at most once"
            if args.positions
            else "with and without a cluster token"
        )
        print(
            f"protocol {args.protocol}, codec {tw.codec.IMPLEMENTATION}, {what}, "
            f"{rounds} alternating rounds",
            flush=True,
        )
        if args.positions:
            compare_positions(args.protocol, rounds, n1, nb)
        else:
            compare_token(args.protocol, rounds, n1, nb, big)
        return

    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, note: str = "") -> None:
        rows.append((name, value, note))
        print(f"{name:<46} {value:>16}  {note}", flush=True)

    print(f"protocol {args.protocol}, codec {tw.codec.IMPLEMENTATION}", flush=True)
    local1 = best_rate(lambda: pipeline(n1, 1), repeats)
    local256 = best_rate(lambda: pipeline(nb * 256, 256), repeats)

    one = Cluster(args.protocol, 1)
    try:
        for mode in MODES:
            rate = batch1_rate(one, mode, n1, repeats)
            row(
                f"batch 1, {mode}, 1 worker",
                f"{rate:,.0f} el/s",
                f"{rate / 25_000:.2f}x goal 25,000; local {local1:,.0f} el/s "
                f"({rate / local1:.2f}x)",
            )
        for mode in MODES:
            rate = batch256_rate(one, mode, nb, repeats)
            row(
                f"batch 256, {mode}, 1 worker",
                f"{rate:,.0f} batch/s",
                f"{rate / 500:.2f}x goal 500; local {local256:,.0f} batch/s "
                f"({rate / local256:.2f}x)",
            )
        big_ds = big_elements(big)
        # Alternate the two measurements and keep the best of each: on a shared machine
        # the load changes between them.
        mbs, grpc_gbs = 0.0, 0.0
        grpc_peer = _limits.GrpcPeer()
        try:
            for _ in range(repeats + 2):
                mbs = max(mbs, big_element_mbs(one, big_ds))
                start = time.perf_counter()
                grpc_peer.stream(big * MiB)
                grpc_gbs = max(grpc_gbs, big * MiB / (time.perf_counter() - start) / 1e9)
        finally:
            grpc_peer.close()
        row(
            "1 MiB float32 elements, 1 worker",
            f"{mbs:,.0f} MB/s",
            f"raw grpcio stream {grpc_gbs * 1e3:,.0f} MB/s ({mbs / (grpc_gbs * 1e3):.2f}x, "
            "goal 0.7x)",
        )
        median, best = first_element_ms(one)
        row(
            "first element after iterator creation",
            f"{median:.1f} ms",
            f"median of 15 (min {best:.1f} ms), goal 15 ms",
        )
    finally:
        one.stop()

    two = Cluster(args.protocol, 2)
    try:
        for mode in MODES:
            n = n1 if mode == "distributed_epoch" else n1 // 2
            rate = batch1_rate(two, mode, n, repeats)
            row(f"batch 1, {mode}, 2 workers", f"{rate:,.0f} el/s", "")
    finally:
        two.stop()

    print("\n| measurement | figure | note |\n| --- | --- | --- |")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
