"""The per-scrape metric families the agent and the ingest expose on ``/metrics``.

The numbers already live in the stats snapshots of the parts (collectors, engine,
outbox, publisher, ingest), so nothing is counted here: at each scrape a provider copies
its snapshots into a fresh :class:`Registry`, which is a ``prometheus_client`` custom
collector. ``prometheus_client`` does the rest (the text and OpenMetrics formats, content
negotiation, the ``process_*`` metrics) without its process-global default registry:
nothing outlives one scrape.

Usage, once per scrape::

    reg = Registry()
    reg.gauge("edge_agent_outbox_depth", "Messages waiting for delivery.").set(12)
    reg.counter("edge_agent_device_samples_total", "Samples read.", ("source", "device")) \\
        .set(1042, source="plc", device="cnc-01")
    text = reg.render()

Counters fed from an external cumulative count use :meth:`Counter.set`; Prometheus
computes rates (and handles the reset a restart causes) on its side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import TypeVar

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as Family

__all__ = [
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Metric",
    "Registry",
    "format_value",
]

# The classic names only: prometheus_client would accept UTF-8 names, which scrapers
# that predate them cannot query.
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

LabelKey = tuple[str, ...]
M = TypeVar("M", bound="Metric")


def format_value(value: float) -> str:
    """A number as Prometheus writes it: ``+Inf``, ``-Inf``, ``NaN``, integers without a
    fraction, other floats in their shortest exact form (the histograms' ``le`` labels,
    which are compared as strings across scrapes)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metric:
    """A metric family: a name, a help text, label names and one value per label set."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for metric {name!r}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"metric {name!r} lists a label name twice")
        self.name = name
        self.help = help_text
        self.labelnames: tuple[str, ...] = tuple(labelnames)

    def _key(self, labels: dict[str, str]) -> LabelKey:
        # Exact label sets only: a missing or extra label would silently split a series.
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name!r} takes labels {list(self.labelnames)}, "
                f"got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def family(self) -> Family:
        """The family as ``prometheus_client`` renders it."""
        raise NotImplementedError


class _Valued(Metric):
    """A family whose series each hold one number."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {}

    def get(self, **labels: str) -> float | None:
        """The current value of one series (None if it was never set)."""
        return self._values.get(self._key(labels))


class Counter(_Valued):
    """A cumulative count. The name must end in ``_total`` (the text format's rule for
    counters, which Prometheus' own parser enforces)."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter name {name!r} must end in '_total'")
        super().__init__(name, help_text, labelnames)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (never negative: a counter only goes up)."""
        if amount < 0:
            raise ValueError(f"counter {self.name!r} cannot decrease (inc by {amount})")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        """Mirror a cumulative count kept elsewhere (a stats snapshot)."""
        if value < 0:
            raise ValueError(f"counter {self.name!r} cannot be negative ({value})")
        self._values[self._key(labels)] = float(value)

    def family(self) -> Family:
        """A ``CounterMetricFamily`` (which names itself without ``_total``)."""
        out = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, value in self._values.items():
            out.add_metric(key, value)
        return out


class Gauge(_Valued):
    """A value that goes up and down: a depth, a connection state, an age."""

    def set(self, value: float, **labels: str) -> None:
        """Set one series to ``value``."""
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (may be negative)."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def family(self) -> Family:
        """A ``GaugeMetricFamily``."""
        out = GaugeMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, value in self._values.items():
            out.add_metric(key, value)
        return out


class Histogram(Metric):
    """Cumulative buckets, a sum and a count per label set (no quantiles: Prometheus
    computes those from the buckets across instances)."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if "le" in labelnames:
            raise ValueError(f"histogram {name!r} cannot use the reserved label 'le'")
        super().__init__(name, help_text, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name!r} needs distinct finite bucket bounds")
        self.bounds: tuple[float, ...] = (*bounds, math.inf)
        self._series: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation in every bucket whose upper bound is at least ``value``."""
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            series = ([0] * len(self.bounds), [0.0])
            self._series[key] = series
        counts, total = series
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
        total[0] += value

    def family(self) -> Family:
        """A ``HistogramMetricFamily`` (its ``_count`` is the ``+Inf`` bucket)."""
        out = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        labels = [format_value(b) for b in self.bounds]
        for key, (counts, total) in self._series.items():
            out.add_metric(key, list(zip(labels, map(float, counts), strict=True)), total[0])
        return out


class Registry:
    """Metric families by name, collected in registration order: a ``prometheus_client``
    custom collector (it has ``collect``), filled by the providers at each scrape.

    Asking twice for the same name returns the same family (so several providers can
    share one), as long as the type and label names agree.
    """

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _get(self, cls: type[M], name: str, help_text: str, labelnames: Sequence[str]) -> M:
        existing = self._families.get(name)
        if existing is not None:
            if type(existing) is not cls or existing.labelnames != tuple(labelnames):
                raise ValueError(
                    f"metric {name!r} is already registered as "
                    f"{type(existing).__name__.lower()} with labels {list(existing.labelnames)}"
                )
            return existing
        family = cls(name, help_text, labelnames)
        self._families[name] = family
        return family

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter family ``name`` (created on first use)."""
        return self._get(Counter, name, help_text, labelnames)

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge family ``name`` (created on first use)."""
        return self._get(Gauge, name, help_text, labelnames)

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """The histogram family ``name`` (created on first use)."""
        existing = self._families.get(name)
        if existing is None:
            family = Histogram(name, help_text, labelnames, buckets)
            self._families[name] = family
            return family
        return self._get(Histogram, name, help_text, labelnames)

    def families(self) -> list[Metric]:
        """Every family, in registration order."""
        return list(self._families.values())

    def collect(self) -> Iterator[Family]:
        """The families for ``prometheus_client`` (the custom-collector protocol)."""
        for family in self._families.values():
            yield family.family()

    def render(self) -> str:
        """The text exposition (format 0.0.4) of these families alone, as a scraper
        that asks for no particular format gets it ('' when empty)."""
        return generate_latest(self).decode("utf-8")
