"""Write the TensorFlow wire fixtures in tf_fixtures/ (run by hand; not a test).

The fixtures prove wire compatibility both ways: bytes serialized by TensorFlow parse in
tensorwire with the same values, and bytes serialized by tensorwire parse in TensorFlow with
the same values. The values live once, below, as protobuf JSON dicts, so both sides build
their messages from the same description.

Run from the repository root, TensorFlow side in a SEPARATE virtualenv (never the dev one):

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu
    /tmp/tfenv/bin/python packages/core/tests/protos/make_tf_fixtures.py --side tensorflow
    /work/venv/bin/python  packages/core/tests/protos/make_tf_fixtures.py --side tensorwire
    /tmp/tfenv/bin/python packages/core/tests/protos/make_tf_fixtures.py --side tensorflow

Files, per fixture NAME:
    NAME.tf.pb      TensorFlow's serialization (deterministic) of the values
    NAME.tf.txt     TensorFlow's text format of its message
    NAME.tw.pb      tensorwire's serialization (deterministic) of the same values
    NAME.tw.tf.txt  TensorFlow's text format after parsing NAME.tw.pb (reverse direction)
and for the unknown-field round trip (a ConfigProto with TensorFlow fields tensorwire does
not declare): config_unknown_fields.roundtrip.tw.pb (TensorFlow's bytes parsed and
re-serialized by tensorwire) and its .tf.txt (what TensorFlow reads back from it).
server_lib_make_server_def.json records what TensorFlow's own ``_make_server_def`` returns
for a few inputs (text format), compared against ``tensorwire.cluster.make_server_def``.
manifest.json records the versions that wrote the files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "tf_fixtures"

SERVER_DEF_DENSE = {
    "cluster": {
        "job": [
            {"name": "ps", "tasks": {"0": "ps0:2222", "1": "ps1:2222"}},
            {"name": "worker", "tasks": {"0": "w0:2222", "1": "w1:2222", "2": "w2:2222"}},
        ]
    },
    "job_name": "worker",
    "replica": 1,
    "task_index": 2,
    "protocol": "grpc",
    "port": 2345,
    "default_session_config": {
        "device_count": {"CPU": 2, "GPU": 0},
        "intra_op_parallelism_threads": 4,
        "inter_op_parallelism_threads": 2,
        "use_per_session_threads": True,
        "device_filters": ["/job:ps", "/job:worker/task:2"],
        "allow_soft_placement": True,
        "log_device_placement": True,
        "operation_timeout_in_ms": "60000",
        "rpc_options": {
            "use_rpc_for_inprocess_master": True,
            "compression_algorithm": "deflate",
            "compression_level": 2,
            "cache_rpc_response": True,
            "disable_session_connection_sharing": True,
            "num_channels_per_target": 3,
        },
        "cluster_def": {"job": [{"name": "local", "tasks": {"0": "localhost:2222"}}]},
        "isolate_session_state": True,
        "share_cluster_devices_in_session": True,
        "experimental": {
            "collective_group_leader": "/job:worker/replica:0/task:0",
            "executor_type": "SINGLE_THREADED_EXECUTOR",
            "recv_buf_max_chunk": 4096,
            "use_numa_affinity": True,
            "share_session_state_in_clusterspec_propagation": True,
            "disable_thread_spinning": True,
            "share_cluster_devices_in_session": True,
            "session_metadata": {"name": "trainer", "version": "7"},
        },
    },
    "cluster_device_filters": {
        "jobs": [
            {
                "name": "worker",
                "tasks": {
                    "0": {"device_filters": ["/job:ps"]},
                    "2": {"device_filters": ["/job:ps", "/job:worker/task:2"]},
                },
            }
        ]
    },
}

SERVER_DEF_SPARSE = {
    "cluster": {
        "job": [
            {"name": "ps", "tasks": {"0": "ps0:2222"}},
            {"name": "worker", "tasks": {"1": "w1:2222", "7": "w7:2222"}},
        ]
    },
    "job_name": "worker",
    "task_index": 7,
    "protocol": "grpc+verbs",
    "default_session_config": {
        "operation_timeout_in_ms": "5",
        "rpc_options": {"num_channels_per_target": 1},
    },
}

CLUSTER_DEF = {
    "job": [
        {"name": "chief", "tasks": {"0": "chief0:2222"}},
        {"name": "evaluator", "tasks": {}},
        {"name": "worker", "tasks": {"0": "w0:2222", "3": "w3:2222"}},
    ]
}

DISPATCHER_CONFIG = {
    "port": "5050",
    "protocol": "grpc",
    "work_dir": "/tmp/dispatcher",
    "fault_tolerant_mode": True,
    "worker_addresses": ["w0:6000", "w1:6000"],
    "deployment_mode": "DEPLOYMENT_MODE_REMOTE",
    "job_gc_check_interval_ms": "600000",
    "job_gc_timeout_ms": "300000",
    "gc_dynamic_sharding_jobs": True,
    "client_timeout_ms": "60000",
    "worker_timeout_ms": "30000",
    "worker_max_concurrent_snapshots": "3",
}

WORKER_CONFIG = {
    "port": "6000",
    "protocol": "grpc",
    "dispatcher_address": "dispatcher:5050",
    "worker_address": "w0:%port%",
    "worker_tags": ["COLOCATED", "gpu"],
    "heartbeat_interval_ms": "30000",
    "dispatcher_timeout_ms": "3600000",
    "data_transfer_protocol": "grpc",
    "data_transfer_port": "6001",
    "data_transfer_address": "w0:%dts_port%",
    "cross_trainer_cache_size_bytes": "10737418240",
    "snapshot_max_chunk_size_bytes": "6442450944",
    "shutdown_quiet_period_ms": "2000",
}

PROCESSING_MODE_DEF = {"sharding_policy": "FILE_OR_DATA"}

DATA_SERVICE_METADATA = {
    "element_spec": "AAEC/w==",  # bytes 00 01 02 ff
    "compression": "COMPRESSION_SNAPPY",
    "cardinality": "-2",
}

#: name -> (full message name, JSON values)
FIXTURES: dict[str, tuple[str, dict]] = {
    "server_def_dense": ("tensorflow.ServerDef", SERVER_DEF_DENSE),
    "server_def_sparse": ("tensorflow.ServerDef", SERVER_DEF_SPARSE),
    "cluster_def": ("tensorflow.ClusterDef", CLUSTER_DEF),
    "dispatcher_config": ("tensorflow.data.experimental.DispatcherConfig", DISPATCHER_CONFIG),
    "worker_config": ("tensorflow.data.experimental.WorkerConfig", WORKER_CONFIG),
    "processing_mode_def": ("tensorflow.data.ProcessingModeDef", PROCESSING_MODE_DEF),
    "data_service_metadata": ("tensorflow.data.DataServiceMetadata", DATA_SERVICE_METADATA),
}

#: A ConfigProto with fields tensorwire declares and fields it does not (gpu_options,
#: graph_options, experimental.use_tfrt): the latter must survive tensorwire untouched.
CONFIG_UNKNOWN_FIELDS = {
    "operation_timeout_in_ms": "1500",
    "gpu_options": {"per_process_gpu_memory_fraction": 0.5, "allow_growth": True},
    "graph_options": {"build_cost_model": "3"},
    "experimental": {"collective_group_leader": "/job:chief/task:0", "use_tfrt": True},
}

#: Inputs to TensorFlow's server_lib._make_server_def:
#: (case name, cluster dict, job_name, task_index, protocol, config JSON or None).
MAKE_SERVER_DEF_CASES = [
    ("single_task_inferred", {"local": ["localhost:2222"]}, None, None, None, None),
    ("sparse_single_task_inferred", {"local": {37: "localhost:0"}}, None, None, None, None),
    (
        "explicit_with_config",
        {"ps": ["ps0:1", "ps1:1"], "worker": {2: "w2:1"}},
        "ps",
        1,
        "grpc+verbs",
        {"operation_timeout_in_ms": "9", "device_filters": ["/job:ps"]},
    ),
    ("job_inferred_task_explicit", {"worker": ["w0:1", "w1:1"]}, None, 1, None, None),
]


def _json_format():
    from google.protobuf import json_format

    return json_format


def tensorflow_side() -> None:
    import google.protobuf
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow.core.protobuf import (  # noqa: F401 - registers the classes
        cluster_pb2,
        config_pb2,
        data_service_pb2,
        service_config_pb2,
        tensorflow_server_pb2,
    )
    from tensorflow.python.training import server_lib

    classes = {
        "tensorflow.ServerDef": tensorflow_server_pb2.ServerDef,
        "tensorflow.ClusterDef": cluster_pb2.ClusterDef,
        "tensorflow.ConfigProto": config_pb2.ConfigProto,
        "tensorflow.data.experimental.DispatcherConfig": service_config_pb2.DispatcherConfig,
        "tensorflow.data.experimental.WorkerConfig": service_config_pb2.WorkerConfig,
        "tensorflow.data.ProcessingModeDef": data_service_pb2.ProcessingModeDef,
        "tensorflow.data.DataServiceMetadata": data_service_pb2.DataServiceMetadata,
    }
    json_format = _json_format()
    OUT.mkdir(exist_ok=True)

    def text(message) -> str:
        return text_format.MessageToString(message)

    for name, (full_name, values) in FIXTURES.items():
        message = json_format.ParseDict(values, classes[full_name]())
        (OUT / f"{name}.tf.pb").write_bytes(message.SerializeToString(deterministic=True))
        (OUT / f"{name}.tf.txt").write_text(text(message))
        ours = OUT / f"{name}.tw.pb"
        if ours.exists():
            (OUT / f"{name}.tw.tf.txt").write_text(
                text(classes[full_name].FromString(ours.read_bytes()))
            )

    # The ClusterDef also goes through TensorFlow's own ClusterSpec, for as_dict parity.
    spec = server_lib.ClusterSpec(json_format.ParseDict(CLUSTER_DEF, cluster_pb2.ClusterDef()))
    (OUT / "cluster_def.tf_cluster_spec.json").write_text(
        json.dumps(
            {
                "repr": repr(spec),
                "as_dict": {k: v for k, v in spec.as_dict().items()},
                "jobs": spec.jobs,
            },
            indent=1,
            default=str,
        )
        + "\n"
    )

    config = json_format.ParseDict(CONFIG_UNKNOWN_FIELDS, config_pb2.ConfigProto())
    (OUT / "config_unknown_fields.tf.pb").write_bytes(config.SerializeToString(deterministic=True))
    (OUT / "config_unknown_fields.tf.txt").write_text(text(config))
    roundtrip = OUT / "config_unknown_fields.roundtrip.tw.pb"
    if roundtrip.exists():
        (OUT / "config_unknown_fields.roundtrip.tw.tf.txt").write_text(
            text(config_pb2.ConfigProto.FromString(roundtrip.read_bytes()))
        )

    cases = {}
    for case, cluster, job_name, task_index, protocol, config_values in MAKE_SERVER_DEF_CASES:
        config_proto = (
            None
            if config_values is None
            else json_format.ParseDict(config_values, config_pb2.ConfigProto())
        )
        server_def = server_lib._make_server_def(  # noqa: SLF001 - the behaviour we mirror
            cluster, job_name, task_index, protocol, config_proto
        )
        cases[case] = text(server_def)
    (OUT / "server_lib_make_server_def.json").write_text(json.dumps(cases, indent=1) + "\n")

    (OUT / "manifest.json").write_text(
        json.dumps(
            {
                "tensorflow": tf.__version__,
                "protobuf": google.protobuf.__version__,
                "written_by": "packages/core/tests/protos/make_tf_fixtures.py --side tensorflow",
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote TensorFlow {tf.__version__} fixtures to {OUT}")


def tensorwire_side() -> None:
    from tensorwire import protos

    json_format = _json_format()
    OUT.mkdir(exist_ok=True)
    classes = {
        getattr(protos, n).DESCRIPTOR.full_name: getattr(protos, n)
        for n in protos.__all__
        if hasattr(getattr(protos, n), "DESCRIPTOR")
    }
    for name, (full_name, values) in FIXTURES.items():
        message = json_format.ParseDict(values, classes[full_name]())
        (OUT / f"{name}.tw.pb").write_bytes(message.SerializeToString(deterministic=True))
    source = OUT / "config_unknown_fields.tf.pb"
    if source.exists():
        config = protos.ConfigProto.FromString(source.read_bytes())
        (OUT / "config_unknown_fields.roundtrip.tw.pb").write_bytes(
            config.SerializeToString(deterministic=True)
        )
    else:
        print("config_unknown_fields.tf.pb missing: run --side tensorflow first", file=sys.stderr)
    print(f"wrote tensorwire fixtures to {OUT}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=["tensorflow", "tensorwire"], required=True)
    args = parser.parse_args()
    tensorflow_side() if args.side == "tensorflow" else tensorwire_side()


if __name__ == "__main__":
    main()
