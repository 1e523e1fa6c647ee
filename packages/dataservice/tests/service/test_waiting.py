"""Waiting for a dispatcher that is not there: readers and workers say whom they wait for
(a warning at the first failure, then every few seconds), give up with UnavailableError after
their timeout, and stop waiting at once when told to stop.

No test asserts how long anything took: each wait is bounded by a generous deadline.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import client, protocol
from tensorwire_dataservice.service.protocol import call_with_retries
from tensorwire_testing.waiting import scaled

from .helpers import distribute

PROTOCOL_LOGGER = protocol.__name__
#: Generous bound for a wait that should end at once.
DEADLINE = 20.0


@pytest.fixture
def unreachable(protocol: str) -> Iterator[str]:
    """``host:port`` where no dispatcher answers: a loopback port bound (so nothing else
    takes it) but never listening; inproc has no server registered there either."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"localhost:{sock.getsockname()[1]}"


def _unavailable() -> None:
    raise errors.UnavailableError("nobody there")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == PROTOCOL_LOGGER and r.levelno == logging.WARNING
    ]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + scaled(DEADLINE)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


# -- call_with_retries ------------------------------------------------------------------------


def test_retries_warn_at_the_first_failure_naming_whom_and_how_long(caplog, monkeypatch):
    monkeypatch.setattr(protocol, "RETRY_WARNING_INTERVAL", 3600.0)  # only the first one
    attempts = iter([_unavailable, _unavailable, _unavailable, lambda: "answer"])
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        got = call_with_retries(
            lambda: next(attempts)(),
            deadline=time.monotonic() + 60,
            what="GetWorkers",
            waiting_for="the dispatcher at here:1",
        )
    assert got == "answer"
    [warning] = _warnings(caplog)
    assert warning.startswith("waiting for the dispatcher at here:1: GetWorkers failed")
    assert "nobody there" in warning
    assert "retrying for up to" in warning


def test_retries_warn_again_once_the_interval_has_passed(caplog, monkeypatch):
    monkeypatch.setattr(protocol, "RETRY_WARNING_INTERVAL", 0.0)  # every failure is "later"
    attempts = iter([_unavailable, _unavailable, lambda: "answer"])
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        call_with_retries(
            lambda: next(attempts)(),
            deadline=time.monotonic() + 60,
            what="GetWorkers to the dispatcher at here:1",
        )
    assert len(_warnings(caplog)) == 2


def test_retries_end_with_unavailable_after_the_deadline():
    with pytest.raises(errors.UnavailableError, match="GetWorkers failed after retrying"):
        call_with_retries(_unavailable, deadline=time.monotonic() + 0.2, what="GetWorkers")


def test_setting_stop_wakes_a_retry_from_its_back_off():
    stop = threading.Event()
    failures = threading.Semaphore(0)

    def attempt() -> None:
        failures.release()
        raise errors.UnavailableError("nobody there")

    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            call_with_retries(
                attempt, deadline=time.monotonic() + 3600, what="GetWorkers", stop=stop
            )
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    assert failures.acquire(timeout=scaled(DEADLINE))
    stop.set()
    thread.join(scaled(DEADLINE))
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, errors.CancelledError)


# -- readers and workers -----------------------------------------------------------------------


def test_reader_warns_while_its_dispatcher_is_unreachable_then_raises_unavailable(
    service_factory, monkeypatch, caplog
):
    dispatcher, _ = service_factory(1)
    address = dispatcher.target.split("://", 1)[1]
    dataset = distribute(tw.data.Dataset.range(5), dispatcher)  # registered while it was up
    dispatcher.stop()
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", 1.0)
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        with pytest.raises(errors.UnavailableError, match=address):
            list(dataset)
    warnings = _warnings(caplog)
    assert warnings, "the reader retried without saying so"
    assert f"dispatcher at {address}" in warnings[0]
    assert "retrying for up to" in warnings[0]


def test_worker_server_stop_ends_its_wait_for_an_unreachable_dispatcher(
    protocol, unreachable, caplog
):
    config = tw.data.service.WorkerConfig(
        dispatcher_address=unreachable,
        protocol=protocol,
        # Were stop() to wait for the registration instead of ending it, this test would
        # fail after a minute rather than hang for the default hour.
        dispatcher_timeout_ms=int(scaled(60_000)),
    )
    server = tw.data.service.WorkerServer(config, start=False)
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome.append(exc)

    thread = threading.Thread(target=start, name="test-worker-start", daemon=True)
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        thread.start()
        try:
            _wait_until(
                lambda: any(unreachable in w for w in _warnings(caplog)),
                f"the worker to say it waits for {unreachable}",
            )
        finally:
            server.stop()
    thread.join(scaled(DEADLINE))
    assert not thread.is_alive(), "stop() did not end the worker's wait for its dispatcher"
    [error] = outcome
    assert isinstance(error, errors.CancelledError)
    assert "waiting for the tf.data service dispatcher at " + unreachable in _warnings(caplog)[0]
