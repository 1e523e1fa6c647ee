"""gRPC across ``fork()``: what a forked child may use, and what it must leave alone.

A process that forks without exec (``multiprocessing``'s default "fork" start method, so
PyTorch's DataLoader workers) gets a copy of every gRPC object of its parent, but none of
the threads behind them. What we measured with grpcio 1.85 (Linux, default settings; the
core's fork handlers are built in and on, gRPC Python's own fork support is off unless
``GRPC_ENABLE_FORK_SUPPORT`` is set):

- A child that keeps using a channel its parent created is outside what gRPC supports:
  we saw such children crash (SIGSEGV, or an abort in ``ev_epoll1_linux.cc`` / absl's
  mutex), sometimes only when exiting, and hang now and then even when the server ran
  in another process.
- A child that creates fresh channels works, *provided no thread of the parent was inside
  gRPC at the moment of the fork*: gRPC's pre-fork handler then resets the core and the
  child starts it afresh. When a thread was inside gRPC, the handler gives up (gRPC logs
  "Other threads are currently calling into gRPC, skipping fork() handlers") and the
  child's core is unusable: fresh channels crash or hang as well.
- A process that runs a gRPC server always has a thread inside gRPC (the server's
  completion-queue poller), so no child forked from it can use gRPC. Setting
  ``GRPC_ENABLE_FORK_SUPPORT=1``, with or without ``GRPC_POLL_STRATEGY=poll``, changed
  none of this (gRPC documents its fork support as client-side only).

So, in a forked child (``os.register_at_fork``):

- every transport forgets the channels, bulk connections and thread pools it inherited
  and creates new ones on first use; the inherited gRPC objects are kept referenced and
  never touched, so no finalizer calls into the copied core (only the child's copies of
  side-channel socket descriptors are closed, which the parent does not notice);
- if a gRPC server was serving in the parent when it forked, gRPC is refused in the child
  with ``FailedPreconditionError`` saying what to do (start the
  children with "spawn" or "forkserver", or run the servers in their own processes),
  instead of the crash or hang that would follow.

Client calls in flight at the moment of a fork put the child at the same risk; that is
for callers to avoid. The data service does (``tensorwire_dataservice.service.protocol``
holds its calls back while the process forks, at most a couple of seconds).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from tensorwire import errors

__all__ = [
    "after_fork_in_child",
    "check_usable",
    "serving",
    "stopped_serving",
    "forked_from_server",
    "keep_inherited",
]

_lock = threading.Lock()
#: Started, not yet stopped gRPC servers of this process (listener -> address).
_serving: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
#: Objects with a ``_reset_after_fork()`` method, called in a forked child.
_resettable: weakref.WeakSet[Any] = weakref.WeakSet()
#: Set in a child forked while servers were serving: their addresses.
_unusable_because: list[str] = []
#: Inherited objects kept alive in a forked child so that no finalizer touches them.
_inherited: list[Any] = []


def serving(listener: Any, address: str) -> None:
    """Record that ``listener`` (a started gRPC server) serves ``address``."""
    with _lock:
        _serving[listener] = address


def stopped_serving(listener: Any) -> None:
    with _lock:
        _serving.pop(listener, None)


def after_fork_in_child(obj: Any) -> None:
    """Call ``obj._reset_after_fork()`` in every child this process forks (held weakly)."""
    with _lock:
        _resettable.add(obj)


def keep_inherited(obj: Any) -> None:
    """Keep ``obj``, an object inherited through fork, alive and untouched in this child."""
    _inherited.append(obj)


def forked_from_server() -> list[str]:
    """The addresses the parent served gRPC on when it forked this process ([] if none)."""
    return list(_unusable_because)


def check_usable(what: str) -> None:
    """Raise ``FailedPreconditionError`` when gRPC cannot work in this (forked) process."""
    if not _unusable_because:
        return
    raise errors.FailedPreconditionError(
        f"{what}: this process was forked (e.g. as a PyTorch DataLoader worker) from a "
        f"process that was serving gRPC on {', '.join(sorted(_unusable_because))}, and "
        "gRPC cannot run in a child forked while a thread of its parent was inside gRPC "
        "(it would crash or hang). Start the child processes with the 'spawn' or "
        "'forkserver' start method (DataLoader(..., multiprocessing_context='spawn')), or "
        "run the tf.data service dispatcher and workers in their own processes."
    )


def _child() -> None:
    global _lock
    # The parent's lock may have been held by one of its threads at the fork.
    _lock = threading.Lock()
    if _serving:
        _unusable_because[:] = sorted(set(_serving.values()))
        # The servers (and their threads) stay the parent's; never stop them from here.
        for listener in list(_serving):
            keep_inherited(listener)
        _serving.clear()
    for obj in list(_resettable):
        obj._reset_after_fork()


os.register_at_fork(after_in_child=_child)
