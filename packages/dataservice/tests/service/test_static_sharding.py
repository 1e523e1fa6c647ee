"""Static sharding (FILE, DATA, FILE_OR_DATA, HINT) over a fixed list of worker addresses."""

from __future__ import annotations

import socket

import pytest
import tensorwire as tw
from tensorwire import errors

from .helpers import distribute, values

Dataset = tw.data.Dataset
ShardingPolicy = tw.data.service.ShardingPolicy


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster(service_factory, protocol, n, patterns=None):
    ports = _free_ports(n) if protocol != "inproc" else [41000 + i for i in range(n)]
    addresses = [f"localhost:{p}" for p in ports]
    dispatcher, _ = service_factory(0, worker_addresses=patterns or addresses)
    for port in ports:
        service_factory.add_worker(dispatcher, port=port)
    return dispatcher


def test_data_sharding(service_factory, protocol):
    dispatcher = _cluster(service_factory, protocol, 2)
    ds = distribute(Dataset.range(20), dispatcher, ShardingPolicy.DATA)
    assert sorted(values(ds)) == list(range(20))


def test_hint_sharding(service_factory, protocol):
    from tensorwire_dataservice.dataset.sharding import SHARD_HINT

    dispatcher = _cluster(service_factory, protocol, 2)
    ds = Dataset.range(20).shard(SHARD_HINT, SHARD_HINT)
    assert sorted(values(distribute(ds, dispatcher, ShardingPolicy.HINT))) == list(range(20))


def test_file_sharding(service_factory, protocol, tmp_path):
    files = []
    for i in range(4):
        path = tmp_path / f"f{i}.txt"
        path.write_text("".join(f"{i}-{j}\n" for j in range(3)))
        files.append(str(path))
    dispatcher = _cluster(service_factory, protocol, 2)
    ds = Dataset.list_files(files, shuffle=False).flat_map(tw.data.TextLineDataset)
    got = sorted(
        x.decode() if isinstance(x, bytes) else str(x)
        for x in distribute(ds, dispatcher, ShardingPolicy.FILE).as_numpy_iterator()
    )
    assert got == sorted(f"{i}-{j}" for i in range(4) for j in range(3))


def test_port_wildcards(service_factory, protocol):
    dispatcher = _cluster(service_factory, protocol, 2, patterns=["localhost:%port%"] * 2)
    ds = distribute(Dataset.range(10), dispatcher, ShardingPolicy.DATA)
    assert sorted(values(ds)) == list(range(10))


def test_static_sharding_needs_worker_addresses(service_factory):
    dispatcher, _ = service_factory(1)
    with pytest.raises(errors.FailedPreconditionError, match="worker_addresses"):
        values(distribute(Dataset.range(10), dispatcher, ShardingPolicy.DATA))


def test_unlisted_worker_is_refused(service_factory):
    dispatcher, _ = service_factory(0, worker_addresses=["otherhost:1"])
    with pytest.raises(errors.OpError, match="Failed to assign an index for worker"):
        tw.data.service.WorkerServer(
            tw.data.service.WorkerConfig(
                dispatcher._address,
                protocol=dispatcher.target.split("://")[0],
                dispatcher_timeout_ms=2000,
            )
        )


@pytest.mark.parametrize("pattern", ["[::1]", "[::1]:%port%"])
def test_an_ipv6_worker_matches_its_bracketed_pattern(service_factory, pattern):
    # Registration only: the dispatcher never dials a worker, so no IPv6 socket is needed.
    dispatcher, _ = service_factory(0, worker_addresses=[pattern])
    worker = tw.data.service.WorkerServer(
        tw.data.service.WorkerConfig(
            dispatcher._address,
            worker_address="[::1]:%port%",
            protocol=dispatcher.target.split("://")[0],
            dispatcher_timeout_ms=2000,
        )
    )
    try:
        assert worker._worker_address.startswith("[::1]:")
        assert dispatcher._num_workers() == 1
    finally:
        worker.stop()
