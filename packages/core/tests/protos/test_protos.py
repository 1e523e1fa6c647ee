"""The protos: TensorFlow's names and field numbers, the private descriptor pool, the exports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorwire as tw
from google.protobuf import any_pb2, descriptor_pool, text_format
from google.protobuf.internal import api_implementation
from tensorwire import protos

SRC = Path(__file__).resolve().parents[2] / "src"
PROTO_DIR = SRC / "tensorwire" / "protos"

# Field numbers of TensorFlow 2.21, read from its descriptors (full name -> {field: number}).
TF_FIELD_NUMBERS = {
    "tensorflow.JobDef": {"name": 1, "tasks": 2},
    "tensorflow.ClusterDef": {"job": 1},
    "tensorflow.ServerDef": {
        "cluster": 1,
        "job_name": 2,
        "replica": 8,
        "task_index": 3,
        "default_session_config": 4,
        "protocol": 5,
        "port": 6,
        "cluster_device_filters": 7,
    },
    "tensorflow.TaskDeviceFilters": {"device_filters": 1},
    "tensorflow.JobDeviceFilters": {"name": 1, "tasks": 2},
    "tensorflow.ClusterDeviceFilters": {"jobs": 1},
    "tensorflow.RPCOptions": {
        "use_rpc_for_inprocess_master": 1,
        "compression_algorithm": 2,
        "compression_level": 3,
        "cache_rpc_response": 4,
        "disable_session_connection_sharing": 5,
        "num_channels_per_target": 6,
    },
    "tensorflow.SessionMetadata": {"name": 1, "version": 2},
    "tensorflow.ConfigProto": {
        "device_count": 1,
        "intra_op_parallelism_threads": 2,
        "inter_op_parallelism_threads": 5,
        "use_per_session_threads": 9,
        "device_filters": 4,
        "allow_soft_placement": 7,
        "log_device_placement": 8,
        "operation_timeout_in_ms": 11,
        "rpc_options": 13,
        "cluster_def": 14,
        "isolate_session_state": 15,
        "share_cluster_devices_in_session": 17,
        "experimental": 16,
    },
    "tensorflow.ConfigProto.Experimental": {
        "collective_group_leader": 1,
        "executor_type": 3,
        "recv_buf_max_chunk": 4,
        "use_numa_affinity": 5,
        "share_session_state_in_clusterspec_propagation": 8,
        "disable_thread_spinning": 9,
        "share_cluster_devices_in_session": 10,
        "session_metadata": 11,
    },
    "tensorflow.data.experimental.DispatcherConfig": {
        "port": 1,
        "protocol": 2,
        "work_dir": 3,
        "fault_tolerant_mode": 4,
        "worker_addresses": 7,
        "deployment_mode": 9,
        "job_gc_check_interval_ms": 5,
        "job_gc_timeout_ms": 6,
        "gc_dynamic_sharding_jobs": 11,
        "client_timeout_ms": 8,
        "worker_timeout_ms": 10,
        "worker_max_concurrent_snapshots": 12,
    },
    "tensorflow.data.experimental.WorkerConfig": {
        "port": 1,
        "protocol": 2,
        "dispatcher_address": 3,
        "worker_address": 4,
        "worker_tags": 10,
        "heartbeat_interval_ms": 5,
        "dispatcher_timeout_ms": 6,
        "data_transfer_protocol": 7,
        "data_transfer_port": 13,
        "data_transfer_address": 8,
        "cross_trainer_cache_size_bytes": 11,
        "snapshot_max_chunk_size_bytes": 12,
        "shutdown_quiet_period_ms": 9,
    },
    "tensorflow.data.ProcessingModeDef": {"sharding_policy": 1},
    "tensorflow.data.DataServiceMetadata": {"element_spec": 1, "compression": 2, "cardinality": 3},
    "tensorflow.data.CrossTrainerCacheOptions": {"trainer_id": 1},
    "tensorflow.data.DataServiceConfig": {"deployment_mode": 1},
}

TF_ENUMS = {
    "tensorflow.data.ProcessingModeDef.ShardingPolicy": {
        "OFF": 0,
        "DYNAMIC": 1,
        "FILE": 2,
        "DATA": 3,
        "FILE_OR_DATA": 4,
        "HINT": 5,
    },
    "tensorflow.data.DeploymentMode": {
        "DEPLOYMENT_MODE_UNSPECIFIED": 0,
        "DEPLOYMENT_MODE_COLOCATED": 1,
        "DEPLOYMENT_MODE_REMOTE": 2,
        "DEPLOYMENT_MODE_HYBRID": 3,
    },
    "tensorflow.data.DataServiceMetadata.Compression": {
        "COMPRESSION_UNSPECIFIED": 0,
        "COMPRESSION_OFF": 1,
        "COMPRESSION_SNAPPY": 2,
        "COMPRESSION_FORCED_SNAPPY": 3,
    },
}


@pytest.mark.parametrize("full_name", sorted(TF_FIELD_NUMBERS))
def test_message_has_tensorflows_full_name_and_field_numbers(full_name):
    descriptor = protos._pool.POOL.FindMessageTypeByName(full_name)
    # Our own options (ConfigProto.tensorwire, field 1000) are the one allowed addition.
    ours = {f.name: f.number for f in descriptor.fields if f.name != "tensorwire"}
    assert ours == TF_FIELD_NUMBERS[full_name]


@pytest.mark.parametrize("full_name", sorted(TF_ENUMS))
def test_enum_has_tensorflows_values(full_name):
    descriptor = protos._pool.POOL.FindEnumTypeByName(full_name)
    assert {v.name: v.number for v in descriptor.values} == TF_ENUMS[full_name]


def test_element_spec_sits_in_tensorflows_oneof():
    metadata = protos.DataServiceMetadata()
    assert not metadata.HasField("element_spec")
    metadata.element_spec = b""
    assert metadata.WhichOneof("optional_element_spec") == "element_spec"


def test_tensorwire_options_are_far_from_tensorflow_numbers_in_their_own_package():
    field = protos.ConfigProto.DESCRIPTOR.fields_by_name["tensorwire"]
    assert field.number == 1000
    assert field.message_type.full_name == "tensorwire.TensorwireOptions"
    config = protos.ConfigProto(
        tensorwire={"cluster_token": "s3cret", "tls": {"require_client_auth": True}}
    )
    again = protos.ConfigProto.FromString(config.SerializeToString())
    assert again.tensorwire.cluster_token == "s3cret"
    assert again.tensorwire.tls.require_client_auth


def test_top_level_names_resolve_to_the_proto_classes():
    assert tw.ClusterDef is protos.ClusterDef
    assert tw.JobDef is protos.JobDef
    assert tw.ServerDef is protos.ServerDef
    assert tw.ConfigProto is protos.ConfigProto
    assert set(protos.__all__) <= set(dir(protos))


def test_sharding_policy_is_the_processing_mode_enum():
    assert protos.ShardingPolicy.Name(protos.ShardingPolicy.DYNAMIC) == "DYNAMIC"
    assert protos.ProcessingModeDef(sharding_policy=protos.ShardingPolicy.HINT).sharding_policy == 5


def test_type_url_and_text_format_match_tensorflows_names():
    server_def = protos.ServerDef(job_name="ps", protocol="grpc")
    packed = any_pb2.Any()
    packed.Pack(server_def)
    assert packed.type_url == "type.googleapis.com/tensorflow.ServerDef"
    assert text_format.MessageToString(server_def, as_one_line=True) == (
        'job_name: "ps" protocol: "grpc"'
    )


def test_messages_are_registered_in_our_own_descriptor_pool():
    for name in protos.__all__:
        descriptor = getattr(getattr(protos, name), "DESCRIPTOR", None)
        if descriptor is not None:
            assert descriptor.file.pool is protos._pool.POOL, name
    if api_implementation.Type() != "python":
        # (The pure-Python runtime's default pool also looks symbols up in other pools'
        # files; what matters there too is the coexistence tested below.)
        with pytest.raises(KeyError):
            descriptor_pool.Default().FindMessageTypeByName("tensorflow.ServerDef")


_FAKE_TENSORFLOW = textwrap.dedent(
    """
    # Registers tensorflow.JobDef/ClusterDef in the DEFAULT pool, as TensorFlow's own
    # cluster_pb2 does, to show tensorwire's protos coexist with it in either order.
    from google.protobuf import descriptor_pb2, descriptor_pool
    def register_fake_tensorflow():
        f = descriptor_pb2.FileDescriptorProto(
            name="tensorflow/core/protobuf/cluster.proto", package="tensorflow",
            syntax="proto3")
        job = f.message_type.add(name="JobDef")
        job.field.add(name="name", number=1, type=9, label=1)
        f.message_type.add(name="ClusterDef")
        descriptor_pool.Default().Add(f)
    """
)


@pytest.mark.parametrize("tensorflow_first", [True, False], ids=["tf-first", "ours-first"])
def test_coexists_with_tensorflow_names_in_the_default_pool(tensorflow_first):
    script = _FAKE_TENSORFLOW + textwrap.dedent(
        f"""
        if {tensorflow_first}:
            register_fake_tensorflow()
        import tensorwire.protos as p
        if not {tensorflow_first}:
            register_fake_tensorflow()
        c = p.ClusterDef()
        c.job.add(name="w").tasks[3] = "h:1"
        assert p.ClusterDef.FromString(c.SerializeToString()) == c
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.skipif(
    not os.environ.get("TENSORWIRE_TF_PYTHON"),
    reason="needs a Python with TensorFlow installed, named by TENSORWIRE_TF_PYTHON "
    "(e.g. /tmp/tfenv/bin/python); run by hand when touching the protos",
)
def test_coexists_with_real_tensorflow_in_one_process():
    script = textwrap.dedent(
        """
        import tensorflow as tf
        import tensorwire.protos as p
        spec = tf.train.ClusterSpec({"w": {0: "a:1", 5: "b:2"}})
        theirs = tf.train.ServerDef(cluster=spec.as_cluster_def(), job_name="w",
                                    task_index=5, protocol="grpc")
        ours = p.convert(theirs, p.ServerDef)
        assert ours.cluster.job[0].tasks[5] == "b:2" and ours.task_index == 5
        back = tf.train.ServerDef.FromString(ours.SerializeToString())
        assert back == theirs
        # TensorFlow's own objects go straight into tensorwire's cluster model...
        import tensorwire.cluster as twc
        assert twc.ClusterSpec(spec).as_dict() == {"w": {0: "a:1", 5: "b:2"}}
        config = tf.compat.v1.ConfigProto(
            operation_timeout_in_ms=3,
            gpu_options=tf.compat.v1.GPUOptions(per_process_gpu_memory_fraction=0.25))
        made = twc.make_server_def(theirs, config=config)
        assert made.default_session_config.operation_timeout_in_ms == 3
        # ...and what tensorwire does not know (gpu_options) reaches TensorFlow intact.
        again = tf.train.ServerDef.FromString(made.SerializeToString())
        assert again.default_session_config.gpu_options.per_process_gpu_memory_fraction == 0.25
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(SRC), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [os.environ["TENSORWIRE_TF_PYTHON"], "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_convert_passes_own_instances_through_and_refuses_other_messages():
    server_def = protos.ServerDef(job_name="a")
    assert protos.convert(server_def, protos.ServerDef) is server_def
    with pytest.raises(TypeError, match="expected a tensorflow.ServerDef protocol buffer"):
        protos.convert(protos.ClusterDef(), protos.ServerDef)
    with pytest.raises(TypeError, match="tensorflow.ConfigProto"):
        protos.convert({"operation_timeout_in_ms": 5}, protos.ConfigProto)


def test_convert_reads_a_foreign_class_of_the_same_full_name_through_bytes():
    # A message class of the same full name from another pool stands in for TensorFlow's.
    from google.protobuf import descriptor_pb2, message_factory

    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto()
    protos.ConfigProto.DESCRIPTOR.file.CopyToProto(file_proto)
    for dependency in protos.ConfigProto.DESCRIPTOR.file.dependencies:
        dep_proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(dep_proto)
        pool.Add(dep_proto)
    pool.Add(file_proto)
    foreign_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.ConfigProto")
    )
    foreign = foreign_class(operation_timeout_in_ms=42)
    converted = protos.convert(foreign, protos.ConfigProto)
    assert type(converted) is protos.ConfigProto
    assert converted.operation_timeout_in_ms == 42


@pytest.mark.parametrize("path", sorted(PROTO_DIR.glob("*_pb2.py")), ids=lambda p: p.name)
def test_generated_modules_come_from_the_oldest_toolchain_and_use_our_pool(path):
    text = path.read_text()
    # protoc 25 (grpcio-tools 1.62) output runs on protobuf>=4.25; newer protoc output does not.
    assert "# Protobuf Python Version: 4.25." in text
    assert "_tensorwire_pool.POOL.AddSerializedFile(" in text
    assert "_descriptor_pool.Default()" not in text
    assert path.with_suffix(".pyi").exists()
    assert path.with_name(path.name.replace("_pb2.py", ".proto")).exists()
