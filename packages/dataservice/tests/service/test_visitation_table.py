"""Every row of the visitation table (docs/guides/fault-tolerance.md) names tests that exist.

The table is the data service's promise per failure; a row whose test was renamed or removed
would promise what nothing checks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUIDE = HERE.parents[3] / "docs" / "guides" / "fault-tolerance.md"


def _rows() -> list[list[str]]:
    lines = GUIDE.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| processing mode |")))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _test_names(module: str) -> set[str]:
    tree = ast.parse((HERE / f"{module}.py").read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_row_names_tests_that_exist() -> None:
    rows = _rows()
    assert len(rows) >= 15
    for row in rows:
        assert len(row) == 4, f"row without a 'tested by' cell: {row}"
        refs = re.findall(r"`([a-z_]+)(?:::([a-z_]+))?`", row[3])
        assert refs, f"row names no test: {row}"
        module = ""
        for name, function in refs:
            if name.startswith("test_") and (HERE / f"{name}.py").exists():
                module = name
                if function:
                    assert function in _test_names(module), f"{module}::{function} not found"
            else:
                # A bare function name continues the module named before it in the cell.
                assert module and name in _test_names(module), f"{name} not found ({row[:2]})"
