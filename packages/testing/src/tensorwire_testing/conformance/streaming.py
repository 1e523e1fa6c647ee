"""Server streaming: messages in order, early exit by the caller, errors mid-stream."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests
from .service import ConformanceState, digest, payload

MiB = 1 << 20


class BaseStreamTests(BaseConformanceTests):
    """Conformance checks of server streaming: messages in order, zero messages, empty frames,
    large and small messages mixed.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseStreamTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    def test_stream_messages_in_order(self, channel: Channel) -> None:
        got = [[bytes(f) for f in m] for m in channel.stream(SERVICE, "Count", [b"5", b"p"])]
        assert got == [[str(i).encode(), b"p"] for i in range(5)]

    def test_stream_of_zero_messages(self, channel: Channel) -> None:
        assert list(channel.stream(SERVICE, "Count", [b"0"], timeout=30)) == []

    def test_stream_messages_with_empty_and_no_frames(self, channel: Channel) -> None:
        plan = [[], [0], [0, 0, 3], [], [1]]
        got = list(channel.stream(SERVICE, "MakeStream", [json.dumps(plan).encode()], timeout=30))
        assert [[f.nbytes for f in m] for m in got] == plan
        assert all(isinstance(f, memoryview) for m in got for f in m)

    def test_stream_of_large_and_small_messages(self, channel: Channel) -> None:
        plan = [[10], [5 * MiB + 3, 0, 7], [1], [2 * MiB]]
        got = list(channel.stream(SERVICE, "MakeStream", [json.dumps(plan).encode()], timeout=60))
        assert [[f.nbytes for f in m] for m in got] == plan
        for i, (message, sizes) in enumerate(zip(got, plan, strict=True)):
            for j, (frame, size) in enumerate(zip(message, sizes, strict=True)):
                assert np.array_equal(np.frombuffer(frame, np.uint8), payload(size, seed=i + j))

    def test_stream_with_a_large_request(self, channel: Channel) -> None:
        frames = [payload(6 * MiB + 1), b"", payload(3, seed=1)]
        ((sizes, hashed),) = list(channel.stream(SERVICE, "DigestStream", frames, timeout=60))
        assert json.loads(bytes(sizes)) == [6 * MiB + 1, 0, 3]
        assert bytes(hashed) == digest(frames)

    def test_early_break_ends_the_server_stream(
        self, channel: Channel, state: ConformanceState
    ) -> None:
        stream = channel.stream(SERVICE, "Endless", [], timeout=60)
        for i, _message in enumerate(stream):
            if i == 2:
                break
        stream.close()  # type: ignore[attr-defined]
        assert state.stream_closed.wait(10), "the handler's generator was not closed"
        assert bytes(channel.call(SERVICE, "Echo", [b"after"], timeout=10)[0]) == b"after"

    def test_error_mid_stream_after_messages(self, channel: Channel) -> None:
        received = []
        with pytest.raises(errors.NotFoundError) as info:
            for message in channel.stream(
                SERVICE, "FailAfter", [b"3", b"NotFoundError", "gone ✓".encode()], timeout=30
            ):
                received.append(bytes(message[0]))
        assert received == [b"0", b"1", b"2"]
        assert info.value.message == "gone ✓"

    def test_error_before_the_first_message(self, channel: Channel) -> None:
        with pytest.raises(errors.OutOfRangeError, match="^at once$"):
            list(channel.stream(SERVICE, "FailAfter", [b"0", b"OutOfRangeError", b"at once"]))

    def test_stream_deadline(self, channel: Channel) -> None:
        start = time.monotonic()
        received = 0
        with pytest.raises(errors.DeadlineExceededError):
            for _ in channel.stream(SERVICE, "SlowStream", [b"0.1"], timeout=0.5):
                received += 1
        assert time.monotonic() - start < 5
        assert received < 100

    def test_two_streams_interleaved_on_one_channel(self, channel: Channel) -> None:
        a = channel.stream(SERVICE, "Count", [b"4", b"a"], timeout=30)
        b = channel.stream(SERVICE, "Count", [b"4", b"b"], timeout=30)
        got = [(bytes(x[1]), bytes(y[1])) for x, y in zip(a, b, strict=True)]
        assert got == [(b"a", b"b")] * 4
