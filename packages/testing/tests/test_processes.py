"""Tasks as separate processes: the CLI, SIGTERM, kill -9 and restart on the same port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest
import tensorwire as tw
from tensorwire_testing import TaskProcess, eventually


@pytest.fixture
def protocol(tensorwire_protocol):
    if tensorwire_protocol == "inproc":
        pytest.skip("inproc cannot cross processes; runs with --tensorwire-protocol=grpc")
    return tensorwire_protocol


def test_cluster_of_processes_trains_together(process_cluster_factory, protocol):
    tasks = process_cluster_factory(2, 1)
    pids = {t.pid for ts in tasks.values() for t in ts}
    assert len(pids) == 3 and os.getpid() not in pids
    with tw.Session(tasks["worker"][0].target) as sess:
        w = sess.variable("w", np.zeros(4, np.float32), device="/job:ps/task:0")
        futures = [sess.run_async(_push, i, device=f"/job:worker/task:{i}") for i in range(2)]
        for f in futures:
            f.result(timeout=30)
        np.testing.assert_array_equal(w.read(), np.full(4, 3, np.float32))
        assert sess.run(os.getpid, device="/job:ps/task:0") == tasks["ps"][0].pid


def _push(index):
    sess = tw.current_task().session
    sess.variable("w", device="/job:ps/task:0").assign_add(np.full(4, index + 1, np.float32))


def test_sigterm_shuts_down_cleanly(process_cluster_factory, protocol):
    tasks = process_cluster_factory(1, 0)
    assert tasks["worker"][0].terminate(timeout=15) == 0


def test_kill_and_restart_on_the_same_port(process_cluster_factory, protocol):
    tasks = process_cluster_factory(1, 1)
    ps = tasks["ps"][0]
    with tw.Session(tasks["worker"][0].target) as sess:
        sess.variable("v", np.ones(2), device="/job:ps/task:0")
        ps.kill()
        with pytest.raises(tw.errors.UnavailableError):
            sess.variable("v", device="/job:ps/task:0").read(timeout=5)
        old_address = ps.address
        ps.restart()
        assert ps.address == old_address
        # A restarted task is empty again: state lives in the process. The channel
        # reconnects on its own within grpc's reconnect backoff.
        with pytest.raises(tw.errors.NotFoundError):
            eventually(lambda: sess.variable("v", device="/job:ps/task:0"))
        v = sess.variable("v", np.zeros(2), device="/job:ps/task:0")
        np.testing.assert_array_equal(v.read(timeout=10), [0, 0])


def test_server_reads_tf_config(protocol):
    port = portpicker.pick_unused_port()
    env = dict(os.environ)
    env["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"ps": [f"localhost:{port}"]},
            "task": {"type": "ps", "index": 0},
            "rpc_layer": protocol,
        }
    )
    # Started through TF_CONFIG only: no --cluster_spec.
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorwire", "server"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("tensorwire server /job:ps/task:0 serving"), line
        assert line.strip().endswith(f"{protocol}://localhost:{port}")
        with tw.Session(f"{protocol}://localhost:{port}") as sess:
            assert sess.cluster_spec.jobs == ["ps"]
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def test_server_command_rejects_bad_cluster_spec():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorwire",
            "server",
            "--cluster_spec",
            "nonsense",
            "--job_name",
            "ps",
            "--task_index",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "job=host:port" in result.stderr


def test_task_process_start_deadline_reports_output(protocol):
    port = portpicker.pick_unused_port()
    task = TaskProcess({"ps": [f"localhost:{port}"]}, "ps", 3, protocol)
    start = time.monotonic()
    expected = "(?s)exited before serving.*Task 3"
    with pytest.raises(tw.errors.FailedPreconditionError, match=expected):
        task.start(timeout=10)
    assert time.monotonic() - start < 15


class _NeverReady(TaskProcess):
    """A task whose ready line is never recognised: it serves, but start() cannot know."""

    def is_ready_line(self, line: str) -> bool:
        return False


def test_a_child_still_running_at_the_start_deadline_is_reported_as_such(protocol):
    task = _NeverReady({"ps": [f"localhost:{portpicker.pick_unused_port()}"]}, "ps", 0, protocol)
    # Not "exited before serving": it was alive and silent (a CI run was told otherwise).
    with pytest.raises(tw.errors.DeadlineExceededError, match="(?s)still running.*killed now"):
        task.start(timeout=5)
    assert task.process is not None and task.process.wait(timeout=60) is not None


class _VerboseFirst(TaskProcess):
    """``tensorwire -v server ...`` (TaskProcess's extra_args go after the subcommand)."""

    def command(self) -> list[str]:
        return ["-v", *super().command()]


@pytest.mark.parametrize("where", ["after", "before"])
def test_server_verbose_before_or_after_the_subcommand_shows_info_lines(protocol, where):
    cluster = {"ps": [f"localhost:{portpicker.pick_unused_port()}"]}
    if where == "after":
        task = TaskProcess(cluster, "ps", 0, protocol, extra_args=["-v"])
    else:
        task = _VerboseFirst(cluster, "ps", 0, protocol)
    try:
        task.start()
        assert task.terminate() == 0
    finally:
        task.kill()
    # INFO is shown only with -v: the line the server logs when it stops.
    assert "INFO tensorwire.runtime.cli: stopping /job:ps/task:0" in task.output, task.output
