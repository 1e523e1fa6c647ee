"""Smoke test of ``benchmarks/shm.py``: a short run prints each size's figures and verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_a_quick_run_prints_every_size_beside_memcpy() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "shm.py"), "--quick", "--sizes-mib", "1", "2"]
        + ["--report-only"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "median of 5 rounds" in lines[0]
    for size in ("1MiB", "2MiB"):
        line = next(line for line in lines if line.split()[:1] == [size])
        assert line.split()[-1] in ("met", "MISSED")
    assert "segments made by the sender: 2" in result.stdout  # one per size, then reused
