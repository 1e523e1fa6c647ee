"""Garbage collection of unused jobs and vanished clients; dead workers dropped."""

from __future__ import annotations

import threading
import time

import pytest
import tensorwire as tw
from tensorwire import errors

from .helpers import distribute, values

Dataset = tw.data.Dataset


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_unused_job_is_collected(service_factory):
    dispatcher, (worker,) = service_factory(
        1,
        job_gc_check_interval_ms=50,
        job_gc_timeout_ms=200,
        worker_config={"heartbeat_interval_ms": 50},
    )
    ds = distribute(Dataset.range(10**9), dispatcher)
    it = iter(ds)
    next(it)
    assert worker._num_tasks() == 1
    it.close()
    assert _wait(lambda: dispatcher._num_jobs() == 0), "job was not garbage collected"
    assert _wait(lambda: worker._num_tasks() == 0), "the worker kept the collected task"


def test_job_in_use_is_not_collected(service_factory):
    # A timeout of 4 client heartbeats (0.5 s apart): a loaded machine that delays one
    # heartbeat by a second must not get the job collected under its reader.
    dispatcher, _ = service_factory(1, job_gc_check_interval_ms=50, job_gc_timeout_ms=2000)
    it = iter(distribute(Dataset.range(10**9), dispatcher))
    next(it)
    time.sleep(5.0)  # two and a half timeouts; the client heartbeats, so the job stays
    assert dispatcher._num_jobs() == 1
    assert next(it) is not None


def test_never_collect_with_minus_one(service_factory):
    dispatcher, _ = service_factory(1, job_gc_check_interval_ms=20, job_gc_timeout_ms=-1)
    assert values(distribute(Dataset.range(3), dispatcher)) == [0, 1, 2]
    time.sleep(0.3)
    assert dispatcher._num_jobs() == 1


def test_reading_a_collected_job_fails_clearly(service_factory):
    dispatcher, _ = service_factory(1, job_gc_check_interval_ms=50, job_gc_timeout_ms=300)
    reader = distribute(Dataset.range(10**9), dispatcher)._read()
    next(reader)
    # Stop this client's heartbeats (as if its process froze) so the dispatcher times it out.
    reader._stop.set()
    assert _wait(lambda: dispatcher._num_jobs() == 0, 10)
    with pytest.raises(errors.NotFoundError, match="garbage collected"):
        reader._heartbeat_once()


def test_dead_worker_is_dropped(service_factory):
    dispatcher, (w1, w2) = service_factory(
        2, worker_timeout_ms=300, worker_config={"heartbeat_interval_ms": 50}
    )
    assert dispatcher._num_workers() == 2
    w2.stop()
    assert _wait(lambda: dispatcher._num_workers() == 1, 10)


def test_anonymous_job_is_collected_when_its_reader_closes(service_factory):
    # Default GC timeout (minutes): an anonymous job nobody else can join goes at once.
    dispatcher, (worker,) = service_factory(1)
    it = iter(distribute(Dataset.range(10**9), dispatcher))
    next(it)
    assert worker._num_tasks() == 1
    it.close()
    assert _wait(lambda: dispatcher._num_jobs() == 0, 5)
    assert _wait(lambda: worker._num_tasks() == 0, 5), "the task kept running on the worker"


def test_named_job_waits_for_the_gc_timeout(service_factory):
    dispatcher, (worker,) = service_factory(1)
    it = iter(distribute(Dataset.range(10**9), dispatcher, job_name="kept"))
    next(it)
    it.close()
    time.sleep(0.3)
    assert dispatcher._num_jobs() == 1  # another consumer may still join "kept"


@pytest.mark.parametrize("mode", ["parallel_epochs", "distributed_epoch"])
def test_worker_dropped_for_missed_heartbeats_resumes_its_tasks(service_factory, monkeypatch, mode):
    """A worker that misses heartbeats (busy, cut off) is dropped; when it comes back still
    running its task, the task carries on: its readers see no element twice and none lost
    (a new task would start the epoch again: [0, 0, 1, 2, ...])."""
    dispatcher, (worker,) = service_factory(
        1, worker_timeout_ms=300, worker_config={"heartbeat_interval_ms": 50}
    )
    n = 2000
    it = iter(distribute(Dataset.range(n), dispatcher, mode, max_outstanding_requests=1))
    got = [int(next(it)) for _ in range(100)]
    core = worker._core
    gate = threading.Event()
    beat = core.heartbeat

    def held() -> None:
        gate.wait(60)
        beat()

    monkeypatch.setattr(core, "heartbeat", held)
    try:
        assert _wait(lambda: dispatcher._num_workers() == 0, 60), "the worker was not dropped"
    finally:
        monkeypatch.setattr(core, "heartbeat", beat)
        gate.set()
    got.extend(int(x) for x in it)
    assert got == list(range(n))
    assert dispatcher._num_workers() == 1


def test_collected_jobs_are_forgotten_without_a_journal(service_factory):
    """A dispatcher without a journal (nothing compacts) forgets collected jobs after
    collecting them, so a long-lived one does not keep every job it ran; their readers
    still hear why, and their workers drop the tasks."""
    dispatcher, (worker,) = service_factory(
        1,
        job_gc_check_interval_ms=50,
        job_gc_timeout_ms=200,
        worker_config={"heartbeat_interval_ms": 50},
    )
    reader = distribute(Dataset.range(10**9), dispatcher, job_name="forgotten")._read()
    next(reader)
    reader._stop.set()  # its heartbeats stop, as if its process froze
    assert _wait(lambda: dispatcher._num_jobs(include_gc=True) == 0, 10), "the job was kept"
    with dispatcher._core.lock:
        assert not dispatcher._core.state.tasks
    with pytest.raises(errors.NotFoundError, match="garbage collected"):
        reader._heartbeat_once()
    assert _wait(lambda: worker._num_tasks() == 0, 10), "the worker kept the task"
