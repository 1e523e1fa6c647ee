"""``tw.Server.status()`` and ``tensorwire status`` against a task server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorwire as tw
from tensorwire.observe import TaskServerStatus, fetch_status, status_from_dict
from tensorwire.protos import ConfigProto
from tensorwire_testing.commands import run_status


@pytest.fixture
def server_with_variable(tensorwire_protocol):
    with tw.Server({"local": ["localhost:0"]}, protocol=tensorwire_protocol) as server:
        with tw.Session(server.target) as sess:
            sess.variable("weights", np.zeros((4, 5), np.float64))
            sess.send("pending-key", np.ones(3), device="/job:local/task:0")
        yield server


def test_status_snapshot_lists_variables_and_pending_sends(server_with_variable):
    status = server_with_variable.status()
    assert isinstance(status, TaskServerStatus)
    assert status.kind == "task_server"
    assert status.task == "/job:local/task:0"
    assert [(v.name, v.shape, v.dtype, v.nbytes) for v in status.variables] == [
        ("weights", (4, 5), "float64", 160)
    ]
    assert status.pending_sends == 1
    assert status.calls == ()  # no metrics port: calls are not counted
    with pytest.raises(AttributeError):
        status.task = "other"  # frozen


def test_status_as_dict_reads_back(server_with_variable):
    status = server_with_variable.status()
    data = json.loads(json.dumps(status.as_dict()))
    assert status_from_dict(data) == status


def test_fetch_status_over_the_wire(server_with_variable):
    status = fetch_status(server_with_variable.target)
    assert status.task == "/job:local/task:0"
    assert status.variables[0].name == "weights"


def test_status_command_prints_the_task_and_its_variables():
    # A real CLI subprocess needs a transport that crosses processes.
    with tw.Server({"local": ["localhost:0"]}, protocol="grpc") as server:
        with tw.Session(server.target) as sess:
            sess.variable("weights", np.zeros((4, 5), np.float64))
        result = run_status(server.target)
    assert result.returncode == 0, result.stderr
    assert "task server /job:local/task:0" in result.stdout
    assert "weights" in result.stdout and "[4, 5]" in result.stdout


def test_status_command_json_parses():
    with tw.Server({"local": ["localhost:0"]}, protocol="grpc", metrics_port=0) as server:
        result = run_status(server.target, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "task_server"
    assert data["task"] == "/job:local/task:0"
    assert status_from_dict(data).target == server.target


def test_status_without_the_token_is_refused_with_a_reason():
    config = ConfigProto()
    config.tensorwire.cluster_token = "s3cret"
    with tw.Server({"local": ["localhost:0"]}, protocol="grpc", config=config) as server:
        refused = run_status(server.target)
        wrong = run_status(server.target, "--token", "nope")
        allowed = run_status(server.target, env={"TENSORWIRE_CLUSTER_TOKEN": "s3cret"})
    assert refused.returncode == 2
    assert "requires a cluster token" in refused.stderr
    assert wrong.returncode == 2
    assert "does not match" in wrong.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "/job:local/task:0" in allowed.stdout


def test_status_of_an_unreachable_server_fails_within_its_timeout():
    result = run_status("grpc://localhost:1", "--timeout", "2")
    assert result.returncode == 2
    assert "tensorwire status:" in result.stderr


def test_status_from_dict_names_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown status kind"):
        status_from_dict({"kind": "toaster"})


def test_status_command_over_mutual_tls(tmp_path):
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates")
    from tensorwire_testing.certificates import make_test_certificates, tls_config

    certs = make_test_certificates(tmp_path)
    config = tls_config(certs, mutual=True)
    with tw.Server({"local": ["localhost:0"]}, protocol="grpc", config=config) as server:
        plain = run_status(server.target, "--timeout", "5")
        client = [
            "--root_certificates_file", certs.ca,
            "--certificate_chain_file", certs.client_cert,
            "--private_key_file", certs.client_key,
        ]  # fmt: skip
        mutual = run_status(server.target, *client)
    assert plain.returncode == 2
    assert mutual.returncode == 0, mutual.stderr
    assert "/job:local/task:0" in mutual.stdout
