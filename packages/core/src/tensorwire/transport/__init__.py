"""Transports: the contract (``base``), the plugin hooks, the registry, and ``inproc``.

A third-party transport is a distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."tensorwire.transports"]
    mytransport = "my_package.plugin"

where ``my_package/plugin.py`` implements the hooks of ``tensorwire.transport.hookspecs``::

    from tensorwire.transport import hookimpl

    @hookimpl
    def tensorwire_register_transports(registry):
        registry.register("myproto", make_transport, distribution="my-package")

``hookimpl`` is the only thing a plugin needs from this module besides the interfaces
in ``tensorwire.transport.base``.
"""

from __future__ import annotations

import pluggy

from .hookspecs import PROJECT_NAME

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

from .base import (  # noqa: E402 - hookimpl first: plugins imported below use it
    CallContext,
    Channel,
    Frames,
    Listener,
    Method,
    Service,
    Transport,
    TransportOptions,
    invoke,
    iterate,
    split_address,
)
from .registry import (  # noqa: E402
    BLOCKED_PLUGINS_ENV,
    DISABLE_AUTOLOAD_ENV,
    TransportRegistry,
    default_registry,
    get_transport,
)

__all__ = [
    "hookimpl",
    "CallContext",
    "Channel",
    "Frames",
    "Listener",
    "Method",
    "Service",
    "Transport",
    "TransportOptions",
    "TransportRegistry",
    "invoke",
    "iterate",
    "split_address",
    "get_transport",
    "default_registry",
    "DISABLE_AUTOLOAD_ENV",
    "BLOCKED_PLUGINS_ENV",
]
