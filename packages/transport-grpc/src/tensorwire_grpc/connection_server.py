"""What the servers of the grpc transport's movers share: accepting connections and
serving each on a thread of its own, at most so many at once, until a stop with a
deadline (``ConnectionServer``), the calls in flight that a stop drains
(``CallsInFlight``), and the metadata a call on a proven connection runs with
(``with_server_token``).

Each mover keeps its own socket and protocol (``bulk.server.BulkServer``: TCP;
``shm_mover.ShmMoverServer``: an abstract Unix socket) and hands the ``ConnectionServer``
how to accept, serve, refuse and shut one of its connections and how to stop listening.

The accept loop survives failures (EMFILE in a burst of connections, a thread that cannot
start): it logs, backs off up to ``ACCEPT_RETRY_MAX_SECONDS`` and accepts again; the
connections waiting in the backlog are served once it can. A connection the server will
not serve (it stops, it serves ``max_connections`` already, no thread could be started for
it) is refused with the reason, which the mover tells its peer if its protocol can. A
mover whose peers cannot hear a refusal asks instead that connections beyond the limit
wait unaccepted until one ends (``wait_when_full``).

``close`` stops listening, shuts every connection (their threads' reads fail at once) and
joins the accept thread and the connection threads until a deadline: afterwards the server
holds no socket and no thread, unless a call outlived the wait, which is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from tensorwire import errors
from tensorwire.transport.base import TOKEN_METADATA_KEY
from tensorwire.transport.threads import join_threads

__all__ = ["CLOSE_JOIN_SECONDS", "CallsInFlight", "ConnectionServer", "with_server_token"]

C = TypeVar("C")

#: After a failed accept(), wait this long before the next, doubling per failure up to the
#: max: the failure (EMFILE, ENOMEM) usually lasts until other connections end.
ACCEPT_RETRY_SECONDS = 0.01
ACCEPT_RETRY_MAX_SECONDS = 1.0
#: How long ``close`` waits for the threads by default (they are woken at once).
CLOSE_JOIN_SECONDS = 5.0
#: Why a connection or a call that comes while the server stops is refused.
STOPPING = "the server is stopping"


class ConnectionServer(Generic[C]):
    """A mover's accept loop and its connections' threads (see the module docstring).

    Args:
      name: what log lines and the stop's warning call the server
        (``"bulk side channel on port 5000"``).
      accept: waits for the next connection and returns it; None when there is none to
        serve this time (a poll ran out, a peer failed its handshake). Raises ``OSError``
        when accepting failed (the loop backs off) or the listener was closed.
      serve: serves a connection on its own thread until it ends, then closes it.
      refuse: closes a connection the server will not serve, telling the peer the reason
        if the protocol has a way; runs on the accept thread, so it must not block.
      shut: ends a connection being served (``close``): its thread's next read fails.
        It must not raise for a connection that has just ended (its thread closed it
        while ``close`` was taking the list).
      stop_listening: closes the listener, waking ``accept``.
      max_connections: connections served at once at most.
      kind: what the refusal at the limit calls the connections (``"side-channel"``).
      wait_when_full: at the limit, leave new connections unaccepted until one ends,
        rather than accept and refuse them.
      accept_thread_name: the accept thread's name; connection_thread_name: each
        connection thread's (``tensorwire-...``: tests look for them after a stop).
      log: the mover's logger, which the loop's lines go to (so that the mover's log
        settings apply to them).
    """

    def __init__(
        self,
        name: str,
        *,
        accept: Callable[[], C | None],
        serve: Callable[[C], None],
        refuse: Callable[[C, str], None],
        shut: Callable[[C], None],
        stop_listening: Callable[[], None],
        max_connections: int,
        kind: str,
        wait_when_full: bool,
        accept_thread_name: str,
        connection_thread_name: str,
        log: logging.Logger,
    ) -> None:
        self.name = name
        self._accept = accept
        self._serve = serve
        self._refuse = refuse
        self._shut = shut
        self._stop_listening = stop_listening
        self._max_connections = max_connections
        self._kind = kind
        self._wait_when_full = wait_when_full
        self._connection_thread_name = connection_thread_name
        self._log = log
        self._lock = threading.Lock()
        #: Notified when a connection ends or the server closes (``wait_when_full``).
        self._room = threading.Condition(self._lock)
        self._connections: set[C] = set()
        #: The threads serving connections, joined by close().
        self._threads: set[threading.Thread] = set()
        #: Set by close(), under the lock: no connection (and no thread) is added after it.
        self._closed = threading.Event()
        self.accept_thread = threading.Thread(
            target=self._accept_loop, name=accept_thread_name, daemon=True
        )

    def __len__(self) -> int:
        """The connections being served now."""
        return len(self._connections)

    def start(self) -> None:
        """Start accepting (once the mover is ready to serve)."""
        self.accept_thread.start()

    def _accept_loop(self) -> None:
        failures = 0
        while not self._closed.is_set():
            if self._wait_when_full and not self._wait_for_room():
                return
            try:
                connection = self._accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                failures += 1
                if not self._back_off(failures, f"cannot accept a connection: {exc}"):
                    return
                continue
            if connection is None:
                continue
            try:
                self._hand_over(connection)
            except RuntimeError as exc:  # "can't start new thread"; refused with the reason
                failures += 1
                if not self._back_off(failures, f"cannot start a connection thread: {exc}"):
                    return
                continue
            if failures:
                self._log.warning(
                    "%s accepts connections again after %d failures", self.name, failures
                )
                failures = 0

    def _wait_for_room(self) -> bool:
        """Wait until fewer than ``max_connections`` are served; False once closed."""
        with self._lock:
            while len(self._connections) >= self._max_connections and not self._closed.is_set():
                self._room.wait()
            return not self._closed.is_set()

    def _hand_over(self, connection: C) -> None:
        """Serve ``connection`` on a new thread, or refuse it with the reason.

        Raises:
          RuntimeError: no thread could be started (the connection was refused).
        """
        thread = threading.Thread(
            target=self._serve_then_forget,
            args=(connection,),
            name=self._connection_thread_name,
            daemon=True,
        )
        with self._lock:
            closed = self._closed.is_set()
            full = len(self._connections) >= self._max_connections
            if not (closed or full):
                self._connections.add(connection)
                self._threads.add(thread)
        if closed or full:
            reason = (
                STOPPING
                if closed
                else f"the server serves at most {self._max_connections} {self._kind} "
                "connections at once; this call uses gRPC"
            )
            self._refuse(connection, reason)
            return
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            with self._lock:
                self._connections.discard(connection)
                self._threads.discard(thread)
            reason = f"the server cannot start a thread for it now ({exc}); this call uses gRPC"
            self._refuse(connection, reason)
            raise

    def _serve_then_forget(self, connection: C) -> None:
        try:
            self._serve(connection)
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._threads.discard(threading.current_thread())
                self._room.notify_all()

    def _back_off(self, failures: int, reason: str) -> bool:
        """Wait before accepting again after ``failures`` failures in a row; False when
        the server closed meanwhile. Logs the first failure of a run as a warning."""
        delay = min(ACCEPT_RETRY_MAX_SECONDS, ACCEPT_RETRY_SECONDS * 2 ** min(failures, 20))
        if failures == 1:
            self._log.warning(
                "%s %s; retrying every %.0f ms at most, new connections wait in the backlog "
                "meanwhile",
                self.name,
                reason,
                ACCEPT_RETRY_MAX_SECONDS * 1000,
            )
        else:
            self._log.debug("%s %s (failure %d)", self.name, reason, failures)
        return not self._closed.wait(delay)

    def close(self, timeout: float = CLOSE_JOIN_SECONDS) -> None:
        """Stop listening, shut every connection and wait up to ``timeout`` seconds for
        the accept thread and the connection threads to end."""
        with self._lock:
            self._closed.set()
            self._room.notify_all()
            connections = list(self._connections)
        self._stop_listening()
        for connection in connections:
            self._shut(connection)
        with self._lock:
            threads = [self.accept_thread, *self._threads]
        join_threads(threads, time.monotonic() + timeout, self.name)


class CallsInFlight:
    """The calls a mover's server runs now. When its listener stops, ``drain`` refuses new
    ones and waits, with a deadline, for those running to answer: as gRPC does with its
    own calls. A call is counted from ``begin`` until its response was sent (``end``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._count = 0
        self._draining = False
        #: Calls ``begin`` found no room for (its ``busy`` said so).
        self.refused_busy = 0

    @property
    def count(self) -> int:
        """Calls running now."""
        return self._count

    def begin(self, what: str, busy: Callable[[int], bool] | None = None) -> bool:
        """Count the call ``what`` in flight, unless ``busy`` (given the calls running,
        asked under the lock) says there is no room: then False, and it is not counted.
        A counted call must ``end``.

        Raises:
          UnavailableError: the server is stopping.
        """
        with self._lock:
            if self._draining:
                raise errors.UnavailableError(f"{what}: {STOPPING}")
            if busy is not None and busy(self._count):
                self.refused_busy += 1
                return False
            self._count += 1
            return True

    def end(self) -> None:
        """A call counted by ``begin`` was answered."""
        with self._lock:
            self._count -= 1
            if self._draining:  # set under this lock before drain() waits
                self._done.notify_all()

    def drain(self, grace: float) -> None:
        """Refuse new calls and wait up to ``grace`` seconds for those running to end."""
        end = time.monotonic() + grace
        with self._lock:
            self._draining = True
            while self._count and time.monotonic() < end:
                self._done.wait(max(0.0, end - time.monotonic()))


def with_server_token(metadata: dict[str, str], token: str | None) -> dict[str, str]:
    """``metadata``, changed in place, as a call that came over a mover's connection runs
    with. The token never crosses a mover: the connection proved it (each mover's
    handshake), so the call carries this server's own token for the usual check."""
    metadata.pop(TOKEN_METADATA_KEY, None)
    if token is not None:
        metadata[TOKEN_METADATA_KEY] = token
    return metadata
