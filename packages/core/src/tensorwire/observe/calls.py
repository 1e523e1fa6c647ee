"""Counting the calls a listener serves: one ``CallMeter`` per server.

A transport that is given a meter (``TransportOptions.call_meter``) records each call it
serves once, when the call ends: the method, the path its payload took, the bytes in each
direction, how long it took and whether it failed. That is one lock and a few integer
additions per call, so the hot path stays cheap; the Prometheus families are built from the
totals only when ``/metrics`` is scraped (``call_families``).

Paths (``CALL_PATHS``) name how a call's bytes moved, as the transport chose:

- ``grpc``: gRPC messages, inline or in chunks (also a response parked and fetched in
  chunks over gRPC).
- ``side_channel``: the grpc transport's pooled TCP side channel (``tensorwire_grpc.bulk``):
  a whole call (small ones too, once the caller knows the side port), a pushed request,
  or a response parked for a mover to fetch (whichever mover fetches it: the server
  counts the call before its caller picks one).
- ``shm``: the grpc transport's shared-memory mover (``tensorwire_grpc.shm_mover``) carried
  the whole call or stream, between two processes of one host.
- ``rdma``: RDMA READs of the ``grpc+verbs`` transport moved some of the call's payload
  (the plugin names the path on the call's ``CallContext.payload_path``, which the control
  transport counts under; the byte counts are those that crossed the control transport).
- ``inproc``: a reference handed over in the same process.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Iterator

from .families import MetricFamily

__all__ = ["CALL_PATHS", "LATENCY_BUCKETS_SECONDS", "CallMeter", "CallStats", "call_families"]

#: The values of the ``path`` label of the call metrics.
CALL_PATHS = ("grpc", "side_channel", "shm", "rdma", "inproc")

#: Upper bounds of the call-latency histogram buckets, in seconds (plus +Inf).
LATENCY_BUCKETS_SECONDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclasses.dataclass(frozen=True)
class CallStats:
    """The totals of one method over one path, as a ``CallMeter`` counted them.

    Args:
      method: ``"/<service>/<method>"``.
      path: one of ``CALL_PATHS``.
      calls: calls served (failed ones included).
      errors: calls that ended with an error status.
      request_bytes: payload bytes received (the frames' lengths).
      response_bytes: payload bytes answered (streams: every message).
      seconds: the calls' durations added up (a stream lasts until its last message).
      buckets: per ``LATENCY_BUCKETS_SECONDS`` bound and a last one for +Inf, how many
        calls took at most that long (not cumulative).
    """

    method: str
    path: str
    calls: int
    errors: int
    request_bytes: int
    response_bytes: int
    seconds: float
    buckets: tuple[int, ...]


class _Row:
    __slots__ = ("calls", "errors", "request_bytes", "response_bytes", "seconds", "buckets")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS_SECONDS) + 1)


class CallMeter:
    """Totals of the calls one server answered, by method and path. Thread safe.

    Examples:
        >>> from tensorwire.observe import CallMeter
        >>> meter = CallMeter()
        >>> meter.record("/Echo/Echo", "grpc", 10, 10, 0.002)
        >>> meter.record("/Echo/Echo", "grpc", 3, 0, 0.5, failed=True)
        >>> [(s.calls, s.errors, s.request_bytes) for s in meter.snapshot()]
        [(2, 1, 13)]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], _Row] = {}

    def record(
        self,
        method: str,
        path: str,
        request_bytes: int,
        response_bytes: int,
        seconds: float,
        failed: bool = False,
    ) -> None:
        """Count one finished call.

        Args:
          method: ``"/<service>/<method>"``.
          path: how its bytes moved, one of ``CALL_PATHS``.
          request_bytes: payload bytes received.
          response_bytes: payload bytes answered.
          seconds: how long the call took.
          failed: whether it ended with an error status.
        """
        bucket = bisect.bisect_left(LATENCY_BUCKETS_SECONDS, seconds)
        with self._lock:
            row = self._rows.get((method, path))
            if row is None:
                row = self._rows[(method, path)] = _Row()
            row.calls += 1
            row.errors += failed
            row.request_bytes += request_bytes
            row.response_bytes += response_bytes
            row.seconds += seconds
            row.buckets[bucket] += 1

    def snapshot(self) -> list[CallStats]:
        """The totals so far, one entry per (method, path), sorted."""
        with self._lock:
            return [
                CallStats(
                    method,
                    path,
                    row.calls,
                    row.errors,
                    row.request_bytes,
                    row.response_bytes,
                    row.seconds,
                    tuple(row.buckets),
                )
                for (method, path), row in sorted(self._rows.items())
            ]


def call_families(stats: list[CallStats]) -> Iterator[MetricFamily]:
    """The ``tensorwire_calls_*`` families of a meter's ``CallMeter.snapshot``."""
    labels = ("method", "path")
    counters = (
        ("tensorwire_calls_total", "Calls served, by method and transport path.", "calls"),
        (
            "tensorwire_call_errors_total",
            "Calls that ended with an error status, by method and transport path.",
            "errors",
        ),
        (
            "tensorwire_call_request_bytes_total",
            "Payload bytes received in calls, by method and transport path.",
            "request_bytes",
        ),
        (
            "tensorwire_call_response_bytes_total",
            "Payload bytes answered, by method and transport path.",
            "response_bytes",
        ),
    )
    for name, text, field in counters:
        family = MetricFamily(name, "counter", text, labels)
        for s in stats:
            family.add((s.method, s.path), getattr(s, field))
        yield family
    histogram = MetricFamily(
        "tensorwire_call_duration_seconds",
        "histogram",
        "How long calls took (streams: until their last message), by method and path.",
        labels,
    )
    for s in stats:
        histogram.add_histogram((s.method, s.path), LATENCY_BUCKETS_SECONDS, s.buckets, s.seconds)
    yield histogram
