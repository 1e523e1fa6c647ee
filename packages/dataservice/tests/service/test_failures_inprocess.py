"""Failure behaviour that needs no separate process (see test_fault_tolerance for kill -9)."""

from __future__ import annotations

import time

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import client

from .helpers import distribute

Dataset = tw.data.Dataset
service = tw.data.service


def test_restart_without_fault_tolerance_fails_readers_clearly(cross_process_protocol):
    """Without fault_tolerant_mode a restarted dispatcher knows nothing of old jobs: readers
    get NotFoundError (never another job's data)."""
    protocol = cross_process_protocol
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol, heartbeat_interval_ms=50)
    )
    reader = distribute(Dataset.range(10**9), dispatcher)._read()
    next(reader)
    dispatcher.stop()
    restarted = service.DispatchServer(service.DispatcherConfig(port=port, protocol=protocol))
    try:
        # another job in the new incarnation must not be confused with the old one
        other = distribute(Dataset.range(3), restarted)._read()
        assert other.client_id != reader.client_id and other.job_id != reader.job_id
        with pytest.raises(errors.NotFoundError):
            reader._heartbeat_once()
        other.close()
    finally:
        reader.close()
        worker.stop()
        restarted.stop()


def test_coordinated_reads_fail_within_the_client_timeout_when_a_worker_dies(
    service_factory, monkeypatch
):
    """Coordinated reads do not survive the loss of a worker; readers fail, bounded."""
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", 2.0)
    dispatcher, (w1, w2) = service_factory(2)
    ds = (
        Dataset.range(10**9)
        .repeat()
        .apply(
            service.distribute(
                "parallel_epochs",
                dispatcher.target,
                job_name="c",
                consumer_index=0,
                num_consumers=1,
            )
        )
    )
    it = iter(ds)
    next(it)
    w2.stop()
    start = time.monotonic()
    with pytest.raises(errors.OpError):
        for _ in range(10**6):
            next(it)
    # Bounded, not prompt: a 2 s client timeout and a few retries come to seconds on a
    # quiet machine, tens of seconds beside a CPU-bound process; a hang would never end.
    assert time.monotonic() - start < 120
