"""A tiny metrics registry rendering the Prometheus text exposition format (0.0.4).

Why not ``prometheus_client``: the agent's numbers already live in the stats snapshots
of its parts (collectors, engine, outbox, publisher, ingest), so a scrape only has to
copy them into a fresh :class:`Registry` and render it. That needs a few dozen lines,
not a dependency with process-global state on an industrial PC.

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
from collections.abc import Iterable, Sequence
from typing import ClassVar, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "Registry",
    "escape_help",
    "escape_label_value",
    "format_value",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

LabelKey = tuple[str, ...]
M = TypeVar("M", bound="Metric")


def escape_help(text: str) -> str:
    """HELP text escaping: backslash and line feed (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(value: str) -> str:
    """Label value escaping: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``+Inf``, ``-Inf``, ``NaN``, integers
    without a fraction, other floats in their shortest exact form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Metric:
    """A metric family: a name, a help text, label names and one value per label set."""

    type_name: ClassVar[str] = "untyped"

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

    def samples(self) -> Iterable[tuple[str, LabelKey, tuple[tuple[str, str], ...], float]]:
        """``(sample name, label values, extra labels, value)`` for rendering."""
        return ()

    def render(self) -> list[str]:
        """The family's lines: HELP, TYPE, then every sample."""
        lines = [
            f"# HELP {self.name} {escape_help(self.help)}",
            f"# TYPE {self.name} {self.type_name}",
        ]
        for sample_name, key, extra, value in self.samples():
            names = (*self.labelnames, *(n for n, _ in extra))
            values = (*key, *(v for _, v in extra))
            lines.append(f"{sample_name}{_labels_text(names, values)} {format_value(value)}")
        return lines


class _Valued(Metric):
    """A family whose series each hold one number."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {}

    def get(self, **labels: str) -> float | None:
        """The current value of one series (None if it was never set)."""
        return self._values.get(self._key(labels))

    def samples(self) -> Iterable[tuple[str, LabelKey, tuple[tuple[str, str], ...], float]]:
        for key, value in self._values.items():
            yield self.name, key, (), value


class Counter(_Valued):
    """A cumulative count. The name must end in ``_total`` (the text format's rule for
    counters, which Prometheus' own parser enforces)."""

    type_name = "counter"

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


class Gauge(_Valued):
    """A value that goes up and down: a depth, a connection state, an age."""

    type_name = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set one series to ``value``."""
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (may be negative)."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Histogram(Metric):
    """Cumulative buckets, a sum and a count per label set (no quantiles: Prometheus
    computes those from the buckets across instances)."""

    type_name = "histogram"

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

    def samples(self) -> Iterable[tuple[str, LabelKey, tuple[tuple[str, str], ...], float]]:
        for key, (counts, total) in self._series.items():
            for bound, count in zip(self.bounds, counts, strict=True):
                yield f"{self.name}_bucket", key, (("le", format_value(bound)),), count
            yield f"{self.name}_sum", key, (), total[0]
            yield f"{self.name}_count", key, (), counts[-1]


class Registry:
    """Metric families by name, rendered in registration order.

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
                    f"metric {name!r} is already registered as {existing.type_name} "
                    f"with labels {list(existing.labelnames)}"
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

    def render(self) -> str:
        """The whole exposition, newline-terminated (an empty registry renders as '')."""
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.render())
        return "\n".join(lines) + "\n" if lines else ""
