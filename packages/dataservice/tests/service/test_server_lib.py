"""DispatchServer / WorkerServer lifecycle, as TensorFlow's server_lib_test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import tensorwire as tw
from tensorwire.protos import DispatcherConfig as DispatcherConfigProto
from tensorwire.protos import WorkerConfig as WorkerConfigProto

service = tw.data.service


def test_start_dispatcher(protocol):
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol), start=False)
    dispatcher.start()
    dispatcher.stop()


def test_start_is_idempotent(protocol):
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    dispatcher.start()
    dispatcher.start()
    worker = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol), start=False
    )
    worker.start()
    worker.start()
    worker.stop()
    dispatcher.stop()


def test_stop_is_idempotent(protocol):
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    dispatcher.stop()
    dispatcher.stop()


def test_start_after_stop_raises(protocol):
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
    worker.stop()
    dispatcher.stop()
    with pytest.raises(RuntimeError, match="Server cannot be started after it has been stopped"):
        dispatcher.start()
    with pytest.raises(RuntimeError, match="Server cannot be started after it has been stopped"):
        worker.start()


def test_target_and_address(protocol):
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    try:
        proto, address = dispatcher.target.split("://")
        assert proto == protocol
        assert address == dispatcher._address
        assert address.startswith("localhost:") and int(address.split(":")[1]) > 0
    finally:
        dispatcher.stop()


def test_default_protocol_is_grpc():
    assert service.DispatcherConfig().protocol == "grpc"
    assert service.WorkerConfig("localhost:1").protocol == "grpc"


def test_fault_tolerant_mode_needs_work_dir():
    with pytest.raises(
        ValueError, match="Cannot enable fault tolerant mode without configuring a work dir"
    ):
        service.DispatchServer(service.DispatcherConfig(fault_tolerant_mode=True))


def test_worker_needs_dispatcher_address():
    with pytest.raises(ValueError, match="Must specify a `dispatcher_address`"):
        service.WorkerServer(service.WorkerConfig(dispatcher_address=None))


def test_num_workers_counts_registered_workers(service_factory):
    dispatcher, _ = service_factory(0)
    assert dispatcher._num_workers() == 0
    service_factory.add_worker(dispatcher)
    assert dispatcher._num_workers() == 1  # registered when the constructor returns
    service_factory.add_worker(dispatcher)
    assert dispatcher._num_workers() == 2


def test_join_returns_after_stop(protocol):
    import threading

    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol))
    joined = threading.Event()
    t = threading.Thread(target=lambda: (dispatcher.join(), joined.set()), daemon=True)
    t.start()
    assert not joined.wait(0.2)
    dispatcher.stop()
    assert joined.wait(5)


def test_configs_accept_protos(protocol, tmp_path):
    proto = DispatcherConfigProto(
        port=0,
        protocol=protocol,
        work_dir=str(tmp_path),
        fault_tolerant_mode=True,
        job_gc_timeout_ms=1234,
    )
    dispatcher = service.DispatchServer(proto)
    try:
        assert dispatcher.target.startswith(f"{protocol}://")
        worker = service.WorkerServer(
            WorkerConfigProto(dispatcher_address=dispatcher._address, protocol=protocol)
        )
        assert dispatcher._num_workers() == 1
        worker.stop()
    finally:
        dispatcher.stop()


def test_fault_tolerant_proto_without_work_dir():
    with pytest.raises(ValueError, match="work dir"):
        service.DispatchServer(DispatcherConfigProto(fault_tolerant_mode=True))


def test_config_time_placeholders():
    # None: the runtime default (0 in the config); 0: as small as possible (1).
    config = service.DispatcherConfig()
    assert config.job_gc_check_interval_ms == 0 and config.job_gc_timeout_ms == 0
    config = service.DispatcherConfig(job_gc_check_interval_ms=0, job_gc_timeout_ms=0)
    assert config.job_gc_check_interval_ms == 1 and config.job_gc_timeout_ms == 1
    assert service.DispatcherConfig(job_gc_timeout_ms=-1).job_gc_timeout_ms == -1
    worker = service.WorkerConfig("localhost:5050", heartbeat_interval_ms=0)
    assert worker.heartbeat_interval_ms == 1 and worker.dispatcher_timeout_ms == 0
    assert worker.worker_address == "localhost:%port%"
    assert worker.data_transfer_address == "localhost:%dts_port%"


def test_config_fields_match_tensorflow():
    """TensorFlow's fields, in its order (positional arguments port as they are); then
    tensorwire's own, all with defaults."""
    ours = (
        "cluster_token",
        "tls",
        "insecure",
        "registered_pipelines_only",
        "metrics_port",
        "metrics_host",
    )
    assert service.DispatcherConfig._fields == (
        "port",
        "protocol",
        "work_dir",
        "fault_tolerant_mode",
        "worker_addresses",
        "job_gc_check_interval_ms",
        "job_gc_timeout_ms",
        "worker_timeout_ms",
        "worker_max_concurrent_snapshots",
        *ours,
    )
    assert service.WorkerConfig._fields == (
        "dispatcher_address",
        "worker_address",
        "port",
        "protocol",
        "heartbeat_interval_ms",
        "dispatcher_timeout_ms",
        "data_transfer_protocol",
        "data_transfer_address",
        *ours[:4],
        # The cross-trainer cache's budget (a field of TensorFlow's WorkerConfig proto, not
        # of its Python namedtuple) and the host identity target_workers="LOCAL" compares.
        "cross_trainer_cache_size_bytes",
        "host_id",
        *ours[4:],
    )


def test_bad_config_type():
    with pytest.raises(TypeError, match="DispatcherConfig"):
        service.DispatchServer({"port": 0})


def test_script_exits_without_stop(protocol):
    script = textwrap.dedent(f"""
        import tensorwire as tw
        dispatcher = tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(protocol={protocol!r}))
        worker = tw.data.service.WorkerServer(tw.data.service.WorkerConfig(
            dispatcher_address=dispatcher.target.split("://")[1], protocol={protocol!r}))
        ds = tw.data.Dataset.range(5).apply(tw.data.service.distribute(
            processing_mode="parallel_epochs", service=dispatcher.target))
        print(sorted(int(x) for x in ds.as_numpy_iterator()))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 1, 2, 3, 4]"


def test_seed_example_prints_range(protocol):
    # DESIGN.md §9, verbatim apart from the protocol (grpc is the default).
    script = textwrap.dedent(f"""
        import tensorwire as tw
        dispatcher = tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(protocol={protocol!r}))
        dispatcher_address = dispatcher.target.split("://")[1]
        worker = tw.data.service.WorkerServer(
            tw.data.service.WorkerConfig(dispatcher_address=dispatcher_address,
                                         protocol={protocol!r}))
        dataset = tw.data.Dataset.range(10)
        dataset = dataset.apply(tw.data.service.distribute(
            processing_mode="parallel_epochs", service=dispatcher.target))
        print([int(x) for x in dataset.as_numpy_iterator()])
        print(list(dataset.as_numpy_iterator()))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == str(list(range(10)))
    assert "np.int64(9)" in second or second == str(list(range(10)))
