"""The version of this installation, read from the installed metadata.

The number itself lives in one file, ``VERSION`` at the root of the repository; every
distribution's build (``packages/*/setup.py``) takes its version and the pins between the
distributions from it, and ``nox -s bump -- NEW_VERSION`` changes it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def distribution_version(distribution: str) -> str:
    """The installed version of ``distribution``; from a source tree that was never
    installed, the repository's ``VERSION`` file with ``+source`` appended."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        # packages/core/src/tensorwire/_version.py: packages/core/VERSION links to the
        # repository's VERSION, the one number for all five distributions.
        source = Path(__file__).resolve().parents[2] / "VERSION"
        if source.is_file():
            return source.read_text(encoding="utf-8").strip() + "+source"
        return "0+unknown"


__version__ = distribution_version("tensorwire")
