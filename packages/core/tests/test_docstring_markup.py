"""Docstrings are Markdown for the API reference (mkdocstrings), not reStructuredText: a
Sphinx cross-reference role such as :func:`name` would show on the site as that literal
text. Names are written as code (``name``) instead."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted(
    path
    for pattern in ("packages/*/src/**/*.py", "packages/*/src/**/*.pyx")
    for path in ROOT.glob(pattern)
    if not path.name.endswith("_pb2.py")
)
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`")


def test_the_sources_are_found() -> None:
    assert any(path.name == "server.py" for path in SOURCES), ROOT


def test_no_docstring_uses_a_sphinx_role() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ROLE.search(line)
    ]
    assert not found, "Sphinx roles render literally on the docs site:\n" + "\n".join(found)
