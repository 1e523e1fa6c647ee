"""target_workers="LOCAL": a reader reads only the workers on its own host.

Hosts are told apart by the identity a worker reports when it registers (the machine id
and host name, or ``WorkerConfig(host_id=...)``), compared with the reader's own
(``tensorwire_dataservice.service.host.host_id``). Workers here run in this process on
loopback; a worker given another ``host_id`` stands for a worker on another machine.
"""

from __future__ import annotations

import time

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import host

from .helpers import distribute, values

Dataset = tw.data.Dataset


def test_local_reads_only_the_workers_on_this_host(service_factory):
    dispatcher, _ = service_factory(0)
    service_factory.add_worker(dispatcher)  # this host
    service_factory.add_worker(dispatcher, host_id="another-machine")
    ds = distribute(Dataset.range(20), dispatcher, target_workers="LOCAL")
    # parallel_epochs: every worker produces the whole range; only the local one is read.
    assert sorted(values(ds)) == list(range(20))


def test_any_reads_every_worker(service_factory):
    dispatcher, _ = service_factory(0)
    service_factory.add_worker(dispatcher)
    service_factory.add_worker(dispatcher, host_id="another-machine")
    ds = distribute(Dataset.range(20), dispatcher, target_workers="ANY")
    assert sorted(values(ds)) == sorted(list(range(20)) * 2)


def test_auto_reads_every_worker_as_tensorflow_does_for_untagged_workers(service_factory):
    dispatcher, _ = service_factory(0)
    service_factory.add_worker(dispatcher)
    service_factory.add_worker(dispatcher, host_id="another-machine")
    ds = distribute(Dataset.range(10), dispatcher)
    assert sorted(values(ds)) == sorted(list(range(10)) * 2)


def test_no_local_worker_is_an_error_naming_the_job_and_the_hosts(service_factory):
    dispatcher, workers = service_factory(0)
    worker = service_factory.add_worker(dispatcher, host_id="machine-b")
    ds = distribute(Dataset.range(10), dispatcher, target_workers="LOCAL", job_name="local-job")
    start = time.monotonic()
    with pytest.raises(errors.InvalidArgumentError) as info:
        values(ds)
    message = str(info.value)
    assert "Local reads require local tf.data workers" in message
    assert "'local-job'" in message
    assert "'machine-b'" in message and worker._worker_address in message
    assert repr(host.host_id()) in message
    assert time.monotonic() - start < 30  # at once, not after the client timeout


def test_the_host_identity_environment_variable_decides_what_is_local(service_factory, monkeypatch):
    dispatcher, _ = service_factory(0)
    service_factory.add_worker(dispatcher, host_id="rack-7")
    monkeypatch.setenv(host.HOST_ID_ENV, "rack-7")
    ds = distribute(Dataset.range(5), dispatcher, target_workers="LOCAL")
    assert values(ds) == list(range(5))


def test_local_with_coordinated_reads_is_refused_as_in_tensorflow(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.InvalidArgumentError, match="Coordinated reads require non-local"):
        distribute(
            Dataset.range(10).repeat(),
            dispatcher,
            target_workers="LOCAL",
            job_name="j",
            num_consumers=2,
            consumer_index=0,
        )


def test_readers_of_one_job_must_agree_on_target_workers(service_factory):
    dispatcher, _ = service_factory(1)
    first = iter(distribute(Dataset.range(10**6), dispatcher, job_name="j", target_workers="ANY"))
    next(first)
    other = distribute(Dataset.range(10**6), dispatcher, job_name="j", target_workers="LOCAL")
    with pytest.raises(errors.InvalidArgumentError, match="Existing target workers: <ANY>"):
        next(iter(other))


def test_an_empty_host_id_is_refused(service_factory):
    dispatcher, _ = service_factory(0)
    with pytest.raises(ValueError, match="host_id"):
        service_factory.add_worker(dispatcher, host_id=" ")


def test_the_host_identity_names_this_machine(monkeypatch):
    monkeypatch.delenv(host.HOST_ID_ENV, raising=False)
    identity = host.host_id()
    assert identity and identity == host.host_id()
    import socket

    assert identity.startswith(socket.gethostname())


def test_a_reader_waiting_for_workers_fails_when_only_remote_ones_register(service_factory):
    dispatcher, _ = service_factory(0)
    ds = distribute(Dataset.range(10), dispatcher, target_workers="LOCAL", job_name="early")
    reader = ds._read()  # the job exists before any worker does
    service_factory.add_worker(dispatcher, host_id="machine-c")
    with pytest.raises(errors.InvalidArgumentError, match="'machine-c'"):
        next(reader)
