"""``tw.info()``: what this installation is made of."""

from __future__ import annotations

from typing import Any

from ._version import __version__


def info() -> dict[str, Any]:
    """Version, codec implementation, and each installed protocol with where it comes from.

    Plugins that failed to load are listed under ``"plugin_errors"`` with the reason.
    ``tensorwire info`` prints the same. Never raises for a broken plugin: its error is
    reported in the result.

    Returns:
      A dict with ``"version"``, ``"codec"`` (``"compiled"`` or ``"python"``) and
      ``"codec_pure_reason"`` (why not compiled, or None), ``"copy"`` (what copies large
      payloads into shared memory: ``"streaming"``, the compiled kernel, or ``"numpy"``)
      and ``"copy_reason"`` (why NumPy copies, or None),
      ``"protocols"`` (name -> distribution, version and the transport's own status) and
      ``"plugin_errors"``.

    Examples:
        >>> import tensorwire as tw
        >>> sorted(tw.info())  # doctest: +NORMALIZE_WHITESPACE
        ['codec', 'codec_pure_reason', 'copy', 'copy_reason', 'plugin_errors', 'protocols',
         'version']
        >>> "inproc" in tw.info()["protocols"]
        True
    """
    from . import codec
    from .transport.kit import copying
    from .transport.registry import default_registry as registry

    registry.load()
    protocols = {}
    for name, i in sorted(registry.infos.items()):
        entry: dict[str, Any] = {
            "plugin": i.plugin,
            "distribution": i.distribution,
            "version": i.version,
        }
        try:
            entry.update(registry.get(name).status())
        except Exception as exc:  # noqa: BLE001 - info reports, it does not fail
            entry["error"] = f"{type(exc).__name__}: {exc}"
        protocols[name] = entry
    return {
        "version": __version__,
        "codec": codec.IMPLEMENTATION,
        "codec_pure_reason": codec.PURE_REASON,
        "copy": copying.KERNEL,
        "copy_reason": copying.KERNEL_REASON,
        "protocols": protocols,
        "plugin_errors": [
            {"plugin": e.plugin, "distribution": e.distribution, "reason": e.reason}
            for e in registry.load_errors
        ],
    }
