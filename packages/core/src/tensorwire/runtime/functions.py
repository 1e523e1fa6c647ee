"""How functions travel to the task that runs them.

A function goes *by reference* (``module:qualname``) when the receiving side can import it
by that name and get the same object, and *by value* (cloudpickle) otherwise: lambdas,
closures, functions defined in ``__main__`` or a notebook. A server may refuse code from
the wire: then only functions registered with ``register_function`` (by name) run.

Both sides cache: the caller keeps the encoded spec per function object, the server keeps
the resolved function per spec, so a hot loop of small calls pays for neither pickling nor
importing after the first call.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import errors

__all__ = ["register_function", "registered_functions", "FunctionSpec", "spec_of", "FunctionTable"]

# A spec is a small tuple the codec can carry: ("ref", "module:qualname") | ("val", bytes)
# | ("reg", name).
FunctionSpec = tuple[str, Any]

_registry_lock = threading.Lock()
_registered: dict[str, Callable[..., Any]] = {}
_registered_names: dict[int, str] = {}


def register_function(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Allow ``fn`` on servers that accept registered functions only.

    Usable as ``register_function(fn)``, ``@register_function`` or
    ``@register_function(name="train_step")``. The name defaults to ``module:qualname``.
    Register the same functions in every process of the cluster (callers send the name).

    Args:
      fn: the function; omitted when used as ``@register_function(name=...)``.
      name: the name it is sent by (default ``module:qualname``).

    Returns:
      ``fn`` itself (or a decorator, when ``fn`` is omitted).

    Raises:
      TypeError: ``fn`` is not callable.
      ValueError: ``fn`` has no importable name and no ``name`` was given.
      AlreadyExistsError: a different function is registered under that name.

    Examples:
        >>> @tw.register_function(name="square")
        ... def square(x):
        ...     return x * x
        >>> sess.run(square, np.arange(3))      # doctest: +SKIP
        array([0, 1, 4])
    """

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise TypeError(f"register_function expects a callable, got {f!r}")
        key = name or _qualified_name(f)
        if key is None:
            raise ValueError(f"{f!r} has no importable name; pass name=...")
        with _registry_lock:
            existing = _registered.get(key)
            if existing is not None and existing is not f:
                raise errors.AlreadyExistsError(f"a different function is registered as {key!r}")
            _registered[key] = f
            _registered_names[id(f)] = key
        # A spec cached before registration would keep sending the function another way.
        _forget_spec(f)
        return f

    if fn is None:
        return add
    return add(fn)


def registered_functions() -> dict[str, Callable[..., Any]]:
    with _registry_lock:
        return dict(_registered)


def _qualified_name(fn: Callable[..., Any]) -> str | None:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _importable(fn: Callable[..., Any], name: str) -> bool:
    module_name, _, qualname = name.partition(":")
    if module_name == "__main__":
        return False
    try:
        return _resolve_reference(name) is fn
    except Exception:  # noqa: BLE001 - not importable is an answer, not an error
        return False


def _resolve_reference(name: str) -> Callable[..., Any]:
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_spec_cache: weakref.WeakKeyDictionary[Any, FunctionSpec] = weakref.WeakKeyDictionary()
_spec_cache_by_id: dict[int, tuple[Any, FunctionSpec]] = {}


def _forget_spec(fn: Callable[..., Any]) -> None:
    try:
        _spec_cache.pop(fn, None)
    except TypeError:
        _spec_cache_by_id.pop(id(fn), None)


def spec_of(fn: Callable[..., Any]) -> FunctionSpec:
    """The spec that sends ``fn``: its registered name, its import path, or its pickle."""
    if not callable(fn):
        raise TypeError(f"run() expects a callable, got {type(fn).__name__}")
    try:
        cached = _spec_cache.get(fn)
    except TypeError:  # not weak-referenceable (e.g. some builtins): cache by id
        entry = _spec_cache_by_id.get(id(fn))
        cached = entry[1] if entry is not None and entry[0] is fn else None
    if cached is not None:
        return cached
    with _registry_lock:
        registered = _registered_names.get(id(fn))
    if registered is not None and _registered.get(registered) is fn:
        spec: FunctionSpec = ("reg", registered)
    else:
        name = _qualified_name(fn)
        if name is not None and _importable(fn, name):
            spec = ("ref", name)
        else:
            spec = ("val", cloudpickle.dumps(fn, protocol=5))
    try:
        _spec_cache[fn] = spec
    except TypeError:
        _spec_cache_by_id[id(fn)] = (fn, spec)
    return spec


class FunctionTable:
    """A server's view of incoming function specs, with its code-from-the-wire policy."""

    def __init__(self, allow_code_from_wire: bool = True) -> None:
        self.allow_code_from_wire = allow_code_from_wire
        self._cache: dict[tuple[str, Any], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def resolve(self, spec: Any) -> Callable[..., Any]:
        try:
            # A spec that arrives as a tuple of str (or str and bytes) is its own cache key.
            fn = self._cache.get(spec)
        except TypeError:  # unhashable: a list, a writable buffer
            fn = None
        if fn is not None:
            return fn
        try:
            kind, payload = spec
            key = (str(kind), bytes(payload) if kind == "val" else str(payload))
        except (TypeError, ValueError):
            raise errors.InvalidArgumentError(f"malformed function spec {spec!r}") from None
        fn = self._cache.get(key)
        if fn is not None:
            return fn
        fn = self._load(*key)
        with self._lock:
            if len(self._cache) > 4096:  # a bound, for callers that send endless lambdas
                self._cache.clear()
            self._cache[key] = fn
        return fn

    def _load(self, kind: str, payload: Any) -> Callable[..., Any]:
        if kind == "reg":
            fn = registered_functions().get(payload)
            if fn is None:
                raise errors.NotFoundError(
                    f"no function is registered as {payload!r} on this task; call "
                    "tw.runtime.register_function in every process of the cluster"
                )
            return fn
        if not self.allow_code_from_wire:
            if kind == "ref":
                fn = registered_functions().get(payload)
                if fn is not None:
                    return fn
            raise errors.PermissionDeniedError(
                f"this server runs registered functions only; {_describe(kind, payload)} is "
                "not registered (tw.runtime.register_function)"
            )
        if kind == "ref":
            try:
                fn = _resolve_reference(payload)
            except (ImportError, AttributeError) as exc:
                raise errors.NotFoundError(
                    f"cannot import function {payload!r} on this task: {exc}"
                ) from None
        elif kind == "val":
            try:
                fn = cloudpickle.loads(payload)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
                raise errors.InvalidArgumentError(
                    f"could not unpickle the function sent: {type(exc).__name__}: {exc}"
                ) from None
        else:
            raise errors.InvalidArgumentError(f"unknown function spec kind {kind!r}")
        if not callable(fn):
            raise errors.InvalidArgumentError(f"{_describe(kind, payload)} is not callable")
        return fn


def _describe(kind: str, payload: Any) -> str:
    if kind == "val":
        return "a function sent by value"
    return f"function {payload!r}"
