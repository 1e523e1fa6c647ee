"""Fixtures and helpers shared by every conformance class.

The fixtures are methods of ``BaseConformanceTests``, so a subclass overrides one by
defining a method of the same name. ``transport`` is the one fixture the author must
provide (as a method of the subclass or a module/conftest fixture).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from tensorwire.transport import Channel, Listener, Transport, TransportOptions

from .service import SERVICE, ConformanceState, make_service

T = TypeVar("T")

__all__ = ["BaseConformanceTests", "within", "SERVICE"]


def within(seconds: float, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a helper thread; fail the test if it has not returned in ``seconds``.

    Re-raises what ``fn`` raised. The thread is a daemon, so a hang fails the test instead
    of hanging the run.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="conformance-within")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not return within {seconds}s (a hang)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class BaseConformanceTests:
    """Fixtures: ``address``, ``server_options``, ``channel_options``, ``state``,
    ``listener`` (started, stopped after the test), ``channel`` (to ``listener``), and the
    helpers ``serve`` / ``connect`` for tests that need more of either."""

    #: Largest single message the large-message checks send (bytes). A transport with a
    #: hard limit below this may lower it in its subclass.
    max_test_message_bytes: int = 120_000_000

    @pytest.fixture
    def address(self) -> str:
        """Where listeners bind; port 0 asks for a free port."""
        return "127.0.0.1:0"

    @pytest.fixture
    def server_options(self) -> TransportOptions:
        return TransportOptions()

    @pytest.fixture
    def channel_options(self) -> TransportOptions:
        return TransportOptions()

    @pytest.fixture
    def state(self) -> Iterator[ConformanceState]:
        state = ConformanceState()
        yield state
        state.release.set()  # free any handler still blocked

    @pytest.fixture
    def serve(
        self,
        transport: Transport,
        address: str,
        server_options: TransportOptions,
        state: ConformanceState,
    ) -> Iterator[Callable[..., Listener]]:
        """``serve(**option_changes)`` -> a started listener of the conformance service."""
        listeners: list[Listener] = []

        def make(address: str = address, **changes: Any) -> Listener:
            options = dataclasses.replace(server_options, **changes)
            listener = transport.serve(address, [make_service(state)], options)
            listeners.append(listener)
            listener.start()
            return listener

        yield make
        state.release.set()
        for listener in listeners:
            listener.stop(0)

    @pytest.fixture
    def connect(
        self, transport: Transport, channel_options: TransportOptions
    ) -> Iterator[Callable[..., Channel]]:
        """``connect(address, **option_changes)`` -> a channel, closed after the test."""
        channels: list[Channel] = []

        def make(address: str, **changes: Any) -> Channel:
            channel = transport.connect(address, dataclasses.replace(channel_options, **changes))
            channels.append(channel)
            return channel

        yield make
        for channel in channels:
            channel.close()

    @pytest.fixture
    def listener(self, serve: Callable[..., Listener]) -> Listener:
        return serve()

    @pytest.fixture
    def channel(self, listener: Listener, connect: Callable[..., Channel]) -> Channel:
        return connect(listener.address)

    @staticmethod
    def elapsed_since(start: float) -> float:
        return time.monotonic() - start
