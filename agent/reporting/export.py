"""The report as data: one JSON object, and the window rows an auditor re-adds (CSV here,
one workbook sheet per scope in :mod:`agent.reporting.xlsx`).

The JSON keeps every key ``edge-agent report --format json`` has always printed (both
periods' coverage and figures, ``reduction`` = (baseline - current) / baseline per
figure) and adds ``change`` (the figure's own relative change with its direction in
words), ``verdicts``, ``targets``, ``energy_baseline``, ``parts`` and ``trend``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from agent.report import render_json
from agent.reporting.model import DemonstrationReport
from rules.baseline_model import MIN_POINTS, MIN_R2, EnergyModel
from rules.report import PERIOD_FIELDS, PeriodTotals, Scope
from rules.targets import Target, direction, relative_difference
from rules.types import KPI_FIELDS, KpiRecord, ms_to_rfc3339

__all__ = ["WINDOW_COLUMNS", "render_csv", "report_json", "window_rows"]

WINDOW_COLUMNS: tuple[str, ...] = (
    "scope", "id", "period", "window", "window_start", "window_end", *KPI_FIELDS, "flags")
"""The columns of a window row: who, which period, when, every record field, flags."""


def _target(target: Target) -> dict[str, Any]:
    return {"kpi": target.kpi, "kind": target.kind, "value": target.value,
            "group": target.group, "site": target.site}


def _model(model: EnergyModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {"driver": model.driver, "slope": model.slope, "intercept_kwh": model.intercept,
            "r2": model.r2, "points": model.n, "driver_min": model.x_min,
            "driver_max": model.x_max}


def _figures(totals: PeriodTotals) -> dict[str, Any]:
    return {"windows": totals.windows, "energy_windows": totals.energy_windows,
            **{name: totals.values.get(name) for name in PERIOD_FIELDS}}


def _scope_id(scope: Scope) -> str:
    return scope.id if scope.id is not None else scope.site


def report_json(report: DemonstrationReport) -> dict[str, Any]:
    """The report as one JSON-ready object (see the module doc for its keys)."""
    out = render_json(report.comparison, report.request)
    base, cur = report.comparison.baseline.values, report.comparison.current.values
    out["lang"] = report.lang
    out["timezone"] = report.timezone
    out["change"] = {
        name: {"relative": relative_difference(base.get(name), cur.get(name)),
               "direction": direction(name, base.get(name), cur.get(name))}
        for name in PERIOD_FIELDS}
    out["verdicts"] = [
        {"kpi": row.kpi, "baseline": row.baseline, "current": row.current,
         "relative": row.relative, "direction": row.direction,
         "targets": [{**_target(v.target), "required": v.required, "status": v.status}
                     for v in row.verdicts]}
        for row in report.verdicts]
    out["targets"] = [_target(t) for t in report.targets]
    out["targets_file"] = report.targets_source
    energy = report.energy
    saving = energy.saving
    out["energy_baseline"] = {
        "fits": {driver: _model(model) for driver, model in energy.fits.items()},
        "driver": None if energy.chosen is None else energy.chosen.driver,
        "baseline_points": len(energy.baseline_points),
        "current_points": len(energy.current_points),
        "min_r2": MIN_R2, "min_points": MIN_POINTS,
        "saving": None if saving is None else {
            "expected_kwh": saving.expected_kwh, "actual_kwh": saving.actual_kwh,
            "saving_kwh": saving.saving_kwh, "saving_ratio": saving.saving_ratio,
            "windows": saving.n, "outside_range": saving.outside_range,
            "claimable": saving.claimable, "reason": saving.reason},
    }
    out["parts"] = [{"scope": part.scope.kind, "id": _scope_id(part.scope),
                     "baseline": _figures(part.baseline), "current": _figures(part.current)}
                    for part in report.parts]
    out["trend"] = {
        "bucket": report.bucket,
        "points": [{"period": b.period, "start": ms_to_rfc3339(b.start_ms),
                    "end": ms_to_rfc3339(b.end_ms), **_figures(b.totals)}
                   for b in report.buckets]}
    return out


def _row(scope: Scope, period: str, record: KpiRecord) -> list[Any]:
    return [scope.kind, _scope_id(scope), period, record.window,
            ms_to_rfc3339(record.window_start_ms), ms_to_rfc3339(record.window_end_ms),
            *(getattr(record, name) for name in KPI_FIELDS), ",".join(record.flags)]


def window_rows(report: DemonstrationReport, scope: Scope | None = None) -> list[list[Any]]:
    """Every window record summed by the report (of ``scope`` only, when given): baseline
    first, in time order, as :data:`WINDOW_COLUMNS`."""
    rows: list[list[Any]] = []
    for windows in report.windows:
        if scope is not None and windows.scope != scope:
            continue
        for period, records in (("baseline", windows.baseline), ("current", windows.current)):
            for record in sorted(records, key=lambda r: r.window_start_ms):
                rows.append(_row(windows.scope, period, record))
    return rows


def render_csv(report: DemonstrationReport) -> str:
    """The window rows of every scope as CSV (RFC 4180, a header row; empty = undefined)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(WINDOW_COLUMNS)
    for row in window_rows(report):
        writer.writerow(["" if cell is None else cell for cell in row])
    return buffer.getvalue()
