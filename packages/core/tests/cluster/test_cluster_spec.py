"""ClusterSpec: TensorFlow's ClusterSpecTest and ServerDefTest expectations, and the edges."""

from __future__ import annotations

import pytest
import tensorwire as tw
from google.protobuf import text_format
from tensorwire.cluster import ClusterSpec
from tensorwire.protos import ClusterDef, ServerDef


def assert_proto_equals(expected_text: str | ClusterDef, message) -> None:
    """Like TensorFlow's assertProtoEquals: text format (or a message) against a message."""
    if isinstance(expected_text, str):
        expected = type(message)()
        text_format.Parse(expected_text, expected)
    else:
        expected = expected_text
    assert message == expected, text_format.MessageToString(message)


# ------------------------------------------------------------ TensorFlow's ServerDefTest


def test_local_server():
    cluster_def = ClusterSpec({"local": ["localhost:2222"]}).as_cluster_def()
    server_def = ServerDef(cluster=cluster_def, job_name="local", task_index=0, protocol="grpc")
    assert_proto_equals(
        """
        cluster { job { name: 'local' tasks { key: 0 value: 'localhost:2222' } } }
        job_name: 'local' task_index: 0 protocol: 'grpc'
        """,
        server_def,
    )
    assert_proto_equals(cluster_def, ClusterSpec(cluster_def).as_cluster_def())


def test_two_processes():
    cluster_def = ClusterSpec({"local": ["localhost:2222", "localhost:2223"]}).as_cluster_def()
    server_def = ServerDef(cluster=cluster_def, job_name="local", task_index=1, protocol="grpc")
    assert_proto_equals(
        """
        cluster { job { name: 'local' tasks { key: 0 value: 'localhost:2222' }
                                      tasks { key: 1 value: 'localhost:2223' } } }
        job_name: 'local' task_index: 1 protocol: 'grpc'
        """,
        server_def,
    )
    assert_proto_equals(cluster_def, ClusterSpec(cluster_def).as_cluster_def())


def test_two_jobs():
    cluster_def = ClusterSpec(
        {
            "ps": ["ps0:2222", "ps1:2222"],
            "worker": ["worker0:2222", "worker1:2222", "worker2:2222"],
        }
    ).as_cluster_def()
    server_def = ServerDef(cluster=cluster_def, job_name="worker", task_index=2, protocol="grpc")
    assert_proto_equals(
        """
        cluster {
          job { name: 'ps' tasks { key: 0 value: 'ps0:2222' }
                           tasks { key: 1 value: 'ps1:2222' } }
          job { name: 'worker' tasks { key: 0 value: 'worker0:2222' }
                               tasks { key: 1 value: 'worker1:2222' }
                               tasks { key: 2 value: 'worker2:2222' } }
        }
        job_name: 'worker' task_index: 2 protocol: 'grpc'
        """,
        server_def,
    )
    assert_proto_equals(cluster_def, ClusterSpec(cluster_def).as_cluster_def())


def test_dense_and_sparse_jobs():
    cluster_def = ClusterSpec(
        {
            "ps": ["ps0:2222", "ps1:2222"],
            "worker": {0: "worker0:2222", 2: "worker2:2222"},
        }
    ).as_cluster_def()
    server_def = ServerDef(cluster=cluster_def, job_name="worker", task_index=2, protocol="grpc")
    assert_proto_equals(
        """
        cluster {
          job { name: 'ps' tasks { key: 0 value: 'ps0:2222' }
                           tasks { key: 1 value: 'ps1:2222' } }
          job { name: 'worker' tasks { key: 0 value: 'worker0:2222' }
                               tasks { key: 2 value: 'worker2:2222' } }
        }
        job_name: 'worker' task_index: 2 protocol: 'grpc'
        """,
        server_def,
    )
    assert_proto_equals(cluster_def, ClusterSpec(cluster_def).as_cluster_def())


