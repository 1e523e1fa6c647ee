"""Why a compiled extension is missing (``tensorwire._compiled``): the build's record, a build
without extensions, or an extension that fails to import."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorwire._compiled import why_missing


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """An importable package ``twpkg_compiled`` in ``tmp_path``; its folder."""
    folder = tmp_path / "twpkg_compiled"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield folder
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("twpkg_compiled")]:
            del sys.modules[name]


def _import_error(name: str) -> ImportError:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        return exc
    raise AssertionError(f"{name} imported")


def test_the_builds_record_says_why(package: Path) -> None:
    (package / "_thing_c.missing").write_text(
        "built without the compiled thing: the C compiler 'cc' failed (CompileError)\n"
    )
    error = _import_error("twpkg_compiled._thing_c")
    reason = why_missing("twpkg_compiled", "_thing_c", "thing", error)
    assert reason == "built without the compiled thing: the C compiler 'cc' failed (CompileError)"


def test_a_build_without_extensions_says_so(package: Path) -> None:
    error = _import_error("twpkg_compiled._thing_c")
    reason = why_missing("twpkg_compiled", "_thing_c", "thing", error)
    assert reason.startswith("this installation has no compiled thing"), reason
    assert "TENSORWIRE_PURE_BUILD" in reason


def test_an_extension_that_fails_to_import_says_why(package: Path) -> None:
    # Present but broken (a compiled module that cannot load looks the same to the import).
    (package / "_thing_c.py").write_text("raise ImportError('undefined symbol: tw_thing')\n")
    error = _import_error("twpkg_compiled._thing_c")
    reason = why_missing("twpkg_compiled", "_thing_c", "thing", error)
    assert reason == "the compiled thing failed to import (undefined symbol: tw_thing)"
