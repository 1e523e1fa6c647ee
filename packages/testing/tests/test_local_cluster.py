"""create_local_cluster / create_local_server, as tf.test's, without the port race."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import numpy as np
import portpicker
import pytest
import tensorwire as tw


def test_cluster_has_both_jobs_and_live_servers(local_cluster_factory):
    workers, ps = local_cluster_factory(3, 2)
    assert len(workers) == 3 and len(ps) == 2
    spec = workers[0].cluster_spec
    assert spec.jobs == ["ps", "worker"]
    assert [spec.task_address("worker", i) for i in range(3)] == [
        f"localhost:{w.port}" for w in workers
    ]
    # Every task knows the same, final cluster.
    assert all(s.cluster_spec == spec for s in workers + ps)
    with tw.Session(ps[1].target) as sess:
        assert sess.run(abs, -2, device="/job:worker/task:2") == 2


def test_job_with_zero_tasks_is_still_in_the_cluster(local_cluster_factory):
    workers, ps = local_cluster_factory(1, 0)
    assert ps == []
    assert workers[0].server_def.cluster.job[0].name in ("ps", "worker")
    assert sorted(j.name for j in workers[0].server_def.cluster.job) == ["ps", "worker"]


def test_negative_counts_are_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        tw.test.create_local_cluster(-1, 1)


def test_port_taken_between_picking_and_binding_is_retried(monkeypatch, tensorwire_protocol):
    if tensorwire_protocol == "inproc":
        pytest.skip("inproc ports are virtual; the race exists only for real sockets")
    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    stolen = thief.getsockname()[1]
    real_pick = portpicker.pick_unused_port
    picks = iter([stolen])

    def pick_with_race():
        return next(picks, None) or real_pick()

    monkeypatch.setattr(portpicker, "pick_unused_port", pick_with_race)
    try:
        workers, ps = tw.test.create_local_cluster(1, 1, protocol=tensorwire_protocol)
    finally:
        thief.close()
    try:
        assert workers[0].port != stolen
        with tw.Session(workers[0].target) as sess:
            v = sess.variable("v", np.ones(2), device="/job:ps/task:0")
            np.testing.assert_array_equal(v.read(), [1, 1])
    finally:
        for s in workers + ps:
            s.stop()


def test_import_error_without_portpicker():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["portpicker"] = None  # as if it were not installed
        import tensorwire as tw
        try:
            tw.test.create_local_cluster(1, 1)
        except ImportError:
            print("ImportError")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ImportError", result.stderr


def test_local_server_fixture(local_server):
    with tw.Session(local_server.target) as sess:
        assert sess.cluster_spec.jobs == ["localhost"]
        assert sess.run(len, "abc") == 3
