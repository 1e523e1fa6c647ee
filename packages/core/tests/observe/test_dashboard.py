"""The dashboard on the metrics port: the page, ``/status.json``, 404s, and the input
diagnosis rule (the browser test is in the data service's tests)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorwire as tw
from tensorwire.observe import (
    CLIENT_BOUND_WAIT_FRACTION,
    INPUT_BOUND_WAIT_FRACTION,
    DataJobStatus,
    DispatcherStatus,
    MetricsEndpoint,
    input_diagnosis,
    status_from_dict,
)
from tensorwire.observe.cli import render
from tensorwire.protos import ConfigProto


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- the diagnosis rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "reading", "verdict"),
    [
        (30.0, 60.0, "input_bound"),
        (INPUT_BOUND_WAIT_FRACTION * 100, 100.0, "input_bound"),  # the threshold included
        (INPUT_BOUND_WAIT_FRACTION * 100 - 0.01, 100.0, "balanced"),
        (CLIENT_BOUND_WAIT_FRACTION * 100, 100.0, "balanced"),
        (CLIENT_BOUND_WAIT_FRACTION * 100 - 0.01, 100.0, "client_bound"),
        (0.0, 100.0, "client_bound"),
    ],
)
def test_diagnosis_verdict_follows_the_share_of_time_readers_wait(wait, reading, verdict):
    diagnosis = input_diagnosis(wait, reading)
    assert diagnosis.verdict == verdict
    assert diagnosis.wait_fraction == pytest.approx(wait / reading)
    assert diagnosis.text.startswith(f"readers wait {round(100 * wait / reading)}% of the time")


def test_diagnosis_says_what_to_do():
    assert input_diagnosis(50, 100).text.endswith("adding workers would help")
    assert input_diagnosis(1, 100).text.endswith("the client is the limit")


@pytest.mark.parametrize("reading", [0.0, -1.0, float("nan")])
def test_diagnosis_is_unknown_without_reading_time(reading):
    diagnosis = input_diagnosis(5.0, reading)
    assert diagnosis.verdict == "unknown" and diagnosis.wait_fraction is None
    assert "no reader" in diagnosis.text


def test_diagnosis_clamps_totals_reported_at_different_moments():
    assert input_diagnosis(10.5, 10.0).wait_fraction == 1.0
    assert input_diagnosis(-0.1, 10.0).wait_fraction == 0.0


def _job(wait: float, reading: float, finished: bool = False) -> DataJobStatus:
    return DataJobStatus(
        job_id=7,
        job_name="training",
        dataset_id="d1",
        processing_mode="parallel_epochs",
        num_consumers=0,
        clients=(1,),
        num_splits=0,
        splits_exhausted=False,
        finished=finished,
        garbage_collected=False,
        tasks=(),
        client_wait_seconds=wait,
        client_elements=100,
        client_seconds=reading,
    )


def _dispatcher(*jobs: DataJobStatus) -> DispatcherStatus:
    return DispatcherStatus(
        kind="dispatcher",
        target="grpc://localhost:1",
        protocol="grpc",
        version="0",
        pid=1,
        uptime_seconds=5.0,
        fault_tolerant=False,
        work_dir="",
        datasets=1,
        jobs=jobs,
        workers=(),
        workers_lost=0,
        clients=1,
        journal_bytes=0,
        last_compaction=None,
    )


def test_a_job_status_carries_its_diagnosis_and_tensorwire_status_prints_it():
    status = _dispatcher(_job(6.0, 10.0))
    assert status.jobs[0].diagnosis == input_diagnosis(6.0, 10.0)
    assert "job 7: readers wait 60% of the time: adding workers would help" in render(status)
    # A finished job has nothing left to diagnose.
    assert "readers wait" not in render(_dispatcher(_job(6.0, 10.0, finished=True)))
    # A status from a server too old to send client_seconds still reads.
    plain = status.as_dict()
    del plain["jobs"][0]["client_seconds"]
    assert status_from_dict(plain).jobs[0].diagnosis.verdict == "unknown"


# -- the endpoint ------------------------------------------------------------------------


@pytest.fixture
def server(tensorwire_protocol):
    with tw.Server(
        {"local": ["localhost:0"]}, protocol=tensorwire_protocol, metrics_port=0
    ) as server:
        with tw.Session(server.target) as sess:
            sess.variable("weights", np.zeros((4, 5), np.float32))
        yield server


def _root(server) -> str:
    return server.metrics_url.removesuffix("/metrics")


def test_status_json_is_the_servers_status(server):
    code, headers, body = _get(_root(server) + "/status.json")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    served = status_from_dict(json.loads(body))
    assert served.kind == "task_server" and served.task == server.task_name
    assert [(v.name, v.shape, v.nbytes) for v in served.variables] == [("weights", (4, 5), 80)]


def test_the_page_is_self_contained_and_may_fetch_only_from_its_server(server):
    code, headers, body = _get(_root(server) + "/")
    page = body.decode()
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "status.json" in page
    # Nothing is loaded from elsewhere: no src/href but the page's own relative links,
    # and the policy lets the browser run only the page's inline script and style.
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["status.json", "metrics"]
    assert "innerHTML" not in page and "://" not in page.split("<script>")[1]
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+';", policy)


def test_other_paths_are_404(server):
    for path in ("/index.html", "/status", "/status.json/x", "/../etc/passwd", "/favicon.ico"):
        code, _, body = _get(_root(server) + path)
        assert code == 404, path
        assert b"only /, /metrics, /status.json are served here" in body


def test_without_a_status_only_metrics_are_served():
    endpoint = MetricsEndpoint(lambda: [], port=0)
    try:
        assert _get(endpoint.url)[0] == 200
        for path in ("/", "/status.json"):
            code, _, body = _get(endpoint.dashboard_url.removesuffix("/") + path)
            assert code == 404 and b"only /metrics are served here" in body
    finally:
        endpoint.stop()


def test_a_failing_status_is_a_500_and_the_endpoint_keeps_serving():
    calls = []

    def status():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the status broke")
        return _dispatcher(_job(1.0, 2.0))

    endpoint = MetricsEndpoint(lambda: [], port=0, status=status)
    try:
        code, _, body = _get(endpoint.dashboard_url + "status.json")
        assert code == 500 and b"could not make its status" in body
        code, _, body = _get(endpoint.dashboard_url + "status.json")
        [job] = json.loads(body)["jobs"]
        assert code == 200 and job["diagnosis"] == {
            "verdict": "input_bound",
            "wait_fraction": 0.5,
            "text": "readers wait 50% of the time: adding workers would help",
        }
    finally:
        endpoint.stop()


def test_the_page_and_status_json_reveal_no_cluster_token():
    # The metrics port has no authentication: what it serves must not hold the secret the
    # server's own port demands.
    config = ConfigProto()
    config.tensorwire.cluster_token = "s3cret-token-value"
    with tw.Server(
        {"local": ["localhost:0"]}, protocol="grpc", config=config, metrics_port=0
    ) as server:
        root = server.metrics_url.removesuffix("/metrics")
        for path in ("/", "/status.json", "/metrics"):
            code, _, body = _get(root + path)
            assert code == 200 and b"s3cret-token-value" not in body, path
