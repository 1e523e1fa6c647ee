"""make_server_def (tf.distribute.Server's _make_server_def) and validate_server_def."""

from __future__ import annotations

import pytest
from tensorwire import errors
from tensorwire.cluster import ClusterSpec, make_server_def, validate_server_def
from tensorwire.protos import ConfigProto, RPCOptions, ServerDef

# ------------------------------------------------------------ inference and defaults


def test_single_job_single_task_is_inferred_with_grpc_default():
    server_def = make_server_def({"local": ["localhost:2222"]})
    assert (server_def.job_name, server_def.task_index, server_def.protocol) == ("local", 0, "grpc")
    assert ClusterSpec(server_def.cluster) == ClusterSpec({"local": ["localhost:2222"]})


def test_sparse_single_task_index_is_inferred():
    # TensorFlow's SparseJobTest: Server({"local": {37: "localhost:0"}}) is task 37.
    server_def = make_server_def({"local": {37: "localhost:0"}})
    assert (server_def.job_name, server_def.task_index) == ("local", 37)


def test_job_inferred_task_explicit():
    server_def = make_server_def({"worker": ["a:1", "b:1"]}, task_index=1)
    assert (server_def.job_name, server_def.task_index) == ("worker", 1)


def test_task_inferred_in_the_named_job():
    server_def = make_server_def({"ps": ["p:1"], "worker": ["a:1", "b:1"]}, job_name="ps")
    assert (server_def.job_name, server_def.task_index) == ("ps", 0)


@pytest.mark.parametrize(
    "cluster_input",
    [
        {"local": ["localhost:2222"]},
        ClusterSpec({"local": ["localhost:2222"]}),
        ClusterSpec({"local": ["localhost:2222"]}).as_cluster_def(),
    ],
    ids=["dict", "ClusterSpec", "ClusterDef"],
)
def test_every_cluster_form_gives_the_same_server_def(cluster_input):
    assert make_server_def(cluster_input) == ServerDef(
        cluster=ClusterSpec({"local": ["localhost:2222"]}).as_cluster_def(),
        job_name="local",
        task_index=0,
        protocol="grpc",
    )


def test_explicit_arguments_are_used():
    server_def = make_server_def(
        {"ps": ["p:1"], "worker": ["a:1", "b:1"]}, "worker", 1, "grpc+verbs"
    )
    assert (server_def.job_name, server_def.task_index, server_def.protocol) == (
        "worker",
        1,
        "grpc+verbs",
    )


# ------------------------------------------------------------ errors


def test_several_jobs_need_an_explicit_job_name():
    with pytest.raises(ValueError) as info:
        make_server_def({"ps": ["p:1"], "worker": ["w:1"]})
    assert str(info.value) == "Must specify an explicit `job_name`."


def test_empty_cluster_needs_an_explicit_job_name():
    with pytest.raises(ValueError, match=r"^Must specify an explicit `job_name`\.$"):
        make_server_def({})


def test_several_tasks_need_an_explicit_task_index():
    with pytest.raises(ValueError) as info:
        make_server_def({"worker": ["a:1", "b:1"]})
    assert str(info.value) == "Must specify an explicit `task_index`."


def test_several_sparse_tasks_need_an_explicit_task_index():
    with pytest.raises(ValueError, match=r"^Must specify an explicit `task_index`\.$"):
        make_server_def({"worker": {3: "a:1", 9: "b:1"}})


def test_job_without_tasks_needs_an_explicit_task_index():
    with pytest.raises(ValueError, match=r"^Must specify an explicit `task_index`\.$"):
        make_server_def({"worker": []})


def test_unknown_job_name_when_inferring_the_task():
    with pytest.raises(ValueError, match=r"^No such job in cluster: 'ps'$"):
        make_server_def({"worker": ["a:1"]}, job_name="ps")


@pytest.mark.parametrize("bad", [["a:1"], "a:1", 3, None, {"w": "a:1"}])
def test_unconvertible_input_raises_tensorflows_type_error(bad):
    with pytest.raises(TypeError) as info:
        make_server_def(bad)
    assert str(info.value) == (
        "Could not convert `server_or_cluster_def` to a `tf.train.ServerDef` or "
        "`tf.train.ClusterSpec`."
    )


# ------------------------------------------------------------ ServerDef input


def _server_def() -> ServerDef:
    return ServerDef(
        cluster=ClusterSpec({"ps": ["p:1"], "worker": ["a:1", "b:1"]}).as_cluster_def(),
        job_name="worker",
        task_index=1,
        protocol="grpc+verbs",
        port=7777,
        replica=2,
        default_session_config=ConfigProto(operation_timeout_in_ms=10, device_filters=["/job:ps"]),
    )


