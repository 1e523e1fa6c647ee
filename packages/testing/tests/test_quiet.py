"""No gRPC C-core log line in what tensorwire's processes print, unless the user asks.

Every test runs real processes in the environment of a user who set nothing
(``user_environment()``: this test process has ``GRPC_VERBOSITY`` set by its own import of
tensorwire_grpc, which children must not inherit here), and makes the events after which
gRPC logs when left alone: servers shutting down while peers hold connections to them
("Got goaway"; whether gRPC gets to log it depends on the connection's state at that moment,
so a run without the default shows it in most runs, not all). Each wait has a deadline
(scaled by TENSORWIRE_TEST_TIMEOUT_SCALE).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import portpicker
import pytest
import tensorwire as tw
from tensorwire_grpc import core_logging
from tensorwire_testing import TaskProcess
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.grpc_logs import core_log_lines, user_environment
from tensorwire_testing.waiting import scaled

# A user's script: a local cluster, a session, the data service, then everything stopped
# while the session's channels are still open (each server sends GOAWAY to its clients).
SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorwire as tw

    workers, ps = tw.test.create_local_cluster(1, 1)
    service = tw.test.create_local_data_service(num_workers=1)
    with tw.Session(workers[0].target) as sess:
        sess.variable("v", np.zeros(3), device="/job:ps/task:0")
        print("run", sess.run(lambda: 1 + 1, device="/job:worker/task:0"))
        dataset = tw.data.Dataset.range(3).apply(
            tw.data.service.distribute("parallel_epochs", service=service.target))
        print("data", [int(x) for x in dataset.as_numpy_iterator()])
        for server in ps + workers:
            server.stop()
    service.stop()
    print("done")
""")


@pytest.fixture
def grpc_protocol(tensorwire_protocol: str) -> str:
    if tensorwire_protocol != "grpc":
        pytest.skip("gRPC's own log lines; runs with --tensorwire-protocol=grpc")
    return tensorwire_protocol


def run_script(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=user_environment(**env),
        timeout=scaled(120),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "run 2" in result.stdout and "data [0, 1, 2]" in result.stdout, output[-4000:]
    return output


def test_a_script_with_cluster_session_and_data_service_prints_no_grpc_core_line(
    grpc_protocol,
):
    output = run_script()
    assert core_log_lines(output) == [], output
    assert output.splitlines()[-1] == "done"


@pytest.mark.parametrize(
    "asked", [{"GRPC_VERBOSITY": "debug"}, {"GRPC_TRACE": "api"}], ids=["verbosity", "trace"]
)
def test_grpc_log_lines_the_user_asked_for_are_printed(grpc_protocol, asked):
    # At debug, gRPC logs (at least) its warning about the level when it starts; a trace
    # logs the traced calls (grpc_init first of all).
    output = run_script(**asked)
    assert core_log_lines(output), output[-4000:]


def test_task_server_cli_is_quiet_through_sigterm(grpc_protocol):
    cluster = {
        "worker": [f"localhost:{portpicker.pick_unused_port()}"],
        "ps": [f"localhost:{portpicker.pick_unused_port()}"],
    }
    # --grace 0: a server that stops cancels the calls of its peers' connections at once
    # with a GOAWAY, which gRPC's client side logs ("Got goaway") when left alone.
    ps, worker = (
        TaskProcess(cluster, job, 0, extra_args=["--grace", "0"], env=user_environment())
        for job in ("ps", "worker")
    )
    try:
        ps.start()
        worker.start()
        assert worker.target is not None
        with tw.Session(worker.target) as sess:
            # The worker task reaches the ps on its own channel, which the ps's shutdown
            # (with that channel open) ends with a GOAWAY.
            sess.variable("v", np.zeros(2), device="/job:ps/task:0")
            assert sess.run(_read_v_from_ps, device="/job:worker/task:0") == [0.0, 0.0]
            assert ps.terminate() == 0
            assert worker.terminate() == 0
    finally:
        worker.kill()
        ps.kill()
    for task in (ps, worker):
        assert core_log_lines(task.output) == [], task.output


def _read_v_from_ps() -> list[float]:
    sess = tw.current_task().session
    return [float(x) for x in sess.variable("v", device="/job:ps/task:0").read()]


def test_dispatcher_and_worker_clis_are_quiet_through_sigterm(grpc_protocol):
    dispatcher = DataServiceProcess("dispatcher", env=user_environment())
    worker = None
    try:
        dispatcher.start()
        worker = DataServiceProcess(
            "worker", ["--dispatcher_address", dispatcher.address], env=user_environment()
        )
        worker.start()
        dataset = tw.data.Dataset.range(5).apply(
            tw.data.service.distribute("parallel_epochs", service=f"grpc://{dispatcher.address}")
        )
        assert [int(x) for x in dataset.as_numpy_iterator()] == [0, 1, 2, 3, 4]
        # The dispatcher first, while the worker's heartbeat channel to it is open.
        assert dispatcher.terminate() == 0
        assert worker.terminate() == 0
    finally:
        if worker is not None:
            worker.kill()
        dispatcher.kill()
    for process in (dispatcher, worker):
        assert core_log_lines(process.output) == [], process.output
        # Our own events: one line each, through logging (no traceback, nothing gRPC).
        assert "Traceback" not in process.output, process.output
    assert "dispatcher: SIGTERM; stopping" in dispatcher.output
    # The ready line announces serving; no log line repeats it.
    assert dispatcher.output.count("serving at") == 1, dispatcher.output


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "NONE"),
        ({"GRPC_VERBOSITY": ""}, "NONE"),
        ({"GRPC_VERBOSITY": "debug"}, "debug"),
        ({"GRPC_VERBOSITY": "ERROR"}, "ERROR"),
        # Trace lines are written at gRPC's info level: NONE would hide what was asked for.
        ({"GRPC_TRACE": "http"}, None),
    ],
    ids=["unset", "empty", "debug", "error", "trace"],
)
def test_the_default_gives_way_to_what_the_user_set(environ, expected):
    env = dict(environ)
    assert core_logging.apply_default(env) is (expected == "NONE")
    assert env.get("GRPC_VERBOSITY") == expected


def test_core_log_lines_recognises_what_grpc_writes():
    output = "\n".join(
        [
            "step 1 loss 0.5",
            "I0000 00:00:1733120000.123456   12345 chttp2_transport.cc:1403] ipv4:127.0.0.1:5: "
            "Got goaway [2] err=UNAVAILABLE",
            "WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR",
            "E1202 04:15:52.030974   18704 add_port.cc:83] Failed to add port to server",
            "2026-12-02 04:14:29,902 INFO tensorwire_dataservice.cli: dispatcher: SIGTERM",
        ]
    )
    assert [line[:5] for line in core_log_lines(output)] == ["I0000", "WARNI", "E1202"]
    assert core_log_lines("done\n") == []
