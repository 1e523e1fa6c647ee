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


def value(samples: dict, name: str, /, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; KeyError naming what is there if absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        present = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise KeyError(f"no {name}{labels}; present: {present}")
    return samples[key]


def total(samples: dict, name: str, /, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