# ------------------------------------------------------------ TensorFlow's ClusterSpecTest


def test_string_conversion():
    cluster_spec = ClusterSpec({"ps": ["ps0:1111"], "worker": ["worker0:3333", "worker1:4444"]})
    assert str(cluster_spec) == (
        "ClusterSpec({'ps': ['ps0:1111'], 'worker': ['worker0:3333', 'worker1:4444']})"
    )


_TWO_JOBS_PROTO = """
    job { name: 'ps' tasks { key: 0 value: 'ps0:2222' }
                     tasks { key: 1 value: 'ps1:2222' } }
    job { name: 'worker' tasks { key: 0 value: 'worker0:2222' }
                         tasks { key: 1 value: 'worker1:2222' }
                         tasks { key: 2 value: 'worker2:2222' } }
"""


def test_proto_dict_def_equivalences():
    cluster_spec = ClusterSpec(
        {
            "ps": ["ps0:2222", "ps1:2222"],
            "worker": ["worker0:2222", "worker1:2222", "worker2:2222"],
        }
    )
    assert_proto_equals(_TWO_JOBS_PROTO, cluster_spec.as_cluster_def())
    assert_proto_equals(_TWO_JOBS_PROTO, ClusterSpec(cluster_spec).as_cluster_def())
    assert_proto_equals(
        _TWO_JOBS_PROTO, ClusterSpec(cluster_spec.as_cluster_def()).as_cluster_def()
    )
    assert_proto_equals(_TWO_JOBS_PROTO, ClusterSpec(cluster_spec.as_dict()).as_cluster_def())


def test_proto_dict_def_equivalences_with_zero_worker():
    cluster_spec = ClusterSpec({"ps": ["ps0:2222", "ps1:2222"], "worker": []})
    expected = """
        job { name: 'ps' tasks { key: 0 value: 'ps0:2222' }
                         tasks { key: 1 value: 'ps1:2222' } }
        job { name: 'worker' }
    """
    assert_proto_equals(expected, cluster_spec.as_cluster_def())
    assert_proto_equals(expected, ClusterSpec(cluster_spec).as_cluster_def())
    assert_proto_equals(expected, ClusterSpec(cluster_spec.as_cluster_def()).as_cluster_def())
    assert_proto_equals(expected, ClusterSpec(cluster_spec.as_dict()).as_cluster_def())


def test_cluster_spec_accessors():
    original_dict = {
        "ps": ["ps0:2222", "ps1:2222"],
        "worker": ["worker0:2222", "worker1:2222", "worker2:2222"],
        "sparse": {0: "sparse0:2222", 3: "sparse3:2222"},
    }
    cluster_spec = ClusterSpec(original_dict)

    assert cluster_spec.as_dict() == original_dict

    assert cluster_spec.num_tasks("ps") == 2
    assert cluster_spec.num_tasks("worker") == 3
    assert cluster_spec.num_tasks("sparse") == 2
    with pytest.raises(ValueError):
        cluster_spec.num_tasks("unknown")

    assert cluster_spec.task_address("ps", 0) == "ps0:2222"
    assert cluster_spec.task_address("sparse", 0) == "sparse0:2222"
    with pytest.raises(ValueError):
        cluster_spec.task_address("unknown", 0)
    with pytest.raises(ValueError):
        cluster_spec.task_address("sparse", 2)

    assert cluster_spec.task_indices("ps") == [0, 1]
    assert cluster_spec.task_indices("worker") == [0, 1, 2]
    assert cluster_spec.task_indices("sparse") == [0, 3]
    with pytest.raises(ValueError):
        cluster_spec.task_indices("unknown")

    assert cluster_spec.job_tasks("ps") == ["ps0:2222", "ps1:2222"]
    assert cluster_spec.job_tasks("worker") == ["worker0:2222", "worker1:2222", "worker2:2222"]
    assert cluster_spec.job_tasks("sparse") == ["sparse0:2222", None, None, "sparse3:2222"]
    with pytest.raises(ValueError):
        cluster_spec.job_tasks("unknown")


