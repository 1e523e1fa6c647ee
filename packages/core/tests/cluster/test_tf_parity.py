"""Differential tests against a real TensorFlow: ClusterSpec, make_server_def and DeviceSpec
give the same results and the same errors as TensorFlow's on many inputs.

TensorFlow must not be installed in the development environment, so these run only when
TENSORWIRE_TF_PYTHON names a Python that has it (e.g. a separate venv made with
``python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu``). The comparison
runs in that interpreter, with tensorwire's sources on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.skipif(
    not os.environ.get("TENSORWIRE_TF_PYTHON"),
    reason="needs a Python with TensorFlow installed, named by TENSORWIRE_TF_PYTHON "
    "(e.g. /tmp/tfenv/bin/python); run by hand when touching tensorwire.cluster",
)

_SCRIPT = r"""
import json, sys
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.python.training import server_lib
from tensorflow.python.framework import device_spec as tf_device_spec
import tensorwire.cluster as twc

def outcome(fn):
    try:
        value = fn()
    except Exception as exc:  # the comparison is the point: type and message
        return ["error", type(exc).__name__, str(exc)]
    return ["ok", value]

def spec_view(spec):
    return {"repr": repr(spec), "as_dict": repr(spec.as_dict()), "jobs": repr(spec.jobs),
            "bool": bool(spec),
            "def": text_format.MessageToString(spec.as_cluster_def()),
            "indices": {repr(j): spec.task_indices(j) for j in spec.jobs},
            "num": {repr(j): spec.num_tasks(j) for j in spec.jobs},
            "job_tasks": {repr(j): repr(spec.job_tasks(j)) for j in spec.jobs if spec.num_tasks(j)}}

CLUSTERS = [
    {}, {"a": []}, {"local": ["localhost:2222"]},
    {"worker": ["w0:1", "w1:1"], "ps": ["p:1"]},
    {"sparse": {0: "s0:1", 3: "s3:1"}, "dense": ["d:1"]},
    {"w": {"2": "a:1", 1: "b:1"}}, {"w": ("a:1", "b:1")}, {b"bytes": [b"a:1"]},
    {"w": {1: "a:1", 0: "b:1"}},
    {"w": "a:1"}, {3: ["a:1"]}, {"w": [3]}, {"w": {"x": "a:1"}}, {"w": [None]},
    ["a:1"], "a:1", None, 7,
]
results = {"cluster": [], "server_def": [], "eq": [], "device": [], "lookup": []}
for c in CLUSTERS:
    results["cluster"].append([repr(c),
        outcome(lambda: spec_view(server_lib.ClusterSpec(c))),
        outcome(lambda: spec_view(twc.ClusterSpec(c)))])

PAIRS = [({}, {}), ({"j": ["h:1"]}, {"j": {0: "h:1"}}),
         ({"j": ["a:1", "b:1"]}, {"j": ["b:1", "a:1"]}),
         ({"j1": ["h:1"]}, {"j2": ["h:1"]}), ({"j": ["h:1"]}, {"j": {1: "h:1"}})]
for a, b in PAIRS:
    results["eq"].append([repr((a, b)),
        [server_lib.ClusterSpec(a) == server_lib.ClusterSpec(b),
         server_lib.ClusterSpec(a) != server_lib.ClusterSpec(b)],
        [twc.ClusterSpec(a) == twc.ClusterSpec(b), twc.ClusterSpec(a) != twc.ClusterSpec(b)]])

spec_in = {"w": ["a:1"], "s": {2: "x:1"}}
for call in [("task_address", "w", 0), ("task_address", "w", 5), ("task_address", "zz", 0),
             ("task_address", "s", 2), ("num_tasks", "zz"), ("task_indices", "zz"),
             ("job_tasks", "zz"), ("job_tasks", "s")]:
    results["lookup"].append([repr(call),
        outcome(lambda: repr(getattr(server_lib.ClusterSpec(spec_in), call[0])(*call[1:]))),
        outcome(lambda: repr(getattr(twc.ClusterSpec(spec_in), call[0])(*call[1:])))])

