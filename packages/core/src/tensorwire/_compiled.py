"""Why a compiled extension of the core is not there: one answer for each of them (the codec,
the copy kernel), read back from what the build recorded.

``setup.py`` writes ``<module>.missing`` beside where an extension would be when the C
compiler failed, saying how; an installation built with ``TENSORWIRE_PURE_BUILD`` (or a
source tree never compiled) has neither the extension nor a record; an extension that is
there and fails to import says why itself.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["why_missing"]


def why_missing(package: str, module: str, what: str, error: ImportError) -> str:
    """The reason the extension ``module`` of ``package`` (an imported package's name) is
    not in use, after importing it raised ``error``.

    Args:
      package: the dotted name of the package the extension belongs to.
      module: the extension's own name in it (``_codec_c``).
      what: what the extension is, for the message (``"codec"``).
      error: what the import raised.
    """
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        record = os.path.join(folder, f"{module}.missing")
        if os.path.exists(record):  # the build could not compile it and said why
            with open(record, encoding="utf-8") as f:
                return f.read().strip()
    if importlib.util.find_spec(f"{package}.{module}") is None:
        return (
            f"this installation has no compiled {what} (built with TENSORWIRE_PURE_BUILD set, "
            "or a source tree never compiled)"
        )
    return f"the compiled {what} failed to import ({error})"
