"""The examples run as a user runs them, and the main job trains in both modes, printing
no gRPC C-core log line (the environment is that of a user who set no GRPC_* variable)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorwire_testing.grpc_logs import core_log_lines, user_environment

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run_example(*args: str, timeout: float = 240) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "parameter_server.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_environment(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert core_log_lines(result.stdout + result.stderr) == [], result.stderr[-4000:]
    return result.stdout


def final_losses(output: str) -> tuple[float, float]:
    last = [line for line in output.splitlines() if line.startswith("loss ")][-1]
    first, _, final = last[len("loss ") :].partition(" -> ")
    return float(first), float(final)


@pytest.mark.parametrize("mode", [[], ["--processes"]], ids=["threads", "processes"])
def test_parameter_server_example_trains(mode, tensorwire_protocol):
    if tensorwire_protocol == "inproc" and mode:
        pytest.skip("inproc cannot cross processes; runs with --tensorwire-protocol=grpc")
    output = run_example("--steps", "60", "--protocol", tensorwire_protocol, *mode)
    first, final = final_losses(output)
    assert final < first / 10
    assert "steps/s" in output