def test_server_def_input_keeps_all_its_fields():
    original = _server_def()
    result = make_server_def(original)
    assert result == original
    assert result is not original  # a copy: the caller's message is not shared


def test_server_def_input_does_not_default_the_protocol():
    assert make_server_def(ServerDef(job_name="w")).protocol == ""


def test_arguments_override_server_def_fields():
    result = make_server_def(_server_def(), job_name="ps", task_index=0, protocol="grpc")
    assert (result.job_name, result.task_index, result.protocol) == ("ps", 0, "grpc")
    assert (result.port, result.replica) == (7777, 2)


def test_config_merges_into_the_server_defs_config():
    # TensorFlow's testSetConfiguration, with a field we declare.
    config = ConfigProto(
        operation_timeout_in_ms=99,
        rpc_options=RPCOptions(compression_algorithm="gzip"),
        device_filters=["/job:worker"],
    )
    result = make_server_def(_server_def(), config=config)
    merged = result.default_session_config
    assert merged.operation_timeout_in_ms == 99  # scalar: overridden
    assert list(merged.device_filters) == ["/job:ps", "/job:worker"]  # repeated: appended
    assert merged.rpc_options.compression_algorithm == "gzip"


def test_config_merges_into_a_cluster_server_def():
    config = ConfigProto(operation_timeout_in_ms=5)
    result = make_server_def({"local": ["localhost:0"]}, config=config)
    assert result.default_session_config.operation_timeout_in_ms == 5


def test_caller_server_def_is_not_mutated_by_overrides():
    original = _server_def()
    make_server_def(original, job_name="ps", config=ConfigProto(operation_timeout_in_ms=1))
    assert original.job_name == "worker"
    assert original.default_session_config.operation_timeout_in_ms == 10


def test_bad_config_type_is_a_type_error():
    with pytest.raises(TypeError, match="tensorflow.ConfigProto"):
        make_server_def({"local": ["l:1"]}, config={"operation_timeout_in_ms": 5})


# ------------------------------------------------------------ validate_server_def


def test_validate_returns_the_host_and_port_of_the_task():
    server_def = make_server_def({"worker": ["a:1", "hostb:2345"]}, task_index=1)
    assert validate_server_def(server_def) == ("hostb", 2345)


def test_validate_port_zero_means_any_port():
    assert validate_server_def(make_server_def({"local": ["localhost:0"]})) == ("localhost", 0)


def test_validate_server_def_port_overrides_the_address_port():
    server_def = make_server_def({"local": ["localhost:2222"]})
    server_def.port = 3333
    assert validate_server_def(server_def) == ("localhost", 3333)


def test_validate_ipv6_address():
    assert validate_server_def(make_server_def({"l": ["[::1]:80"]})) == ("::1", 80)


def test_validate_ipv6_host_without_port_takes_the_server_def_port():
    server_def = make_server_def({"l": ["[::1]"]})
    server_def.port = 3333
    assert validate_server_def(server_def) == ("::1", 3333)


def test_validate_address_without_port_is_invalid_argument_mentioning_port():
    # TensorFlow's testInvalidHostname: InvalidArgumentError matching "port".
    server_def = make_server_def({"local": ["localhost"]}, job_name="local", task_index=0)
    with pytest.raises(errors.InvalidArgumentError, match="port") as info:
        validate_server_def(server_def)
    assert "localhost" in str(info.value)


def test_validate_unknown_job_or_task():
    server_def = make_server_def({"local": ["localhost:1"]})
    server_def.job_name = "ps"
    with pytest.raises(errors.InvalidArgumentError, match='Job "ps" was not defined in cluster'):
        validate_server_def(server_def)
    server_def = make_server_def({"local": {3: "localhost:1"}}, task_index=4)
    with pytest.raises(errors.InvalidArgumentError, match='Task 4 was not defined in job "local"'):
        validate_server_def(server_def)


def test_validate_requires_a_protocol():
    server_def = make_server_def({"local": ["localhost:1"]})
    server_def.protocol = ""
    with pytest.raises(errors.InvalidArgumentError, match="protocol"):
        validate_server_def(server_def)


@pytest.mark.parametrize("address", ["h:70000", "h:-1", "h:http"])
def test_validate_bad_port(address):
    with pytest.raises(errors.InvalidArgumentError, match="Could not parse port"):
        validate_server_def(make_server_def({"l": [address]}))
