"""A period's KPIs from its window records, and their change against a baseline period.

docs/kpi.md, "Against a baseline": relative change = (baseline - current) / baseline, applied
to the rate itself (a defect rate going from 2.0 % to 1.5 % is a 25 % reduction, not
0.5 points). Positive means the figure went down: good for defect rate, energy and CO2
per unit, bad for OEE and its factors.

A period's rates are never averages of the windows' rates. They are recomputed from the
summed quantities, exactly as a window's are (docs/kpi.md, "Aggregates"): availability is
sum(APT) / sum(PBT); performance sum(ideal cycle x PQ) / sum(APT) and oee
sum(ideal cycle x GQ) / sum(PBT), with each window's own ideal cycle time (a config
change mid-period is weighted correctly); energy intensities divide the energy of the
windows that have energy data by the parts of those same windows, so a meter outage
does not make a period look efficient.

A record replayed with the same key (site, line, machine, window, end) replaces the
earlier one, as it does in InfluxDB: a period is never counted twice.

Coverage: the windows found against those a complete period has, and the time the
agent observed (the records' ``observed_s``) against the time those windows span. A
period with windows missing, or with windows the agent observed only in part (it was
not running, or it started without its checkpoint), is not complete, and its sums cover
only what was observed. A record without ``observed_s`` (from an agent that predates the
field) counts as wholly observed, as such agents claimed.

Which windows a period expects is decided as the engine cuts them: fixed windows (``1m``,
``1h``, ...) aligned to the UTC epoch, calendar windows (``1d``, ``1w``, ``1mo``) from the
site's local midnight, so a report must be given the site's time zone. A Berlin October has
31 windows of ``1d`` but lasts 745 h; a Shanghai day starts at 16:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from rules.calendar import calendar_window
from rules.spec import CALENDAR_WINDOWS, KGCE_PER_KWH, window_length_ms
from rules.types import KPI_FIELDS, KpiRecord

__all__ = [
    "PERIOD_FIELDS",
    "RATE_FIELDS",
    "SUM_FIELDS",
    "Comparison",
    "PeriodTotals",
    "Scope",
    "compare",
    "expected_windows",
    "misaligned",
    "period_records",
    "relative_change",
    "summarize",
    "window_bounds",
    "window_spans",
]

RATE_FIELDS: tuple[str, ...] = (
    "availability",
    "performance",
    "quality_ratio",
    "oee",
    "defect_rate",
    "cycle_time_mean_s",
    "energy_per_unit_kwh",
    "energy_per_good_unit_kwh",
    "kgce_per_good_unit",
    "co2_per_good_unit_kg",
    "energy_cost_per_good_unit",
)
"""The rates a period reports, recomputed from its sums."""

_OPTIONAL_SUMS: tuple[str, ...] = (
    "scrap_all_machines", "natural_gas_m3", "steam_kg", "water_m3", "compressed_air_m3",
    "kgce", "energy_cost",
)
"""Sums over the windows that carry the figure (null in a window: not counted)."""

SUM_FIELDS: tuple[str, ...] = tuple(
    name for name in KPI_FIELDS
    if name not in RATE_FIELDS
    # a product of per-machine ratios: a period's is not computed from the line's sums
    and name not in ("ideal_cycle_time_s", "observed_s", "rolled_throughput_yield"))
"""The quantities a period adds up: times, parts, energy, CO2 (observed time is its
coverage, see :class:`PeriodTotals`, not a figure to compare)."""

PERIOD_FIELDS: tuple[str, ...] = SUM_FIELDS + RATE_FIELDS
"""Every figure of a period, sums first, in report order."""


ScopeKind = Literal["site", "line", "machine"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose records a report reads: the site, one line, or one machine."""

    site: str
    kind: ScopeKind = "site"
    id: str | None = None

    @classmethod
    def of(cls, record: KpiRecord) -> Scope:
        """The scope whose own record ``record`` is."""
        if record.machine is not None:
            return cls(record.site, "machine", record.machine)
        if record.line is not None:
            return cls(record.site, "line", record.line)
        return cls(record.site)

    def matches(self, record: KpiRecord) -> bool:
        """Is ``record`` this scope's own record (not one of its parts')?"""
        if record.site != self.site:
            return False
        if self.kind == "site":
            return record.line is None and record.machine is None
        if self.kind == "line":
            return record.line == self.id and record.machine is None
        return record.machine == self.id

    def __str__(self) -> str:
        return f"site {self.site}" if self.kind == "site" else f"{self.kind} {self.id}"


