"""The one time-limited ticket store: taken once, expiring, bounded, owned."""

from __future__ import annotations

import threading
import time

import pytest
from tensorwire import errors
from tensorwire.transport.kit.tickets import TICKET_BYTES, TicketStore

PAST = -1.0  # a deadline already over, relative to now


def test_a_value_is_taken_exactly_once() -> None:
    store: TicketStore[str] = TicketStore(60.0)
    ticket = store.put("response")
    assert isinstance(ticket, bytes) and len(ticket) == TICKET_BYTES
    assert store.take(ticket) == "response"
    assert store.take(ticket) is None
    assert len(store) == 0


def test_tickets_are_random_and_distinct() -> None:
    store: TicketStore[int] = TicketStore(60.0)
    tickets = {store.put(i) for i in range(100)}
    assert len(tickets) == 100


def test_an_expired_value_is_never_taken_and_is_handed_to_on_expire() -> None:
    expired: list[str] = []
    store: TicketStore[str] = TicketStore(60.0, on_expire=expired.append)
    ticket = store.put("old", deadline=time.monotonic() + PAST)
    assert store.take(ticket) is None
    assert expired == ["old"]


def test_expired_values_are_swept_on_the_next_put() -> None:
    expired: list[str] = []
    store: TicketStore[str] = TicketStore(60.0, on_expire=expired.append)
    store.put("old", nbytes=10, deadline=time.monotonic() + PAST)
    store.put("new", nbytes=5)
    assert expired == ["old"]
    assert len(store) == 1 and store.held_bytes == 5


def test_the_ttl_bounds_a_later_deadline() -> None:
    store: TicketStore[str] = TicketStore(0.0)
    ticket = store.put("x", deadline=time.monotonic() + 3600)
    after = time.monotonic()  # the entry expires at the latest now
    end = after + 30
    while time.monotonic() <= after < end:  # a condition on the clock, not a sleep
        pass
    assert store.take(ticket) is None


def test_a_full_store_refuses_a_reservation_saying_why() -> None:
    store: TicketStore[bytes] = TicketStore(60.0, max_bytes=100, what="pushed requests")
    store.reserve(60)
    with pytest.raises(errors.ResourceExhaustedError, match="60 bytes of pushed requests"):
        store.reserve(41)
    store.release(60)
    store.reserve(100)
    assert store.held_bytes == 100


def test_a_reserved_put_does_not_count_twice() -> None:
    store: TicketStore[bytes] = TicketStore(60.0, max_bytes=100)
    store.reserve(80)
    ticket = store.put(b"x" * 80, nbytes=80, reserved=True)
    assert store.held_bytes == 80
    store.take(ticket)
    assert store.held_bytes == 0


def test_a_repeated_ticket_is_refused_and_its_reservation_returned() -> None:
    store: TicketStore[bytes] = TicketStore(60.0, max_bytes=100)
    store.put(b"a", ticket=b"t" * 16, nbytes=1)
    store.reserve(10)
    with pytest.raises(errors.AlreadyExistsError):
        store.put(b"b", ticket=b"t" * 16, nbytes=10, reserved=True)
    assert store.held_bytes == 1


def test_only_the_owner_takes_an_owned_value() -> None:
    store: TicketStore[str] = TicketStore(60.0)
    store.put("lease", ticket=7, owner="conn-1")
    assert store.take(7, owner="conn-2") is None
    assert store.take(7, owner="conn-1") == "lease"


def test_dropping_an_owner_sweeps_its_values_only() -> None:
    swept: list[str] = []
    store: TicketStore[str] = TicketStore(60.0, on_expire=swept.append)
    store.put("a", ticket=1, owner="c1")
    store.put("b", ticket=2, owner="c2")
    store.put("c", ticket=3, owner="c1")
    store.drop_owner("c1")
    assert sorted(swept) == ["a", "c"]
    assert store.take(2, owner="c2") == "b"


def test_wait_taken_returns_once_another_thread_takes_it() -> None:
    store: TicketStore[str] = TicketStore(60.0)
    ticket = store.put("x")
    taker = threading.Thread(target=store.take, args=(ticket,))
    taker.start()
    store.wait_taken(ticket, active=lambda: True)
    taker.join(30)
    assert len(store) == 0


def test_wait_taken_drops_the_value_when_the_call_ends() -> None:
    store: TicketStore[str] = TicketStore(60.0)
    ticket = store.put("x", nbytes=3)
    store.wait_taken(ticket, active=lambda: False)
    assert len(store) == 0 and store.held_bytes == 0
