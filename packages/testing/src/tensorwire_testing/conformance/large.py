"""Messages above any chunking threshold, in both directions, intact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests
from .service import digest, payload

MiB = 1 << 20
#: Frame sizes around the usual chunk boundaries (64 KiB .. 4 MiB), about 20 MiB in all.
AWKWARD_SIZES = [0, 1, 63, 64, 65, MiB - 1, MiB, MiB + 1, 0, 3 * MiB + 7, 4 * MiB, 11 * MiB + 5]


class BaseLargeMessageTests(BaseConformanceTests):
    """Conformance checks of large requests and responses, both ways and through ``call_async``,
    arrive byte for byte.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseLargeMessageTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    def test_large_request(self, channel: Channel) -> None:
        frames = [payload(n, seed=i) for i, n in enumerate(AWKWARD_SIZES)]
        sizes, hashed = channel.call(SERVICE, "Digest", frames, timeout=60)
        assert json.loads(bytes(sizes)) == AWKWARD_SIZES
        assert bytes(hashed) == digest(frames)

    def test_large_response(self, channel: Channel) -> None:
        got = channel.call(SERVICE, "Make", [json.dumps(AWKWARD_SIZES).encode()], timeout=60)
        assert [f.nbytes for f in got] == AWKWARD_SIZES
        for i, (frame, size) in enumerate(zip(got, AWKWARD_SIZES, strict=True)):
            assert np.array_equal(np.frombuffer(frame, np.uint8), payload(size, seed=i))

    def test_large_echo_both_ways(self, channel: Channel) -> None:
        frames = [b"header", payload(20 * MiB, seed=3), b"", payload(5, seed=4)]
        got = channel.call(SERVICE, "Echo", frames, timeout=60)
        assert [f.nbytes for f in got] == [6, 20 * MiB, 0, 5]
        assert digest(got) == digest(frames)

    def test_large_call_async(self, channel: Channel) -> None:
        frame = payload(9 * MiB, seed=5)
        got = channel.call_async(SERVICE, "Echo", [frame], timeout=60).result(timeout=60)
        assert digest(got) == digest([frame])

    def test_large_response_to_call_async(self, channel: Channel) -> None:
        future = channel.call_async(SERVICE, "Make", [json.dumps([6 * MiB]).encode()], timeout=60)
        (frame,) = future.result(timeout=60)
        assert np.array_equal(np.frombuffer(frame, np.uint8), payload(6 * MiB))

    def test_120mb_tensor_both_ways(self, channel: Channel) -> None:
        size = min(120_000_000, self.max_test_message_bytes)
        tensor = np.resize(np.arange(1000, dtype=np.float32), size // 4)
        (got,) = channel.call(SERVICE, "Echo", [tensor], timeout=120)
        assert got.nbytes == tensor.nbytes
        assert np.array_equal(np.frombuffer(got, np.float32), tensor)

    def test_request_above_max_message_bytes_is_refused(self, serve, connect) -> None:
        listener = serve(max_message_bytes=2 * MiB)
        channel = connect(listener.address)
        assert channel.call(SERVICE, "Digest", [payload(MiB)], timeout=30)
        with pytest.raises(errors.ResourceExhaustedError):
            channel.call(SERVICE, "Digest", [payload(3 * MiB)], timeout=30)

    def test_response_above_max_message_bytes_is_refused(self, listener, connect) -> None:
        channel = connect(listener.address, max_message_bytes=2 * MiB)
        with pytest.raises(errors.ResourceExhaustedError):
            channel.call(SERVICE, "Make", [json.dumps([3 * MiB]).encode()], timeout=30)
