"""Everything a demonstration report shows, computed once and rendered by every format.

The arithmetic is in ``rules`` (:mod:`rules.report` sums a period, :mod:`rules.targets`
judges it, :mod:`rules.baseline_model` fits the energy baseline); this module decides
which periods, buckets and parts to ask for, and holds the answers.

Trend buckets follow the period's length: one point per window when a period has at most
:data:`MAX_WINDOW_POINTS` windows, else one per hour when the windows are shorter than an
hour and a period spans at most :data:`MAX_HOUR_POINTS` hours, else one per local day
(``1w`` and ``1mo`` windows, which no day holds, always one per window). Windows, days
and coverage are those of the site's time zone, as the engine cuts them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from agent.report import Period, ReportRequest, build_report
from agent.reporting.i18n import Lang
from rules.baseline_model import EnergyBaseline, energy_baseline
from rules.report import (
    RATE_FIELDS,
    Comparison,
    PeriodTotals,
    Scope,
    expected_windows,
    period_records,
    summarize,
    window_bounds,
    window_spans,
)
from rules.spec import window_length_ms
from rules.targets import (
    OPERATING_COST,
    KpiVerdicts,
    Target,
    assess,
    energy_cost_per_good_unit,
    targets_for,
)
from rules.types import KpiRecord

__all__ = [
    "MAX_HOUR_POINTS",
    "MAX_WINDOW_POINTS",
    "PERIODS",
    "Bucket",
    "BucketSize",
    "DemonstrationReport",
    "PartComparison",
    "PeriodName",
    "ScopeWindows",
    "build_demonstration",
]

MAX_WINDOW_POINTS = 60
MAX_HOUR_POINTS = 72

BucketSize = Literal["window", "hour", "day"]
PeriodName = Literal["baseline", "current"]
PERIODS: tuple[PeriodName, ...] = ("current", "baseline")

_H = 3_600_000


@dataclass(frozen=True, slots=True)
class Bucket:
    """One trend point: a period's totals over [start_ms, end_ms)."""

    period: PeriodName
    start_ms: int
    end_ms: int
    totals: PeriodTotals


@dataclass(frozen=True, slots=True)
class PartComparison:
    """A machine or line inside the reported scope, both periods summed."""

    scope: Scope
    baseline: PeriodTotals
    current: PeriodTotals


@dataclass(frozen=True, slots=True)
class ScopeWindows:
    """The window records a scope's period sums are made of (what an auditor re-adds)."""

    scope: Scope
    baseline: tuple[KpiRecord, ...]
    current: tuple[KpiRecord, ...]


@dataclass(slots=True)
class DemonstrationReport:
    """The whole report: the comparison, its verdicts, the energy baseline, the trend
    buckets, the parts of the scope and the windows behind every sum."""

    request: ReportRequest
    comparison: Comparison
    timezone: str
    lang: Lang
    targets: tuple[Target, ...]
    targets_source: str | None
    verdicts: list[KpiVerdicts]
    energy: EnergyBaseline
    bucket: BucketSize
    buckets: list[Bucket]
    parts: list[PartComparison]
    windows: list[ScopeWindows]
    generated: str
    operating_cost: dict[PeriodName, float | None] = field(default_factory=dict)

    @property
    def scope(self) -> Scope:
        """Whose report this is."""
        return self.comparison.current.scope

    def period(self, name: PeriodName) -> Period:
        """The request's period ``name``."""
        return self.request.current if name == "current" else self.request.baseline

    def totals(self, name: PeriodName) -> PeriodTotals:
        """The scope's totals of period ``name``."""
        return self.comparison.current if name == "current" else self.comparison.baseline


def _values_with_cost(totals: PeriodTotals, cost: float | None) -> dict[str, float | int | None]:
    values = dict(totals.values)
    if OPERATING_COST not in RATE_FIELDS:  # not a rate the period sums recompute
        values[OPERATING_COST] = cost
    return values


