"""The metrics port: Prometheus text at ``/metrics``, and the dashboard at ``/``.

Every server kind (``tw.Server``, ``DispatchServer``, ``WorkerServer``) that is given a
metrics port starts one ``MetricsEndpoint`` with a *collector*: a function that
returns the server's ``MetricFamily`` list, called once per scrape. Nothing
is counted for Prometheus between scrapes beyond the servers' own totals, so an endpoint
nobody scrapes costs nothing.

``prometheus_client`` is imported here, when an endpoint is made, never by
``import tensorwire``.

Given a ``status`` function too (every server passes its ``status()``), the endpoint also
serves the dashboard (``dashboard``): the page at ``/`` and the snapshot it polls at
``/status.json``.

Security: the endpoint binds loopback (``127.0.0.1``) unless ``host`` names another
interface, which is the explicit opt-in (``metrics_host``, ``--metrics_host``). It serves
counts, sizes, addresses, method names, variable names and shapes and the dispatcher's
work directory (what ``status()`` holds): no tokens, keys, certificates, tensors or
dataset definitions. It answers only ``GET`` of ``/metrics``, ``/`` and ``/status.json``
(anything else is 404), so it runs no code; the page runs only its own inline script
(a Content-Security-Policy says so) and fetches only from the server that sent it.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .. import errors
from ..transport.kit.address import bare_host, join_host_port
from ..transport.security import is_loopback
from .dashboard import DASHBOARD_PATH, STATUS_PATH, dashboard_page, status_json
from .families import MetricFamily

__all__ = ["MetricsEndpoint", "METRICS_PATH", "DEFAULT_METRICS_HOST"]

log = logging.getLogger(__name__)

#: Where the endpoint serves the Prometheus text format.
METRICS_PATH = "/metrics"
#: The interface an endpoint binds unless told otherwise: loopback only.
DEFAULT_METRICS_HOST = "127.0.0.1"
_STOP_JOIN_SECONDS = 5.0

Collector = Callable[[], Iterable[MetricFamily]]


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core  # noqa: F401 - the metric family classes
    except ImportError as exc:  # pragma: no cover - a dependency of the core
        raise ImportError(
            "a metrics port needs prometheus_client (pip install prometheus_client)"
        ) from exc
    return prometheus_client


def _to_prometheus(family: MetricFamily) -> Any:
    core = _prometheus().core
    labels = list(family.labels)
    if family.kind == "counter":
        out = core.CounterMetricFamily(family.name, family.help, labels=labels)
    elif family.kind == "gauge":
        out = core.GaugeMetricFamily(family.name, family.help, labels=labels)
    else:
        out = core.HistogramMetricFamily(family.name, family.help, labels=labels)
        for values, bounds, counts, total in family.histograms:
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts[:-1], strict=True):
                cumulative += count
                buckets.append((_float_text(bound), cumulative))
            buckets.append(("+Inf", cumulative + counts[-1]))
            out.add_metric(list(values), buckets, total)
        return out
    for values, value in family.samples:
        out.add_metric(list(values), value)
    return out


def _float_text(value: float) -> str:
    return repr(float(value))


class _Collector:
    """A ``prometheus_client`` collector around a server's collector function."""

    def __init__(self, collect: Collector, what: str) -> None:
        self._collect = collect
        self._what = what

    def collect(self) -> Iterable[Any]:
        try:
            return [_to_prometheus(f) for f in self._collect()]
        except Exception:  # noqa: BLE001 - a scrape must not take the server down
            log.exception("collecting the metrics of %s failed", self._what)
            return []


class MetricsEndpoint:
    """Serves ``collect()``'s families at ``http://host:port/metrics`` from a daemon thread.

    Args:
      collect: returns the server's metric families; called on every scrape.
      port: the port to bind, 0 for a free one (read it from ``port``).
      host: the interface to bind; loopback by default. Anything else is an explicit
        choice to let other hosts read the metrics (they hold no secrets).
      what: names the server in log lines.
      status: returns the server's status snapshot (``status()``); given, the endpoint
        also serves the dashboard at ``/`` and the snapshot at ``/status.json``.

    Raises:
      UnavailableError: the port cannot be bound (the message names it).
      ImportError: ``prometheus_client`` is not installed.

    Examples:
        >>> from tensorwire.observe import MetricFamily, MetricsEndpoint
        >>> def collect():
        ...     up = MetricFamily("tensorwire_example_up", "gauge", "Always 1.")
        ...     up.add((), 1)
        ...     return [up]
        >>> endpoint = MetricsEndpoint(collect, port=0)
        >>> import urllib.request
        >>> text = urllib.request.urlopen(endpoint.url, timeout=10).read().decode()
        >>> "tensorwire_example_up 1.0" in text
        True
        >>> endpoint.stop()
    """

    def __init__(
        self,
        collect: Collector,
        port: int = 0,
        host: str = DEFAULT_METRICS_HOST,
        what: str = "",
        status: Callable[[], Any] | None = None,
    ) -> None:
        prometheus = _prometheus()
        self._registry = prometheus.CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(collect, what or "a server"))
        # The process' own CPU, memory and descriptors, as every Prometheus client gives.
        prometheus.ProcessCollector(registry=self._registry)
        registry = self._registry
        generate, content_type = prometheus.generate_latest, prometheus.CONTENT_TYPE_LATEST

        def metrics() -> tuple[bytes, str, dict[str, str]]:
            return generate(registry), content_type, {}

        def page() -> tuple[bytes, str, dict[str, str]]:
            body, policy = dashboard_page()
            return body, "text/html; charset=utf-8", {"Content-Security-Policy": policy}

        routes: dict[str, Callable[[], tuple[bytes, str, dict[str, str]]]] = {METRICS_PATH: metrics}
        if status is not None:
            snapshot_of = status

            def snapshot() -> tuple[bytes, str, dict[str, str]]:
                return status_json(snapshot_of()), "application/json", {}

            routes.update({DASHBOARD_PATH: page, STATUS_PATH: snapshot})
        served = ", ".join(sorted(routes))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404, f"only {served} are served here")
                    return
                try:
                    body, kind, headers = route()
                except Exception:  # noqa: BLE001 - a request must not take the server down
                    log.exception("serving %s of %s failed", self.path, what or "a server")
                    self.send_error(500, "the server could not make its status; see its log")
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("metrics %s: " + format, what, *args)

        bind = bare_host(host)
        server_class = _server_class(bind)
        try:
            self._server = server_class((bind, int(port)), Handler)
        except OSError as exc:
            raise errors.UnavailableError(
                f"cannot serve metrics on {join_host_port(bind, port)}: {exc.strerror or exc}"
            ) from None
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        if not is_loopback(bind):
            log.info(
                "%s serves metrics on %s, beyond loopback (counts and addresses only; no secrets)",
                what or "a server",
                join_host_port(bind, self.port),
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"tensorwire-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return self._base + METRICS_PATH

    @property
    def dashboard_url(self) -> str:
        """``http://host:port/``: the dashboard (served when a ``status`` was given)."""
        return self._base + DASHBOARD_PATH

    @property
    def _base(self) -> str:
        return f"http://{join_host_port(bare_host(self.host), self.port)}"

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_STOP_JOIN_SECONDS)

    def __repr__(self) -> str:
        return f"MetricsEndpoint({self.url!r})"


def _server_class(host: str) -> type[http.server.ThreadingHTTPServer]:
    import socket

    if ":" not in host:
        return http.server.ThreadingHTTPServer

    class IPv6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return IPv6Server