@dataclass(slots=True)
class PeriodTotals:
    """One scope's sums and rates over ``[start_ms, end_ms)`` at one window size.

    ``windows`` counts the records found, ``windows_expected`` how many a complete
    period has (None for ``shift`` windows, which follow the calendar); fewer found
    than expected means the agent was not running or records were lost, and the
    report says so. ``observed_s`` is the time the found records say the agent
    observed, ``expected_s`` the time the expected windows span (None for ``shift``
    windows), and ``partial_windows`` counts the records that observed less than their
    whole window. ``energy_windows`` counts the records with energy data: the energy
    intensities cover only those. ``flags`` counts each record flag seen.
    """

    scope: Scope
    window: str
    start_ms: int
    end_ms: int
    windows: int = 0
    windows_expected: int | None = None
    observed_s: float = 0.0
    expected_s: float | None = None
    partial_windows: int = 0
    energy_windows: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    values: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every expected window is there, observed whole, and with energy data."""
        expected = self.windows_expected
        return ((expected is None or self.windows == expected)
                and self.partial_windows == 0
                and self.energy_windows == self.windows > 0)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A period next to its baseline, and the relative change of every figure."""

    current: PeriodTotals
    baseline: PeriodTotals
    change: dict[str, float | None]


def relative_change(baseline: float | int | None, current: float | int | None) -> float | None:
    """(baseline - current) / baseline; None when either is undefined or baseline is 0."""
    if baseline is None or current is None or baseline == 0:
        return None
    return (baseline - current) / baseline


