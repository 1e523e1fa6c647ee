"""Run every ```python block of the given Markdown files, each in a fresh interpreter.

    python tools/run_doc_snippets.py docs            # every .md file under docs/
    python tools/run_doc_snippets.py README.md docs/getting-started.md

A block runs verbatim, in a temporary directory, with a time limit; it fails when it exits
with a non-zero status. A block with ``<!-- not-run -->`` on the line right before its
opening fence is left out. A block that imports a module this environment lacks (torch,
jax) is reported as skipped with the module's name, so the docs session does not have to
install every framework; run such blocks in an environment that has it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOT_RUN = "<!-- not-run -->"
FENCE = re.compile(r"^```python\s*$")


def blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of each block to run in ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            skip = i > 0 and lines[i - 1].strip() == NOT_RUN
            i += 1
            body = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            if not skip:
                found.append((start + 1, "\n".join(body) + "\n"))
        i += 1
    return found


def missing_modules(code: str) -> list[str]:
    """Top-level modules the code imports that cannot be found here."""
    names = set()
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # running it reports the error
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    files = []
    for path in args.paths:
        files.extend(sorted(path.rglob("*.md")) if path.is_dir() else [path])
    failed = ran = skipped = 0
    for path in files:
        for line, code in blocks(path):
            where = f"{path}:{line}"
            missing = missing_modules(code)
            if missing:
                skipped += 1
                print(f"SKIP {where} (not installed here: {', '.join(missing)})")
                continue
            ran += 1
            start = time.monotonic()
            with tempfile.TemporaryDirectory() as cwd:
                try:
                    result = subprocess.run(
                        [sys.executable, "-c", code],
                        cwd=cwd,
                        capture_output=True,
                        text=True,
                        timeout=args.timeout,
                    )
                except subprocess.TimeoutExpired:
                    failed += 1
                    print(f"FAIL {where}: no exit within {args.timeout:.0f} s")
                    continue
            took = time.monotonic() - start
            if result.returncode != 0:
                failed += 1
                print(
                    f"FAIL {where} (exit {result.returncode}, {took:.1f} s)\n"
                    f"{result.stdout}{result.stderr}"
                )
            else:
                print(f"ok   {where} ({took:.1f} s)")
                for out in result.stdout.splitlines()[:5]:
                    print(f"       | {out}")
    print(f"{ran} blocks run, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
