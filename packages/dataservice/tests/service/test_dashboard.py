"""The dashboard of a running data service, loaded in a real headless Chromium.

A dispatcher and two workers serve metrics ports; a reader reads a job. Chromium loads the
dispatcher's page, runs its script against the live ``/status.json``, and the DOM it dumps
must show the job and both workers; after the reader reads more, a second load must show
more elements produced. A screenshot is kept as a CI artifact (``$TENSORWIRE_ARTIFACTS``,
else ``<repo>/.artifacts``).
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import tensorwire as tw

from .helpers import distribute

FAST_HEARTBEATS = {"heartbeat_interval_ms": 100}
REPO = Path(__file__).resolve().parents[4]
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
# Page time Chromium lets pass before it dumps the DOM: enough for a few polls. Virtual
# time waits for the page's fetches, so a slow machine only makes the run longer.
VIRTUAL_MS = 4000


def _until(check, timeout: float = 30.0):
    return tw.test.eventually(check, timeout=timeout, retry_on=(AssertionError, KeyError))


def _root(server) -> str:
    return server.metrics_url.removesuffix("/metrics")


class _Rows(html.parser.HTMLParser):
    """The text of every cell of the table rows carrying ``data-job`` / ``data-worker``,
    the ``data-polls`` of the body and the text of the header line."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], list[str]] = {}
        self.polls = 0
        self.head = ""
        self._in_head = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self._in_head = attributes.get("id") == "head"
        if tag == "body":
            self.polls = int(attributes.get("data-polls") or 0)
        elif tag == "tr":
            keys = [k for k in ("data-job", "data-worker") if k in attributes]
            self._row = [] if keys else None
            if keys:
                self.rows[(keys[0], attributes[keys[0]] or "")] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._in_head:
            self.head += data
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None


def _chromium(tmp_path: Path, url: str, *args: str) -> str:
    command = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--virtual-time-budget={VIRTUAL_MS}",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def _page(tmp_path: Path, url: str) -> _Rows:
    rows = _Rows()
    rows.feed(_chromium(tmp_path, url, "--dump-dom"))
    return rows


def _screenshot_path() -> Path:
    folder = Path(os.environ.get("TENSORWIRE_ARTIFACTS") or REPO / ".artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "dashboard.png"


@pytest.fixture
def reading(service_factory):
    """A dispatcher and two workers, each with a metrics port, and a reader of a job that
    both workers serve."""
    dispatcher, workers = service_factory(
        2, metrics_port=0, worker_config={**FAST_HEARTBEATS, "metrics_port": 0}
    )
    dataset = distribute(
        tw.data.Dataset.range(10**9), dispatcher, "parallel_epochs", job_name="training"
    )
    iterator = iter(dataset.as_numpy_iterator())
    for _ in range(100):
        next(iterator)

    def both_workers_produce():
        [job] = dispatcher.status().jobs
        assert len({t.worker_address for t in job.tasks if t.elements_produced}) == 2
        assert job.client_seconds > 0

    _until(both_workers_produce)
    yield dispatcher, workers, iterator


def test_status_json_of_a_dispatcher_carries_the_job_and_its_diagnosis(reading):
    dispatcher, workers, _ = reading
    with urllib.request.urlopen(_root(dispatcher) + "/status.json", timeout=10) as response:
        status = json.loads(response.read())
    assert status["kind"] == "dispatcher"
    [job] = status["jobs"]
    assert job["job_name"] == "training" and job["client_seconds"] > 0
    assert job["diagnosis"]["verdict"] in ("input_bound", "balanced", "client_bound")
    assert job["diagnosis"]["text"].startswith("readers wait ")
    assert sorted(w["address"] for w in status["workers"]) == sorted(
        w._worker_address for w in workers
    )
    for worker in workers:  # and each worker's own page has its task of the job
        with urllib.request.urlopen(_root(worker) + "/status.json", timeout=10) as response:
            own = json.loads(response.read())
        assert own["kind"] == "worker" and [t["job_id"] for t in own["tasks"]] == [job["job_id"]]


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install --no-install-recommends chromium); "
    "`nox -s tests` installs it when run as root",
)
def test_the_dashboard_shows_the_job_and_workers_and_updates_in_chromium(reading, tmp_path):
    dispatcher, workers, iterator = reading
    url = _root(dispatcher) + "/"
    [job] = dispatcher.status().jobs

    first = _page(tmp_path, url)
    # The page polled more than once and drew the last poll: it redraws itself.
    assert first.polls >= 2, "the page did not poll status.json again"
    assert f"(poll {first.polls})" in first.head, first.head
    job_row = first.rows[("data-job", str(job.job_id))]
    assert job_row[1] == "training" and job_row[2] == "parallel_epochs"
    assert job_row[-1].startswith("readers wait ")
    for worker in workers:
        worker_row = first.rows[("data-worker", worker._worker_address)]
        assert worker_row[1] == "alive"
    produced_before = int(job_row[4])

    for _ in range(2000):  # the workers refill their buffers as the reader drains them
        next(iterator)
    _until(lambda: _assert_more(dispatcher, produced_before))

    second = _page(tmp_path, url)
    assert int(second.rows[("data-job", str(job.job_id))][4]) > produced_before

    screenshot = _screenshot_path()
    screenshot.unlink(missing_ok=True)
    _chromium(tmp_path, url, f"--screenshot={screenshot}", "--window-size=1280,1000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _assert_more(dispatcher, produced: int) -> None:
    assert dispatcher.status().jobs[0].elements_produced > produced
