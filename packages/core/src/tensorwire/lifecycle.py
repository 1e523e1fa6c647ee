"""Servers stop by themselves when the interpreter exits.

A script that starts servers (tw.Server, a dispatcher and workers, a transport listener),
uses them and ends must exit without calling ``stop()``, as with TensorFlow. Transports may
run non-daemon threads (gRPC's server pool); ``threading._register_atexit`` runs before the
interpreter joins those threads, so servers still alive then are stopped first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["stop_at_exit", "forget", "stopped_on_failure"]

log = logging.getLogger(__name__)

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False
_lock = threading.Lock()


def _stop_all() -> None:
    for obj in list(_live):
        try:
            obj.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.debug("stopping %r at exit failed", obj, exc_info=True)


def stop_at_exit(obj: Any) -> None:
    """Stop ``obj`` (anything with ``stop()``) at interpreter exit if it is still alive."""
    global _registered
    with _lock:
        _live.add(obj)
        if not _registered:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                register(_stop_all)
            else:  # pragma: no cover - every supported CPython has it
                import atexit

                atexit.register(_stop_all)
            _registered = True


def _forget_all_after_fork() -> None:
    # The servers of a forked child's parent are the parent's: the child must not stop
    # them when it exits (stopping a gRPC server sends GOAWAY on the shared sockets).
    global _lock
    _lock = threading.Lock()
    _live.clear()


os.register_at_fork(after_in_child=_forget_all_after_fork)


def forget(obj: Any) -> None:
    """No longer stop ``obj`` at exit (it was stopped already)."""
    _live.discard(obj)


@contextlib.contextmanager
def stopped_on_failure(server: Any) -> Iterator[None]:
    """Stop ``server`` if the block fails, then let the failure propagate.

    For a constructor's last steps (start a metrics endpoint, register, start serving): a
    server whose construction failed is never returned, so nobody else could stop it, and
    what it had bound or started would stay behind. ``server.stop()`` must cope with a
    half-built server.
    """
    try:
        yield
    except BaseException:
        server.stop()
        raise
