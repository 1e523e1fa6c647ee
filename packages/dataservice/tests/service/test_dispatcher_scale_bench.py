"""benchmarks/dispatcher_scale.py runs in its tiniest mode: a real dispatcher process, one
simulator process, every method answered without an error, and the capacity line printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[4] / "benchmarks" / "dispatcher_scale.py"


def test_smoke_run_reports_every_method_without_errors():
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "10 workers (10 tasks), 10 readers (each sees 10 tasks)" in out, out
    for method in ("WorkerHeartbeat", "ClientHeartbeat", "GetSplits"):
        rows = [line.split() for line in out.splitlines() if line.split()[:1] == [method]]
        # Capacity row: calls/s > 0 and 0 errors (last column).
        assert rows and float(rows[0][1].replace(",", "")) > 0, out
        assert rows[0][-1] == "0", out
    assert "first error" not in out, out
    assert re.search(r"journal off: +[\d,]+ workers alone, +[\d,]+ readers alone", out), out
