"""Fault tolerance with real processes: kill -9 of dispatcher and workers started by the CLI.

Each test states the visitation guarantee it checks; packages/dataservice/README.md lists
them per processing mode and failure.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import cloudpickle
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import client
from tensorwire_dataservice.service.protocol import DISPATCHER_SERVICE, call
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.waiting import scaled

# The pipelines below run in worker processes that cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

Dataset = tw.data.Dataset
service = tw.data.service


def _slow(x):
    time.sleep(0.0005)
    return x


@pytest.fixture
def procs(cross_process_protocol, monkeypatch):
    # Deadlines stretch on slow machines (TENSORWIRE_TEST_TIMEOUT_SCALE, set in the RDMA
    # harness's emulated guest): a restarted dispatcher takes longer than 20 s to come up there.
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", scaled(20.0))
    made: list[DataServiceProcess] = []

    def start(kind, *args, port=0):
        p = DataServiceProcess(kind, ["--protocol", cross_process_protocol, *args], port=port)
        made.append(p)
        return p.start(timeout=30)

    yield start
    for p in made:
        p.kill()


def _dispatcher(procs, tmp_path, *extra, worker_timeout_ms=1500):
    return procs(
        "dispatcher",
        "--work_dir",
        str(tmp_path),
        "--fault_tolerant",
        "--worker_timeout_ms",
        str(int(scaled(worker_timeout_ms))),
        *extra,
    )


#: A restarted worker must register again before the dispatcher drops it for missed
#: heartbeats. Restarting a process took more than 6 s in the emulated RDMA guest under
#: load (worker_timeout_ms 1500, scaled x4), so the restart tests allow a longer timeout;
#: nothing in them waits for it.
RESTART_WORKER_TIMEOUT_MS = 10_000


def _worker(procs, dispatcher, port=0):
    return procs(
        "worker",
        "--dispatcher_address",
        dispatcher.address,
        "--heartbeat_interval_ms",
        "100",
        port=port,
    )


def _target(protocol, dispatcher):
    return f"{protocol}://{dispatcher.address}"


def _workers_known(protocol, dispatcher):
    return call(protocol, dispatcher.address, DISPATCHER_SERVICE, "GetWorkers", {})["workers"]


def test_dispatcher_restart_distributed_epoch_no_duplicates(
    procs, tmp_path, cross_process_protocol
):
    """Dispatcher kill -9 + restart, distributed_epoch: no element twice, none lost."""
    d = _dispatcher(procs, tmp_path)
    _worker(procs, d)
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(
            service.distribute(
                "distributed_epoch", _target(cross_process_protocol, d), job_name="ft"
            )
        )
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(300)]
    d.kill()
    time.sleep(0.3)
    d.restart()
    got.extend(int(x) for x in it)
    counts = Counter(got)
    assert max(counts.values()) == 1, "an element was produced twice"
    assert sorted(got) == list(range(n))


def test_dispatcher_restart_recovers_datasets_jobs_and_workers(
    procs, tmp_path, cross_process_protocol
):
    d = _dispatcher(procs, tmp_path)
    w = _worker(procs, d)
    target = _target(cross_process_protocol, d)
    dataset_id = service.register_dataset(target, Dataset.range(7))
    d.kill()
    d.restart()
    assert _workers_known(cross_process_protocol, d) == [f"localhost:{w.port}"]
    assert service.register_dataset(target, Dataset.range(7)) == dataset_id
    got = [int(x) for x in service.from_dataset_id("parallel_epochs", target, dataset_id)]
    assert got == list(range(7))


def test_dispatcher_restart_parallel_epochs_each_element_once(
    procs, tmp_path, cross_process_protocol
):
    """Dispatcher kill -9 + restart, parallel_epochs: the worker keeps its task, so each
    element of its epoch arrives exactly once."""
    d = _dispatcher(procs, tmp_path)
    _worker(procs, d)
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(service.distribute("parallel_epochs", _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(200)]
    d.kill()
    d.restart()
    got.extend(int(x) for x in it)
    assert sorted(got) == list(range(n))


def test_worker_restart_parallel_epochs_repeats_its_epoch(procs, tmp_path, cross_process_protocol):
    """Worker kill -9 + restart on its port, parallel_epochs: the task restarts from the
    beginning, so every element arrives at least once (some twice)."""
    d = _dispatcher(procs, tmp_path, worker_timeout_ms=RESTART_WORKER_TIMEOUT_MS)
    w = _worker(procs, d)
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(service.distribute("parallel_epochs", _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(500)]
    w.kill()
    w.restart()
    got.extend(int(x) for x in it)
    assert set(got) == set(range(n))
    assert len(got) > n  # the restarted worker began its epoch again


def test_worker_restart_distributed_epoch_exactly_once(procs, tmp_path, cross_process_protocol):
    """Worker kill -9 + restart, distributed_epoch of a deterministic pipeline: the new
    process replays the task's splits and leaves out what the reader received, so every
    element arrives exactly once."""
    d = _dispatcher(procs, tmp_path, worker_timeout_ms=RESTART_WORKER_TIMEOUT_MS)
    w = _worker(procs, d)
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(service.distribute("distributed_epoch", _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(500)]
    w.kill()
    w.restart()
    got.extend(int(x) for x in it)
    assert max(Counter(got).values()) == 1, "an element was delivered twice"
    assert sorted(got) == list(range(n)), f"{n - len(set(got))} elements lost"


def test_dead_worker_dropped_reader_finishes(procs, tmp_path, cross_process_protocol):
    """A worker killed for good is dropped after worker_timeout_ms; its task is replayed on
    the other worker and the reader ends instead of hanging (distributed_epoch of a
    deterministic pipeline: exactly once)."""
    d = _dispatcher(procs, tmp_path)
    _worker(procs, d)
    w2 = _worker(procs, d)
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(service.distribute("distributed_epoch", _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(200)]
    w2.kill()
    start = time.monotonic()
    got.extend(int(x) for x in it)
    assert time.monotonic() - start < scaled(30)
    assert max(Counter(got).values()) == 1, "an element was delivered twice"
    assert sorted(got) == list(range(n)), f"{n - len(set(got))} elements lost"
    assert len(_workers_known(cross_process_protocol, d)) == 1


def test_reader_never_hangs_when_everything_dies(
    procs, tmp_path, cross_process_protocol, monkeypatch
):
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", scaled(3.0))
    d = _dispatcher(procs, tmp_path)
    w = _worker(procs, d)
    ds = (
        Dataset.range(10**9)
        .map(_slow)
        .apply(service.distribute("parallel_epochs", _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    next(it)
    d.kill()
    w.kill()
    start = time.monotonic()
    with pytest.raises(errors.UnavailableError):
        for _ in range(10**7):
            next(it)
    assert time.monotonic() - start < scaled(20)


def test_cli_processes_exit_cleanly_on_sigterm(procs, tmp_path):
    d = _dispatcher(procs, tmp_path)
    w = _worker(procs, d)
    assert w.terminate() == 0
    assert d.terminate() == 0


def test_static_sharding_worker_restart_redoes_its_shard(procs, tmp_path, cross_process_protocol):
    """Static sharding (DATA), worker kill -9 + restart on its port: the worker processes
    its shard again from the beginning (every element at least once)."""
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addresses = [f"localhost:{p}" for p in ports]
    d = _dispatcher(
        procs,
        tmp_path,
        "--worker_addresses",
        *addresses,
        worker_timeout_ms=RESTART_WORKER_TIMEOUT_MS,
    )
    _worker(procs, d, port=ports[0])
    w2 = _worker(procs, d, port=ports[1])
    n = 3000
    ds = (
        Dataset.range(n)
        .map(_slow)
        .apply(service.distribute(service.ShardingPolicy.DATA, _target(cross_process_protocol, d)))
    )
    it = iter(ds)
    got = [int(next(it)) for _ in range(400)]
    w2.kill()
    w2.restart()
    got.extend(int(x) for x in it)
    assert set(got) == set(range(n))
    assert len(got) > n  # the restarted worker began its shard again


def test_cli_host_option_binds_beyond_loopback_and_warns(procs, cross_process_protocol):
    d = procs("dispatcher", "--host", "0.0.0.0", "--insecure")
    dataset_id = service.register_dataset(_target(cross_process_protocol, d), Dataset.range(3))
    assert dataset_id
    deadline = time.monotonic() + scaled(5)
    while "beyond loopback" not in d.output and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "beyond loopback" in d.output
