"""The metrics port of a task server: Prometheus text over HTTP, values that move."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorwire as tw
from tensorwire.observe import CallMeter, MetricFamily, MetricsEndpoint, call_families
from tensorwire_testing.loopback import has_ipv6_loopback
from tensorwire_testing.metrics import scrape, total, value


@pytest.fixture
def metered_server(tensorwire_protocol):
    with tw.Server(
        {"local": ["localhost:0"]}, protocol=tensorwire_protocol, metrics_port=0
    ) as server:
        yield server


def test_import_tensorwire_does_not_import_prometheus_client():
    code = (
        "import sys, tensorwire as tw\n"
        "import tensorwire.observe\n"
        "server = tw.Server({'local': ['localhost:0']}, protocol='inproc')\n"
        "server.status(); server.stop()\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_task_server_metrics_count_calls_and_variables(metered_server):
    url = metered_server.metrics_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    before = scrape(url)
    assert value(before, "tensorwire_task_variables", task="/job:local/task:0") == 0
    with tw.Session(metered_server.target) as sess:
        w = sess.variable("w", np.zeros(10, np.float32))
        for _ in range(3):
            w.assign_add(np.ones(10, np.float32))
    after = scrape(url)
    assert value(after, "tensorwire_task_variables", task="/job:local/task:0") == 1
    assert (
        value(after, "tensorwire_task_variable_bytes", task="/job:local/task:0", variable="w") == 40
    )
    method = "/tensorwire.WorkerService/VarUpdate"
    assert total(after, "tensorwire_calls_total", method=method) == 3
    assert total(after, "tensorwire_call_request_bytes_total", method=method) >= 3 * 40
    assert total(after, "tensorwire_call_duration_seconds_count", method=method) == 3
    assert total(after, "tensorwire_call_errors_total", method=method) == 0
    kind = {"kind": "task_server", "name": "/job:local/task:0"}
    assert total(after, "tensorwire_server_info", **kind) == 1


def test_failed_calls_are_counted_as_errors(metered_server):
    with tw.Session(metered_server.target) as sess:
        with pytest.raises(tw.errors.NotFoundError):
            sess.variable("missing").read()
    samples = scrape(metered_server.metrics_url)
    assert total(samples, "tensorwire_call_errors_total") >= 1


@pytest.mark.parametrize(("shm", "path"), [("1", "shm"), ("0", "side_channel")])
def test_large_grpc_payloads_are_counted_under_the_mover_that_carried_them(monkeypatch, shm, path):
    # One host: through the shared-memory mover, or with it off the TCP side channel.
    monkeypatch.setenv("TENSORWIRE_GRPC_SHM", shm)
    with tw.Server({"local": ["localhost:0"]}, protocol="grpc", metrics_port=0) as server:
        with tw.Session(server.target) as sess:
            big = sess.variable("big", np.zeros(1 << 20, np.float32))  # 4 MiB
            big.read()
        samples = scrape(server.metrics_url)
    read = "/tensorwire.WorkerService/VarRead"
    assert value(samples, "tensorwire_calls_total", method=read, path=path) == 1
    assert value(samples, "tensorwire_call_response_bytes_total", method=read, path=path) >= 4 << 20


def test_metrics_port_answers_only_its_paths(metered_server):
    # "/" is the dashboard (test_dashboard.py); anything else is refused.
    other = metered_server.metrics_url.rsplit("/", 1)[0] + "/nothing-here"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(other, timeout=10)
    assert info.value.code == 404


def test_a_metrics_port_in_use_fails_with_a_reason_and_releases_the_server_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(tw.errors.UnavailableError, match=f"metrics on 127.0.0.1:{port}"):
            tw.Server({"local": ["localhost:0"]}, protocol="grpc", metrics_port=port)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this host")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_loopback_host_serves_at_a_bracketed_url(host):
    endpoint = MetricsEndpoint(lambda: [], port=0, host=host)
    try:
        assert endpoint.url == f"http://[::1]:{endpoint.port}/metrics"
        with urllib.request.urlopen(endpoint.url, timeout=10) as response:
            assert response.status == 200
    finally:
        endpoint.stop()


def test_the_metrics_port_binds_loopback_unless_told_otherwise():
    endpoint = MetricsEndpoint(lambda: [], port=0)
    try:
        assert endpoint.host == "127.0.0.1"
        with socket.socket() as probe:  # not reachable on another interface of this host
            probe.settimeout(5)
            other = _non_loopback_address()
            if other is not None:
                assert probe.connect_ex((other, endpoint.port)) != 0
    finally:
        endpoint.stop()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_call_meter_histogram_buckets_are_cumulative_in_the_exposition():
    meter = CallMeter()
    meter.record("/S/M", "grpc", 1, 2, 0.0001)
    meter.record("/S/M", "grpc", 1, 2, 0.3)
    meter.record("/S/M", "grpc", 1, 2, 100.0)
    endpoint = MetricsEndpoint(lambda: call_families(meter.snapshot()), port=0)
    try:
        samples = scrape(endpoint.url)
    finally:
        endpoint.stop()
    name = "tensorwire_call_duration_seconds_bucket"
    labels = {"method": "/S/M", "path": "grpc"}
    assert value(samples, name, le="0.0005", **labels) == 1
    assert value(samples, name, le="0.5", **labels) == 2
    assert value(samples, name, le="+Inf", **labels) == 3
    assert value(samples, "tensorwire_calls_total", **labels) == 3


def test_metric_families_refuse_names_against_the_conventions():
    with pytest.raises(ValueError, match="start with 'tensorwire_'"):
        MetricFamily("calls_total", "counter", "x")
    with pytest.raises(ValueError, match="ends in '_total'"):
        MetricFamily("tensorwire_calls", "counter", "x")
    with pytest.raises(ValueError, match="labels"):
        MetricFamily("tensorwire_x", "gauge", "x", ("a",)).add((), 1)


def test_a_failing_collector_does_not_break_the_endpoint():
    def broken():
        raise RuntimeError("boom")

    endpoint = MetricsEndpoint(broken, port=0)
    try:
        samples = scrape(endpoint.url)
    finally:
        endpoint.stop()
    assert any(name.startswith("process_") for name, _ in samples)


def test_server_command_announces_and_serves_its_metrics_port():
    import portpicker
    from tensorwire_testing import TaskProcess

    cluster = {"worker": [f"localhost:{portpicker.pick_unused_port()}"]}
    with TaskProcess(cluster, "worker", 0, extra_args=["--metrics_port", "0"]) as task:
        task.start(timeout=60)
        url = task.wait_for_line("metrics at").split("metrics at ", 1)[1]
        assert url.startswith("http://127.0.0.1:")
        with tw.Session(task.target) as sess:
            sess.variable("v", np.zeros(3, np.float32), device="/job:worker/task:0")
        samples = scrape(url)
    assert value(samples, "tensorwire_task_variables", task="/job:worker/task:0") == 1
    assert (
        total(samples, "tensorwire_calls_total", method="/tensorwire.WorkerService/GetStatus") >= 1
    )
