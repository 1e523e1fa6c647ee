"""tensorwire beside PyTorch RPC and the limits, interleaved in one run (issue 15, part 4).

    python benchmarks/peers.py                 # 1, 16, 256 MiB; 5 rounds; exit 3 on a missed goal
    python benchmarks/peers.py --quick         # 1 and 16 MiB, 3 rounds (nox -s bench)
    python benchmarks/peers.py --report-only   # print everything, exit 0 whatever is missed

Systems, each in its own processes, all measured once per round in the same order so that
load on a shared machine hits them alike:

- tensorwire: a ps and a worker task (``tensorwire server`` processes); this process holds
  the session. ``read`` = the session reads a ps variable; ``run(identity)`` = the tensor
  sent to the ps and returned; ``ps-to-worker`` = a ``run`` on the worker that reads the ps
  variable there (the tensor crosses ps -> worker; a size comes back).
- PyTorch RPC with TensorPipe's defaults (on one host: the ``shm`` transport and, where the
  kernel allows it, the ``cma`` shared-memory channel), and TensorPipe restricted to TCP
  (``_transports=["uv"]``, ``_channels=["basic"]``). Three ranks per configuration: ``ps``
  (holds the tensors), ``worker``, and a ``driver`` that plays this process's part and
  reports its own timings: ``read`` = ``rpc_sync("ps", get)``, ``run(identity)`` =
  ``rpc_sync("ps", identity, (t,))``, ``ps-to-worker`` = ``rpc_sync("worker", pull)`` where
  ``pull`` is ``rpc_sync("ps", get)`` on the worker.
- the limits (``benchmarks/_limits.py``): memcpy into a warm buffer, raw TCP loopback, raw
  grpcio unary echo.

PyTorch's ranks are stopped (``SIGSTOP``) whenever they are not being measured, and
continued (``SIGCONT``) for their own measurements: idle, TensorPipe's ranks poll, about 17%
of a core each here, so on two cores the six of them would slow whatever is measured beside
them (ours, the limits, the other trio). tensorwire's processes and the limits' peers sleep
when idle and are left running.

Figures: tiny call (16-byte tensor sent and returned) p50/p99 over ``--calls`` calls a round;
GB/s for each size and path (``run(identity)`` counts both crossings), each timing a batch
of transfers in which every result replaces the one before (``keeping_the_latest``); the
data service moving 1 MiB float32 elements to a reader on the worker's host, beside raw TCP.
Each figure is the median over the rounds, with the spread (min-max). Every goal of issue
15 is printed with its ratio and met/MISSED; the exit status is 3 when one measured goal is
missed (unless ``--report-only``; 1 stays a crash's). Across hosts (the side channel
between network namespaces, ``across_hosts.py``) runs after the rest, in its own processes,
unless ``--no-across-hosts`` or network namespaces cannot be made (not root): then its goal
is printed as not measured.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _limits  # noqa: E402
import across_hosts  # noqa: E402
from _limits import repeats  # noqa: E402

MiB = 1 << 20
PS = "/job:ps/task:0"
WORKER = "/job:worker/task:0"
#: Seconds any one reply of a torch driver may take (a 256 MiB round over TCP takes ~1 s).
REPLY_TIMEOUT = 300.0
#: Seconds three torch ranks may take to rendezvous and warm up.
START_TIMEOUT = 120.0
#: Exit status when a measured goal is missed (1 stays an error's, e.g. a traceback).
GOALS_MISSED = 3
#: TensorPipe restricted to TCP: the libuv transport and the channel that sends tensors over it.
TCP_ONLY = {"_transports": ["uv"], "_channels": ["basic"]}


def identity(x):  # type: ignore[no-untyped-def]
    return x


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def keeping_the_latest(call: Callable[[], object], n: int) -> Callable[[], object]:
    """``call`` made ``n`` times, each result replacing the one before, as a training
    loop's step replaces its last value (every system is timed this way). Keeping all
    ``n`` alive instead (a list of them) made each 16 MiB result land in memory no cache
    held: four live results and the variable are more than this machine's 32 MiB L3,
    while the memcpy they are compared with copies between two warm buffers."""

    def loop() -> object:
        result = None
        for _ in range(n):
            result = call()
        return result

    return loop


# -- PyTorch RPC ranks (each its own interpreter: ``python peers.py torch-rank ...``) -----
_TENSORS: dict[int, Any] = {}


def torch_get(nbytes: int):  # type: ignore[no-untyped-def]
    """On ``ps``: the tensor of ``nbytes`` it holds (made on first use)."""
    import torch

    tensor = _TENSORS.get(nbytes)
    if tensor is None:
        tensor = _TENSORS[nbytes] = torch.ones(nbytes // 4, dtype=torch.float32)
    return tensor


def torch_pull(nbytes: int) -> int:
    """On ``worker``: fetch the ps's tensor, return its size (what ours returns too)."""
    from torch.distributed import rpc

    return int(rpc.rpc_sync("ps", torch_get, (nbytes,)).nbytes)


