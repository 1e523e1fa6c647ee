"""Many callers at once on one channel, and background calls."""

from __future__ import annotations

import concurrent.futures

import pytest
from tensorwire import errors
from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests
from .service import digest, payload

MiB = 1 << 20


class BaseConcurrencyTests(BaseConformanceTests):
    """Conformance checks of many unary calls, streams and large calls at once on one channel, and
    ``call_async`` futures.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseConcurrencyTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    threads: int = 8
    calls_per_thread: int = 25

    def test_concurrent_unary_calls(self, channel: Channel) -> None:
        def worker(t: int) -> int:
            for i in range(self.calls_per_thread):
                token = f"{t}-{i}".encode()
                got = channel.call(SERVICE, "Echo", [token, b"x" * i], timeout=30)
                assert [bytes(f) for f in got] == [token, b"x" * i]
            return t

        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            done = list(pool.map(worker, range(self.threads), timeout=60))
        assert done == list(range(self.threads))

    def test_concurrent_streams(self, channel: Channel) -> None:
        def worker(t: int) -> list[bytes]:
            tag = str(t).encode()
            return [bytes(m[1]) for m in channel.stream(SERVICE, "Count", [b"20", tag], timeout=30)]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(worker, range(4), timeout=60))
        assert results == [[str(t).encode()] * 20 for t in range(4)]

    def test_concurrent_large_calls(self, channel: Channel) -> None:
        frames = [[payload(3 * MiB + t, seed=t)] for t in range(4)]

        def worker(t: int) -> bool:
            return digest(channel.call(SERVICE, "Echo", frames[t], timeout=60)) == digest(frames[t])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert all(pool.map(worker, range(4), timeout=120))

    def test_call_async_returns_a_future(self, channel: Channel) -> None:
        future = channel.call_async(SERVICE, "Echo", [b"later"], timeout=30)
        assert isinstance(future, concurrent.futures.Future)
        assert [bytes(f) for f in future.result(timeout=30)] == [b"later"]

    def test_many_call_async_at_once(self, channel: Channel) -> None:
        futures = [
            channel.call_async(SERVICE, "Echo", [str(i).encode()], timeout=30) for i in range(100)
        ]
        assert [bytes(f.result(timeout=30)[0]) for f in futures] == [
            str(i).encode() for i in range(100)
        ]

    def test_call_async_error(self, channel: Channel) -> None:
        future = channel.call_async(SERVICE, "Raise", [b"AbortedError", b"nope"], timeout=30)
        with pytest.raises(errors.AbortedError, match="^nope$"):
            future.result(timeout=30)

    def test_call_async_unknown_method(self, channel: Channel) -> None:
        future = channel.call_async(SERVICE, "NoSuchMethod", [], timeout=30)
        with pytest.raises(errors.UnimplementedError):
            future.result(timeout=30)
