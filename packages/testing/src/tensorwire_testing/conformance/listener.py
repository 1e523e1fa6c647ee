"""Listeners: binding, the port reported, start/stop/wait, stop(grace) and calls in flight."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
from tensorwire import errors
from tensorwire.transport import Channel, Listener

from .base import SERVICE, BaseConformanceTests, within
from .service import ConformanceState, make_service


class BaseListenerTests(BaseConformanceTests):
    """Conformance checks of the listener's life cycle: port 0 binds a free port and reports
    it, an address in use is an ``OpError``, a bad address ``InvalidArgumentError``, ``start``
    and ``stop`` are idempotent.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseListenerTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    def test_port_zero_binds_a_free_port_and_reports_it(self, serve, connect) -> None:
        first, second = serve(), serve()
        assert first.port > 0 and second.port > 0 and first.port != second.port
        assert first.address.endswith(f":{first.port}")
        assert bytes(connect(first.address).call(SERVICE, "Echo", [b"1"], timeout=30)[0]) == b"1"

    def test_binding_an_address_in_use_is_an_op_error(
        self, listener, transport, server_options, state
    ) -> None:
        with pytest.raises(errors.OpError) as info:
            other = transport.serve(listener.address, [make_service(state)], server_options)
            other.stop(0)  # not reached when the transport is right
        assert str(listener.port) in info.value.message

    def test_bad_address_is_invalid_argument(self, transport, server_options, state) -> None:
        with pytest.raises(errors.InvalidArgumentError):
            transport.serve("no-port-here", [make_service(state)], server_options)

    def test_start_is_idempotent(self, listener: Listener, channel: Channel) -> None:
        listener.start()
        assert bytes(channel.call(SERVICE, "Echo", [b"x"], timeout=30)[0]) == b"x"

    def test_wait_times_out_while_serving(self, listener: Listener) -> None:
        start = time.monotonic()
        assert listener.wait(0.1) is False
        assert time.monotonic() - start >= 0.09

    def test_stopped_listener_wait_returns_true(self, listener: Listener) -> None:
        listener.stop(0)
        assert listener.wait() is True
        assert listener.wait(0) is True

    def test_wait_returns_when_stopped_from_another_thread(self, listener: Listener) -> None:
        timer = threading.Timer(0.2, listener.stop, args=(0,))
        timer.start()
        try:
            assert within(10, lambda: listener.wait(10)) is True
        finally:
            timer.cancel()

    def test_stop_is_idempotent(self, listener: Listener) -> None:
        listener.stop(0)
        listener.stop(0)
        listener.stop(1)
        assert listener.wait(0)

    def test_start_after_stop_is_failed_precondition(self, listener: Listener) -> None:
        listener.stop(0)
        with pytest.raises(errors.FailedPreconditionError):
            listener.start()

    def test_calls_after_stop_are_unavailable(self, listener: Listener, channel: Channel) -> None:
        assert channel.call(SERVICE, "Echo", [b"x"], timeout=30)
        listener.stop(0)
        with pytest.raises(errors.UnavailableError):
            within(20, lambda: channel.call(SERVICE, "Echo", [b"x"], timeout=5))

    def test_stop_with_grace_lets_calls_in_flight_finish(
        self, listener: Listener, channel: Channel, state: ConformanceState
    ) -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(channel.call, SERVICE, "Sleep", [b"0.5"], timeout=30)
            assert state.started.wait(10), "the call never reached the handler"
            start = time.monotonic()
            listener.stop(grace=10)
            assert [bytes(f) for f in call.result(timeout=10)] == [b"slept"]
            assert time.monotonic() - start < 8
        assert listener.wait(5)

    def test_stop_without_grace_ends_calls_in_flight(
        self, listener: Listener, channel: Channel, state: ConformanceState
    ) -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(channel.call, SERVICE, "Sleep", [b"1"], timeout=30)
            assert state.started.wait(10), "the call never reached the handler"
            listener.stop(0)
            try:
                call.result(timeout=10)  # finishing is fine; so is failing ...
            except errors.OpError:
                pass  # ... as an OpError, never anything else and never a hang

    def test_stop_without_grace_ends_streams_in_flight(
        self, listener: Listener, channel: Channel, state: ConformanceState
    ) -> None:
        stream = channel.stream(SERVICE, "Endless", [], timeout=60)
        next(stream)
        listener.stop(0)

        def drain() -> int:
            return sum(1 for _ in stream)

        with pytest.raises(errors.OpError):
            within(15, drain)

    def test_a_listener_serves_several_services(
        self, transport, server_options, state, connect
    ) -> None:
        from tensorwire.transport import Service

        other = Service("tensorwire.conformance.Other")
        other.unary("Hello")(lambda frames, context: [b"hello"])
        listener = transport.serve("127.0.0.1:0", [make_service(state), other], server_options)
        listener.start()
        try:
            channel = connect(listener.address)
            assert bytes(channel.call("tensorwire.conformance.Other", "Hello", [])[0]) == b"hello"
            assert bytes(channel.call(SERVICE, "Echo", [b"e"])[0]) == b"e"
        finally:
            listener.stop(0)
