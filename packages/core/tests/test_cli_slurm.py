"""``tensorwire server --slurm``: the cluster, job and task from the SLURM job step the
process runs in (the variables srun sets), and one clear line for what does not fit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tensorwire.runtime.cli import parse_slurm_jobs
from tensorwire_testing.commands import free_port_base, slurm_step_env

#: Generous for a loaded machine; the server prints its line in about a second.
DEADLINE = 60.0


def _tensorwire(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tensorwire", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_task_of_the_step_serves_its_place_in_the_jobs():
    base = free_port_base(1)  # the task under test is rank 1
    server = _tensorwire(
        "server",
        "--slurm",
        "ps=1,worker=2",
        "--slurm_port_base",
        str(base),
        env=slurm_step_env(1, 3),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the ready line, or "" when it exited
        assert (
            line.strip()
            == f"tensorwire server /job:worker/task:0 serving grpc://localhost:{base + 1}"
        ), line + (server.stderr.read() if server.poll() is not None else "")
    finally:
        server.terminate()
        server.wait(timeout=DEADLINE)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--slurm"], {}, "--slurm: SLURM_PROCID not found in environment"),
        (
            ["--slurm", "ps=1,worker=1"],
            slurm_step_env(0, 3),
            "Requested 2 tasks but only 3 were assigned",
        ),
        (
            ["--slurm", "ps=one"],
            slurm_step_env(0, 3),
            "--slurm part 'ps=one' is not of the form job=",
        ),
    ],
    ids=["outside a step", "jobs that do not fit the step", "malformed jobs"],
)
def test_what_does_not_fit_is_one_line_and_exit_code_2(args, env, message):
    env = env or {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(
        [sys.executable, "-m", "tensorwire", "server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_slurm_and_cluster_spec_exclude_each_other():
    result = subprocess.run(
        [sys.executable, "-m", "tensorwire", "server", "--slurm", "--cluster_spec", "w=h:1"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_jobs_are_read_as_name_equals_count():
    assert parse_slurm_jobs("ps=1, worker=3") == {"ps": 1, "worker": 3}
    assert parse_slurm_jobs("") is None
    with pytest.raises(ValueError, match="names job 'ps' twice"):
        parse_slurm_jobs("ps=1,ps=2")
