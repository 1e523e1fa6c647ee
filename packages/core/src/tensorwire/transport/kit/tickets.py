"""One time-limited store of things parked under a ticket until their owner takes them.

Payload movement parks things between two steps of a call: a request pushed over a side
channel waits for the control call that names it, a large response waits for its caller
to fetch it, a buffer lent to a peer's RDMA READs waits for the peer to release it. Each
is a ``TicketStore``: an entry is put under a ticket (16 random bytes by default: a
ticket is a capability, only the caller it was given to can name it), with a deadline
and optionally a size and an owner, and taken exactly once. Expired entries are swept on
the next ``put`` or ``reserve`` and handed to ``on_expire`` (an RDMA buffer a peer may
still read must be discarded, never reused); ``take`` never returns an expired entry.

A store with ``max_bytes`` bounds what may wait in it: ``reserve`` claims the room before
anything is received (so a request announcing more than fits costs nothing) and ``put``
then fills it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from ... import errors

__all__ = ["TICKET_BYTES", "TicketStore", "new_ticket"]

#: Random bytes in a ticket: 128 bits, never guessed.
TICKET_BYTES = 16

V = TypeVar("V")


def new_ticket() -> bytes:
    """A fresh random ticket of ``TICKET_BYTES`` bytes."""
    return secrets.token_bytes(TICKET_BYTES)


class _Entry:
    __slots__ = ("value", "nbytes", "expires", "owner")

    def __init__(self, value: Any, nbytes: int, expires: float, owner: Hashable) -> None:
        self.value = value
        self.nbytes = nbytes
        self.expires = expires
        self.owner = owner


class TicketStore(Generic[V]):
    """Values parked under tickets for a bounded time (and, optionally, bounded bytes).

    Args:
      ttl: seconds an entry waits at most when ``put`` is given no deadline.
      max_bytes: bytes that may wait at once (``reserve``); None for no bound.
      what: what the entries are, for the error of a full store.
      on_expire: called (outside the lock) with each value swept because it expired or
        its owner was dropped.

    Examples:
        >>> from tensorwire.transport.kit.tickets import TicketStore
        >>> store = TicketStore(ttl=60.0)
        >>> ticket = store.put("a large response")
        >>> store.take(ticket)
        'a large response'
        >>> store.take(ticket) is None  # taken exactly once
        True
    """

    def __init__(
        self,
        ttl: float,
        *,
        max_bytes: int | None = None,
        what: str = "parked payloads",
        on_expire: Callable[[V], None] | None = None,
    ) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._what = what
        self._on_expire = on_expire
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._items: dict[Hashable, _Entry] = {}
        self._held = 0

    def _sweep_locked(self, now: float) -> list[Any]:
        expired = [k for k, e in self._items.items() if e.expires < now]
        values = []
        for key in expired:
            entry = self._items.pop(key)
            self._held -= entry.nbytes
            values.append(entry.value)
        return values

    def _expired(self, values: list[Any]) -> None:
        if self._on_expire is not None:
            for value in values:
                self._on_expire(value)

    def reserve(self, nbytes: int) -> None:
        """Claim room for ``nbytes`` before receiving them; ``put`` with
        ``reserved=True`` fills it, ``release`` gives it back.

        Raises:
          ResourceExhaustedError: the bytes do not fit (with what is waiting already).
        """
        with self._lock:
            expired = self._sweep_locked(time.monotonic())
            full = self._max_bytes is not None and self._held + nbytes > self._max_bytes
            if not full:
                self._held += nbytes
            held = self._held
        self._expired(expired)
        if full:
            raise errors.ResourceExhaustedError(
                f"{nbytes} bytes refused: {held} bytes of {self._what} are waiting already "
                f"and at most {self._max_bytes} may wait"
            )

    def release(self, nbytes: int) -> None:
        """Give back room ``reserve`` claimed for something that never arrived."""
        with self._lock:
            self._held -= nbytes

    def put(
        self,
        value: V,
        *,
        ticket: Hashable | None = None,
        nbytes: int = 0,
        deadline: float | None = None,
        owner: Hashable = None,
        reserved: bool = False,
    ) -> Any:
        """Park ``value``; its ticket.

        Args:
          value: what to park.
          ticket: the ticket to park it under; a fresh random one when None.
          nbytes: its size, counted against ``max_bytes``.
          deadline: ``time.monotonic()`` after which it expires (at most ``ttl`` from now).
          owner: who may take it (``take(ticket, owner)``) and whose entries
            ``drop_owner`` sweeps.
          reserved: its bytes were claimed with ``reserve`` already.

        Raises:
          AlreadyExistsError: ``ticket`` is in use (only a hostile peer repeats one).
        """
        now = time.monotonic()
        expires = now + self._ttl
        if deadline is not None:
            expires = min(expires, deadline)
        key = new_ticket() if ticket is None else ticket
        with self._lock:
            expired = self._sweep_locked(now)
            if key in self._items:
                if reserved:
                    self._held -= nbytes
                clash = True
            else:
                clash = False
                if not reserved:
                    self._held += nbytes
                self._items[key] = _Entry(value, nbytes, expires, owner)
        self._expired(expired)
        if clash:
            raise errors.AlreadyExistsError(f"ticket already in use among {self._what}")
        return key

    def take(self, ticket: Hashable, owner: Hashable = None) -> V | None:
        """The value parked under ``ticket``, removed; None when there is none (never put,
        taken already, expired, or, with ``owner``, parked by another owner)."""
        with self._lock:
            entry = self._items.get(ticket)
            if entry is None or (owner is not None and entry.owner != owner):
                return None
            del self._items[ticket]
            self._held -= entry.nbytes
            self._taken.notify_all()
        if entry.expires < time.monotonic():
            self._expired([entry.value])
            return None
        return entry.value

    def discard(self, ticket: Hashable) -> None:
        """Forget ``ticket`` if it is still parked."""
        with self._lock:
            entry = self._items.pop(ticket, None)
            if entry is not None:
                self._held -= entry.nbytes
                self._taken.notify_all()

    def drop_owner(self, owner: Hashable) -> None:
        """Sweep every entry of ``owner`` (through ``on_expire``)."""
        with self._lock:
            keys = [k for k, e in self._items.items() if e.owner == owner]
            values = []
            for key in keys:
                entry = self._items.pop(key)
                self._held -= entry.nbytes
                values.append(entry.value)
        self._expired(values)

    def wait_taken(self, ticket: Hashable, active: Callable[[], bool]) -> None:
        """Return once ``ticket`` was taken or expired, or ``active()`` turned False (then
        the entry is dropped)."""
        with self._lock:
            while ticket in self._items:
                if not active() or self._items[ticket].expires < time.monotonic():
                    entry = self._items.pop(ticket)
                    self._held -= entry.nbytes
                    return
                self._taken.wait(0.25)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def held_bytes(self) -> int:
        """Bytes reserved or parked now."""
        return self._held

    def clear(self) -> None:
        """Forget every entry (``on_expire`` is not called)."""
        with self._lock:
            self._items.clear()
            self._held = 0
            self._taken.notify_all()
