"""The report for a terminal or a text file, in either language."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

from agent.reporting import fmt
from agent.reporting.i18n import Lang, kpi_name, kpi_unit, tr
from agent.reporting.model import PERIODS, DemonstrationReport
from rules.baseline_model import MIN_FIT_POINTS, MIN_POINTS, MIN_R2
from rules.report import PERIOD_FIELDS
from rules.targets import direction, relative_difference

__all__ = ["claim_text", "render_text"]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _ljust(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _rjust(text: str, width: int) -> str:
    return " " * max(0, width - _width(text)) + text


def _table(rows: list[list[str]], right_from: int = 1) -> Iterator[str]:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [_ljust(c, w) if i < right_from else _rjust(c, w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        yield ("  " + "  ".join(cells)).rstrip()


def _header(report: DemonstrationReport, lang: Lang) -> Iterator[str]:
    scope = fmt.scope_label(report.scope, lang, with_site=False)
    yield tr("text.header", lang, scope=scope, window=report.request.window)
    if report.scope.kind != "site":
        yield f"  {fmt.scope_label(report.scope, lang)}"
    for name in PERIODS:
        totals = report.totals(name)
        label = fmt.period_label(name, lang, short=True) + ":"
        yield (f"  {_ljust(label, 10)}{report.period(name).text}"
               f"  ({fmt.coverage(totals, lang)})")
    for name in PERIODS:
        totals = report.totals(name)
        if totals.flags:
            label = fmt.period_label(name, lang, short=True)
            yield "  " + tr("note.flags", lang, period=label, flags=fmt.flags(totals))
    for name in PERIODS:
        for note in fmt.notes(report.totals(name), name, lang):
            yield "  " + (f"note: {note}" if lang == "en" else tr("note.prefix", lang) + note)


def _verdicts(report: DemonstrationReport, lang: Lang) -> Iterator[str]:
    yield tr("section.verdicts", lang)
    rows = [[tr("col.kpi", lang), tr("col.baseline", lang), tr("col.current", lang),
             tr("col.change", lang), ""]]
    targets: list[list[str]] = []
    for row in report.verdicts:
        rows.append([fmt.kpi_label(row.kpi, lang), fmt.value(row.kpi, row.baseline, lang),
                     fmt.value(row.kpi, row.current, lang), fmt.change(row.relative, lang),
                     fmt.direction_word(row.direction, lang)])
        targets.append([f"{fmt.target_group(v.target.group, lang)}: "
                        f"{fmt.requirement(v.target, lang)} -> {fmt.verdict_text(v, lang)}"
                        for v in row.verdicts])
    lines = list(_table(rows))
    yield lines[0]
    for line, extra in zip(lines[1:], targets, strict=True):
        yield line
        for text in extra:
            yield f"      {text}"
    yield "  " + tr("note.cycle", lang)
    measured = report.operating_cost["current"] is not None
    yield "  " + tr("note.cost.measured" if measured else "note.cost", lang)
    if report.scope.kind == "site":
        yield "  " + tr("note.site_rates", lang)


def _energy(report: DemonstrationReport, lang: Lang) -> Iterator[str]:
    yield tr("section.energy", lang)
    energy = report.energy
    rows = [[tr("col.driver", lang), tr("col.slope", lang), tr("col.intercept", lang),
             tr("col.r2", lang), tr("col.points", lang), tr("col.used", lang)]]
    for driver, model in energy.fits.items():
        name = tr(f"energy.driver.{driver}", lang)
        if model is None:
            rows.append([name, "–", "–", "–", str(len(energy.baseline_points)), ""])
            continue
        r2 = "–" if model.r2 is None else f"{model.r2:.3f}"
        used = tr("yes", lang) if model is energy.chosen else ""
        rows.append([name, f"{model.slope:.4f}", f"{model.intercept:.3f} kWh", r2,
                     str(model.n), used])
    if energy.chosen is None:
        yield "  " + tr("energy.none", lang, min_fit=MIN_FIT_POINTS)
        return
    yield from _table(rows)
    saving = energy.saving
    if saving is None:
        yield "  " + tr("energy.no_current", lang)
        return
    ratio = "–" if saving.saving_ratio is None else f"{saving.saving_ratio * 100:.1f} %"
    yield from _table([
        [tr("energy.expected", lang), f"{saving.expected_kwh:,.2f} kWh"],
        [tr("energy.actual", lang), f"{saving.actual_kwh:,.2f} kWh"],
        [tr("energy.saving", lang), f"{saving.saving_kwh:,.2f} kWh"],
        [tr("energy.saving_ratio", lang), ratio],
    ])
    yield "  " + claim_text(report, lang)
    if saving.outside_range:
        yield "  " + tr("energy.outside", lang, count=saving.outside_range)


def claim_text(report: DemonstrationReport, lang: Lang) -> str:
    """Whether the normalized saving may be claimed, and if not why, in words."""
    saving = report.energy.saving
    assert saving is not None
    model = saving.model
    if saving.reason == "too_few_points":
        return tr("energy.too_few_points", lang, n=model.n, min_n=MIN_POINTS)
    if saving.reason == "weak_fit":
        r2 = "–" if model.r2 is None else f"{model.r2:.3f}"
        return tr("energy.weak_fit", lang, r2=r2, min_r2=MIN_R2)
    return tr("energy.claim", lang, min_r2=MIN_R2, min_n=MIN_POINTS)


def _figures(report: DemonstrationReport, lang: Lang) -> Iterator[str]:
    yield tr("section.figures", lang)
    base, cur = report.comparison.baseline.values, report.comparison.current.values
    rows = [[tr("col.figure", lang), tr("col.unit", lang), tr("col.baseline", lang),
             tr("col.current", lang), tr("col.change", lang), ""]]
    for name in PERIOD_FIELDS:
        rel = relative_difference(base.get(name), cur.get(name))
        rows.append([f"{kpi_name(name, lang)} ({name})", kpi_unit(name, lang),
                     fmt.value(name, base.get(name), lang), fmt.value(name, cur.get(name), lang),
                     fmt.change(rel, lang),
                     fmt.direction_word(direction(name, base.get(name), cur.get(name)), lang)])
    lines = list(_table(rows, right_from=2))
    yield from lines
    yield "  " + tr("text.change_note", lang)


def render_text(report: DemonstrationReport) -> str:
    """The whole report as aligned text in the report's language."""
    lang = report.lang
    parts = [list(_header(report, lang)), list(_verdicts(report, lang)),
             list(_energy(report, lang)), list(_figures(report, lang))]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"
