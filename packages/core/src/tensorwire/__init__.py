"""tensorwire: TensorFlow's distributed surface for anyone with NumPy arrays.

``import tensorwire as tw`` is the front door. ``tw.data`` and ``tw.test`` are the separately
installed distributions ``tensorwire-dataservice`` and ``tensorwire-testing``, imported on
first use (and importable as ``tensorwire.data...``, see ``_optional``). ``tw.train`` and
``tw.distribute`` give TensorFlow's spellings of the same objects (``tw.train.Server is
tw.Server``).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _optional, codec, errors
from ._version import __version__
from .info import info

# Names resolved on first access, so `import tensorwire` stays cheap: name -> (module, attr).
_LAZY_ATTRS: dict[str, tuple[str, str]] = {
    "ClusterSpec": ("tensorwire.cluster", "ClusterSpec"),
    "DeviceSpec": ("tensorwire.cluster", "DeviceSpec"),
    "ClusterDef": ("tensorwire.protos", "ClusterDef"),
    "JobDef": ("tensorwire.protos", "JobDef"),
    "ServerDef": ("tensorwire.protos", "ServerDef"),
    "ConfigProto": ("tensorwire.protos", "ConfigProto"),
    "Server": ("tensorwire.runtime", "Server"),
    "Session": ("tensorwire.runtime", "Session"),
    "device": ("tensorwire.runtime", "device"),
    "current_task": ("tensorwire.runtime", "current_task"),
    "register_function": ("tensorwire.runtime", "register_function"),
}

# Submodules imported on first access: the TensorFlow namespaces, then the building blocks.
_NAMESPACES = ("train", "distribute")
_SUBMODULES = {*_NAMESPACES, "runtime", "cluster", "protos", "transport", "observe"}

# Derived from the tables above, so that a name added there is public everywhere at once.
__all__ = [
    "__version__",
    "codec",
    "errors",
    "info",
    *_LAZY_ATTRS,
    *_NAMESPACES,
    *_optional.OPTIONAL_MODULES,
]

_optional.install_finder()  # `import tensorwire.data.service` and friends


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        module_name, attr = _LAZY_ATTRS[name]
        value = getattr(importlib.import_module(module_name), attr)
    elif name in _optional.OPTIONAL_MODULES or name in _SUBMODULES:
        value = importlib.import_module(f"tensorwire.{name}")
    else:
        raise AttributeError(f"module 'tensorwire' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # Every public name __getattr__ would resolve, loaded or not, and the dunders; not the
    # helpers this module itself imports (importlib, Any).
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__) | _SUBMODULES)
