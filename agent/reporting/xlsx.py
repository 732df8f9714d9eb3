"""The report as a workbook an auditor can recompute: the verdicts, the period sums of
every scope, and one sheet per scope holding the raw window records those sums add up.

Written with openpyxl (the ``report`` extra: ``pip install 'factory-edge-agent[report]'``).
Ratios are stored as fractions with a percent format, times in seconds as the records
carry them, so a sheet's column sums are exactly the report's sums.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from agent.reporting import fmt
from agent.reporting.errors import RendererError
from agent.reporting.export import WINDOW_COLUMNS, window_rows
from agent.reporting.i18n import Lang, kpi_name, kpi_unit, tr
from agent.reporting.model import PERIODS, DemonstrationReport
from agent.reporting.text import claim_text
from rules.report import PERIOD_FIELDS, PeriodTotals, Scope

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

__all__ = ["SUMS_SHEET", "render_xlsx", "scope_sheet_name"]

SUMS_SHEET = "sums"
"""The sheet with every scope's period sums and rates (machine-readable headings)."""

_BAD = re.compile(r"[\[\]:*?/\\]")


def scope_sheet_name(scope: Scope) -> str:
    """The sheet of ``scope``'s windows: ``site hb-sjz-01``, ``line line-a``, ...; at most
    31 characters, as Excel requires."""
    name = _BAD.sub("_", f"{scope.kind} {scope.id if scope.id is not None else scope.site}")
    return name[:31]


def _bold(sheet: Worksheet, row: int) -> None:
    from openpyxl.styles import Font

    for cell in sheet[row]:
        cell.font = Font(bold=True)


def _summary(sheet: Worksheet, report: DemonstrationReport, lang: Lang) -> None:
    sheet.append([tr("title", lang)])
    _bold(sheet, 1)
    sheet.append([tr("col.scope", lang), fmt.scope_label(report.scope, lang)])
    for name in PERIODS:
        sheet.append([fmt.period_label(name, lang), report.period(name).text,
                      fmt.coverage(report.totals(name), lang)])
    sheet.append([tr("window", lang), report.request.window])
    sheet.append([tr("timezone", lang), report.timezone])
    sheet.append([tr("generated", lang), report.generated])
    sheet.append([])
    groups = list(dict.fromkeys(t.group for t in report.targets))
    head: list[Any] = [tr("col.kpi", lang), tr("col.field", lang), tr("col.unit", lang),
                       tr("col.baseline", lang), tr("col.current", lang),
                       tr("col.change", lang), ""]
    for group in groups:
        label = fmt.target_group(group, lang)
        head += [f"{label}: {tr('col.requirement', lang)}",
                 f"{label}: {tr('col.required', lang)}", f"{label}: {tr('col.verdict', lang)}"]
    sheet.append(head)
    _bold(sheet, sheet.max_row)
    for row in report.verdicts:
        cells: list[Any] = [kpi_name(row.kpi, lang), row.kpi, kpi_unit(row.kpi, lang),
                            row.baseline, row.current, row.relative,
                            fmt.direction_word(row.direction, lang)]
        for group in groups:
            found = [v for v in row.verdicts if v.target.group == group]
            cells += ([fmt.requirement(found[0].target, lang), found[0].required,
                       fmt.status_word(found[0].status, lang)] if found else ["", None, ""])
        sheet.append(cells)
        line = sheet.max_row
        sheet.cell(line, 6).number_format = "+0.0%;-0.0%;0.0%"
        if row.kpi in fmt.PERCENT_FIELDS:
            for col in (4, 5, *(9 + 3 * i for i in range(len(groups)))):
                sheet.cell(line, col).number_format = "0.00%"
    sheet.append([])
    sheet.append([tr("note.cycle", lang)])
    sheet.append([tr("note.cost.measured" if report.operating_cost["current"] is not None
                     else "note.cost", lang)])
    for name in PERIODS:
        for note in fmt.notes(report.totals(name), name, lang):
            sheet.append([note])
    sheet.append([])
    sheet.append([tr("section.energy", lang)])
    _bold(sheet, sheet.max_row)
    sheet.append([tr("col.driver", lang), tr("col.slope", lang), tr("col.intercept", lang),
                  tr("col.r2", lang), tr("col.points", lang), tr("col.used", lang)])
    energy = report.energy
    for driver, model in energy.fits.items():
        if model is None:
            sheet.append([driver, None, None, None, len(energy.baseline_points), ""])
        else:
            sheet.append([driver, model.slope, model.intercept, model.r2, model.n,
                          tr("yes", lang) if model is energy.chosen else ""])
    if energy.saving is not None:
        s = energy.saving
        sheet.append([tr("energy.expected", lang), s.expected_kwh, "kWh"])
        sheet.append([tr("energy.actual", lang), s.actual_kwh, "kWh"])
        sheet.append([tr("energy.saving", lang), s.saving_kwh, "kWh"])
        sheet.append([tr("energy.saving_ratio", lang), s.saving_ratio])
        sheet.cell(sheet.max_row, 2).number_format = "0.0%"
        sheet.append([claim_text(report, lang)])
    sheet.column_dimensions["A"].width = 40
    for letter in "BCDEFG":
        sheet.column_dimensions[letter].width = 16


def _sums(sheet: Worksheet, report: DemonstrationReport) -> None:
    sheet.append(["scope", "id", "period", "windows", "windows_expected", "observed_s",
                  "expected_s", "partial_windows", "energy_windows", *PERIOD_FIELDS])
    _bold(sheet, 1)
    parts: list[tuple[Scope, PeriodTotals, PeriodTotals]] = [
        (report.scope, report.comparison.baseline, report.comparison.current),
        *((p.scope, p.baseline, p.current) for p in report.parts)]
    for scope, base, cur in parts:
        for name, totals in (("baseline", base), ("current", cur)):
            sheet.append([scope.kind, scope.id if scope.id is not None else scope.site, name,
                          totals.windows, totals.windows_expected, totals.observed_s,
                          totals.expected_s, totals.partial_windows, totals.energy_windows,
                          *(totals.values.get(f) for f in PERIOD_FIELDS)])
    sheet.freeze_panes = "D2"


def _windows(sheet: Worksheet, report: DemonstrationReport, scope: Scope) -> None:
    sheet.append(list(WINDOW_COLUMNS))
    _bold(sheet, 1)
    for row in window_rows(report, scope):
        sheet.append(row)
    sheet.freeze_panes = "G2"
    sheet.auto_filter.ref = sheet.dimensions


def _targets(sheet: Worksheet, report: DemonstrationReport, lang: Lang) -> None:
    sheet.append(["group", "kpi", "kind", "value", "site", tr("col.requirement", lang)])
    _bold(sheet, 1)
    for t in report.targets:
        sheet.append([t.group, t.kpi, t.kind, t.value, t.site, fmt.requirement(t, lang)])


def render_xlsx(report: DemonstrationReport) -> bytes:
    """The workbook's bytes (a RendererError when openpyxl is not installed)."""
    try:
        from openpyxl import Workbook
    except ImportError as err:
        raise RendererError("--format xlsx needs openpyxl: pip install "
                            "'factory-edge-agent[report]'") from err
    lang = report.lang
    book = Workbook()
    summary = book.active
    assert summary is not None
    summary.title = tr("sheet.summary", lang)
    _summary(summary, report, lang)
    _targets(book.create_sheet(tr("sheet.targets", lang)), report, lang)
    _sums(book.create_sheet(SUMS_SHEET), report)
    for windows in report.windows:
        _windows(book.create_sheet(scope_sheet_name(windows.scope)), report, windows.scope)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
