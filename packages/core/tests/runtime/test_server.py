"""tw.Server: construction, lifecycle and errors, as tf.distribute.Server plus stop()."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import pytest
import tensorwire as tw
from tensorwire_testing.loopback import has_ipv6_loopback


def test_create_local_server_target_and_bound_port(tensorwire_protocol):
    with tw.test.create_local_server(protocol=tensorwire_protocol) as server:
        protocol, _, address = server.target.partition("://")
        assert protocol == tensorwire_protocol
        host, port = address.rsplit(":", 1)
        assert host == "localhost" and int(port) > 0
        # The cluster the server reports carries the bound port, not 0.
        assert server.server_def.cluster.job[0].tasks[0] == f"localhost:{port}"
        assert server.server_def.job_name == "localhost"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_an_ipv6_loopback_address_round_trips(tensorwire_protocol):
    with tw.Server({"local": ["[::1]:0"]}, protocol=tensorwire_protocol) as server:
        port = int(server.target.rpartition(":")[2])
        assert port > 0
        # The cluster carries the address as given, with the bound port; the target is
        # TensorFlow's "localhost" form.
        assert server.server_def.cluster.job[0].tasks[0] == f"[::1]:{port}"
        with tw.Session(f"{tensorwire_protocol}://[::1]:{port}") as session:
            assert session.list_devices()


def test_tf_create_local_server_uses_grpc():
    server = tw.Server.create_local_server()
    try:
        assert server.target.startswith("grpc://localhost:")
        assert server.server_def.protocol == "grpc"
    finally:
        server.stop()


def test_start_is_idempotent_and_stop_makes_join_return(tensorwire_protocol):
    server = tw.Server({"local": ["localhost:0"]}, protocol=tensorwire_protocol, start=False)
    server.start()
    server.start()
    assert server.join(timeout=0.05) is False
    server.stop()
    assert server.join(timeout=5) is True
    server.stop()  # idempotent


def test_start_after_stop_fails(tensorwire_protocol):
    server = tw.Server({"local": ["localhost:0"]}, protocol=tensorwire_protocol)
    server.stop()
    with pytest.raises(tw.errors.FailedPreconditionError, match="cannot be started"):
        server.start()


def test_context_manager_stops(tensorwire_protocol):
    with tw.Server({"local": ["localhost:0"]}, protocol=tensorwire_protocol) as server:
        target = server.target
    assert server.join(timeout=5)
    with pytest.raises(tw.errors.UnavailableError):
        tw.Session(target, config=_timeout_config(2000))


def test_address_without_port_is_invalid_argument():
    # TensorFlow's testInvalidHostname expects an InvalidArgumentError mentioning "port".
    with pytest.raises(tw.errors.InvalidArgumentError, match="port"):
        tw.Server({"local": ["localhost"]}, job_name="local", task_index=0)


def test_task_missing_from_job_is_invalid_argument():
    with pytest.raises(tw.errors.InvalidArgumentError, match="Task 3"):
        tw.Server({"local": ["localhost:0"]}, job_name="local", task_index=3)


def test_port_in_use_raises_op_error(tensorwire_protocol):
    if tensorwire_protocol == "inproc":
        with tw.Server({"a": ["localhost:0"]}, protocol="inproc") as first:
            with pytest.raises(tw.errors.OpError, match="in use"):
                tw.Server({"a": [f"localhost:{first.port}"]}, protocol="inproc")
        return
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(tw.errors.OpError):
            tw.Server({"a": [f"localhost:{port}"]}, protocol=tensorwire_protocol)
    finally:
        blocker.close()


def test_unknown_protocol_names_installed_ones():
    with pytest.raises(tw.errors.NotFoundError, match="installed protocols: .*'inproc'"):
        tw.Server({"local": ["localhost:0"]}, protocol="smoke-signals")


def test_repr_says_task_and_state(tensorwire_protocol):
    server = tw.Server({"ps": ["localhost:0"]}, protocol=tensorwire_protocol, start=False)
    assert "bound" in repr(server) and "/job:ps/task:0" in repr(server)
    server.start()
    assert "serving" in repr(server)
    server.stop()
    assert "stopped" in repr(server)


def test_interpreter_exits_cleanly_with_servers_running():
    code = textwrap.dedent(
        """
        import numpy as np
        import tensorwire as tw
        workers, ps = tw.test.create_local_cluster(2, 1)
        with tw.Session(workers[0].target) as sess:
            sess.variable("v", np.ones(3), device="/job:ps/task:0").read()
        print("done", flush=True)
        """
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert time.monotonic() - start < 30


def test_registered_functions_only_refuses_code_from_the_wire(tensorwire_protocol):
    config = tw.ConfigProto()
    config.tensorwire.registered_functions_only = True
    with tw.Server({"w": ["localhost:0"]}, protocol=tensorwire_protocol, config=config) as s:
        with tw.Session(s.target) as sess:
            with pytest.raises(tw.errors.PermissionDeniedError, match="registered functions only"):
                sess.run(lambda: 1)
            with pytest.raises(tw.errors.PermissionDeniedError):
                sess.run(len, [1, 2])
            tw.runtime.register_function(_registered_double)
            assert sess.run(_registered_double, 21) == 42


def _registered_double(x):
    return 2 * x


def test_cluster_token_is_required(tensorwire_protocol):
    config = tw.ConfigProto()
    config.tensorwire.cluster_token = "s3cret"
    with tw.Server({"w": ["localhost:0"]}, protocol=tensorwire_protocol, config=config) as s:
        with pytest.raises(tw.errors.UnauthenticatedError):
            tw.Session(s.target)
        wrong = tw.ConfigProto()
        wrong.tensorwire.cluster_token = "guess"
        with pytest.raises(tw.errors.PermissionDeniedError):
            tw.Session(s.target, config=wrong)
        with tw.Session(s.target, config=config) as sess:
            assert sess.run(abs, -3) == 3


def _timeout_config(ms: int) -> tw.ConfigProto:
    config = tw.ConfigProto()
    config.operation_timeout_in_ms = ms
    return config
