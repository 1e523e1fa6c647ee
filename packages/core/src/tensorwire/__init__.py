"""tensorwire: TensorFlow's distributed surface for anyone with NumPy arrays.

``import tensorwire as tw`` is the front door. ``tw.data`` and ``tw.test`` are the separately
installed distributions ``tensorwire-dataservice`` and ``tensorwire-testing``, imported on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import codec, errors
from ._version import __version__
from .info import info

__all__ = [
    "__version__",
    "codec",
    "errors",
    "info",
    "ClusterSpec",
    "ClusterDef",
    "JobDef",
    "ServerDef",
    "ConfigProto",
    "DeviceSpec",
    "Server",
    "Session",
    "device",
    "current_task",
    "data",
    "test",
]

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

_SUBMODULES = {"runtime", "cluster", "protos", "transport"}

# Optional distributions behind tw.data / tw.test: name -> (module, distribution, extra).
_OPTIONAL_MODULES: dict[str, tuple[str, str, str]] = {
    "data": ("tensorwire_dataservice", "tensorwire-dataservice", "data"),
    "test": ("tensorwire_testing", "tensorwire-testing", "testing"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        module_name, attr = _LAZY_ATTRS[name]
        value = getattr(importlib.import_module(module_name), attr)
    elif name in _OPTIONAL_MODULES:
        module_name, dist, _extra = _OPTIONAL_MODULES[name]
        try:
            value = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            from ._install import install_command

            raise ImportError(
                f"tw.{name} is provided by the distribution {dist}, which is not installed: "
                f"{install_command(dist)}"
            ) from exc
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tensorwire.{name}")
    else:
        raise AttributeError(f"module 'tensorwire' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
