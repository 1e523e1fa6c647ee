"""Hook specifications of the ``tensorwire`` plugin project.

A transport plugin is a module (or object) found through the entry-point group
``tensorwire.transports`` that implements these hooks with ``tensorwire.transport.hookimpl``.
Keep the module cheap to import: import heavy libraries (grpc, pyverbs) inside the factory
it registers, not at module level, so discovering plugins stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import TransportRegistry

PROJECT_NAME = "tensorwire"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def tensorwire_register_transports(registry: TransportRegistry) -> None:
    """Declare the protocols this plugin provides.

    Called once per plugin, the first time any protocol is looked up (never at import of
    ``tensorwire``). Implementations call
    ``registry.register(protocol, factory, distribution=...)`` for each protocol name they
    answer for, where ``factory()`` returns a ``tensorwire.transport.Transport`` and is
    itself called only when that protocol is first used.

    :param registry: the registry to declare protocols in.
    :return: nothing; every implementation is called (not ``firstresult``).
    """
