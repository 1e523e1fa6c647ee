"""The dashboard: one HTML page at ``/`` of the metrics port, and the status it draws.

The page (``dashboard.html``, package data) is self-contained: inline CSS and a small
hand-written script that polls ``/status.json`` every 1.5 s and redraws the tables and
the throughput charts (a ``<canvas>`` drawn by the script; the history is kept in the page).
It fetches nothing else: the Content-Security-Policy sent with it lets the browser run only that
inline script and style and connect only to the server that sent the page.

``/status.json`` is the server's ``status().as_dict()``, plus, for each job of a
dispatcher, its ``diagnosis`` (``input_diagnosis``), so the page and
``tensorwire status`` say the same thing.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib.resources
import json
import re
from typing import Any

__all__ = ["DASHBOARD_PATH", "STATUS_PATH", "dashboard_page", "status_document", "status_json"]

#: Where the endpoint serves the page.
DASHBOARD_PATH = "/"
#: Where the endpoint serves the status snapshot the page polls.
STATUS_PATH = "/status.json"


@functools.cache
def dashboard_page() -> tuple[bytes, str]:
    """The page's bytes and the Content-Security-Policy to send with it.

    The policy allows exactly the page's own inline ``<script>`` and ``<style>`` (by
    their SHA-256) and connections to the page's origin: nothing from elsewhere loads.
    """
    text = importlib.resources.files(__package__).joinpath("dashboard.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in bodies
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return text.encode("utf-8"), policy


def status_document(status: Any) -> dict[str, Any]:
    """``status.as_dict()`` with each dispatcher job's ``diagnosis`` added.

    Args:
      status: a ``TaskServerStatus``, ``DispatcherStatus``
        or ``WorkerStatus``.

    Returns:
      A JSON-ready dict; a job's ``diagnosis`` holds ``verdict``, ``wait_fraction`` and
      ``text`` (``InputDiagnosis``).
    """
    document: dict[str, Any] = status.as_dict()
    if status.kind == "dispatcher":
        for job, plain in zip(status.jobs, document["jobs"], strict=True):
            plain["diagnosis"] = dataclasses.asdict(job.diagnosis)
    return document


def status_json(status: Any) -> bytes:
    """``status_document`` encoded as UTF-8 JSON."""
    return json.dumps(status_document(status), separators=(",", ":")).encode("utf-8")
