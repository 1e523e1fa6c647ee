"""Chaos: two workers and the dispatcher, each killed -9 and restarted at random points,
while a ``distributed_epoch`` job of a deterministic pipeline is read to the end.

Each seed picks the kill points (after how many elements were read), the victim of each
(the dispatcher or one of the workers) and whether a killed worker comes back at once (a
new process at the same address: its tasks replay) or only after the dispatcher dropped it
for missed heartbeats (its tasks move to the other worker and replay there). Whatever the
seed: every element exactly once. Dispatcher and workers are real ``tensorwire`` processes;
they are started once for all seeds, each seed reading its own job.
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
from tensorwire_testing.data_service import data_service_processes
from tensorwire_testing.waiting import scaled

from .helpers import RESTART_TIMEOUT

cloudpickle.register_pickle_by_value(sys.modules[__name__])

Dataset = tw.data.Dataset
service = tw.data.service

SEEDS = range(20)
KILLS = 3
N = 300
WORKER_TIMEOUT_MS = 1000


def _slow(x):
    time.sleep(0.001)  # keeps the job running across the kills
    return x


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    protocol = "grpc"
    from tensorwire.transport import default_registry

    if protocol not in default_registry.protocols():
        pytest.skip("needs the grpc transport to reach servers in other processes")
    work_dir = str(tmp_path_factory.mktemp("chaos-workers"))
    timeout_ms = str(int(scaled(WORKER_TIMEOUT_MS)))
    with data_service_processes(
        2,
        protocol=protocol,
        dispatcher_args=["--work_dir", work_dir, "--fault_tolerant"]
        + ["--worker_timeout_ms", timeout_ms],
    ) as (dispatcher, workers):
        yield protocol, dispatcher, workers


def _read_through_chaos(protocol, dispatcher, workers, seed):
    for process in (dispatcher, *workers):
        if process.process is None or process.process.poll() is not None:
            # A seed that failed during a restart left it down: each seed fails alone.
            process.start(timeout=RESTART_TIMEOUT)
    rng = random.Random(seed)
    points = sorted(rng.sample(range(0, N // 2), KILLS))
    target = f"{protocol}://{dispatcher.address}"
    it = iter(
        Dataset.range(N)
        .map(_slow)
        .apply(service.distribute("distributed_epoch", target, job_name=f"chaos-w-{seed}"))
    )
    got: list[int] = []
    for point in points:
        while len(got) < point:
            got.append(int(next(it)))
        victim = rng.choice([dispatcher, *workers])
        time.sleep(rng.random() * 0.02)
        victim.kill()
        if victim is not dispatcher and rng.random() < 0.3:
            # Gone long enough to be dropped: its tasks move to the other worker.
            time.sleep(scaled(WORKER_TIMEOUT_MS) / 1000 * 1.5)
        else:
            time.sleep(rng.random() * 0.1)
        victim.start(timeout=RESTART_TIMEOUT)
    got.extend(int(x) for x in it)
    return got


@pytest.mark.parametrize("seed", SEEDS)
def test_exactly_once_through_worker_and_dispatcher_kills(cluster, seed, monkeypatch):
    # The reader gives up on a dispatcher it has not reached for CLIENT_TIMEOUT. Here
    # the disruptions can come back to back (the next kill point a few elements on,
    # those already buffered) faster than a heartbeat gets through to a dispatcher just
    # restarted on a loaded machine; the give-up itself is test_fault_tolerance's.
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", scaled(180.0))
    protocol, dispatcher, workers = cluster
    got = _read_through_chaos(protocol, dispatcher, workers, seed)
    counts = Counter(got)
    assert not [x for x, c in counts.items() if c > 1], (
        f"repeated: {sorted(x for x, c in counts.items() if c > 1)[:20]}"
    )
    assert sorted(counts) == list(range(N)), (
        f"lost {N - len(counts)}: {sorted(set(range(N)) - set(counts))[:20]}"
    )
