"""``edge-agent report``: a period's KPIs against a baseline period (docs/kpi.md, "Against a
baseline").

The records come from KPI JSON Lines (what ``edge-agent kpi`` writes, e.g. recomputed
from a ``--record`` sample log) or from the platform's InfluxDB, read with the ingest's
own config. The arithmetic is :mod:`rules.report`; this module reads, parses arguments
and renders.

Periods are ``START/END`` with END exclusive, as ISO 8601 intervals are: dates
(``2026-10-01/2026-11-01``, local midnight in ``--timezone``) or timestamps
(``2026-10-01T08:00+08:00/2026-10-01T16:00+08:00``; without an offset, local time). A
window belongs to a period when it lies wholly inside it.

``--timezone`` is also the zone of the calendar windows (``1d``, ``1w``, ``1mo`` start at
the site's local midnight, as the engine cuts them): which windows a period expects and
how long they last follow from it. Neither the records nor the ingest's config name the
site's zone, so it defaults to UTC; records of calendar windows that do not start at a
local midnight of the zone given are refused with the zone offset they imply, rather
than summed against windows the agent never wrote.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from agent.config.common import InfluxSettings
from agent.ingest.points import KPI_MEASUREMENT, LINE_PLACEHOLDER, SITE_PLACEHOLDER
from agent.ingest.schema import COUNT_FIELDS, NULLABLE_FIELDS, parse_kpi_payload
from rules.calendar import zone
from rules.errors import InputError, ServiceError
from rules.report import (
    PERIOD_FIELDS,
    RATE_FIELDS,
    Comparison,
    PeriodTotals,
    Scope,
    compare,
    misaligned,
    window_bounds,
)
from rules.report import summarize as summarize_period
from rules.spec import CALENDAR_WINDOWS, check_window_label
from rules.types import KPI_FIELDS, KpiRecord, ms_to_rfc3339

__all__ = [
    "Period",
    "ReportRequest",
    "build_report",
    "check_window",
    "parse_period",
    "read_influx_records",
    "read_jsonl_records",
    "render_json",
    "render_text",
    "write_report",
]


@dataclass(frozen=True, slots=True)
class Period:
    """``[start_ms, end_ms)`` and the text it was given as."""

    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to compare: whose records, which window size, which two periods, and the
    site's time zone (of the calendar windows)."""

    window: str
    current: Period
    baseline: Period
    site: str | None = None
    line: str | None = None
    machine: str | None = None
    timezone: str = "UTC"


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; InputError naming the option otherwise."""
    try:
        return zone(name)
    except ValueError as err:
        raise InputError(f"--timezone: {err}") from err


def _instant(text: str, tz: ZoneInfo) -> int:
    text = text.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(0), tz)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
    except ValueError as err:
        raise ValueError(f"{text!r} is neither a date (YYYY-MM-DD) nor a timestamp") from err
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def parse_period(text: str, tz: ZoneInfo, option: str) -> Period:
    """``START/END`` (END exclusive) into a :class:`Period`; InputError naming ``option``."""
    parts = text.split("/")
    if len(parts) != 2:
        raise InputError(f"{option}: {text!r} is not START/END "
                         "(e.g. 2026-10-01/2026-11-01)")
    try:
        start, end = (_instant(p, tz) for p in parts)
    except ValueError as err:
        raise InputError(f"{option}: {err}") from None
    if end <= start:
        raise InputError(f"{option}: {text!r} ends before it starts")
    return Period(start, end, text)


def read_jsonl_records(sources: Iterable[tuple[str, TextIO]]) -> list[KpiRecord]:
    """KPI records from JSON Lines streams, ``(name, stream)``; blank lines are skipped.

    A bad line is an :class:`InputError` naming ``name:line`` and the key.
    """
    out: list[KpiRecord] = []
    for name, stream in sources:
        for number, text in enumerate(stream, 1):
            if not text.strip():
                continue
            out.append(parse_kpi_payload(text.encode("utf-8"), "", where=f"{name}:{number}"))
    return out


def _flux_string(value: str) -> str:
    # A Flux string literal escapes like JSON's (backslash, double quote); ${ is not
    # interpolated when the dollar is escaped.
    return json.dumps(value, ensure_ascii=False).replace("${", "\\${")


def _flux_query(settings: InfluxSettings, request: ReportRequest) -> str:
    start = min(request.current.start_ms, request.baseline.start_ms)
    stop = max(request.current.end_ms, request.baseline.end_ms) + 1  # range stop is exclusive
    # Only the scope's series and those of its parts (a line's machines, a site's lines
    # and machines, which the report compares): not every series of the bucket.
    where = [f"r._measurement == {_flux_string(KPI_MEASUREMENT)}",
             f"r.window == {_flux_string(request.window)}"]
    if request.site is not None:
        where.append(f"r.site == {_flux_string(request.site)}")
    if request.machine is not None:
        where.append(f"r.machine == {_flux_string(request.machine)}")
    elif request.line is not None:
        where.append(f"r.line == {_flux_string(request.line)}")
    return (
        f"from(bucket: {_flux_string(settings.bucket)})\n"
        f"  |> range(start: {ms_to_rfc3339(start)}, stop: {ms_to_rfc3339(stop)})\n"
        f"  |> filter(fn: (r) => {' and '.join(where)})\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
    )


def _from_row(row: dict[str, Any], window: str, timezone: str = "UTC") -> KpiRecord:
    """A record from one pivoted ``kpi`` row (the ingest's point, read back)."""
    line: str | None = row["line"]
    machine: str | None = row["machine"]
    if line == SITE_PLACEHOLDER:
        line = machine = None
    elif machine == LINE_PLACEHOLDER:
        machine = None
    end_ms = (row["_time"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    # The point keeps only the window end; a tumbling or calendar window's start is that
    # of the window ending there (a local day or month in the site's zone). A shift's is
    # not known, so it is taken as the end (it then counts in a period by its end alone).
    start_ms = end_ms if window == "shift" else window_bounds(window, end_ms - 1, timezone)[0]
    values: dict[str, Any] = {}
    for name in KPI_FIELDS:
        value = row.get(name)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            values[name] = None if name in NULLABLE_FIELDS else 0
        elif name in COUNT_FIELDS:
            values[name] = int(value)
        else:
            values[name] = float(value)
    flags = tuple(f for f in str(row.get("flags") or "").split(",") if f)
    return KpiRecord(site=str(row["site"]), line=line, machine=machine, window=window,
                     window_start_ms=start_ms, window_end_ms=end_ms, flags=flags, **values)


def read_influx_records(settings: InfluxSettings, request: ReportRequest) -> list[KpiRecord]:
    """The ``kpi`` points of both periods' span, read back as records.

    Works on InfluxDB 1.8+ (Flux enabled) and 2.x/3.x: the query uses nothing newer than
    Flux 0.65. A database that cannot be reached or refuses the query is a
    :class:`ServiceError` naming its URL.
    """
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError

    query = _flux_query(settings, request)
    try:
        with InfluxDBClient(url=settings.url, token=settings.token_value(), org=settings.org,
                            timeout=int(settings.timeout_s * 1000)) as client:
            tables = client.query_api().query(query)
    except ApiException as err:
        raise ServiceError(f"InfluxDB at {settings.url} refused the report query: HTTP "
                           f"{err.status} {err.reason}: {(err.body or '')[:300]}") from err
    except (HTTPError, OSError) as err:
        raise ServiceError(f"InfluxDB at {settings.url} did not answer: {err}") from err
    return [_from_row(rec.values, request.window, request.timezone)
            for table in tables for rec in table.records]


def _scope(records: list[KpiRecord], request: ReportRequest) -> Scope:
    site = request.site
    if site is None:
        sites = sorted({r.site for r in records})
        if len(sites) != 1:
            found = ", ".join(sites) if sites else "none"
            raise InputError(f"--site: the records hold {len(sites)} sites ({found}); "
                             "name the one to report")
        site = sites[0]
    if request.machine is not None:
        return Scope(site, "machine", request.machine)
    if request.line is not None:
        return Scope(site, "line", request.line)
    return Scope(site)


def check_window(window: str) -> None:
    """InputError unless ``window`` is one the engine computes: ``shift``, a tumbling size
    like ``1h``, or a calendar window ``1d``, ``1w``, ``1mo``."""
    try:
        check_window_label(window)
    except ValueError as err:
        raise InputError(f"--window: {err}") from None


def _utc_offset(ms: int) -> str:
    minutes = round(-ms / 60_000) % 1440
    if minutes > 720:
        minutes -= 1440
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _check_zone(records: list[KpiRecord], scope: Scope, request: ReportRequest) -> None:
    if request.window not in CALENDAR_WINDOWS:
        return
    odd = misaligned((r for r in records if r.site == scope.site), request.window,
                     request.timezone)
    if odd is None:
        return
    who = Scope.of(odd)
    raise InputError(
        f"--timezone: the {request.window} record of {who} from "
        f"{ms_to_rfc3339(odd.window_start_ms)} to {ms_to_rfc3339(odd.window_end_ms)} is not "
        f"a {request.window} window in {request.timezone} (it starts at local midnight of "
        f"{_utc_offset(odd.window_start_ms)}); give the site's time zone, e.g. "
        "--timezone Asia/Shanghai")


def build_report(records: list[KpiRecord], request: ReportRequest) -> Comparison:
    """Both periods summed for the requested scope, and their comparison.

    A scope with no record in either period is an :class:`InputError`: the report
    would be empty, and a typo in an id is the likely reason.
    """
    check_window(request.window)
    scope = _scope(records, request)
    _check_zone(records, scope, request)
    current = summarize_period(records, scope, request.window, request.current.start_ms,
                               request.current.end_ms, request.timezone)
    baseline = summarize_period(records, scope, request.window, request.baseline.start_ms,
                                request.baseline.end_ms, request.timezone)
    if current.windows == 0 and baseline.windows == 0:
        known = sorted({r.window for r in records if scope.matches(r)})
        hint = (f"its records have windows {', '.join(known)}" if known
                else "no record belongs to it")
        raise InputError(f"{scope}: no {request.window} record in either period ({hint})")
    return compare(current, baseline)


def _period_json(totals: PeriodTotals, period: Period) -> dict[str, Any]:
    return {
        "period": period.text,
        "start": ms_to_rfc3339(totals.start_ms),
        "end": ms_to_rfc3339(totals.end_ms),
        "windows": totals.windows,
        "windows_expected": totals.windows_expected,
        "observed_s": totals.observed_s,
        "expected_s": totals.expected_s,
        "partial_windows": totals.partial_windows,
        "energy_windows": totals.energy_windows,
        "complete": totals.complete,
        "flags": dict(sorted(totals.flags.items())),
        **{name: totals.values.get(name) for name in PERIOD_FIELDS},
    }


def render_json(report: Comparison, request: ReportRequest) -> dict[str, Any]:
    """The report as one JSON object: scope, both periods, and ``reduction`` per figure."""
    scope = report.current.scope
    return {
        "site": scope.site,
        "line": request.line,
        "machine": request.machine,
        "scope": scope.kind,
        "window": report.current.window,
        "current": _period_json(report.current, request.current),
        "baseline": _period_json(report.baseline, request.baseline),
        "reduction": report.change,
    }


def _fmt(name: str, value: float | int | None) -> str:
    if value is None:
        return "-"
    if name in COUNT_FIELDS:
        return f"{int(value):,}"
    if name.endswith("_time_s"):
        return f"{value / 3600:,.2f} h"
    if name in ("availability", "performance", "quality_ratio", "oee", "defect_rate"):
        return f"{value * 100:.2f} %"
    return f"{value:,.4f}" if name in RATE_FIELDS else f"{value:,.2f}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h"


def _coverage(totals: PeriodTotals) -> str:
    expected = f" of {totals.windows_expected}" if totals.windows_expected is not None else ""
    text = f"{totals.windows}{expected} windows"
    if totals.energy_windows != totals.windows:
        text += f", {totals.windows - totals.energy_windows} without energy data"
    span = f" of {_hours(totals.expected_s)}" if totals.expected_s is not None else ""
    return text + f", {_hours(totals.observed_s)}{span} observed"


def _lines(report: Comparison, request: ReportRequest) -> Iterator[str]:
    cur, base = report.current, report.baseline
    yield f"KPI report: {cur.scope}, {cur.window} windows"
    yield f"  current:  {request.current.text}  ({_coverage(cur)})"
    yield f"  baseline: {request.baseline.text}  ({_coverage(base)})"
    for label, totals in (("current", cur), ("baseline", base)):
        if totals.flags:
            flags = ", ".join(f"{k} x{v}" for k, v in sorted(totals.flags.items()))
            yield f"  {label} flags: {flags}"
    for label, totals in (("current", cur), ("baseline", base)):
        expected = totals.windows_expected
        if expected is not None and totals.windows < expected:
            yield (f"  note: the {label} period lacks {expected - totals.windows} windows; "
                   "its sums cover only what was recorded")
        if totals.partial_windows:
            yield (f"  note: the agent observed {totals.partial_windows} of the {label} "
                   "period's windows only in part (not running, or started without its "
                   "checkpoint); their sums cover only the observed time")
        if totals.energy_windows < totals.windows:
            yield (f"  note: {label} energy covers {totals.energy_windows} of "
                   f"{totals.windows} windows; the per-unit figures divide it by the parts "
                   "of those windows only")
    yield ""
    yield f"  {'':<26}{'baseline':>16}{'current':>16}{'reduction':>12}"
    for name in PERIOD_FIELDS:
        change = report.change[name]
        shown = "-" if change is None else f"{change * 100:+.1f} %"
        yield (f"  {name:<26}{_fmt(name, base.values[name]):>16}"
               f"{_fmt(name, cur.values[name]):>16}{shown:>12}")
    yield ""
    yield ("  reduction = (baseline - current) / baseline, of the figure itself: + is lower "
           "than the baseline")


def render_text(report: Comparison, request: ReportRequest) -> str:
    """The report as an aligned table for a terminal or a text file."""
    return "\n".join(_lines(report, request)) + "\n"


def write_report(report: Comparison, request: ReportRequest, fmt: str,
                 out: TextIO = sys.stdout) -> None:
    """Write the report as ``text`` or ``json``."""
    if fmt == "json":
        out.write(json.dumps(render_json(report, request), ensure_ascii=False) + "\n")
    else:
        out.write(render_text(report, request))
