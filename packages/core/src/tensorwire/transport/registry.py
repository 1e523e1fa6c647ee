"""Find transport plugins and hand out one transport per protocol name.

Plugins are discovered through the entry-point group ``tensorwire.transports`` on the first
lookup, never at import. A plugin that fails to import with ``ImportError`` (say the RDMA
plugin on a host without libibverbs) is logged, its reason kept for ``tw.info()``, and the
other protocols keep working; any other exception from a plugin is a bug and propagates.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pluggy

from .. import errors
from . import hookspecs
from .base import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "DISABLE_AUTOLOAD_ENV",
    "BLOCKED_PLUGINS_ENV",
    "TransportRegistry",
    "ProtocolInfo",
    "PluginLoadError",
    "default_registry",
    "get_transport",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tensorwire.transports"
#: Set to a non-empty value to load no third-party transport plugins (only ``inproc``).
DISABLE_AUTOLOAD_ENV = "TENSORWIRE_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated entry-point names not to load, e.g. ``rdma,mytransport``.
BLOCKED_PLUGINS_ENV = "TENSORWIRE_BLOCKED_PLUGINS"

#: Our own protocols and the distribution (and extra) that provides each.
KNOWN_PROTOCOLS: dict[str, tuple[str, str]] = {
    "inproc": ("tensorwire", ""),
    "grpc": ("tensorwire-grpc", "grpc"),
    "grpc+verbs": ("tensorwire-rdma", "rdma"),
}

_BUILTIN_PLUGINS = {"inproc": "tensorwire.transport.inproc"}


@dataclasses.dataclass(frozen=True)
class ProtocolInfo:
    """Where a registered protocol comes from (``TransportRegistry.infos[protocol]``).

    Args:
      protocol: the protocol name, e.g. ``"grpc"``.
      plugin: the entry-point name of the plugin that registered it.
      distribution: the distribution that provides it, e.g. ``"tensorwire-grpc"``.
      version: that distribution's version (``"?"`` when unknown).
    """

    protocol: str
    plugin: str
    distribution: str
    version: str


@dataclasses.dataclass(frozen=True)
class PluginLoadError:
    """A plugin that could not be imported (``TransportRegistry.load_errors``).

    Args:
      plugin: the plugin's entry-point name.
      distribution: the distribution that declared it.
      reason: ``"ImportError: ..."``, as shown by ``tw.info()`` and in the
        ``NotFoundError`` of a lookup of its protocol.
    """

    plugin: str
    distribution: str
    reason: str


class TransportRegistry:
    """Protocol name -> transport, filled by the plugins' ``tensorwire_register_transports``.

    Tests may construct their own registry, or swap entries of ``registry.factories`` with
    ``monkeypatch.setitem``. The process-wide one is ``default_registry``, which
    ``get_transport`` uses. Plugins are discovered on the first lookup (``load``),
    never when the registry is made.

    Attributes ``factories`` (protocol -> factory), ``infos`` (protocol ->
    ``ProtocolInfo``) and ``load_errors`` (list of ``PluginLoadError``) describe
    what was found.

    Args:
      autoload: whether ``load`` discovers third-party plugins through the
        ``tensorwire.transports`` entry points; None (the default) means yes unless
        ``TENSORWIRE_DISABLE_PLUGIN_AUTOLOAD`` is set. ``inproc`` is always registered.

    Examples:
        >>> from tensorwire.transport import TransportRegistry, hookimpl
        >>> from tensorwire.transport.inproc import InprocTransport
        >>> class MyPlugin:
        ...     @hookimpl
        ...     def tensorwire_register_transports(self, registry):
        ...         registry.register("loop", InprocTransport, distribution="my-package")
        >>> registry = TransportRegistry(autoload=False)
        >>> registry.register_plugin(MyPlugin(), name="loop")
        >>> registry.protocols()
        ['inproc', 'loop']
        >>> registry.infos["loop"].distribution
        'my-package'
    """

    def __init__(self, *, autoload: bool | None = None) -> None:
        self._lock = threading.RLock()
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._loaded = False
        self._autoload = autoload
        self._current_plugin = ("", "", "")
        self.factories: dict[str, Callable[[], Transport]] = {}
        self.infos: dict[str, ProtocolInfo] = {}
        self.load_errors: list[PluginLoadError] = []
        self._instances: dict[str, Transport] = {}

    # -- called by plugins -------------------------------------------------------------
    def register(
        self,
        protocol: str,
        factory: Callable[[], Transport],
        *,
        distribution: str | None = None,
    ) -> None:
        """Declare that ``factory()`` builds the transport for ``protocol``.

        Called by plugins from their ``tensorwire_register_transports`` hook. The factory is
        called only when the protocol is first looked up. Registering a protocol another
        plugin already registered replaces it, with a warning in the log.

        Args:
          protocol: the name used in targets (``"<protocol>://host:port"``); non-empty and
            without ``"://"``.
          factory: a callable with no arguments returning a ``Transport``.
          distribution: the distribution providing it, for ``tw.info()`` and error
            messages; default the plugin's distribution.

        Raises:
          ValueError: ``protocol`` is not a non-empty string without ``"://"``.
          TypeError: ``factory`` is not callable.

        Examples:
            >>> @hookimpl                                                  # doctest: +SKIP
            ... def tensorwire_register_transports(registry):
            ...     registry.register("myproto", make_transport, distribution="my-package")
        """
        if not isinstance(protocol, str) or not protocol or "://" in protocol:
            raise ValueError(f"invalid protocol name {protocol!r}")
        if not callable(factory):
            raise TypeError(f"transport factory for {protocol!r} is not callable: {factory!r}")
        plugin, dist, version = self._current_plugin
        if protocol in self.factories and self.infos[protocol].plugin != plugin:
            log.warning(
                "protocol %r from plugin %r replaces the one from %r",
                protocol,
                plugin,
                self.infos[protocol].plugin,
            )
        self.factories[protocol] = factory
        self.infos[protocol] = ProtocolInfo(protocol, plugin, distribution or dist, version)

    # -- discovery -----------------------------------------------------------------------
    def _should_autoload(self) -> bool:
        if self._autoload is not None:
            return self._autoload
        return not os.environ.get(DISABLE_AUTOLOAD_ENV)

    def load(self) -> None:
        """Discover and register plugins once. Safe to call many times.

        Loads each ``tensorwire.transports`` entry point (unless autoload is off, or it is
        named in ``TENSORWIRE_BLOCKED_PLUGINS``) and calls its
        ``tensorwire_register_transports`` hook, then the built-in ``inproc``. A plugin
        whose import raises ``ImportError`` is logged and kept in ``load_errors``; the
        others still load.

        Raises:
          Exception: whatever a plugin's import or hook raises other than ``ImportError``
            (a bug in that plugin).
        """
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            blocked = {
                name.strip()
                for name in os.environ.get(BLOCKED_PLUGINS_ENV, "").split(",")
                if name.strip()
            }
            seen: set[str] = set()
            if self._should_autoload():
                for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                    if ep.name in blocked or ep.name in seen:
                        continue
                    seen.add(ep.name)
                    dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
                    version = ep.dist.version if ep.dist is not None else "?"
                    self._load_plugin(ep.name, ep.load, dist, version)
            # inproc is part of the core: present even when autoload is off or its entry
            # point is missing (e.g. running from a source tree without installing).
            for name, module in _BUILTIN_PLUGINS.items():
                if name not in seen and name not in blocked:
                    from .._version import __version__

                    self._load_plugin(
                        name,
                        functools.partial(importlib.import_module, module),
                        "tensorwire",
                        __version__,
                    )

    def _load_plugin(self, name: str, loader: Callable[[], Any], dist: str, version: str) -> None:
        try:
            plugin = loader()
        except ImportError as exc:
            log.warning("transport plugin %r (%s) could not be imported: %s", name, dist, exc)
            log.debug("import failure of plugin %r", name, exc_info=True)
            self.load_errors.append(PluginLoadError(name, dist, f"ImportError: {exc}"))
            return
        if self._pm.is_registered(plugin):
            return
        self._pm.register(plugin, name=name)
        self._pm.check_pending()
        self._current_plugin = (name, dist, version)
        try:
            # Call only this plugin's implementation so each registers exactly once.
            others = [p for p in self._pm.get_plugins() if p is not plugin]
            caller = self._pm.subset_hook_caller("tensorwire_register_transports", others)
            caller(registry=self)
        finally:
            self._current_plugin = ("", "", "")

    def register_plugin(self, plugin: Any, name: str, distribution: str = "?") -> None:
        """Register a plugin object directly (tests, embedding applications).

        Loads the entry-point plugins first (see ``load``), then calls ``plugin``'s
        ``tensorwire_register_transports`` hook. A plugin object already registered is
        left alone.

        Args:
          plugin: a module or object implementing the hooks with ``hookimpl``.
          name: the name it is known by (as an entry-point name would be).
          distribution: the distribution to report for its protocols.

        Examples:
            >>> registry = TransportRegistry(autoload=False)          # doctest: +SKIP
            >>> registry.register_plugin(my_plugin_module, name="myproto")  # doctest: +SKIP
        """
        with self._lock:
            self.load()
            self._load_plugin(name, lambda: plugin, distribution, "?")

    # -- lookup ----------------------------------------------------------------------------
    def protocols(self) -> list[str]:
        """The protocol names registered, sorted (plugins are loaded first).

        Examples:
            >>> "inproc" in TransportRegistry(autoload=False).protocols()
            True
        """
        self.load()
        return sorted(self.factories)

    def get(self, protocol: str) -> Transport:
        """The transport for ``protocol``, built on first use and cached.

        Args:
          protocol: a protocol name, e.g. ``"grpc"`` or ``"inproc"``.

        Returns:
          The ``Transport``; the same instance on every call for a protocol.

        Raises:
          TypeError: ``protocol`` is not a string.
          NotFoundError: no plugin registered ``protocol``; the message lists the installed
            protocols and, for tensorwire's own protocols, the distribution to install (or
            why it failed to load).

        Examples:
            >>> registry = TransportRegistry(autoload=False)
            >>> registry.get("inproc").protocols
            ('inproc',)
            >>> registry.get("grpc+verbs")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tensorwire.errors.NotFoundError: No transport for protocol 'grpc+verbs'; ...
        """
        if not isinstance(protocol, str):
            raise TypeError(f"protocol must be a string, got {type(protocol).__name__}")
        with self._lock:
            transport = self._instances.get(protocol)
            if transport is not None:
                return transport
            self.load()
            factory = self.factories.get(protocol)
            if factory is None:
                raise self._unknown(protocol)
            transport = factory()
            self._instances[protocol] = transport
            return transport

    def _unknown(self, protocol: str) -> errors.OpError:
        installed = ", ".join(repr(p) for p in sorted(self.factories)) or "none"
        message = f"No transport for protocol {protocol!r}; installed protocols: {installed}."
        known = KNOWN_PROTOCOLS.get(protocol)
        if known is not None:
            dist, _extra = known
            failed = [e for e in self.load_errors if e.distribution == dist]
            if failed:
                message += f" {dist} is installed but failed to load: {failed[0].reason}."
            else:
                from .._install import install_command

                message += (
                    f" Protocol {protocol!r} is provided by the distribution {dist}, which is "
                    f"not installed: {install_command(dist)}"
                )
        return errors.NotFoundError(message)


#: The process-wide registry that ``get_transport`` (and so every ``tw.Server``,
#: ``tw.Session`` and data-service server) uses.
default_registry = TransportRegistry()


def get_transport(protocol: str) -> Transport:
    """The process-wide transport for ``protocol`` (see ``TransportRegistry``).

    Looks ``protocol`` up in ``default_registry``, discovering the installed plugins on
    the first call.

    Args:
      protocol: a protocol name: ``"grpc"`` (``tensorwire-grpc``), ``"grpc+verbs"``
        (``tensorwire-rdma``), ``"inproc"`` (always there), or a third-party plugin's.

    Returns:
      The ``Transport``, built on first use and then shared by the process.

    Raises:
      TypeError: ``protocol`` is not a string.
      NotFoundError: no installed plugin provides ``protocol``; the message names the
        distribution to install for tensorwire's own protocols.

    Examples:
        >>> from tensorwire.transport import get_transport
        >>> get_transport("inproc").protocols
        ('inproc',)
    """
    return default_registry.get(protocol)
