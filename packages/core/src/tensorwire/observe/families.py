"""Metric families as plain data: what a server's collector returns at scrape time.

Servers describe their metrics with ``MetricFamily`` (a name, a kind, a help text,
label names and samples) and never import ``prometheus_client``: the metrics endpoint
(``endpoint``) turns the families into ``prometheus_client`` objects when ``/metrics``
is read. So ``import tensorwire`` stays free of it, and a server without a metrics port
never loads it.

Names follow Prometheus' conventions: ``tensorwire_`` first, the unit in the name
(``_seconds``, ``_bytes``), counters end in ``_total``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MetricFamily", "KINDS"]

#: The kinds of family: monotonic totals, values that go up and down, histograms.
KINDS = ("counter", "gauge", "histogram")


class MetricFamily:
    """One metric family and its samples.

    Args:
      name: the full name, ``tensorwire_...``; a counter's ends in ``_total``.
      kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
      help: one line saying what is counted (the ``# HELP`` text).
      labels: the label names every sample gives values for.

    Raises:
      ValueError: an unknown ``kind``, a name without the ``tensorwire_`` prefix, or a
        counter whose name does not end in ``_total``.

    Examples:
        >>> from tensorwire.observe import MetricFamily
        >>> jobs = MetricFamily("tensorwire_data_jobs", "gauge", "Jobs.", ("state",))
        >>> jobs.add(("active",), 2)
        >>> jobs.samples
        [(('active',), 2.0)]
    """

    __slots__ = ("name", "kind", "help", "labels", "samples", "histograms")

    def __init__(self, name: str, kind: str, help: str, labels: Sequence[str] = ()) -> None:  # noqa: A002
        if kind not in KINDS:
            raise ValueError(f"metric kind must be one of {KINDS}, got {kind!r}")
        if not name.startswith("tensorwire_"):
            raise ValueError(f"metric names start with 'tensorwire_': {name!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in '_total': {name!r}")
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = tuple(labels)
        self.samples: list[tuple[tuple[str, ...], float]] = []
        #: Histogram samples: (label values, bucket bounds, per-bucket counts with +Inf
        #: last, sum of the observed values).
        self.histograms: list[
            tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...], float]
        ] = []

    def add(self, label_values: Sequence[object], value: float) -> None:
        """Add one sample (counter or gauge)."""
        self.samples.append((self._values(label_values), float(value)))

    def add_histogram(
        self,
        label_values: Sequence[object],
        bounds: Sequence[float],
        counts: Sequence[int],
        total: float,
    ) -> None:
        """Add one histogram: ``counts[i]`` observations at most ``bounds[i]`` (not
        cumulative), ``counts[-1]`` above the last bound; ``total`` their sum."""
        if len(counts) != len(bounds) + 1:
            raise ValueError(
                f"a histogram needs one count per bound and one for +Inf: {len(bounds)} "
                f"bounds, {len(counts)} counts"
            )
        self.histograms.append(
            (self._values(label_values), tuple(bounds), tuple(counts), float(total))
        )

    def _values(self, label_values: Sequence[object]) -> tuple[str, ...]:
        values = tuple(str(v) for v in label_values)
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} has labels {self.labels}, got values {values}")
        return values

    def __repr__(self) -> str:
        n = len(self.samples) + len(self.histograms)
        return f"MetricFamily({self.name!r}, {self.kind!r}, {n} samples)"
