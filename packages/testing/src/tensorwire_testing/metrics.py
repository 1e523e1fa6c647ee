"""Reading a metrics endpoint in tests the way Prometheus does: over HTTP, parsed as its
text format, every sample keyed by its name and labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "scrape", "total", "value"]

#: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 10.0) -> Samples:
    """Every sample served at ``url`` (e.g. ``http://127.0.0.1:9090/metrics``).

    Args:
      url: the metrics endpoint.
      timeout: seconds the request may take.

    Returns:
      (sample name, frozenset of its labels) -> value.

    Raises:
      urllib.error.URLError: the endpoint could not be reached or did not answer 200.

    Examples:
        >>> samples = scrape(server.metrics_url)                    # doctest: +SKIP
        >>> total(samples, "tensorwire_calls_total") > 0            # doctest: +SKIP
        True
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``.

    Raises:
      KeyError: there is none; the message lists the label sets ``name`` has.
    """
    key = (name, frozenset(labels.items()))
    if key not in samples:
        present = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise KeyError(f"no {name}{labels}; present: {present}")
    return samples[key]


def total(samples: Samples, name: str, /, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when the family
    has samples but none with those labels).

    Raises:
      KeyError: the endpoint served no sample ``name`` at all (a misspelt name, or a
        family that is missing).
    """
    if not any(n == name for n, _ in samples):
        raise KeyError(f"no sample {name} at all")
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