def test_empty_cluster_spec_is_false():
    assert not ClusterSpec({})


def test_non_empty_cluster_spec_is_true():
    assert ClusterSpec({"job": ["host:port"]})


def test_eq():
    assert ClusterSpec({}) == ClusterSpec({})
    assert ClusterSpec({"job": ["host:2222"]}) == ClusterSpec({"job": ["host:2222"]})
    assert ClusterSpec({"job": {0: "host:2222"}}) == ClusterSpec({"job": ["host:2222"]})


def test_ne():
    assert ClusterSpec({}) != ClusterSpec({"job": ["host:2223"]})
    assert ClusterSpec({"job1": ["host:2222"]}) != ClusterSpec({"job2": ["host:2222"]})
    assert ClusterSpec({"job": ["host:2222"]}) != ClusterSpec({"job": ["host:2223"]})
    assert ClusterSpec({"job": ["host:2222", "host:2223"]}) != (
        ClusterSpec({"job": ["host:2223", "host:2222"]})
    )


# ------------------------------------------------------------ beyond TensorFlow's tests


def test_another_implementations_cluster_spec_is_read_through_as_cluster_def():
    class ForeignClusterSpec:  # stands in for tf.train.ClusterSpec
        def as_cluster_def(self):
            return ClusterSpec({"w": {2: "a:1"}}).as_cluster_def()

    assert ClusterSpec(ForeignClusterSpec()).as_dict() == {"w": {2: "a:1"}}


def test_top_level_name_is_this_class():
    assert tw.ClusterSpec is ClusterSpec


def test_sparse_keys_go_through_int():
    spec = ClusterSpec({"worker": {"1": "w1:1", 3.0: "w3:1"}})
    assert spec.task_indices("worker") == [1, 3]
    assert spec.as_dict() == {"worker": {1: "w1:1", 3: "w3:1"}}


def test_tuple_tasks_are_a_dense_job():
    assert ClusterSpec({"w": ("a:1", "b:1")}).as_dict() == {"w": ["a:1", "b:1"]}


def test_as_dict_is_list_for_dense_dict_input_and_empty_dict_for_empty_job():
    spec = ClusterSpec({"a": {1: "x:1", 0: "y:1"}, "b": {}})
    assert spec.as_dict() == {"a": ["y:1", "x:1"], "b": {}}
    assert ClusterSpec({}).as_dict() == {}


def test_as_cluster_def_is_sorted_by_job_name_and_task_index():
    spec = ClusterSpec({"worker": {5: "w5:1", 2: "w2:1"}, "chief": ["c:1"]})
    cluster_def = spec.as_cluster_def()
    assert [job.name for job in cluster_def.job] == ["chief", "worker"]
    # Deterministic bytes: equal clusters written in any order give equal bytes.
    other = ClusterSpec({"chief": ["c:1"], "worker": {2: "w2:1", 5: "w5:1"}})
    assert cluster_def.SerializeToString(deterministic=True) == (
        other.as_cluster_def().SerializeToString(deterministic=True)
    )


def test_jobs_keep_the_order_they_were_given_in():
    assert ClusterSpec({"worker": ["w:1"], "chief": ["c:1"]}).jobs == ["worker", "chief"]
    cluster_def = ClusterDef()
    cluster_def.job.add(name="z").tasks[0] = "z:1"
    cluster_def.job.add(name="a").tasks[0] = "a:1"
    spec = ClusterSpec(cluster_def)
    assert spec.jobs == ["z", "a"]
    # A ClusterDef keeps its own order in as_cluster_def, as in TensorFlow.
    assert [job.name for job in spec.as_cluster_def().job] == ["z", "a"]