def _div(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def window_bounds(window: str, ts_ms: int, timezone: str = "UTC") -> tuple[int, int]:
    """Bounds ``[start, end)`` of the ``window`` window containing ``ts_ms``, exactly as the
    engine cuts it (calendar windows in the site's ``timezone``), so that a report expects
    the windows the agent wrote. ValueError for ``shift`` or an unknown size."""
    if window in CALENDAR_WINDOWS:
        return calendar_window(window, ts_ms, ZoneInfo(timezone))
    length = window_length_ms(window)
    start = ts_ms - ts_ms % length
    return start, start + length


def window_spans(window: str, start_ms: int, end_ms: int,
                 timezone: str = "UTC") -> list[tuple[int, int]]:
    """The ``window`` windows lying wholly inside [start, end), in order (see
    :func:`window_bounds`)."""
    out: list[tuple[int, int]] = []
    t = start_ms
    while t < end_ms:
        lo, hi = window_bounds(window, t, timezone)
        if lo >= start_ms and hi <= end_ms:
            out.append((lo, hi))
        t = hi
    return out


def expected_windows(window: str, start_ms: int, end_ms: int,
                     timezone: str = "UTC") -> tuple[int, int]:
    """How many ``window`` windows a complete [start, end) has, and the milliseconds they
    span (a local day across a DST change is 23 h or 25 h, a month 28 to 31 days)."""
    if window in CALENDAR_WINDOWS:
        spans = window_spans(window, start_ms, end_ms, timezone)
        return len(spans), sum(hi - lo for lo, hi in spans)
    length = window_length_ms(window)  # a year of minutes: counted, not listed
    count = len(range(-(-start_ms // length) * length, end_ms - length + 1, length))
    return count, count * length


def misaligned(records: Iterable[KpiRecord], window: str,
               timezone: str = "UTC") -> KpiRecord | None:
    """The first ``window`` record whose bounds are not a window of ``timezone``: records of
    calendar windows computed for another zone than the report's (its periods would
    otherwise expect windows the agent never wrote). None for ``shift``."""
    if window == "shift":
        return None
    for record in records:
        if (record.window == window and window_bounds(window, record.window_start_ms, timezone)
                != (record.window_start_ms, record.window_end_ms)):
            return record
    return None


def period_records(records: Iterable[KpiRecord], scope: Scope, window: str, start_ms: int,
                   end_ms: int) -> list[KpiRecord]:
    """The ``window`` records of ``scope`` lying wholly inside [start, end), each key once
    (the latest copy wins), in the order first seen: what :func:`summarize` sums, and
    what a report lists so that its sums can be recomputed."""
    latest: dict[tuple[str, str | None, str | None, str, int], KpiRecord] = {}
    for record in records:
        if (record.window == window and scope.matches(record)
                and start_ms <= record.window_start_ms and record.window_end_ms <= end_ms):
            latest[record.key] = record
    return list(latest.values())


def summarize(records: Iterable[KpiRecord], scope: Scope, window: str, start_ms: int,
              end_ms: int, timezone: str = "UTC") -> PeriodTotals:
    """The totals of ``scope`` over the ``window`` records lying inside [start, end), with
    the windows expected as the engine cuts them in the site's ``timezone``.

    Raises ``ValueError`` for an empty period or an unknown window size.
    """
    if end_ms <= start_ms:
        raise ValueError("the period must end after it starts")
    expected: int | None = None
    expected_s: float | None = None
    if window != "shift":
        expected, span_ms = expected_windows(window, start_ms, end_ms, timezone)
        expected_s = span_ms / 1000
    latest = period_records(records, scope, window, start_ms, end_ms)
    out = PeriodTotals(scope, window, start_ms, end_ms, windows=len(latest),
                       windows_expected=expected, expected_s=expected_s)
    observed_ms = 0  # whole milliseconds, so the sum is exact
    pbt = apt = setup = down = idle = 0.0
    pq = gq = sq = 0
    ict_pq = ict_gq = 0.0
    schedule = False  # some window had planned time and an ideal cycle time
    energy = co2 = 0.0
    e_pq = e_gq = 0
    optional: dict[str, float | int | None] = dict.fromkeys(_OPTIONAL_SUMS)
    kgce_gq = cost_gq = 0
    for record in latest:
        span_ms = record.window_end_ms - record.window_start_ms
        if record.observed_s is None:
            observed_ms += span_ms
        else:
            seen = round(record.observed_s * 1000)
            observed_ms += seen
            if seen < span_ms:
                out.partial_windows += 1
        pbt += record.planned_busy_time_s
        apt += record.producing_time_s
        setup += record.setup_time_s
        down += record.unplanned_down_time_s
        idle += record.idle_time_s
        pq += record.parts_produced
        gq += record.parts_good
        sq += record.parts_scrap
        # Site records carry no schedule KPIs (docs/kpi.md); a window's oee is null exactly
        # when it had no planned time or no ideal cycle time.
        if record.ideal_cycle_time_s is not None and record.oee is not None:
            schedule = True
            ict_pq += record.ideal_cycle_time_s * record.parts_produced
            ict_gq += record.ideal_cycle_time_s * record.parts_good
        if record.energy_kwh is not None:
            out.energy_windows += 1
            energy += record.energy_kwh
            co2 += record.co2_kg or 0.0
            e_pq += record.parts_produced
            e_gq += record.parts_good
        for name in _OPTIONAL_SUMS:
            value = getattr(record, name)
            if value is not None:
                optional[name] = (optional[name] or 0) + value
        if record.kgce is not None:
            kgce_gq += record.parts_good
        if record.energy_cost is not None:
            cost_gq += record.parts_good
        for flag in record.flags:
            out.flags[flag] = out.flags.get(flag, 0) + 1
    out.observed_s = observed_ms / 1000
    has_energy = out.energy_windows > 0
    values: dict[str, float | int | None] = {
        "planned_busy_time_s": pbt,
        "producing_time_s": apt,
        "setup_time_s": setup,
        "unplanned_down_time_s": down,
        "idle_time_s": idle,
        "parts_produced": pq,
        "parts_good": gq,
        "parts_scrap": sq,
        "energy_kwh": energy if has_energy else None,
        "co2_kg": co2 if has_energy else None,
    }
    sched = schedule and pbt > 0
    values["availability"] = _div(apt, pbt) if sched else None
    values["performance"] = _div(ict_pq, apt) if sched else None
    # a site's quality is its lines' outputs' whatever was planned (docs/kpi.md, "Aggregates")
    quality = sched or scope.kind == "site"
    values["quality_ratio"] = _div(gq, pq) if quality else None
    values["oee"] = _div(ict_gq, pbt) if sched else None
    values["defect_rate"] = _div(sq, pq) if quality else None
    values["cycle_time_mean_s"] = _div(apt, pq) if sched else None
    per_good = _div(energy, e_gq) if has_energy else None
    values["energy_per_unit_kwh"] = _div(energy, e_pq) if has_energy else None
    values["energy_per_good_unit_kwh"] = per_good
    values.update(optional)
    kgce, cost = optional["kgce"], optional["energy_cost"]
    if kgce is not None:
        values["kgce_per_good_unit"] = _div(kgce, kgce_gq)
    else:  # records of agents before kgce was a field: electricity only
        values["kgce_per_good_unit"] = None if per_good is None else KGCE_PER_KWH * per_good
    values["energy_cost_per_good_unit"] = None if cost is None else _div(cost, cost_gq)
    values["co2_per_good_unit_kg"] = _div(co2, e_gq) if has_energy else None
    out.values = values
    return out


def compare(current: PeriodTotals, baseline: PeriodTotals) -> Comparison:
    """Every figure's relative change from ``baseline`` to ``current``."""
    change = {name: relative_change(baseline.values.get(name), current.values.get(name))
              for name in PERIOD_FIELDS}
    return Comparison(current, baseline, change)
