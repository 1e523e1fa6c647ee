"""Wire compatibility with TensorFlow, against fixtures TensorFlow 2.21 wrote (tf_fixtures/).

make_tf_fixtures.py (run by hand, TensorFlow in a separate virtualenv) wrote TensorFlow's
bytes and text format for a set of values, and TensorFlow's reading of tensorwire's bytes for
the same values. These tests need no TensorFlow: they check that tensorwire reads
TensorFlow's bytes as exactly those values, that tensorwire still writes the bytes TensorFlow
read back correctly, and that fields tensorwire does not declare survive a round trip.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from google.protobuf.internal import api_implementation
from tensorwire import protos
from tensorwire.cluster import ClusterSpec, make_server_def

HERE = Path(__file__).resolve().parent
FIXTURES_DIR = HERE / "tf_fixtures"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_tf_fixtures", HERE / "make_tf_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
CLASSES = {
    getattr(protos, name).DESCRIPTOR.full_name: getattr(protos, name)
    for name in protos.__all__
    if hasattr(getattr(protos, name), "DESCRIPTOR")
}


def _expected(name):
    full_name, values = GEN.FIXTURES[name]
    return json_format.ParseDict(values, CLASSES[full_name]())


def test_fixtures_were_written_by_tensorflow():
    manifest = json.loads((FIXTURES_DIR / "manifest.json").read_text())
    assert manifest["tensorflow"].startswith("2.")


@pytest.mark.parametrize("name", sorted(GEN.FIXTURES))
def test_tensorflow_bytes_parse_to_the_same_values(name):
    full_name, _ = GEN.FIXTURES[name]
    parsed = CLASSES[full_name].FromString((FIXTURES_DIR / f"{name}.tf.pb").read_bytes())
    assert parsed == _expected(name)
    # Our text format of it is TensorFlow's, character for character; as text format leaves
    # unknown fields out, this also shows every field TensorFlow wrote is declared here.
    assert text_format.MessageToString(parsed) == (FIXTURES_DIR / f"{name}.tf.txt").read_text()


@pytest.mark.parametrize("name", sorted(GEN.FIXTURES))
def test_our_bytes_are_the_ones_tensorflow_read_back_correctly(name):
    full_name, _ = GEN.FIXTURES[name]
    recorded = (FIXTURES_DIR / f"{name}.tw.pb").read_bytes()
    ours = _expected(name).SerializeToString(deterministic=True)
    if api_implementation.Type() == "upb":
        # Still the very bytes the fixture generator fed to TensorFlow. (Map entry order is
        # implementation-specific even with deterministic=True, so only on the runtime that
        # wrote them, upb, the default.)
        assert ours == recorded
    assert CLASSES[full_name].FromString(ours) == CLASSES[full_name].FromString(recorded)
    # TensorFlow read those bytes as the same values it serializes itself.
    assert (FIXTURES_DIR / f"{name}.tw.tf.txt").read_text() == (
        (FIXTURES_DIR / f"{name}.tf.txt").read_text()
    )


def test_server_def_values_individually():
    dense = protos.ServerDef.FromString((FIXTURES_DIR / "server_def_dense.tf.pb").read_bytes())
    assert (dense.job_name, dense.task_index, dense.replica) == ("worker", 2, 1)
    assert (dense.protocol, dense.port) == ("grpc", 2345)
    config = dense.default_session_config
    assert config.operation_timeout_in_ms == 60000
    assert list(config.device_filters) == ["/job:ps", "/job:worker/task:2"]
    assert dict(config.device_count) == {"CPU": 2, "GPU": 0}
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (4, 2)
    rpc = config.rpc_options
    assert rpc.use_rpc_for_inprocess_master and rpc.cache_rpc_response
    assert rpc.disable_session_connection_sharing
    assert (rpc.compression_algorithm, rpc.compression_level) == ("deflate", 2)
    assert rpc.num_channels_per_target == 3
    assert config.isolate_session_state and config.share_cluster_devices_in_session
    assert config.experimental.session_metadata.version == 7
    assert config.experimental.collective_group_leader == "/job:worker/replica:0/task:0"
    filters = dense.cluster_device_filters.jobs[0]
    assert filters.name == "worker"
    assert list(filters.tasks[2].device_filters) == ["/job:ps", "/job:worker/task:2"]
    assert ClusterSpec(dense.cluster).as_dict() == {
        "ps": ["ps0:2222", "ps1:2222"],
        "worker": ["w0:2222", "w1:2222", "w2:2222"],
    }

    sparse = protos.ServerDef.FromString((FIXTURES_DIR / "server_def_sparse.tf.pb").read_bytes())
    assert (sparse.job_name, sparse.task_index, sparse.protocol) == ("worker", 7, "grpc+verbs")
    assert sparse.default_session_config.operation_timeout_in_ms == 5
    assert ClusterSpec(sparse.cluster).as_dict() == {
        "ps": ["ps0:2222"],
        "worker": {1: "w1:2222", 7: "w7:2222"},
    }


def test_data_service_values_individually():
    dispatcher = protos.DispatcherConfig.FromString(
        (FIXTURES_DIR / "dispatcher_config.tf.pb").read_bytes()
    )
    assert (dispatcher.port, dispatcher.work_dir) == (5050, "/tmp/dispatcher")
    assert dispatcher.fault_tolerant_mode
    assert list(dispatcher.worker_addresses) == ["w0:6000", "w1:6000"]
    assert dispatcher.deployment_mode == protos.DeploymentMode.DEPLOYMENT_MODE_REMOTE
    assert (dispatcher.job_gc_check_interval_ms, dispatcher.job_gc_timeout_ms) == (600000, 300000)
    assert (dispatcher.client_timeout_ms, dispatcher.worker_timeout_ms) == (60000, 30000)

    worker = protos.WorkerConfig.FromString((FIXTURES_DIR / "worker_config.tf.pb").read_bytes())
    assert (worker.dispatcher_address, worker.worker_address) == ("dispatcher:5050", "w0:%port%")
    assert (worker.heartbeat_interval_ms, worker.dispatcher_timeout_ms) == (30000, 3600000)
    assert worker.cross_trainer_cache_size_bytes == 10 * 2**30
    assert list(worker.worker_tags) == ["COLOCATED", "gpu"]

    mode = protos.ProcessingModeDef.FromString(
        (FIXTURES_DIR / "processing_mode_def.tf.pb").read_bytes()
    )
    assert mode.sharding_policy == protos.ShardingPolicy.FILE_OR_DATA

    metadata = protos.DataServiceMetadata.FromString(
        (FIXTURES_DIR / "data_service_metadata.tf.pb").read_bytes()
    )
    assert metadata.element_spec == b"\x00\x01\x02\xff"
    assert metadata.compression == protos.DataServiceMetadata.COMPRESSION_SNAPPY
    assert metadata.cardinality == -2


def test_cluster_def_reads_as_tensorflows_cluster_spec_did():
    recorded = json.loads((FIXTURES_DIR / "cluster_def.tf_cluster_spec.json").read_text())
    spec = ClusterSpec(
        protos.ClusterDef.FromString((FIXTURES_DIR / "cluster_def.tf.pb").read_bytes())
    )
    assert repr(spec) == recorded["repr"]
    assert spec.jobs == recorded["jobs"]
    as_dict = spec.as_dict()
    assert json.loads(json.dumps(as_dict)) == recorded["as_dict"]  # JSON turns keys to str


def test_tensorflow_fields_we_do_not_declare_survive_a_round_trip():
    original = (FIXTURES_DIR / "config_unknown_fields.tf.pb").read_bytes()
    config = protos.ConfigProto.FromString(original)
    assert config.operation_timeout_in_ms == 1500
    assert config.experimental.collective_group_leader == "/job:chief/task:0"
    again = protos.ConfigProto.FromString(config.SerializeToString())
    assert again.SerializeToString() == config.SerializeToString()
    # TensorFlow read our re-serialization of its bytes as its original message.
    assert (FIXTURES_DIR / "config_unknown_fields.roundtrip.tw.tf.txt").read_text() == (
        (FIXTURES_DIR / "config_unknown_fields.tf.txt").read_text()
    )
    # And we still keep every byte of the unknown fields (gpu_options, graph_options,
    # experimental.use_tfrt): the recorded round trip parses to an equal message.
    recorded = protos.ConfigProto.FromString(
        (FIXTURES_DIR / "config_unknown_fields.roundtrip.tw.pb").read_bytes()
    )
    assert len(recorded.SerializeToString()) == len(original)
    assert recorded.SerializeToString(deterministic=True) == config.SerializeToString(
        deterministic=True
    )


def test_make_server_def_matches_tensorflows_for_the_recorded_inputs():
    recorded = json.loads((FIXTURES_DIR / "server_lib_make_server_def.json").read_text())
    assert set(recorded) == {case[0] for case in GEN.MAKE_SERVER_DEF_CASES}
    for case, cluster, job_name, task_index, protocol, config_values in GEN.MAKE_SERVER_DEF_CASES:
        config = (
            None
            if config_values is None
            else json_format.ParseDict(config_values, protos.ConfigProto())
        )
        ours = make_server_def(cluster, job_name, task_index, protocol, config)
        assert text_format.MessageToString(ours) == recorded[case], case