def test_as_cluster_def_returns_a_copy():
    spec = ClusterSpec({"w": ["a:1"]})
    spec.as_cluster_def().job[0].tasks[0] = "changed:1"
    assert spec.task_address("w", 0) == "a:1"
    assert spec.as_cluster_def().job[0].tasks[0] == "a:1"


def test_cluster_def_input_is_copied():
    cluster_def = ClusterSpec({"w": ["a:1"]}).as_cluster_def()
    spec = ClusterSpec(cluster_def)
    cluster_def.job[0].tasks[0] = "changed:1"
    assert spec.as_cluster_def().job[0].tasks[0] == "a:1"


def test_equality_with_plain_dict_follows_tensorflow():
    # TensorFlow compares its {job: {index: address}} mapping with the other operand.
    spec = ClusterSpec({"w": ["a:1"]})
    assert spec == {"w": {0: "a:1"}}
    assert spec != {"w": ["a:1"]}
    assert spec != 3


def test_unhashable_like_tensorflow():
    with pytest.raises(TypeError):
        hash(ClusterSpec({}))


def test_repr_of_sparse_and_empty_jobs():
    spec = ClusterSpec({"w": {3: "w3:1"}, "e": []})
    assert repr(spec) == "ClusterSpec({'e': {}, 'w': {3: 'w3:1'}})"
    assert repr(ClusterSpec({})) == "ClusterSpec({})"


def test_job_tasks_of_an_empty_job_is_an_empty_list():
    assert ClusterSpec({"w": []}).job_tasks("w") == []


def test_bytes_names_and_addresses_are_accepted():
    spec = ClusterSpec({b"w": [b"a:1"]})
    cluster_def = spec.as_cluster_def()
    assert cluster_def.job[0].name == "w"
    assert cluster_def.job[0].tasks[0] == "a:1"


# ------------------------------------------------------------ errors, TensorFlow's messages


def test_bad_cluster_type():
    with pytest.raises(TypeError) as info:
        ClusterSpec(["a:1"])
    assert str(info.value) == (
        "`cluster` must be a dictionary mapping one or more job names to lists of network "
        "addresses, or a `ClusterDef` protocol buffer"
    )


def test_bad_tasks_type():
    with pytest.raises(TypeError) as info:
        ClusterSpec({"worker": "a:1"})
    assert str(info.value) == (
        "The tasks for job 'worker' must be a list or a dictionary from integers to strings."
    )


def test_bad_job_name_type():
    with pytest.raises(TypeError, match=r"^Job name 3 must be bytes or unicode$"):
        ClusterSpec({3: ["a:1"]})


def test_bad_task_address_type():
    with pytest.raises(TypeError, match=r"^Task address 2222 must be bytes or unicode$"):
        ClusterSpec({"w": [2222]})
    with pytest.raises(TypeError, match=r"^Task address None must be bytes or unicode$"):
        ClusterSpec({"w": {0: None}})


def test_non_integer_sparse_key():
    with pytest.raises(ValueError, match="invalid literal for int"):
        ClusterSpec({"w": {"one": "a:1"}})


def test_negative_or_huge_task_index_is_refused_with_the_job_named():
    with pytest.raises(ValueError, match=r"Task index -1 of job 'w' must be between 0 and"):
        ClusterSpec({"w": {-1: "a:1"}})
    with pytest.raises(ValueError, match=r"Task index 2147483648 of job 'w'"):
        ClusterSpec({"w": {2**31: "a:1"}})


def test_unknown_job_and_task_messages():
    spec = ClusterSpec({"w": ["a:1"]})
    with pytest.raises(ValueError, match=r"^No such job in cluster: 'ps'$"):
        spec.num_tasks("ps")
    with pytest.raises(ValueError, match=r"^No task with index 4 in job 'w'$"):
        spec.task_address("w", 4)
    with pytest.raises(ValueError, match=r"^No such job in cluster: \['w'\]$"):
        spec.task_indices(["w"])  # unhashable job name: still a ValueError
