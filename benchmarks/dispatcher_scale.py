"""One dispatcher's capacity: the heartbeats and split requests per second it sustains, and
the workers and readers it serves at the default intervals.

    python benchmarks/dispatcher_scale.py [--workers 1000] [--readers 1000] [--procs 4]
                                          [--journal both|on|off] [--quick | --smoke]

A real dispatcher (``tensorwire dispatcher``, its own process, grpc on loopback) serves a
distributed_epoch job of one registered dataset. Simulated workers and readers, a few
processes of threads, speak its protocol: the calls real workers and readers make with the
payloads they send (the split requests are made by the worker's own split provider,
``_RemoteSplitProvider``; the heartbeat bodies are built inline in ``_Worker.heartbeat``
and ``_Reader._heartbeat_once``, so they are written out here with the same fields). They
never serve anything: the job is created before the workers register, so the dispatcher
learns of each worker's task in that worker's heartbeat reply and never nudges a fake
address (it would only queue a nudge that fails, off its lock).

Two measurements, with the journal off and on (``work_dir`` + fault tolerant, on a
temporary directory of this machine's disk: every state change is fsynced):

1. capacity: each method driven as fast as the dispatcher answers (closed loop, a few
   callers per process) with every worker and reader registered; calls/s, latency, and the
   dispatcher's CPU-seconds per call. The dispatcher is one Python process (one core under
   the GIL), so ``1 / cpu_per_call`` is the rate one core sustains, independent of what the
   simulators take from a shared machine.
2. load: every worker heartbeating at an interval (30 s, TensorFlow's and our default, then
   shorter ones to find the knee), every reader at its fixed 0.5 s (``TASK_REFRESH_INTERVAL``),
   every worker asking for splits every ``--split-interval`` seconds; the dispatcher's CPU,
   latency percentiles per method, errors.

From (1) it prints how many workers and readers one dispatcher serves at the default
intervals. The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorwire as tw
from tensorwire_dataservice.service.client import TASK_REFRESH_INTERVAL
from tensorwire_dataservice.service.config import DEFAULT_HEARTBEAT_INTERVAL_MS
from tensorwire_dataservice.service.protocol import DISPATCHER_SERVICE, call
from tensorwire_dataservice.service.status import task_stats
from tensorwire_dataservice.service.worker import _RemoteSplitProvider

METHODS = ("WorkerHeartbeat", "ClientHeartbeat", "GetSplits")
JOB_NAME = "scale"
#: Longest wait for the dispatcher's ready line, a simulator's reply to a command.
START_TIMEOUT = 60.0
CALL_TIMEOUT = 10.0
#: Latency samples kept per method and process (a uniform subset past that).
MAX_SAMPLES = 100_000


# -- the dispatcher, in its own process ------------------------------------------------------


class Dispatcher:
    """``tensorwire dispatcher`` as a child process; its CPU time read from /proc."""

    def __init__(self, work_dir: str | None) -> None:
        cmd = [sys.executable, "-m", "tensorwire", "dispatcher", "--port", "0"]
        if work_dir:
            cmd += ["--work_dir", work_dir, "--fault_tolerant"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.target = self._ready_line()
        self.address = self.target.split("://", 1)[1]

    def _ready_line(self) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(START_TIMEOUT)
        line = found[0].strip() if found else ""
        if "serving at" not in line:
            self.log.seek(0)
            raise RuntimeError(
                f"the dispatcher did not start within {START_TIMEOUT:.0f}s: {line!r}\n"
                + self.log.read().decode(errors="replace")[-2000:]
            )
        return line.rsplit(" ", 1)[1]

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# -- simulated workers and readers -------------------------------------------------------------


class _TaskView:
    """What the worker's split provider needs of a task (its generation; a replay's skip)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation

    def skip_from(self, ranges: Any) -> None:
        pass  # nothing is produced, so nothing is skipped


