"""Fixtures of the deployment tests (run by ``nox -s deploy`` and ``nox -s slurm``, not by
the main suite: they are about the recipes, and need root for network namespaces)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


def _load(name: str) -> ModuleType:
    """A helper module beside the tests (the suite imports in importlib mode, where test
    folders are not packages)."""
    qualified = f"tensorwire_deploy_tests_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kubelet() -> ModuleType:
    """The module that turns deploy/kubernetes/ into processes (kubelet.py)."""
    return _load("kubelet")
