"""Reading a metrics endpoint the way Prometheus does: over HTTP, parsed as its text."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at ``url``: (sample name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, /, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``; KeyError when
    there is none."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    if not found:
        raise KeyError(f"no sample {name}{labels}")
    return sum(found)