class SimWorker:
    """A worker that heartbeats and asks for splits, and serves nothing."""

    def __init__(self, dispatcher: str, address: str) -> None:
        self.dispatcher = dispatcher
        self.address = address
        self.incarnation = f"{random.getrandbits(64):016x}"
        self.host_id = "scale-sim"
        self.dispatcher_timeout = CALL_TIMEOUT
        self.tasks: dict[int, dict[str, Any]] = {}
        self.providers: dict[int, _RemoteSplitProvider] = {}
        self.lock = threading.Lock()

    # The interface _RemoteSplitProvider calls back (as on a real _Worker).
    def dispatcher_call(self, method: str, request: dict[str, Any], should_stop: Any = None) -> Any:
        return call("grpc", self.dispatcher, DISPATCHER_SERVICE, method, request, CALL_TIMEOUT)

    def heartbeat(self) -> None:
        with self.lock:
            current = sorted(self.tasks)
            generations = {t: int(d.get("generation", 0)) for t, d in self.tasks.items()}
        reply = self.dispatcher_call(
            "WorkerHeartbeat",
            {
                "worker_address": self.address,
                "tasks": current,
                "finished": [],
                "incarnation": self.incarnation,
                "generations": generations,
                "host_id": self.host_id,
                "stats": task_stats([]),
            },
        )
        with self.lock:
            for definition in reply["tasks"]:
                task_id = int(definition["task_id"])
                self.tasks[task_id] = definition
                self.providers[task_id] = _RemoteSplitProvider(
                    self,  # type: ignore[arg-type]
                    int(definition["job_id"]),
                    task_id,
                    threading.Event(),
                    _TaskView(int(definition.get("generation", 0)))  # type: ignore[arg-type]
                    if definition.get("exact")
                    else None,
                )
            for task_id in reply["delete"]:
                self.tasks.pop(int(task_id), None)
                self.providers.pop(int(task_id), None)

    def get_splits(self) -> None:
        """One GetSplits: the provider asks when its splits run out, so drain them first."""
        with self.lock:
            providers = list(self.providers.values())
        for provider in providers:
            with provider._lock:
                provider._pending.clear()
            provider.get_next()


class SimReader:
    """A reader of the job that heartbeats and reads nothing. Like a real reader it names
    the view of the job it holds, so a reply lists the tasks only when they changed."""

    def __init__(self, dispatcher: str, dataset_id: str) -> None:
        self.dispatcher = dispatcher
        reply = call(
            "grpc",
            dispatcher,
            DISPATCHER_SERVICE,
            "GetOrCreateJob",
            {
                "dataset_id": dataset_id,
                "job_name": JOB_NAME,
                "iteration": 0,
                "policy": int(tw.data.service.ShardingPolicy.DYNAMIC),
                "num_consumers": -1,
                "target_workers": "AUTO",
                "cross_trainer_cache": False,
                "acquire": True,
            },
            CALL_TIMEOUT,
        )
        self.client_id = int(reply["client_id"])
        self.tasks_seen = 0
        self.view: str | None = None
        self._apply(reply)

    def _apply(self, reply: dict[str, Any]) -> None:
        if "tasks" in reply:
            self.tasks_seen = len(reply["tasks"])
            self.view = reply.get("view")

    def heartbeat(self) -> None:
        request: dict[str, Any] = {
            "client_id": self.client_id,
            "finished": [],
            "finished_generations": [],
            "wait_s": 0.0,
            "elements": 0,
        }
        if self.view is not None:
            request["view"] = self.view
        reply = call(
            "grpc", self.dispatcher, DISPATCHER_SERVICE, "ClientHeartbeat", request, CALL_TIMEOUT
        )
        self._apply(reply)

    def release(self) -> None:
        call(
            "grpc",
            self.dispatcher,
            DISPATCHER_SERVICE,
            "ReleaseClient",
            {"client_id": self.client_id},
            CALL_TIMEOUT,
        )


