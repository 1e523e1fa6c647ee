"""Chaos: the dispatcher stopped (SIGTERM) or killed (SIGKILL) at random points, at least
five times per run, while two workers serve one job of a deterministic pipeline.

Each seed picks where in the epoch the dispatcher goes down, how (graceful stop or kill -9)
and how long it stays down. Whatever the seed: a ``distributed_epoch`` job delivers every
element exactly once, and a ``parallel_epochs`` job read at the same time each worker's
epoch exactly once. The dispatcher is a
real ``tensorwire dispatcher`` process with a fault-tolerant journal; the workers and the
reader run in this process.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter

import cloudpickle
import pytest
import tensorwire as tw
from tensorwire_dataservice.service import client
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.waiting import scaled

from .helpers import RESTART_TIMEOUT

cloudpickle.register_pickle_by_value(sys.modules[__name__])

Dataset = tw.data.Dataset
service = tw.data.service

SEEDS = range(20)
DISRUPTIONS = 5
N = 1000


def _slow(x):
    time.sleep(0.0002)  # keeps the job running across the disruptions
    return x


@pytest.fixture
def chaos_service(cross_process_protocol, tmp_path, monkeypatch):
    # The reader gives up on a dispatcher it has not reached for CLIENT_TIMEOUT. Here
    # the disruptions can come back to back (the next kill point a few elements on,
    # those already buffered) faster than a heartbeat gets through to a dispatcher just
    # restarted on a loaded machine; the give-up itself is test_fault_tolerance's.
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", scaled(180.0))
    dispatcher = DataServiceProcess(
        "dispatcher",
        ["--protocol", cross_process_protocol, "--work_dir", str(tmp_path), "--fault_tolerant"],
    )
    dispatcher.start(timeout=30)
    workers = []
    try:
        for _ in range(2):
            workers.append(
                service.WorkerServer(
                    service.WorkerConfig(
                        dispatcher.address,
                        protocol=cross_process_protocol,
                        heartbeat_interval_ms=50,
                    )
                )
            )
        yield cross_process_protocol, dispatcher
    finally:
        for worker in workers:
            worker.stop()
        dispatcher.kill()


def _read_through_chaos(protocol, dispatcher, seed):
    """Read a distributed_epoch job and a parallel_epochs job side by side while the
    dispatcher goes down ``DISRUPTIONS`` times; returns what each delivered."""
    rng = random.Random(seed)
    # Where the dispatcher goes down: after this many distributed_epoch elements were read
    # (sometimes before the first, while the jobs and their first splits are set up).
    points = sorted(rng.sample(range(0, N // 2), DISRUPTIONS))
    target = f"{protocol}://{dispatcher.address}"
    source = Dataset.range(N).map(_slow)
    distributed = iter(
        source.apply(service.distribute("distributed_epoch", target, job_name=f"chaos-d-{seed}"))
    )
    parallel = iter(
        source.apply(service.distribute("parallel_epochs", target, job_name=f"chaos-p-{seed}"))
    )
    got_distributed: list[int] = []
    got_parallel: list[int] = []
    for point in points:
        while len(got_distributed) < point:
            got_distributed.append(int(next(distributed)))
            got_parallel.extend(int(next(parallel)) for _ in range(2))
        time.sleep(rng.random() * 0.02)  # somewhere inside the next hand-outs
        if rng.random() < 0.5:
            dispatcher.kill()
        else:
            assert dispatcher.terminate() == 0
        time.sleep(rng.random() * 0.2)
        dispatcher.start(timeout=RESTART_TIMEOUT)
    got_distributed.extend(int(x) for x in distributed)
    got_parallel.extend(int(x) for x in parallel)
    return got_distributed, got_parallel


@pytest.mark.parametrize("seed", SEEDS)
def test_exactly_once_through_dispatcher_chaos(chaos_service, seed):
    protocol, dispatcher = chaos_service
    got_distributed, got_parallel = _read_through_chaos(protocol, dispatcher, seed)
    counts = Counter(got_distributed)
    assert not [x for x, c in counts.items() if c > 1], "distributed_epoch repeated elements"
    assert sorted(counts) == list(range(N)), f"distributed_epoch lost {N - len(counts)} elements"
    # parallel_epochs: each of the two workers' epochs, exactly once.
    assert Counter(got_parallel) == Counter(list(range(N)) * 2)