def _local_days(start_ms: int, end_ms: int, timezone: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    t = start_ms
    while t < end_ms:
        begin, finish = window_bounds("1d", t, timezone)
        out.append((max(begin, start_ms), min(finish, end_ms)))
        t = finish
    return out


def _steps(start_ms: int, end_ms: int, step_ms: int, offset_ms: int) -> list[tuple[int, int]]:
    first = (start_ms - offset_ms) // step_ms * step_ms + offset_ms
    return [(max(t, start_ms), min(t + step_ms, end_ms))
            for t in range(first, end_ms, step_ms)]


def _bucket_size(request: ReportRequest) -> BucketSize:
    longest = max(request.current.end_ms - request.current.start_ms,
                  request.baseline.end_ms - request.baseline.start_ms)
    if request.window == "shift":
        return "window" if longest <= 2 * 24 * _H else "day"
    if request.window in ("1w", "1mo"):
        return "window"
    count = max(expected_windows(request.window, p.start_ms, p.end_ms, request.timezone)[0]
                for p in (request.current, request.baseline))
    if count <= MAX_WINDOW_POINTS:
        return "window"
    if request.window != "1d" and window_length_ms(request.window) < _H \
            and longest // _H <= MAX_HOUR_POINTS:
        return "hour"
    return "day"


def _buckets(records: Sequence[KpiRecord], scope: Scope, request: ReportRequest,
             size: BucketSize, tz: ZoneInfo) -> list[Bucket]:
    out: list[Bucket] = []
    named: tuple[tuple[PeriodName, Period], ...] = (("baseline", request.baseline),
                                                    ("current", request.current))
    for name, period in named:
        start, end = period.start_ms, period.end_ms
        mine = sorted(period_records(records, scope, request.window, start, end),
                      key=lambda r: r.window_start_ms)
        starts = [r.window_start_ms for r in mine]
        if size == "day":
            spans = _local_days(start, end, request.timezone)
        elif size == "hour":
            offset = tz.utcoffset(datetime.fromtimestamp(start / 1000, UTC)) or timedelta()
            spans = _steps(start, end, _H, int(offset.total_seconds() * 1000) % _H)
        elif request.window == "shift":
            spans = sorted({(r.window_start_ms, r.window_end_ms) for r in mine})
        else:
            spans = window_spans(request.window, start, end, request.timezone)
        for b_start, b_end in spans:
            if b_end <= b_start:
                continue
            inside = mine[bisect_left(starts, b_start):bisect_left(starts, b_end)]
            totals = summarize(inside, scope, request.window, b_start, b_end, request.timezone)
            out.append(Bucket(name, b_start, b_end, totals))
    return out


def _parts(records: Sequence[KpiRecord], scope: Scope, window: str) -> list[Scope]:
    if scope.kind == "machine":
        return []
    lines: set[str] = set()
    machines: set[str] = set()
    for r in records:
        if r.site != scope.site or r.window != window:
            continue
        if scope.kind == "line" and r.line != scope.id:
            continue
        if r.machine is not None:
            machines.add(r.machine)
        elif r.line is not None and scope.kind == "site":
            lines.add(r.line)
    return ([Scope(scope.site, "line", i) for i in sorted(lines)]
            + [Scope(scope.site, "machine", i) for i in sorted(machines)])


def build_demonstration(records: Sequence[KpiRecord], request: ReportRequest, *,
                        timezone: str, lang: Lang, targets: Sequence[Target],
                        targets_source: str | None = None,
                        now: datetime | None = None) -> DemonstrationReport:
    """The report of ``request`` over ``records`` (an InputError when the scope has no
    record in either period, as :func:`agent.report.build_report` says). ``timezone``
    is the site's: of the calendar windows, the charts' days and the dates shown."""
    tz = ZoneInfo(timezone)
    if request.timezone != timezone:
        request = replace(request, timezone=timezone)
    comparison = build_report(list(records), request)
    scope = comparison.current.scope
    window = request.window
    windows: list[ScopeWindows] = []
    parts: list[PartComparison] = []
    for who in [scope, *_parts(records, scope, window)]:
        base = tuple(period_records(records, who, window, request.baseline.start_ms,
                                    request.baseline.end_ms))
        cur = tuple(period_records(records, who, window, request.current.start_ms,
                                   request.current.end_ms))
        if who != scope:
            if not base and not cur:
                continue
            parts.append(PartComparison(
                who, summarize(base, who, window, request.baseline.start_ms,
                               request.baseline.end_ms, timezone),
                summarize(cur, who, window, request.current.start_ms, request.current.end_ms,
                          timezone)))
        windows.append(ScopeWindows(who, base, cur))
    own = windows[0]
    cost: dict[PeriodName, float | None] = {
        "baseline": energy_cost_per_good_unit(own.baseline),
        "current": energy_cost_per_good_unit(own.current)}
    applied = targets_for(scope.site, targets)
    verdicts = assess(_values_with_cost(comparison.baseline, cost["baseline"]),
                      _values_with_cost(comparison.current, cost["current"]), applied)
    size = _bucket_size(request)
    moment = (now or datetime.now(UTC)).astimezone(tz)
    return DemonstrationReport(
        request=request, comparison=comparison, timezone=timezone, lang=lang,
        targets=applied, targets_source=targets_source, verdicts=verdicts,
        energy=energy_baseline(own.baseline, own.current), bucket=size,
        buckets=_buckets(records, scope, request, size, tz), parts=parts, windows=windows,
        generated=moment.isoformat(timespec="seconds"), operating_cost=cost)
