"""Errors cross the wire as the same class and message; the wire's own failures map too."""

from __future__ import annotations

import time

import pytest
from tensorwire import errors
from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests, within
from .service import ConformanceState

ERROR_CLASSES = [
    errors.CancelledError,
    errors.UnknownError,
    errors.InvalidArgumentError,
    errors.DeadlineExceededError,
    errors.NotFoundError,
    errors.AlreadyExistsError,
    errors.PermissionDeniedError,
    errors.UnauthenticatedError,
    errors.ResourceExhaustedError,
    errors.FailedPreconditionError,
    errors.AbortedError,
    errors.OutOfRangeError,
    errors.UnimplementedError,
    errors.InternalError,
    errors.UnavailableError,
    errors.DataLossError,
]


class BaseErrorTests(BaseConformanceTests):
    """Conformance checks of a handler's ``OpError`` arrives as the same class and message, other
    exceptions as ``UnknownError``; deadlines; the server survives handler errors.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseErrorTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    @pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
    def test_handler_error_arrives_as_same_class_and_message(
        self, channel: Channel, cls: type[errors.OpError]
    ) -> None:
        message = f"{cls.__name__} raised on purpose: naïve ünïcode ✓"
        with pytest.raises(cls) as info:
            channel.call(SERVICE, "Raise", [cls.__name__.encode(), message.encode()], timeout=30)
        assert type(info.value) is cls
        assert info.value.message == message
        assert info.value.code == cls.code_value

    def test_other_exceptions_become_unknown_error(self, channel: Channel) -> None:
        with pytest.raises(errors.UnknownError, match="crashed on purpose"):
            channel.call(SERVICE, "Crash", [], timeout=30)

    def test_a_handler_returning_no_frames_list_fails_the_call(self, channel: Channel) -> None:
        with pytest.raises(errors.OpError):
            channel.call(SERVICE, "BadReturn", [], timeout=30)

    def test_server_survives_handler_errors(self, channel: Channel) -> None:
        for _ in range(3):
            with pytest.raises(errors.UnknownError):
                channel.call(SERVICE, "Crash", [], timeout=30)
        assert bytes(channel.call(SERVICE, "Echo", [b"ok"])[0]) == b"ok"

    def test_unknown_method_is_unimplemented(self, channel: Channel) -> None:
        with pytest.raises(errors.UnimplementedError):
            channel.call(SERVICE, "NoSuchMethod", [], timeout=30)

    def test_unknown_service_is_unimplemented(self, channel: Channel) -> None:
        with pytest.raises(errors.UnimplementedError):
            channel.call("no.such.Service", "Echo", [], timeout=30)

    def test_unknown_streaming_method_is_unimplemented(self, channel: Channel) -> None:
        with pytest.raises(errors.UnimplementedError):
            list(channel.stream(SERVICE, "NoSuchMethod", [], timeout=30))

    def test_call_of_a_streaming_method_is_invalid(self, channel: Channel) -> None:
        with pytest.raises(errors.InvalidArgumentError):
            channel.call(SERVICE, "Count", [b"1"], timeout=30)

    def test_stream_of_a_unary_method_is_invalid(self, channel: Channel) -> None:
        with pytest.raises(errors.InvalidArgumentError):
            list(channel.stream(SERVICE, "Echo", [b"x"], timeout=30))

    def test_deadline_exceeded(self, channel: Channel, state: ConformanceState) -> None:
        start = time.monotonic()
        with pytest.raises(errors.DeadlineExceededError):
            channel.call(SERVICE, "Sleep", [b"20"], timeout=0.3)
        assert time.monotonic() - start < 5

    def test_deadline_exceeded_in_call_async(self, channel: Channel) -> None:
        future = channel.call_async(SERVICE, "Sleep", [b"20"], timeout=0.3)
        with pytest.raises(errors.DeadlineExceededError):
            future.result(timeout=10)

    def test_peer_down_is_unavailable_within_the_deadline(self, serve, connect) -> None:
        listener = serve()
        address = listener.address
        listener.stop(0)
        channel = connect(address)
        start = time.monotonic()
        with pytest.raises(errors.UnavailableError):
            channel.call(SERVICE, "Echo", [b"x"], timeout=5)
        assert time.monotonic() - start < 5

    def test_peer_down_without_a_deadline_is_unavailable_not_a_hang(self, serve, connect) -> None:
        listener = serve()
        address = listener.address
        listener.stop(0)
        channel = connect(address)
        with pytest.raises(errors.UnavailableError):
            within(20, lambda: channel.call(SERVICE, "Echo", [b"x"]))

    def test_peer_down_stream_is_unavailable(self, serve, connect) -> None:
        listener = serve()
        address = listener.address
        listener.stop(0)
        channel = connect(address)
        with pytest.raises(errors.UnavailableError):
            within(20, lambda: list(channel.stream(SERVICE, "Count", [b"3"], timeout=5)))

    def test_peer_that_goes_down_after_a_call_is_unavailable(self, serve, connect) -> None:
        listener = serve()
        channel = connect(listener.address)
        assert channel.call(SERVICE, "Echo", [b"x"], timeout=5)
        listener.stop(0)
        with pytest.raises(errors.UnavailableError):
            within(20, lambda: channel.call(SERVICE, "Echo", [b"x"], timeout=5))

    def test_closed_channel_refuses_calls(self, listener, connect) -> None:
        channel = connect(listener.address)
        channel.close()
        channel.close()  # idempotent
        with pytest.raises(errors.CancelledError):
            channel.call(SERVICE, "Echo", [b"x"], timeout=5)

    def test_channel_is_a_context_manager(self, listener, transport, channel_options) -> None:
        with transport.connect(listener.address, channel_options) as channel:
            assert bytes(channel.call(SERVICE, "Echo", [b"x"], timeout=5)[0]) == b"x"
        with pytest.raises(errors.CancelledError):
            channel.call(SERVICE, "Echo", [b"x"], timeout=5)

    def test_connect_to_a_bad_address_is_invalid_argument(self, transport, channel_options) -> None:
        with pytest.raises(errors.InvalidArgumentError):
            transport.connect("no-port-here", channel_options)
