"""Hundreds of calls that wait on one server at once: all are served, none starves another.

A transport that serves calls from a fixed set of N threads deadlocks here: the N calls
holding the threads wait to be released, the others queue behind them and never reach
their handler (nor does the quick call the test makes meanwhile). Every wait below has a
deadline, so such a transport fails these checks instead of hanging them.
"""

from __future__ import annotations

from tensorwire.transport import Channel

from .base import SERVICE, BaseConformanceTests, within
from .service import ConformanceState

#: Bound on every wait of these checks; generous, for a loaded two-core machine. Waits for
#: hundreds of handlers fail only once none has started for this long.
LOAD_DEADLINE_SECONDS = 60.0
#: Bound on a whole phase (every stream's first message, draining every stream).
PHASE_DEADLINE_SECONDS = 180.0


class BaseLoadTests(BaseConformanceTests):
    """Conformance checks of hundreds of calls and streams waiting on one server at once all
    complete (``waiting_calls``, 500 by default, sets how many).

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseLoadTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    #: Calls (and streams) waiting on one server at once.
    waiting_calls: int = 500

    def _quick_call_answered(self, channel: Channel) -> None:
        reply = within(
            LOAD_DEADLINE_SECONDS,
            lambda: channel.call(SERVICE, "Echo", [b"ping"], timeout=LOAD_DEADLINE_SECONDS),
        )
        assert [bytes(f) for f in reply] == [b"ping"]

    def _all_waiting(self, state: ConformanceState, what: str) -> None:
        n = self.waiting_calls
        reached = state.wait_for_waiting(n, LOAD_DEADLINE_SECONDS)
        assert reached == n, (
            f"only {reached} of {n} {what} reached their handler, none more in "
            f"{LOAD_DEADLINE_SECONDS:.0f}s: the others are queued behind waiting calls"
        )

    def test_many_waiting_calls_all_complete(
        self, channel: Channel, state: ConformanceState
    ) -> None:
        n = self.waiting_calls
        futures = [
            channel.call_async(
                SERVICE, "Wait", [str(i).encode()], timeout=PHASE_DEADLINE_SECONDS * 2
            )
            for i in range(n)
        ]
        try:
            self._all_waiting(state, "waiting calls")
            self._quick_call_answered(channel)  # while all n wait
        finally:
            state.release.set()
        got = [bytes(f.result(timeout=PHASE_DEADLINE_SECONDS)[0]) for f in futures]
        assert got == [str(i).encode() for i in range(n)]

    def test_many_waiting_streams_all_complete(
        self, channel: Channel, state: ConformanceState
    ) -> None:
        n = self.waiting_calls
        streams = [
            channel.stream(
                SERVICE, "WaitStream", [str(i).encode()], timeout=PHASE_DEADLINE_SECONDS * 2
            )
            for i in range(n)
        ]
        try:
            # One thread reads the first message of every stream: each must be open and
            # served at the same time as all the others.
            first = within(PHASE_DEADLINE_SECONDS, lambda: [bytes(next(s)[0]) for s in streams])
            assert first == [str(i).encode() for i in range(n)]
            self._all_waiting(state, "waiting streams")
            self._quick_call_answered(channel)  # while all n streams wait
        finally:
            state.release.set()
        rest = within(PHASE_DEADLINE_SECONDS, lambda: [[bytes(m[0]) for m in s] for s in streams])
        assert rest == [[b"end"]] * n
