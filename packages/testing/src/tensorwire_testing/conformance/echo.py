"""Unary calls: frames cross intact, whatever their number, size and buffer type."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests
from .service import ConformanceState, payload


class BaseEchoTests(BaseConformanceTests):
    """Conformance checks of messages come back frame for frame: one frame, many, none, empty ones.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseEchoTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    def test_echo_one_frame(self, channel: Channel) -> None:
        assert [bytes(f) for f in channel.call(SERVICE, "Echo", [b"hello"])] == [b"hello"]

    def test_echo_many_frames_with_empty_ones(self, channel: Channel) -> None:
        frames = [b"", b"a", b"", b"", payload(1000).tobytes(), b"", b"z" * 65]
        got = channel.call(SERVICE, "Echo", frames)
        assert [bytes(f) for f in got] == frames

    def test_echo_zero_frames(self, channel: Channel) -> None:
        assert list(channel.call(SERVICE, "Echo", [])) == []

    def test_echo_only_empty_frames(self, channel: Channel) -> None:
        got = channel.call(SERVICE, "Echo", [b""] * 5)
        assert [bytes(f) for f in got] == [b""] * 5

    def test_echo_a_thousand_small_frames(self, channel: Channel) -> None:
        frames = [str(i).encode() * (i % 7) for i in range(1000)]
        assert [bytes(f) for f in channel.call(SERVICE, "Echo", frames)] == frames

    def test_frames_arrive_as_memoryviews_of_the_sent_length(
        self, channel: Channel, state: ConformanceState
    ) -> None:
        sent = [b"abc", b"", b"x" * 100]
        got = channel.call(SERVICE, "Echo", sent)
        assert all(isinstance(f, memoryview) for f in got)
        assert [f.nbytes for f in got] == [3, 0, 100]
        assert state.received_types == [memoryview, memoryview, memoryview]

    def test_any_contiguous_buffer_is_a_frame(self, channel: Channel) -> None:
        array = np.arange(12, dtype=np.float64).reshape(3, 4)
        frames = [b"b", bytearray(b"ba"), memoryview(b"mv"), np.arange(5, dtype=np.uint8), array]
        got = channel.call(SERVICE, "Echo", frames)
        assert [bytes(f) for f in got[:4]] == [b"b", b"ba", b"mv", bytes(range(5))]
        assert np.array_equal(np.frombuffer(got[4], dtype=np.float64).reshape(3, 4), array)

    def test_server_gets_a_copy_of_request_frames(self, channel: Channel) -> None:
        buffer = bytearray(b"before")
        got = channel.call(SERVICE, "Echo", [buffer])
        buffer[:] = b"AFTER!"
        assert bytes(got[0]) == b"before"

    def test_metadata_reaches_the_handler(self, channel: Channel) -> None:
        (info,) = channel.call(SERVICE, "Context", [], metadata={"x-conformance": "yes"})
        assert json.loads(bytes(info))["metadata"]["x-conformance"] == "yes"

    def test_handler_sees_the_deadline(self, channel: Channel) -> None:
        (info,) = channel.call(SERVICE, "Context", [], timeout=30)
        remaining = json.loads(bytes(info))["time_remaining"]
        # A little over 30 is fine: the two sides may convert the deadline between clocks.
        assert remaining is not None and 0 < remaining <= 31

    def test_no_timeout_means_no_deadline(self, channel: Channel) -> None:
        (info,) = channel.call(SERVICE, "Context", [])
        assert json.loads(bytes(info))["time_remaining"] is None

    def test_peer_is_a_string(self, channel: Channel) -> None:
        (info,) = channel.call(SERVICE, "Context", [])
        assert json.loads(bytes(info))["peer_type"] == "str"

    def test_many_calls_on_one_channel(self, channel: Channel) -> None:
        for i in range(200):
            assert bytes(channel.call(SERVICE, "Echo", [str(i).encode()])[0]) == str(i).encode()

    def test_a_single_buffer_is_not_a_message(self, channel: Channel) -> None:
        with pytest.raises((errors.InvalidArgumentError, TypeError)):
            channel.call(SERVICE, "Echo", b"not a list")

    def test_non_contiguous_frame_is_refused(self, channel: Channel) -> None:
        strided = np.arange(20, dtype=np.uint8)[::2]
        with pytest.raises((errors.InvalidArgumentError, TypeError, ValueError, BufferError)):
            channel.call(SERVICE, "Echo", [strided])