def torch_driver_measure(request: dict[str, Any]) -> list[float]:
    """On ``driver``: seconds of each measured call (``tiny``) or of each batch of
    ``repeats`` transfers (``read``, ``run``, ``pull``)."""
    import torch
    from torch.distributed import rpc

    kind, nbytes, count = request["kind"], int(request["nbytes"]), int(request["count"])
    if kind == "tiny":
        x = torch.ones(4, dtype=torch.float32)
        return [timed(lambda: rpc.rpc_sync("ps", identity, (x,))) for _ in range(count)]
    if kind == "read":
        call: Callable[[], object] = lambda: rpc.rpc_sync("ps", torch_get, (nbytes,))  # noqa: E731
    elif kind == "run":
        value = torch.ones(nbytes // 4, dtype=torch.float32)
        call = lambda: rpc.rpc_sync("ps", identity, (value,))  # noqa: E731
    elif kind == "pull":
        call = lambda: rpc.rpc_sync("worker", torch_pull, (nbytes,))  # noqa: E731
    else:
        raise ValueError(f"unknown kind {kind!r}")
    loop = keeping_the_latest(call, repeats(nbytes))
    return [timed(loop) for _ in range(count)]


def torch_rank(name: str, rank: int, port: int, tcp_only: bool) -> None:
    """One rank of a torch trio; the driver serves JSON requests on stdin until EOF."""
    import warnings

    from torch.distributed import rpc

    # init_rpc's own use of a deprecated process-group call warns once per rank: noise here.
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")

    options = rpc.TensorPipeRpcBackendOptions(
        init_method=f"tcp://127.0.0.1:{port}",
        rpc_timeout=REPLY_TIMEOUT,
        num_worker_threads=4,
        **(TCP_ONLY if tcp_only else {}),
    )
    rpc.init_rpc(name, rank=rank, world_size=3, rpc_backend_options=options)
    if name == "driver":
        for line in sys.stdin:
            reply = torch_driver_measure(json.loads(line))
            print(json.dumps(reply), flush=True)
    rpc.shutdown()  # waits for every rank: the trio ends when the driver's stdin closes


class TorchTrio:
    """Three PyTorch RPC ranks (``ps``, ``worker``, ``driver``) in child processes; the
    driver measures on request and answers with its own timings.

    Made in two steps so that several trios (and tensorwire's tasks) start side by side:
    the constructor spawns the ranks, ``wait_ready`` waits for their rendezvous.
    """

    def __init__(self, tcp_only: bool) -> None:
        import portpicker

        self.tcp_only = tcp_only
        port = portpicker.pick_unused_port()
        env = dict(os.environ)
        # Loopback for TensorPipe's libuv transport too (it picks by host name otherwise).
        env.setdefault("TP_SOCKET_IFNAME", "lo")
        self._processes: list[subprocess.Popen[str]] = []
        try:
            for rank, name in enumerate(("ps", "worker", "driver")):
                argv = [sys.executable, __file__, "torch-rank", name, str(rank), str(port)]
                self._processes.append(
                    subprocess.Popen(
                        [*argv, "tcp" if tcp_only else "default"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=env,
                    )
                )
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        """Wait for the rendezvous (and warm the tiny path) within ``START_TIMEOUT``, then
        stop the ranks until they are measured."""
        self.measure("tiny", 0, 50, timeout=START_TIMEOUT)

    def _signal(self, signum: int) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signum)

    def measure(
        self, kind: str, nbytes: int, count: int, timeout: float = REPLY_TIMEOUT
    ) -> list[float]:
        """The driver's timings; the ranks run for this measurement only (see the module
        docstring: idle, they poll)."""
        self._signal(signal.SIGCONT)
        try:
            return self._measure(kind, nbytes, count, timeout)
        finally:
            self._signal(signal.SIGSTOP)

    def _measure(self, kind: str, nbytes: int, count: int, timeout: float) -> list[float]:
        driver = self._processes[-1]
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.write(json.dumps({"kind": kind, "nbytes": nbytes, "count": count}) + "\n")
        driver.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(driver.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"torch driver gave no reply to {kind} within {timeout:.0f} s")
        line = driver.stdout.readline()
        if not line:
            codes = [p.poll() for p in self._processes]
            raise RuntimeError(f"torch driver exited (exit codes ps/worker/driver {codes})")
        return [float(s) for s in json.loads(line)]

    def close(self) -> None:
        # Killed, not shut down: rpc.shutdown's graceful barrier takes seconds and the
        # ranks hold nothing worth keeping.
        for process in self._processes:
            process.kill()  # (a stopped process is killed too)
        for process in self._processes:
            process.wait(timeout=10)
            if process.stdin is not None:
                process.stdin.close()
            if process.stdout is not None:
                process.stdout.close()


# -- tensorwire ----------------------------------------------------------------------------
def pull_variable(name: str) -> int:
    """On the worker task: read the ps variable ``name``, return its size."""
    import tensorwire as tw

    task = tw.current_task()
    var = task.storage.get(name)
    if var is None:
        var = task.storage[name] = task.session.variable(name, device=PS)
    return int(var.read(timeout=REPLY_TIMEOUT).nbytes)


class Ours:
    """A ps and a worker task in their own processes, and a session to them here."""

    def __init__(self, protocol: str) -> None:
        import tensorwire as tw
        from tensorwire_testing import start_process_cluster

        self._tasks = start_process_cluster(1, 1, protocol=protocol)
        try:
            self.session = tw.Session(self._tasks["worker"][0].target)
        except BaseException:
            self.close()
            raise
        self._variables: dict[int, Any] = {}
        self._values: dict[int, np.ndarray] = {}

    def prepare(self, nbytes: int) -> None:
        value = np.ones(nbytes // 4, np.float32)
        self._values[nbytes] = value
        self._variables[nbytes] = self.session.variable(f"v{nbytes}", value, device=PS)

    def measure(self, kind: str, nbytes: int, count: int) -> list[float]:
        sess = self.session
        if kind == "tiny":
            x = np.ones(4, np.float32)
            return [timed(lambda: sess.run(identity, x, device=PS)) for _ in range(count)]
        if kind == "read":
            var = self._variables[nbytes]
            call: Callable[[], object] = lambda: var.read(timeout=REPLY_TIMEOUT)  # noqa: E731
        elif kind == "run":
            value = self._values[nbytes]
            call = lambda: sess.run(identity, value, device=PS, timeout=REPLY_TIMEOUT)  # noqa: E731
        elif kind == "pull":
            name = f"v{nbytes}"
            call = lambda: sess.run(  # noqa: E731
                pull_variable, name, device=WORKER, timeout=REPLY_TIMEOUT
            )
        else:
            raise ValueError(f"unknown kind {kind!r}")
        loop = keeping_the_latest(call, repeats(nbytes))
        return [timed(loop) for _ in range(count)]

    def close(self) -> None:
        from tensorwire_testing import stop_all

        session = getattr(self, "session", None)
        if session is not None:
            session.close()
        stop_all(self._tasks)


# -- the run -------------------------------------------------------------------------------
PATHS = {"read": "read", "run": "run(identity)", "pull": "ps-to-worker"}
TORCH_DEFAULT, TORCH_TCP = "torch rpc (default)", "torch rpc (TCP only)"


class Figures:
    """Per-round samples by name; medians and spreads over the rounds."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def cell(self, name: str, scale: float = 1.0, digits: int = 2) -> str:
        values = self.samples.get(name)
        if not values:
            return "-"
        low, high = min(values) * scale, max(values) * scale
        return f"{self.median(name) * scale:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def gbs(nbytes: int, seconds: float, crossings: int = 1) -> float:
    return crossings * repeats(nbytes) * nbytes / seconds / 1e9


def measure_round(
    figures: Figures,
    ours: Ours,
    trios: dict[str, TorchTrio],
    grpc_peer: _limits.GrpcPeer,
    memcpy: _limits.Memcpy,
    sizes: list[int],
    calls: int,
) -> None:
    """One round: every system once per measurement, always in the same order."""
    systems: dict[str, Callable[[str, int, int], list[float]]] = {"tensorwire": ours.measure}
    systems.update({label: trio.measure for label, trio in trios.items()})
    for label, measure in systems.items():
        times = measure("tiny", 0, calls)
        figures.add(f"tiny p50 {label}", _limits.percentile(times, 50))
        figures.add(f"tiny p99 {label}", _limits.percentile(times, 99))
    payload = bytes(16)
    echo = [timed(lambda: grpc_peer.echo(payload)) for _ in range(calls)]
    figures.add("tiny p50 raw grpcio echo", _limits.percentile(echo, 50))
    figures.add("tiny p99 raw grpcio echo", _limits.percentile(echo, 99))
    for size in sizes:
        nbytes = size * MiB
        for kind in PATHS:
            crossings = 2 if kind == "run" else 1
            for label, measure in systems.items():
                (seconds,) = measure(kind, nbytes, 1)
                figures.add(f"{size} {kind} {label}", gbs(nbytes, seconds, crossings))
        copy_seconds = timed(lambda nbytes=nbytes: memcpy.copy(nbytes, repeats(nbytes)))
        figures.add(f"{size} memcpy", gbs(nbytes, copy_seconds))


def measure_data_service(
    figures: Figures, service: Any, tcp_peer: _limits.TcpPeer, elements: int
) -> None:
    """One round of the data-service row: 1 MiB float32 elements to this process (on the
    worker's host) beside the same bytes over raw TCP."""
    import dataservice
    import tensorwire as tw

    element = np.random.default_rng(0).random(MiB // 4).astype(np.float32)
    ds = service.distribute(
        tw.data.Dataset.from_tensors(element).repeat(elements), "parallel_epochs"
    )
    # Throughput from the first element on: the job's start-up (registration, task
    # assignment) is a latency of its own, not what this row compares with a TCP stream.
    count, seconds = dataservice.drain_steady(ds)
    if count + 1 != elements:
        raise RuntimeError(f"the data service delivered {count + 1} of {elements} elements")
    figures.add("data service", count * MiB / seconds / 1e9)
    tcp_seconds = timed(lambda: tcp_peer.receive(elements * MiB))
    figures.add("data service raw tcp", elements * MiB / tcp_seconds / 1e9)


class Goals:
    """Issue 15's goals, each a ratio of two medians, met or missed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.missed = 0

    def check(self, what: str, ratio: float, bound: float, at_most: bool) -> None:
        met = ratio <= bound if at_most else ratio >= bound
        self.missed += not met
        relation = "<=" if at_most else ">="
        verdict = "met" if met else "MISSED"
        self.lines.append(f"  {what:<58} {ratio:6.2f}x  (goal {relation} {bound}x)  {verdict}")

    def not_measured(self, what: str, why: str) -> None:
        self.lines.append(f"  {what:<58} not measured: {why}")


def evaluate(
    figures: Figures, sizes: list[int], data_service: bool, across: Across | None = None
) -> Goals:
    goals = Goals()
    m = figures.median
    tw_p50, tw_p99 = m("tiny p50 tensorwire"), m("tiny p99 tensorwire")
    goals.check(
        "tiny call p50 / torch rpc default p50", tw_p50 / m(f"tiny p50 {TORCH_DEFAULT}"), 0.3, True
    )
    goals.check(
        "tiny call p50 / raw grpcio echo p50", tw_p50 / m("tiny p50 raw grpcio echo"), 0.25, True
    )
    goals.check(
        "tiny call p99 / torch rpc default p99", tw_p99 / m(f"tiny p99 {TORCH_DEFAULT}"), 0.5, True
    )
    for size in sizes:
        for kind, path in PATHS.items():
            ours = m(f"{size} {kind} tensorwire")
            torch_default = m(f"{size} {kind} {TORCH_DEFAULT}")
            if size == 1:
                goals.check(f"1 MiB {path} / torch rpc default", ours / torch_default, 1.5, False)
            elif size >= 16:
                goals.check(f"{size} MiB {path} / memcpy", ours / m(f"{size} memcpy"), 0.6, False)
                goals.check(
                    f"{size} MiB {path} / torch rpc default (shm)", ours / torch_default, 2.0, False
                )
    if data_service:
        ratio = m("data service") / m("data service raw tcp")
        goals.check("data service 1 MiB elements / raw TCP", ratio, 3.0, False)
    else:
        goals.not_measured("data service 1 MiB elements / raw TCP", "--no-data-service")
    if across is not None and across.figures is not None:
        for size, ratio in across_hosts.ratios(across.figures, across.sizes).items():
            goals.check(f"across hosts, {size} MiB read / raw TCP", ratio, across_hosts.GOAL, False)
    else:
        why = across.skipped if across is not None else "--no-across-hosts"
        goals.not_measured("across hosts, 4 MiB and up / raw TCP", why)
    return goals


class Across:
    """The across-hosts row (``across_hosts.py``): its figures, or why it was skipped."""

    def __init__(self, sizes: list[int], rounds: int) -> None:
        from tensorwire_testing.netns import unavailable_reason

        self.sizes = sizes
        self.figures: dict[str, list[float]] | None = None
        self.skipped = unavailable_reason() or ""
        if not self.skipped:
            self.figures = across_hosts.measure(sizes, rounds)

    def report(self) -> None:
        if self.figures is None:
            print(f"\nAcross hosts: not measured ({self.skipped})")
            return
        print("\nAcross hosts (two network namespaces), read GB/s: median [min-max] of rounds")
        for size in self.sizes:
            ours, raw = self.figures[f"{size} ours"], self.figures[f"{size} tcp"]
            print(
                f"  {size:>4}MiB tensorwire {statistics.median(ours):6.2f} "
                f"[{min(ours):.2f}-{max(ours):.2f}]   raw TCP {statistics.median(raw):6.2f} "
                f"[{min(raw):.2f}-{max(raw):.2f}]"
            )


def report(figures: Figures, sizes: list[int], data_service: bool) -> None:
    systems = ["tensorwire", TORCH_DEFAULT]
    if f"tiny p50 {TORCH_TCP}" in figures.samples:
        systems.append(TORCH_TCP)
    print(
        "\nTiny call (16-byte tensor sent and returned), microseconds: median [min-max] of rounds"
    )
    print(f"  {'':<24} {'p50':>24} {'p99':>24}")
    for label in [*systems, "raw grpcio echo"]:
        p50 = figures.cell(f"tiny p50 {label}", 1e6, 1)
        p99 = figures.cell(f"tiny p99 {label}", 1e6, 1)
        print(f"  {label:<24} {p50:>24} {p99:>24}")
    print("\nTransfers, GB/s: median [min-max] of rounds (run(identity) counts both crossings)")
    print(
        f"  {'size':>7} {'path':<14}"
        + "".join(f" {label:>24}" for label in systems)
        + f" {'memcpy':>20}"
    )
    for size in sizes:
        for kind, path in PATHS.items():
            cells = "".join(f" {figures.cell(f'{size} {kind} {label}'):>24}" for label in systems)
            print(f"  {size:>4}MiB {path:<14}{cells} {figures.cell(f'{size} memcpy'):>20}")
    print(f"\n  ratios of medians, tensorwire to: {', '.join(systems[1:])}, memcpy")
    for size in sizes:
        for kind, path in PATHS.items():
            ours = figures.median(f"{size} {kind} tensorwire")
            ratios = [ours / figures.median(f"{size} {kind} {label}") for label in systems[1:]] + [
                ours / figures.median(f"{size} memcpy")
            ]
            print(f"  {size:>4}MiB {path:<14} " + "  ".join(f"{r:6.2f}x" for r in ratios))
    if data_service:
        print("\nData service, 1 MiB float32 elements to a reader on the worker's host, GB/s")
        print(f"  tensorwire data service {figures.cell('data service'):>24}")
        print(f"  raw TCP, same bytes     {figures.cell('data service raw tcp'):>24}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="grpc")
    parser.add_argument("--quick", action="store_true", help="1 and 16 MiB, 3 rounds, fewer calls")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--calls", type=int, default=None, help="tiny calls a round and system")
    parser.add_argument("--no-data-service", action="store_true", help="skip the data-service row")
    parser.add_argument(
        "--no-across-hosts", action="store_true", help="skip the across-hosts row (netns, root)"
    )
    parser.add_argument(
        "--torch",
        choices=("both", "default"),
        default="both",
        help="which TensorPipe configurations to start (default only: three fewer processes)",
    )
    parser.add_argument(
        "--report-only",
        "--no-fail",
        action="store_true",
        help="exit 0 even when a goal is missed (exploratory runs)",
    )
    args = parser.parse_args(argv)
    sizes = args.sizes_mib or ([1, 16] if args.quick else [1, 16, 256])
    rounds = args.rounds or (3 if args.quick else 5)
    calls = args.calls or (300 if args.quick else 1000)
    elements = 200 if args.quick else 1000
    if importlib.util.find_spec("torch") is None:
        print("peers.py: skipped, torch is not installed (pip install torch, the CPU wheel)")
        return 0
    import tensorwire as tw

    installed = tw.info()
    print(
        f"tensorwire {tw.__version__} (codec {installed['codec']}, copy {installed['copy']}, "
        f"protocol {args.protocol}), "
        f"torch {importlib.metadata.version('torch')}; sizes {sizes} MiB, {rounds} rounds, "
        f"{calls} tiny calls a round; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    figures = Figures()
    began = time.monotonic()
    closers: list[Callable[[], None]] = []
    try:
        trios = {}
        configurations = [(TORCH_DEFAULT, False), (TORCH_TCP, True)]
        for label, tcp_only in configurations[: 1 if args.torch == "default" else 2]:
            trios[label] = TorchTrio(tcp_only)  # starting while tensorwire's tasks start
            closers.append(trios[label].close)
        ours = Ours(args.protocol)
        closers.append(ours.close)
        for size in sizes:
            ours.prepare(size * MiB)
        for trio in trios.values():
            trio.wait_ready()
        grpc_peer = _limits.GrpcPeer()
        closers.append(grpc_peer.close)
        tcp_peer = _limits.TcpPeer()
        closers.append(tcp_peer.close)
        memcpy = _limits.Memcpy()
        service = None
        if not args.no_data_service:
            import dataservice

            service = dataservice.Cluster(args.protocol, 1)
            closers.append(service.stop)
        print(f"every system up after {time.monotonic() - began:.1f} s", flush=True)
        # One untimed round warms every path (connections, caches, first allocations).
        measure_round(Figures(), ours, trios, grpc_peer, memcpy, sizes, 50)
        for r in range(rounds):
            measure_round(figures, ours, trios, grpc_peer, memcpy, sizes, calls)
            if service is not None:
                measure_data_service(figures, service, tcp_peer, elements)
            print(f"round {r + 1}/{rounds} done ({time.monotonic() - began:.1f} s)", flush=True)
    finally:
        for close in reversed(closers):
            close()
    print(f"every system stopped after {time.monotonic() - began:.1f} s")
    # Its own processes in their own namespaces, after the rest: nothing else runs then.
    across = None
    if not args.no_across_hosts:
        across = Across([4, 16] if args.quick else [4, 16, 64], rounds)
        print(f"across hosts done ({time.monotonic() - began:.1f} s)", flush=True)
    report(figures, sizes, service is not None)
    if across is not None:
        across.report()
    goals = evaluate(figures, sizes, service is not None, across)
    print(f"\nGoals (issue 15), ratios of medians; load average now {os.getloadavg()[0]:.2f}")
    print("\n".join(goals.lines))
    if goals.missed:
        print(
            f"\n{goals.missed} goal(s) missed"
            + (" (--report-only: exit 0)" if args.report_only else "")
        )
        return 0 if args.report_only else GOALS_MISSED
    print("\nevery measured goal met")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "torch-rank":
        name, rank, port, transport = sys.argv[2:6]
        torch_rank(name, int(rank), int(port), transport == "tcp")
    else:
        sys.exit(main())
