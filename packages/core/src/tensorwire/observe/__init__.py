"""Observing servers: Prometheus metrics and status snapshots, for every server kind.

One home for both. A server (``tw.Server``, ``tw.data.service.DispatchServer``,
``WorkerServer``) given a metrics port starts a ``MetricsEndpoint`` whose collector
builds ``MetricFamily`` lists from the server's state at scrape time, plus the
``CallMeter`` totals the transport recorded (``TransportOptions.call_meter``). Each
server also has ``status()``, a frozen dataclass of ``status``, served to other
processes by the ``tensorwire.Status`` service (``service``) and printed by
``tensorwire status grpc://HOST:PORT``.

``prometheus_client`` is imported only when a ``MetricsEndpoint`` is made.
"""

from __future__ import annotations

from .calls import CALL_PATHS, LATENCY_BUCKETS_SECONDS, CallMeter, CallStats, call_families
from .diagnosis import (
    CLIENT_BOUND_WAIT_FRACTION,
    INPUT_BOUND_WAIT_FRACTION,
    InputDiagnosis,
    input_diagnosis,
)
from .endpoint import DEFAULT_METRICS_HOST, METRICS_PATH, MetricsEndpoint
from .families import MetricFamily
from .service import STATUS_SERVICE, fetch_status, status_service
from .status import (
    DataJobStatus,
    DataTaskStatus,
    DataWorkerStatus,
    DispatcherStatus,
    TaskServerStatus,
    VariableStatus,
    WorkerStatus,
    status_from_dict,
)

__all__ = [
    "CALL_PATHS",
    "LATENCY_BUCKETS_SECONDS",
    "CallMeter",
    "CallStats",
    "call_families",
    "CLIENT_BOUND_WAIT_FRACTION",
    "INPUT_BOUND_WAIT_FRACTION",
    "InputDiagnosis",
    "input_diagnosis",
    "DEFAULT_METRICS_HOST",
    "METRICS_PATH",
    "MetricsEndpoint",
    "MetricFamily",
    "STATUS_SERVICE",
    "fetch_status",
    "status_service",
    "DataJobStatus",
    "DataTaskStatus",
    "DataWorkerStatus",
    "DispatcherStatus",
    "TaskServerStatus",
    "VariableStatus",
    "WorkerStatus",
    "status_from_dict",
]
