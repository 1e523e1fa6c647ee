"""The threads that serve calls: started on demand, retired when idle, never a silent queue.

A handler may wait for a long time: a stream a reader drains slowly, a ``recv`` waiting for
a tensor that another call will send. A fixed pool of N threads therefore deadlocks as soon
as N calls wait for the one queued behind them, and the queued caller hangs with no error.
``DaemonThreadPool`` is what every transport (and the background of ``call_async``)
runs such work on instead:

- A new thread whenever no thread is idle, up to ``max_threads`` (default
  ``DEFAULT_MAX_THREADS``): 500 waiting calls get 500 threads.
- A thread idle for ``idle_seconds`` (default ``IDLE_SECONDS``) ends, so a burst does not
  leave thousands of threads behind.
- Past ``max_threads`` busy threads, ``DaemonThreadPool.submit_now`` refuses at once
  with ``ResourceExhaustedError``, saying so and naming the option that raises the limit
  (the ``limit_hint`` of the pool). ``DaemonThreadPool.submit`` (the ``Executor``
  interface gRPC's server calls, and which must not raise) queues instead; its caller bounds
  the work it submits (the grpc listener has gRPC refuse calls past the pool's size).
- Threads are daemons. ``concurrent.futures.ThreadPoolExecutor`` joins its threads when the
  interpreter exits, so one handler blocked for long would hang the exit of a process that
  still had a server running; transports stop their listeners at exit instead.
- A listener that stops calls ``DaemonThreadPool.shutdown`` and then
  ``DaemonThreadPool.join`` with a deadline, so that once its ``stop()`` returns the
  threads it ran calls on are gone (a handler that ignores the stop is waited for only until
  the deadline, and named in the log).
- A forked child has none of its parent's threads: ``background`` starts a new pool
  there on first use (the inherited one is kept referenced, never used or shut down).

Memory: a thread waiting in Python costs about 20 KiB of resident memory on Linux (18 KiB
measured for 2000 waiting threads; the 8 MiB stack is reserved, not touched), so even the
default cap of 4096 busy threads stays under 100 MiB.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import errors

__all__ = ["DEFAULT_MAX_THREADS", "IDLE_SECONDS", "DaemonThreadPool", "background", "join_threads"]

log = logging.getLogger(__name__)

#: Threads a pool starts at most, i.e. calls and streams one server serves at once. Far
#: above the few hundred waiting calls a busy task sees; low enough that a runaway client
#: is refused before the process runs out of threads (``ulimit -u``, container pid limits).
DEFAULT_MAX_THREADS = 4096
#: A thread with nothing to do for this long ends.
IDLE_SECONDS = 30.0

_WorkItem = tuple[
    concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]
]


class DaemonThreadPool(concurrent.futures.Executor):
    """Daemon threads started on demand up to ``max_threads``; idle ones retire.

    ``name`` prefixes the threads' names and starts refusal messages; ``limit_hint`` ends
    them, telling the user which option raises ``max_threads``.
    """

    def __init__(
        self,
        max_threads: int,
        name: str,
        *,
        idle_seconds: float = IDLE_SECONDS,
        limit_hint: str = "",
    ) -> None:
        if not isinstance(max_threads, int) or max_threads <= 0:
            raise ValueError(f"max_threads must be a positive int, got {max_threads!r}")
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds must be positive, got {idle_seconds!r}")
        self.max_threads = max_threads
        self.name = name
        self._idle_seconds = idle_seconds
        self._limit_hint = limit_hint
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        # Threads waiting for work that no submitted item has claimed yet. Invariant:
        # idle == threads waiting (or about to) - items in the queue.
        self._idle = 0
        self._busy = 0
        self._numbers = itertools.count(1)
        self._shutdown = False
        #: The threads started and not ended, for ``join``.
        self._workers: set[threading.Thread] = set()

    def __repr__(self) -> str:
        return (
            f"DaemonThreadPool({self.name!r}, threads={self._threads}, busy={self._busy}, "
            f"max_threads={self.max_threads})"
        )

    @property
    def busy(self) -> int:
        """Work items submitted and not finished (running or about to)."""
        return self._busy

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        return self._threads

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on an idle or new thread; past ``max_threads`` busy, queue it."""
        return self._submit(fn, args, kwargs, refuse=False)

    def submit_now(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on an idle or new thread, or raise ``ResourceExhaustedError`` at once
        when ``max_threads`` threads are busy: never queued behind calls that may wait."""
        return self._submit(fn, args, kwargs, refuse=True)

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        refuse: bool,
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        start = False
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self.name}: cannot schedule new work after shutdown")
            if self._idle:
                self._idle -= 1  # claimed: that thread takes this item (or an equal one)
            elif self._threads < self.max_threads:
                self._threads += 1
                start = True
            elif refuse:
                raise self._refusal()
            self._busy += 1
        if start:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{next(self._numbers)}", daemon=True
            )
            with self._lock:
                self._workers.add(thread)
            try:
                thread.start()
            except RuntimeError as exc:  # the OS gave no thread (ulimit -u, memory, pids)
                with self._lock:
                    self._workers.discard(thread)
                    self._threads -= 1
                    if refuse:
                        self._busy -= 1
                if refuse:
                    raise errors.ResourceExhaustedError(
                        f"{self.name}: could not start a thread for this call ({exc}) with "
                        f"{self._threads} threads running"
                    ) from None
                log.error(
                    "%s: could not start a thread (%s) with %d running; the work waits for "
                    "one of them",
                    self.name,
                    exc,
                    self._threads,
                )
        self._queue.put((future, fn, args, kwargs))
        return future

    def _refusal(self) -> errors.OpError:
        hint = f" {self._limit_hint}" if self._limit_hint else ""
        return errors.ResourceExhaustedError(
            f"{self.name}: all {self.max_threads} threads are busy with calls and streams "
            f"that have not finished, so this one was refused rather than queued behind "
            f"them.{hint}"
        )

    def _work(self) -> None:
        get = self._queue.get
        while True:
            try:
                item = get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # an unclaimed idle thread: this one can go
                        self._idle -= 1
                        self._threads -= 1
                        self._workers.discard(threading.current_thread())
                        return
                continue  # an item was handed to the waiting threads meanwhile: take it
            if item is None:
                self._queue.put(None)  # wake the next thread too
                with self._lock:
                    self._threads -= 1
                    self._workers.discard(threading.current_thread())
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs  # drop references before idling
            with self._lock:
                self._busy -= 1
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with ``cancel_futures`` cancel what has not started. Threads
        end after their current item; being daemons, they are never waited for."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
                    with self._lock:
                        self._busy -= 1
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """After ``shutdown``: wait up to ``timeout`` seconds for every thread of the
        pool to end. True when they all did; else the ones still running are logged."""
        with self._lock:
            if not self._shutdown:
                raise RuntimeError(f"{self.name}: join() before shutdown() would never end")
            workers = list(self._workers)
        return not join_threads(workers, time.monotonic() + timeout, self.name)


def join_threads(
    threads: Iterable[threading.Thread], deadline: float, owner: str
) -> list[threading.Thread]:
    """Join ``threads`` until ``deadline`` (``time.monotonic()``); those still running then
    are logged as a warning naming ``owner`` and returned."""
    alive = []
    for thread in threads:
        if thread is threading.current_thread():
            continue  # stopped from one of its own threads: it ends when this call returns
        while True:
            try:
                thread.join(max(0.0, deadline - time.monotonic()))
                break
            except RuntimeError:
                # Not started yet: owners list a thread just before starting it (outside
                # their lock), so that none escapes. Its start is a moment away.
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.001)
        if thread.is_alive():
            alive.append(thread)
    if alive:
        log.warning(
            "%s: %d thread(s) still running after the stop deadline: %s",
            owner,
            len(alive),
            ", ".join(t.name for t in alive),
        )
    return alive


_background_lock = threading.Lock()
_background: DaemonThreadPool | None = None
#: In a forked child: the parent's background pool, which has no threads here.
_inherited: list[DaemonThreadPool] = []


def _forget_background_after_fork() -> None:
    global _background, _background_lock
    if _background is not None:
        _inherited.append(_background)
    _background, _background_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_background_after_fork)


def background() -> DaemonThreadPool:
    """The process-wide pool for the blocking parts of ``Channel.call_async``.

    Call ``submit_now``: past ``DEFAULT_MAX_THREADS`` background
    calls in flight, a further one is refused instead of waiting behind them.
    """
    global _background
    with _background_lock:
        if _background is None:
            _background = DaemonThreadPool(
                DEFAULT_MAX_THREADS,
                "tensorwire-call",
                limit_hint="Wait for some of the calls started with call_async (or "
                "run_async) to finish before starting more.",
            )
        return _background