@dataclass
class Samples:
    """Latencies (seconds) and error counts per method, from one process and phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    calls: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    first_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, method: str, fn: Any) -> None:
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
            with self.lock:
                self.errors[method] += 1
                self.first_error = self.first_error or f"{method}: {type(exc).__name__}: {exc}"
            return
        elapsed = time.perf_counter() - start
        with self.lock:
            n = self.calls[method] = self.calls[method] + 1
            kept = self.latencies[method]
            if len(kept) < MAX_SAMPLES:
                kept.append(elapsed)
            elif random.random() < MAX_SAMPLES / n:
                kept[random.randrange(MAX_SAMPLES)] = elapsed

    def plain(self) -> dict[str, Any]:
        return {
            "latencies": dict(self.latencies),
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "first_error": self.first_error,
        }


def _call_of(method: str, workers: list[SimWorker], readers: list[SimReader]) -> tuple[Any, int]:
    if method == "ClientHeartbeat":
        return (lambda i: readers[i].heartbeat()), len(readers)
    if method == "GetSplits":
        return (lambda i: workers[i].get_splits()), len(workers)
    return (lambda i: workers[i].heartbeat()), len(workers)


def _capacity(
    method: str, workers: list[SimWorker], readers: list[SimReader], callers: int, seconds: float
) -> Samples:
    """Closed loop: ``callers`` threads call ``method`` back to back for ``seconds``."""
    samples = Samples()
    fn, count = _call_of(method, workers, readers)
    end = time.monotonic() + seconds

    def loop(k: int) -> None:
        i = k
        while time.monotonic() < end:
            samples.timed(method, lambda i=i: fn(i % count))
            i += callers

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 2 * CALL_TIMEOUT)
    return samples


def _load(
    workers: list[SimWorker],
    readers: list[SimReader],
    intervals: dict[str, float],
    seconds: float,
    pool_size: int,
) -> Samples:
    """Open loop: each worker and reader calls each method once per interval (the next
    call is due an interval after the previous one ended, as in the real loops)."""
    samples = Samples()
    end = time.monotonic() + seconds
    due: list[tuple[float, str, int]] = []
    for method, interval in intervals.items():
        _, count = _call_of(method, workers, readers)
        due.extend((random.uniform(0, interval), method, i) for i in range(count))
    due.sort()
    start = time.monotonic()
    queue: collections.deque[tuple[float, str, int]] = collections.deque(
        (start + offset, method, i) for offset, method, i in due
    )
    # Entries come back as their call ends; a heap would be exact, a re-sorted deque of
    # mostly-ordered entries is simpler and cheap at these counts.
    returned: list[tuple[float, str, int]] = []
    returned_lock = threading.Lock()
    fns = {m: _call_of(m, workers, readers)[0] for m in intervals}

    def run(method: str, i: int) -> None:
        samples.timed(method, lambda: fns[method](i))
        with returned_lock:
            returned.append((time.monotonic() + intervals[method], method, i))

    with ThreadPoolExecutor(pool_size) as pool:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            with returned_lock:
                back, returned[:] = list(returned), []
            if back:
                queue = collections.deque(sorted([*queue, *back]))
            while queue and queue[0][0] <= now:
                _, method, i = queue.popleft()
                pool.submit(run, method, i)
            time.sleep(min(0.005, max(0.0, (queue[0][0] - now) if queue else 0.005)))
        pool.shutdown(wait=True, cancel_futures=True)
    return samples


def simulator(
    conn: Any, dispatcher: str, dataset_id: str, first_worker: int, workers: int, readers: int
) -> None:
    """One simulator process: serves commands from the parent until "stop"."""
    sim_workers: list[SimWorker] = []
    sim_readers: list[SimReader] = []
    try:
        while True:
            if not conn.poll(600):
                return  # the parent is gone
            command, args = conn.recv()
            if command == "stop":
                for reader in sim_readers:
                    try:
                        reader.release()
                    except Exception:  # noqa: BLE001 - the dispatcher times it out instead
                        pass
                conn.send(("ok", None))
                return
            try:
                if command == "workers":
                    # Fake addresses on loopback, on ports nothing listens on (never called).
                    for k in range(first_worker, first_worker + workers):
                        worker = SimWorker(dispatcher, f"127.0.0.1:{20000 + k}")
                        worker.heartbeat()
                        sim_workers.append(worker)
                    conn.send(("ok", sum(len(w.tasks) for w in sim_workers)))
                elif command == "readers":
                    sim_readers.extend(SimReader(dispatcher, dataset_id) for _ in range(readers))
                    conn.send(("ok", min((r.tasks_seen for r in sim_readers), default=0)))
                elif command == "capacity":
                    result = _capacity(args[0], sim_workers, sim_readers, args[1], args[2])
                    conn.send(("ok", result.plain()))
                elif command == "load":
                    intervals, pool_size, seconds = args
                    result = _load(sim_workers, sim_readers, intervals, seconds, pool_size)
                    conn.send(("ok", result.plain()))
                else:
                    conn.send(("error", f"unknown command {command!r}"))
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class Simulators:
    """``procs`` simulator processes sharing ``workers`` workers and ``readers`` readers."""

    def __init__(
        self, dispatcher: str, dataset_id: str, workers: int, readers: int, procs: int
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        first = 0
        for p in range(procs):
            w = workers // procs + (p < workers % procs)
            r = readers // procs + (p < readers % procs)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=simulator, args=(child, dispatcher, dataset_id, first, w, r), daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
            first += w

    def ask(self, command: str, *args: Any, timeout: float = START_TIMEOUT) -> list[Any]:
        for conn in self.conns:
            conn.send((command, args))
        results = []
        for conn in self.conns:
            if not conn.poll(timeout):
                raise RuntimeError(f"a simulator did not answer {command!r} within {timeout:.0f}s")
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"a simulator failed {command!r}: {value}")
            results.append(value)
        return results

    def stop(self) -> None:
        try:
            self.ask("stop", timeout=30)
        except Exception:  # noqa: BLE001 - the processes are ended below either way
            pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Phase:
    calls: dict[str, int]
    errors: dict[str, int]
    latencies: dict[str, np.ndarray]
    seconds: float
    cpu: float  # dispatcher CPU-seconds during the phase
    first_error: str

    def rate(self, method: str) -> float:
        return self.calls.get(method, 0) / self.seconds

    def pct(self, method: str, q: float) -> float:
        lat = self.latencies.get(method)
        return float(np.percentile(lat, q)) * 1000 if lat is not None and lat.size else float("nan")


def _merge(results: list[dict[str, Any]], seconds: float, cpu: float) -> Phase:
    calls: dict[str, int] = collections.Counter()
    errors: dict[str, int] = collections.Counter()
    lat: dict[str, list[float]] = collections.defaultdict(list)
    first_error = ""
    for r in results:
        calls.update(r["calls"])
        errors.update(r["errors"])
        for method, values in r["latencies"].items():
            lat[method].extend(values)
        first_error = first_error or r["first_error"]
    return Phase(
        dict(calls),
        dict(errors),
        {m: np.asarray(v) for m, v in lat.items()},
        seconds,
        cpu,
        first_error,
    )


def _run_phase(
    dispatcher: Dispatcher, sims: Simulators, command: str, *args: Any, seconds: float
) -> Phase:
    """One phase of ``seconds`` on every simulator (``command``, ``args``), its results merged
    with the wall time it took and the CPU time the dispatcher spent meanwhile."""
    cpu0, t0 = dispatcher.cpu_seconds(), time.monotonic()
    results = sims.ask(command, *args, seconds, timeout=seconds + 3 * CALL_TIMEOUT)
    return _merge(results, time.monotonic() - t0, dispatcher.cpu_seconds() - cpu0)


def _print_first_error(phase: Phase) -> None:
    if phase.first_error:
        print(f"    first error: {phase.first_error}")


def _interval_label(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1000:g} ms"


def measure(args: argparse.Namespace, journal: bool) -> dict[str, Any]:
    """Both measurements against one dispatcher; prints its tables, returns capacities."""
    work_dir = tempfile.mkdtemp(prefix="tw-dispatcher-scale-") if journal else None
    dispatcher: Dispatcher | None = None
    sims: Simulators | None = None
    mode = "journal on (fsync per change)" if journal else "journal off"
    try:
        dispatcher = Dispatcher(work_dir)
        dataset_id = tw.data.service.register_dataset(
            dispatcher.target, tw.data.Dataset.range(1 << 40)
        )
        # The job first: workers then learn of their task in their registering heartbeat.
        call(
            "grpc",
            dispatcher.address,
            DISPATCHER_SERVICE,
            "GetOrCreateJob",
            {
                "dataset_id": dataset_id,
                "job_name": JOB_NAME,
                "policy": int(tw.data.service.ShardingPolicy.DYNAMIC),
            },
            CALL_TIMEOUT,
        )
        sims = Simulators(dispatcher.address, dataset_id, args.workers, args.readers, args.procs)
        t0 = time.monotonic()
        tasks = sum(sims.ask("workers", timeout=START_TIMEOUT + args.workers * 0.2))
        seen = min(sims.ask("readers", timeout=START_TIMEOUT + args.readers * 0.2))
        setup = time.monotonic() - t0
        print(
            f"\n== {mode}: {args.workers} workers ({tasks} tasks), {args.readers} readers "
            f"(each sees {seen} tasks) registered in {setup:.1f} s"
        )

        capacity: dict[str, float] = {}
        print(
            f"capacity (closed loop, {args.callers} callers x {args.procs} processes, "
            f"{args.capacity_seconds:g} s each)"
        )
        print(
            f"  {'method':<16} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'disp CPU':>9} {'CPU/call':>9} {'1 core/s':>9} {'errors':>7}"
        )
        for method in METHODS:
            phase = _run_phase(
                dispatcher, sims, "capacity", method, args.callers, seconds=args.capacity_seconds
            )
            n = phase.calls.get(method, 0)
            per_call = phase.cpu / n if n else float("nan")
            capacity[method] = 1 / per_call if n else 0.0
            print(
                f"  {method:<16} {phase.rate(method):>9,.0f} {phase.pct(method, 50):>8.2f} "
                f"{phase.pct(method, 99):>8.2f} {100 * phase.cpu / phase.seconds:>8.0f}% "
                f"{per_call * 1e6:>7.0f}us {capacity[method]:>9,.0f} "
                f"{phase.errors.get(method, 0):>7}"
            )
            _print_first_error(phase)

        print(
            f"load (open loop, {args.load_seconds:g} s each; readers every "
            f"{_interval_label(TASK_REFRESH_INTERVAL)}, GetSplits every "
            f"{_interval_label(args.split_interval)} per worker)"
        )
        print(
            f"  {'worker hb':>9} {'disp CPU':>9} {'CPU/worker':>11} {'method':<16} {'wanted/s':>8} "
            f"{'calls/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"
        )
        for interval in args.intervals:
            intervals = {
                "WorkerHeartbeat": interval,
                "ClientHeartbeat": TASK_REFRESH_INTERVAL,
                "GetSplits": args.split_interval,
            }
            phase = _run_phase(
                dispatcher, sims, "load", intervals, args.pool, seconds=args.load_seconds
            )
            for k, method in enumerate(METHODS):
                head = (
                    f"{_interval_label(interval):>9} {100 * phase.cpu / phase.seconds:>8.1f}% "
                    f"{1e3 * phase.cpu / phase.seconds / args.workers:>6.3f} ms/s"
                    if k == 0
                    else " " * 32
                )
                count = args.readers if method == "ClientHeartbeat" else args.workers
                print(
                    f"  {head} {method:<16} {count / intervals[method]:>8,.0f} "
                    f"{phase.rate(method):>8,.0f} "
                    f"{phase.pct(method, 50):>8.2f} {phase.pct(method, 90):>8.2f} "
                    f"{phase.pct(method, 99):>8.2f} {phase.errors.get(method, 0):>7}"
                )
            _print_first_error(phase)
        print(f"  dispatcher RSS {dispatcher.rss_mb():.0f} MB")
        return capacity
    finally:
        if sims is not None:
            sims.stop()
        if dispatcher is not None:
            dispatcher.stop()
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def served(capacity: dict[str, float], split_interval: float) -> tuple[float, float]:
    """Workers (with their split requests) and readers one core serves at the default
    intervals, each kind alone: capacity / per-worker (per-reader) rate."""
    worker_cost = (DEFAULT_HEARTBEAT_INTERVAL_MS / 1000) ** -1 / capacity["WorkerHeartbeat"]
    worker_cost += (1 / split_interval) / capacity["GetSplits"]
    reader_cost = (1 / TASK_REFRESH_INTERVAL) / capacity["ClientHeartbeat"]
    return 1 / worker_cost, 1 / reader_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4, help="simulator processes")
    parser.add_argument("--callers", type=int, default=4, help="closed-loop threads/process")
    parser.add_argument("--pool", type=int, default=32, help="open-loop threads per process")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument(
        "--intervals",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[DEFAULT_HEARTBEAT_INTERVAL_MS / 1000, 1.0, 0.1],
        help="worker heartbeat intervals (s) of the load runs, comma separated",
    )
    parser.add_argument("--split-interval", type=float, default=1.0)
    parser.add_argument("--journal", choices=("both", "on", "off"), default="both")
    parser.add_argument("--quick", action="store_true", help="under a minute (nox -s bench)")
    parser.add_argument("--smoke", action="store_true", help="the tiniest run (tests)")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.readers, args.procs = 100, 100, 2
        args.capacity_seconds, args.load_seconds, args.intervals = 1.5, 3.0, [30.0, 1.0]
    if args.smoke:
        args.workers, args.readers, args.procs, args.callers, args.pool = 10, 10, 1, 2, 4
        args.capacity_seconds, args.load_seconds, args.intervals = 0.3, 0.6, [0.5]
        args.journal = "off" if args.journal == "both" else args.journal
    print(
        f"dispatcher scale: {args.workers} workers, {args.readers} readers, {args.procs} "
        f"simulator processes; {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at start"
    )
    journals = {"both": [False, True], "on": [True], "off": [False]}[args.journal]
    capacities = {journal: measure(args, journal) for journal in journals}
    default_s = DEFAULT_HEARTBEAT_INTERVAL_MS / 1000
    print(
        f"\none dispatcher at the default intervals (worker heartbeat {default_s:g} s, "
        f"GetSplits every {_interval_label(args.split_interval)} per worker, reader heartbeat "
        f"{_interval_label(TASK_REFRESH_INTERVAL)}), from the CPU per call above at "
        f"{args.workers} workers / {args.readers} readers:"
    )
    for journal, capacity in capacities.items():
        if not all(capacity.get(m) for m in METHODS):
            print(f"  journal {'on' if journal else 'off'}: a method made no calls")
            continue
        workers, readers = served(capacity, args.split_interval)
        print(
            f"  journal {'on ' if journal else 'off'}: {workers:>9,.0f} workers alone, "
            f"{readers:>7,.0f} readers alone (worker heartbeat capacity "
            f"{capacity['WorkerHeartbeat']:,.0f}/s: "
            f"{capacity['WorkerHeartbeat'] * default_s:,.0f} workers at {default_s:g} s "
            "without splits)"
        )
    print(
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (ratios "
        "hold better than absolute figures on a shared machine)"
    )


if __name__ == "__main__":
    main()
