"""The pip command that installs one of the other tensorwire distributions *here*.

Used by the messages that say a distribution is missing (a protocol, ``tw.data``,
``tw.test``). The command must work where it is printed:

* when this core was installed from a source checkout (pip records the directory in
  ``direct_url.json``), the sibling folder of that checkout: ``pip install /repo/packages/...``;
* otherwise the distribution pinned to the installed core's version, which pip finds on an
  index or in a wheelhouse (``--find-links dist``, made by ``nox -s build``).
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

from ._version import __version__

#: distribution -> its folder under packages/ in the repository.
SOURCE_FOLDERS = {
    "tensorwire": "core",
    "tensorwire-grpc": "transport-grpc",
    "tensorwire-rdma": "transport-rdma",
    "tensorwire-dataservice": "dataservice",
    "tensorwire-testing": "testing",
}


def _core_source_dir() -> Path | None:
    """The directory the core was installed from, when pip installed it from a folder."""
    try:
        text = importlib.metadata.distribution("tensorwire").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    url = urlparse(str(record.get("url", "")))
    if url.scheme != "file" or "dir_info" not in record:
        return None
    return Path(unquote(url.path))


def install_command(distribution: str) -> str:
    """``pip install ...`` for ``distribution`` at the version that matches this core."""
    source = _core_source_dir()
    folder = SOURCE_FOLDERS.get(distribution)
    if source is not None and folder is not None:
        sibling = source.parent / folder
        if (sibling / "pyproject.toml").is_file():
            return f"pip install {shlex.quote(str(sibling))}"
    version = __version__.split("+", 1)[0]
    return f"pip install {shlex.quote(f'{distribution}=={version}')}"
