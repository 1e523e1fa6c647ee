"""Cluster resolvers: TF_CONFIG (TensorFlow's TFConfigClusterResolverTest cases) and SLURM."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tensorwire.cluster import (
    ClusterResolution,
    ClusterSpec,
    SlurmClusterResolver,
    TFConfigClusterResolver,
    expand_hostlist,
    expand_tasks_per_node,
    resolve_slurm,
    resolve_tf_config,
)
from tensorwire.protos import ClusterDef

TWO_JOBS = {
    "ps": ["ps0:2222", "ps1:2222"],
    "worker": ["worker0:2222", "worker1:2222", "worker2:2222"],
}


def tf_config(**config) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps(config)}


# ------------------------------------------------------------ TF_CONFIG, TensorFlow's cases


def test_normal_cluster_spec_read(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": TWO_JOBS, "task": {"type": "ps", "index": 0}})
    )
    spec = TFConfigClusterResolver().cluster_spec()
    expected = ClusterDef()
    text_format.Parse(
        """
        job { name: 'ps' tasks { key: 0 value: 'ps0:2222' } tasks { key: 1 value: 'ps1:2222' } }
        job { name: 'worker' tasks { key: 0 value: 'worker0:2222' }
                             tasks { key: 1 value: 'worker1:2222' }
                             tasks { key: 2 value: 'worker2:2222' } }
    """,
        expected,
    )
    assert spec.as_cluster_def() == expected
    assert ClusterSpec(spec).as_cluster_def() == expected
    assert ClusterSpec(spec.as_cluster_def()).as_cluster_def() == expected
    assert ClusterSpec(spec.as_dict()).as_cluster_def() == expected


def test_automatic_master_read():
    env = tf_config(cluster=TWO_JOBS, task={"type": "ps", "index": 0})
    assert TFConfigClusterResolver(environ=env).master() == "ps0:2222"


def test_specified_task_type_and_index_master_read():
    env = tf_config(cluster=TWO_JOBS, task={"type": "ps", "index": 0})
    assert TFConfigClusterResolver(environ=env).master("worker", 1) == "worker1:2222"


def test_session_master_read():
    env = tf_config(
        cluster=TWO_JOBS, session_master="sessionmaster:2222", task={"type": "ps", "index": 0}
    )
    assert TFConfigClusterResolver(environ=env).master() == "sessionmaster:2222"


def test_rpc_layer_read():
    env = tf_config(cluster=TWO_JOBS, rpc_layer="grpc", task={"type": "ps", "index": 0})
    assert TFConfigClusterResolver(environ=env).master() == "grpc://ps0:2222"


def test_task_type_index_rpc_read():
    env = tf_config(cluster=TWO_JOBS, rpc_layer="grpc", task={"type": "ps", "index": 0})
    resolver = TFConfigClusterResolver(environ=env)
    assert (resolver.task_type, resolver.task_id, resolver.rpc_layer) == ("ps", 0, "grpc")


def test_parameter_overrides():
    env = tf_config(cluster=TWO_JOBS, rpc_layer="grpc", task={"type": "ps", "index": 1})
    resolver = TFConfigClusterResolver(task_type="ps", task_id=0, environ=env)
    assert resolver.master() == "grpc://ps0:2222"
    assert (resolver.task_type, resolver.task_id) == ("ps", 0)

    resolver.task_type = "worker"
    resolver.task_id = 1
    resolver.rpc_layer = "test"
    assert resolver.master() == "test://worker1:2222"
    assert (resolver.task_type, resolver.task_id, resolver.rpc_layer) == ("worker", 1, "test")


def test_task_type_cast_to_string():
    env = tf_config(
        cluster={"123456": ["ps0:2222", "ps1:2222"], "worker": ["w:1"]},
        rpc_layer="grpc",
        task={"type": 123456, "index": 0},
    )
    assert TFConfigClusterResolver(environ=env).task_type == "123456"


def test_task_index_cast_to_integer():
    env = tf_config(cluster=TWO_JOBS, rpc_layer="grpc", task={"type": "ps", "index": "1"})
    assert TFConfigClusterResolver(environ=env).task_id == 1


def test_task_index_override():
    env = tf_config(
        cluster={"worker": ["worker0:2222", "worker1:2222"]}, task={"type": "worker", "index": "0"}
    )
    assert TFConfigClusterResolver(task_id=1, environ=env).task_id == 1


def test_zero_items_in_cluster_spec_master_read():
    assert TFConfigClusterResolver(environ={"TF_CONFIG": "{}"}).master() == ""


def test_one_item_in_cluster_spec_master_read():
    env = tf_config(cluster={"worker": ["worker0:2222"]})
    assert TFConfigClusterResolver(environ=env).master() == ""


# ------------------------------------------------------------ resolve_tf_config


def test_resolve_tf_config_returns_what_a_server_needs():
    env = tf_config(
        cluster={"chief": ["c:1"], "worker": {"1": "w1:1"}},
        task={"type": "worker", "index": 1},
        rpc_layer="grpc",
        environment="cloud",
    )
    resolution = resolve_tf_config(env)
    assert isinstance(resolution, ClusterResolution)
    spec, job, index, layer = resolution
    assert spec == ClusterSpec({"chief": ["c:1"], "worker": {1: "w1:1"}})
    assert (job, index, layer) == ("worker", 1, "grpc")
    assert TFConfigClusterResolver(environ=env).environment == "cloud"
    assert TFConfigClusterResolver(environment="gcp", environ=env).environment == "gcp"


def test_resolve_tf_config_reads_os_environ(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"w": ["a:1"]}, "task": {"type": "w", "index": 0}})
    )
    assert resolve_tf_config().job_name == "w"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_tf_config_is_an_empty_resolution(value):
    env = {} if value is None else {"TF_CONFIG": value}
    assert resolve_tf_config(env) == (ClusterSpec({}), None, None, None)


def test_task_outside_the_cluster_is_returned_as_given():
    # An evaluator often appears only in "task", as TensorFlow allows.
    env = tf_config(cluster={"worker": ["w:1"]}, task={"type": "evaluator", "index": 0})
    assert resolve_tf_config(env)[1:3] == ("evaluator", 0)


def test_malformed_json_names_the_variable_and_the_place():
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON \(.* line 1 column"):
        resolve_tf_config({"TF_CONFIG": '{"cluster": {'})


def test_json_that_is_not_an_object():
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object, got list"):
        resolve_tf_config({"TF_CONFIG": "[1, 2]"})


def test_bad_cluster_section():
    with pytest.raises(ValueError, match="'cluster' must map job names"):
        resolve_tf_config(tf_config(cluster=["a:1"]))
    with pytest.raises(ValueError, match="'cluster' is invalid: The tasks for job 'w'"):
        resolve_tf_config(tf_config(cluster={"w": "a:1"}))


def test_bad_task_section():
    with pytest.raises(ValueError, match="'task' must be an object"):
        resolve_tf_config(tf_config(cluster={"w": ["a:1"]}, task="w"))
    with pytest.raises(ValueError, match="task index must be an integer, got 'zero'"):
        resolve_tf_config(tf_config(cluster={"w": ["a:1"]}, task={"type": "w", "index": "zero"}))


def test_master_without_task_section_says_what_is_missing():
    env = tf_config(cluster=TWO_JOBS)
    with pytest.raises(ValueError, match="no 'task' section"):
        TFConfigClusterResolver(environ=env).master()


# ------------------------------------------------------------ SLURM hostlists


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("n[1-2],m5,o[3-4,6,7-9]", ["n1", "n2", "m5", "o3", "o4", "o6", "o7", "o8", "o9"]),
        ("host", ["host"]),
        ("a,b,a", ["a", "b", "a"]),
        ("node[9-11]", ["node9", "node10", "node11"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("gpu-[008-010]-ib", ["gpu-008-ib", "gpu-009-ib", "gpu-010-ib"]),
        ("[1-2]", ["1", "2"]),
    ],
)
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize(
    "bad", ["n[1-", "n]1[", "n[[1]]", "n[a-b]", "n[3-1]", "a,,b", "a,", "n[1-2-3]"]
)
def test_expand_hostlist_errors_name_the_hostlist(bad):
    with pytest.raises(ValueError, match="Invalid hostlist") as info:
        expand_hostlist(bad)
    assert repr(bad) in str(info.value)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("3(x2),2,1") == [3, 3, 2, 1]
    assert expand_tasks_per_node("4") == [4]
    with pytest.raises(ValueError, match="Invalid tasks-per-node list '2\\(x\\)'"):
        expand_tasks_per_node("2(x)")


# ------------------------------------------------------------ SLURM resolution


def slurm_env(procid, nodelist="node[01-02]", tasks_per_node="2(x2)", ntasks="4", step=True):
    prefix = "SLURM_STEP_" if step else "SLURM_"
    env = {"SLURM_PROCID": str(procid)}
    env[f"{prefix}NODELIST" if step else "SLURM_JOB_NODELIST"] = nodelist
    env[f"{prefix}TASKS_PER_NODE"] = tasks_per_node
    env["SLURM_STEP_NUM_TASKS" if step else "SLURM_NTASKS"] = ntasks
    return env


def test_default_is_one_worker_job_with_every_task():
    spec, job, index, layer = resolve_slurm(environ=slurm_env(3))
    assert spec.as_dict() == {
        "worker": ["node01:8888", "node01:8889", "node02:8888", "node02:8889"]
    }
    assert (job, index, layer) == ("worker", 3, "grpc")


def test_jobs_take_ranks_in_job_name_order_like_tensorflow():
    jobs = {"worker": 3, "ps": 1}
    spec, job, index, _ = resolve_slurm(jobs, environ=slurm_env(0), port_base=2000)
    assert spec.as_dict() == {
        "ps": ["node01:2000"],
        "worker": ["node01:2001", "node02:2000", "node02:2001"],
    }
    assert (job, index) == ("ps", 0)
    assert resolve_slurm(jobs, environ=slurm_env(2))[1:3] == ("worker", 1)


def test_job_level_variables_are_used_outside_a_step():
    resolution = resolve_slurm(environ=slurm_env(1, "c[1-3]", "1(x3)", "3", step=False))
    assert resolution.cluster_spec.as_dict() == {"worker": ["c1:8888", "c2:8888", "c3:8888"]}
    assert resolution.task_index == 1


def test_uneven_tasks_per_node_follow_node_list_order():
    env = slurm_env(4, "node[9-10]", "3,2", "5")
    spec, _, index, _ = resolve_slurm({"worker": 5}, environ=env)
    assert spec.job_tasks("worker") == [
        "node9:8888",
        "node9:8889",
        "node9:8890",
        "node10:8888",
        "node10:8889",
    ]
    assert index == 4


def test_tasks_per_node_argument_int_and_mapping():
    env = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "a,b"}
    assert resolve_slurm({"w": 4}, tasks_per_node=2, environ=env).cluster_spec.as_dict() == {
        "w": ["a:8888", "a:8889", "b:8888", "b:8889"]
    }
    explicit = resolve_slurm(
        {"w": 3}, tasks_per_node={"x": 1, "y": 2}, environ={"SLURM_PROCID": "2"}
    )
    assert explicit.cluster_spec.as_dict() == {"w": ["x:8888", "y:8888", "y:8889"]}
    assert explicit.task_index == 2


def test_more_tasks_requested_than_assigned_is_tensorflows_runtime_error():
    with pytest.raises(RuntimeError, match=r"^Requested 5 tasks but only 4 were assigned\.$"):
        resolve_slurm({"worker": 5}, environ=slurm_env(0))


def test_missing_procid_says_not_in_a_slurm_step():
    with pytest.raises(
        RuntimeError,
        match="SLURM_PROCID not found in environment. Not running inside a SLURM step?",
    ):
        resolve_slurm(environ={})


def test_missing_nodelist_names_every_variable_tried():
    with pytest.raises(RuntimeError, match="SLURM_STEP_NODELIST or SLURM_JOB_NODELIST"):
        resolve_slurm(environ={"SLURM_PROCID": "0"})


def test_node_count_mismatch():
    with pytest.raises(ValueError, match="node list has 2 nodes but tasks per node lists 1"):
        resolve_slurm(environ=slurm_env(0, "n[1-2]", "2", "4"))


def test_rank_outside_the_step():
    with pytest.raises(ValueError, match="SLURM_PROCID 9 is outside the 4 tasks"):
        resolve_slurm(environ=slurm_env(9))


def test_bad_procid():
    with pytest.raises(ValueError, match="SLURM_PROCID must be an integer, got 'x'"):
        resolve_slurm(environ=slurm_env("x"))


def test_slurm_cluster_resolver_object():
    resolver = SlurmClusterResolver({"ps": 1, "worker": 3}, port_base=9000, environ=slurm_env(1))
    assert resolver.get_task_info() == ("worker", 0)
    assert resolver.cluster_spec().task_address("ps", 0) == "node01:9000"
    assert resolver.master() == "grpc://node01:9001"
    assert resolver.master("ps", 0, rpc_layer="grpc+verbs") == "grpc+verbs://node01:9000"
    assert resolver.resolve().job_name == "worker"
