"""``tensorwire.data`` and ``tensorwire.test``: separately installed distributions under
tensorwire's name.

``tw.data`` is the module ``tensorwire_dataservice`` (distribution tensorwire-dataservice)
and ``tw.test`` is ``tensorwire_testing`` (tensorwire-testing). Being installed apart from
the core, they cannot be subpackages of ``tensorwire``; yet a TensorFlow user writes
``import tensorwire.data.service`` or ``from tensorwire.data.service import distribute``.

So a finder on ``sys.meta_path`` answers the import of ``tensorwire.data[.x.y]`` with the
module ``tensorwire_dataservice[.x.y]`` itself: the same object under a second name, never a
second copy (a copy would have its own state, e.g. its own registry of pipelines). It sits
before the path finder, which would otherwise find ``tensorwire.data.service`` through
``tensorwire_dataservice.__path__`` and load that copy. ``import tensorwire`` installs it,
and every import of ``tensorwire.data`` imports ``tensorwire`` first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["OPTIONAL_MODULES", "import_optional", "install_finder"]

#: ``tw.<name>`` -> (module, distribution, extra of ``tensorwire`` that installs it).
OPTIONAL_MODULES: dict[str, tuple[str, str, str]] = {
    "data": ("tensorwire_dataservice", "tensorwire-dataservice", "data"),
    "test": ("tensorwire_testing", "tensorwire-testing", "testing"),
}


def import_optional(name: str) -> ModuleType:
    """The module behind ``tw.<name>``; ``ModuleNotFoundError`` saying what to install when
    its distribution is missing."""
    module_name, distribution, extra = OPTIONAL_MODULES[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the distribution is there; something it needs is not
            raise
        from ._install import install_command

        raise ModuleNotFoundError(
            f"tw.{name} (tensorwire.{name}) is provided by the distribution {distribution}, "
            f"which is not installed: {install_command(distribution)} (or pip install "
            f"'tensorwire[{extra}]')",
            name=f"tensorwire.{name}",
        ) from exc


class _Alias(importlib.abc.Loader):
    """Loads ``tensorwire.<name>...`` as the already importable module ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        parts = spec.name.split(".")
        if len(parts) == 2:
            return import_optional(parts[1])
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the target ran its code when it was imported under its own name


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != "tensorwire" or parts[1] not in OPTIONAL_MODULES:
            return None
        real = ".".join([OPTIONAL_MODULES[parts[1]][0], *parts[2:]])
        # A submodule the distribution does not have: None, and Python says
        # "No module named 'tensorwire.data.<what>'" (the top level says what to install).
        if len(parts) > 2 and importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(real))


def install_finder() -> None:
    """Put the finder first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