CONFIG = {"operation_timeout_in_ms": 7}
SERVER_CASES = [
    ({"local": ["localhost:2222"]}, None, None, None),
    ({"local": {37: "localhost:0"}}, None, None, None),
    ({"w": ["a:1", "b:1"]}, None, None, None),
    ({"w": ["a:1", "b:1"]}, None, 1, "grpc+verbs"),
    ({"w": ["a:1"], "p": ["b:1"]}, None, None, None),
    ({"w": ["a:1"], "p": ["b:1"]}, "p", None, None),
    ({"w": ["a:1"]}, "nope", None, None),
    ({}, None, None, None), ({"w": []}, None, None, None),
    (["a:1"], None, None, None), ("x", "w", 0, None), ({"w": "a"}, "w", 0, None),
    ("SERVER_DEF", None, None, None), ("SERVER_DEF", "ps", 3, "grpc+verbs"),
]
def tf_server_def_input(c):
    if c == "SERVER_DEF":
        return tf.train.ServerDef(cluster=server_lib.ClusterSpec({"w": ["a:1"]}).as_cluster_def(),
                                  job_name="w", protocol="inproc", port=5)
    return c
def tw_server_def_input(c):
    if c == "SERVER_DEF":
        from tensorwire.protos import ServerDef
        return ServerDef(cluster=twc.ClusterSpec({"w": ["a:1"]}).as_cluster_def(),
                         job_name="w", protocol="inproc", port=5)
    return c
for c, job, task, proto in SERVER_CASES:
    for config in (None, CONFIG):
        tf_config = None if config is None else tf.compat.v1.ConfigProto(**config)
        from tensorwire.protos import ConfigProto
        tw_config = None if config is None else ConfigProto(**config)
        results["server_def"].append([repr((c, job, task, proto, config)),
            outcome(lambda: text_format.MessageToString(server_lib._make_server_def(
                tf_server_def_input(c), job, task, proto, tf_config))),
            outcome(lambda: text_format.MessageToString(twc.make_server_def(
                tw_server_def_input(c), job, task, proto, tw_config)))])

NAMES = ["", "/job:ps/task:0", "/job:ps/replica:0/task:1/device:CPU:0", "/cpu:0", "/GPU:1",
         "/gpu:*", "/device:GPU:*", "/job:w/device:MyDev:3", "/replica:1/task:0/cpu:0",
         "/job:a/tsk:0", "/cpu:0/gpu:0", "job:a", "/job:a/", "//job:a", "/CPU", "/tpu:2",
         "/job:muu/device:GPU:2/cpu:0"]
def dev_view(d):
    return [d.to_string(), repr(d), d.job, d.replica, d.task, d.device_type, d.device_index]
for name in NAMES:
    results["device"].append([name,
        outcome(lambda: dev_view(tf.DeviceSpec.from_string(name))),
        outcome(lambda: dev_view(twc.DeviceSpec.from_string(name)))])
MERGES = [("/job:foo/replica:0", "/task:1/device:GPU:2"),
          ("/task:1/cpu:0", "/job:boo/device:GPU:0"),
          ("/job:a/task:1/device:CPU:0", "/job:b")]
def merged(module, a, b):
    return module.DeviceSpec.from_string(a).make_merged_spec(module.DeviceSpec.from_string(b))
for a, b in MERGES:
    results["device"].append([a + " + " + b,
        outcome(lambda: dev_view(merged(tf, a, b))),
        outcome(lambda: dev_view(merged(twc, a, b)))])
print("RESULTS" + json.dumps(results, default=repr))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, PYTHONPATH=str(SRC), TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [os.environ["TENSORWIRE_TF_PYTHON"], "-c", _SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULTS"))
    return json.loads(line[len("RESULTS") :])


@pytest.mark.parametrize("kind", ["cluster", "eq", "lookup", "server_def", "device"])
def test_same_results_and_errors_as_tensorflow(results, kind):
    assert results[kind], "the comparison script produced no cases"
    mismatches = []
    for case, theirs, ours in results[kind]:
        if theirs != ours:
            mismatches.append((case, theirs, ours))
    assert not mismatches, "\n".join(f"{c}\n  tf: {t}\n  tw: {o}" for c, t, o in mismatches)
