"""The report as one self-contained HTML file: inline CSS and SVG, nothing fetched.

It is what a plant submits (or prints: the print style lays it out on A4, one section
per page, and :mod:`agent.reporting.pdf` prints it to PDF). Every chart is followed by,
or points to, the data it is drawn from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from agent import __version__
from agent.reporting import fmt, svg
from agent.reporting.i18n import Lang, kpi_name, kpi_unit, tr
from agent.reporting.model import PERIODS, Bucket, DemonstrationReport
from agent.reporting.text import claim_text
from rules.baseline_model import MIN_FIT_POINTS
from rules.report import PERIOD_FIELDS, PeriodTotals
from rules.spec import CALENDAR_WINDOWS, window_length_ms
from rules.targets import DEFAULT_TARGETS, direction, relative_difference

__all__ = ["render_html"]

_CSS = """
@page { size: A4; margin: 14mm 12mm 14mm 12mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
  "Microsoft YaHei", "PingFang SC", "Helvetica Neue", Arial, sans-serif; color: #1c2630;
  font-size: 10pt; line-height: 1.45; margin: 0 auto; padding: 16px; max-width: 200mm;
  background: #fff; }
h1 { font-size: 17pt; margin: 0 0 2px; }
h2 { font-size: 13pt; margin: 0 0 8px; padding-bottom: 3px; border-bottom: 2px solid #1f5fa8; }
h3 { font-size: 10.5pt; margin: 12px 0 4px; }
p { margin: 4px 0; }
.sub { color: #5b6875; margin-bottom: 10px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 8.6pt; }
th, td { padding: 3px 5px; border-bottom: 1px solid #dde2e7; text-align: right;
  vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
th:first-child, td:first-child, td.l, th.l { text-align: left; }
td { white-space: nowrap; }
td:first-child, table.verdicts td:nth-child(n+5), table.meta td, p { white-space: normal; }
table.meta td, table.meta th { text-align: left; }
table.dense { font-size: 7.6pt; }
table.dense td, table.dense th { padding: 2px 3px; }
table.dense td { white-space: nowrap; }
.met { color: #17703a; font-weight: 600; }
.not_met { color: #b3261e; font-weight: 600; }
.not_measured { color: #5b6875; font-style: italic; }
.improved { color: #17703a; }
.worse { color: #b3261e; }
.note { color: #3d4853; font-size: 8.8pt; }
.warn { color: #8a4b00; font-weight: 600; }
.ok { color: #17703a; font-weight: 600; }
figure { margin: 8px 0 12px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-size: 8.6pt; color: #5b6875; }
svg.chart { display: block; height: auto; }
section { margin-top: 22px; }
section + section { break-before: page; page-break-before: always; }
.nw { white-space: nowrap; }
.field { color: #5b6875; font-family: monospace; font-size: 8pt; }
@media print { body { padding: 0; max-width: none; } section { margin-top: 0; } }
"""


def _e(text: object) -> str:
    return escape(str(text))


def _table(head: Sequence[str] | None,
           rows: Iterator[Sequence[str]] | Sequence[Sequence[str]], cls: str = "") -> str:
    """A table whose cells are already HTML (``head`` None: no heading row)."""
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out += ["<thead><tr>", *(f'<th scope="col">{h}</th>' for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _local(ms: int, tz: ZoneInfo, pattern: str) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime(pattern)


def _dir(direction_: str | None, lang: Lang) -> str:
    if direction_ is None:
        return ""
    return f'<span class="{direction_}">{_e(fmt.direction_word(direction_, lang))}</span>'


def _header(report: DemonstrationReport, lang: Lang) -> str:
    scope = fmt.scope_label(report.scope, lang)
    rows = []
    for name in PERIODS:
        totals = report.totals(name)
        rows.append([_e(fmt.period_label(name, lang)), _e(report.period(name).text),
                     _e(fmt.coverage(totals, lang))])
    rows.append([_e(tr("window", lang)), _e(tr("window.value", lang,
                                               window=report.request.window)), ""])
    rows.append([_e(tr("timezone", lang)), _e(report.timezone), ""])
    rows.append([_e(tr("generated", lang)), _e(report.generated),
                 _e(tr("generator", lang, version=__version__))])
    return (f"<h1>{_e(tr('title', lang))}</h1>"
            f'<p class="sub">{_e(tr("subtitle", lang, scope=scope))}</p>'
            + _table(None, rows, "meta"))


def _verdicts(report: DemonstrationReport, lang: Lang) -> str:
    groups = list(dict.fromkeys(t.group for t in report.targets))
    head = [_e(tr("col.kpi", lang)), _e(tr("col.baseline", lang)),
            _e(tr("col.current", lang)), _e(tr("col.change", lang)),
            *(_e(fmt.target_group(g, lang)) for g in groups)]
    rows = []
    for row in report.verdicts:
        cells = [f"{_e(fmt.kpi_label(row.kpi, lang))}",
                 _e(fmt.value(row.kpi, row.baseline, lang)),
                 _e(fmt.value(row.kpi, row.current, lang)),
                 f'<span class="nw">{_e(fmt.change(row.relative, lang))}</span> '
                 f"{_dir(row.direction, lang)}"]
        for group in groups:
            found = [v for v in row.verdicts if v.target.group == group]
            if not found:
                cells.append("")
                continue
            v = found[0]
            cells.append(f'<span class="{v.status}">{_e(fmt.status_word(v.status, lang))}'
                         f'</span><br><span class="note">{_e(fmt.requirement(v.target, lang))}'
                         + ("" if v.required is None else
                            f"<br>{_e(fmt.required_text(v, lang))}")
                         + "</span>")
        rows.append(cells)
    notes = [tr("note.change", lang), tr("note.cycle", lang),
             tr("note.cost.measured" if report.operating_cost["current"] is not None
                else "note.cost", lang)]
    if report.scope.kind == "site":
        notes.append(tr("note.site_rates", lang))
    for name in PERIODS:
        notes += [tr("note.prefix", lang) + n for n in fmt.notes(report.totals(name), name, lang)]
    return (f"<h2>{_e(tr('section.verdicts', lang))}</h2>" + _table(head, rows, "verdicts")
            + "".join(f'<p class="note">{_e(n)}</p>' for n in notes))


def _number(v: float) -> str:
    return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def _energy(report: DemonstrationReport, lang: Lang) -> str:
    energy = report.energy
    out = [f"<h2>{_e(tr('section.energy', lang))}</h2>", f"<p>{_e(tr('energy.intro', lang))}</p>"]
    rows = []
    for fitted, model in energy.fits.items():
        name = _e(tr(f"energy.driver.{fitted}", lang))
        if model is None:
            rows.append([name, "–", "–", "–", str(len(energy.baseline_points)), ""])
            continue
        used = _e(tr("yes", lang)) if model is energy.chosen else ""
        rows.append([name, f"{model.slope:.4f}", f"{model.intercept:.3f} kWh",
                     "–" if model.r2 is None else f"{model.r2:.3f}", str(model.n), used])
    out.append(_table([_e(tr(k, lang)) for k in ("col.driver", "col.slope", "col.intercept",
                                                  "col.r2", "col.points", "col.used")], rows))
    chosen = energy.chosen
    if chosen is None:
        out.append(f'<p class="warn">{_e(tr("energy.none", lang, min_fit=MIN_FIT_POINTS))}</p>')
    else:
        driver_text = tr(f"energy.driver.{chosen.driver}", lang)
        out.append("<p>" + _e(tr("energy.model", lang, intercept=f"{chosen.intercept:.3f}",
                                 slope=f"{chosen.slope:.4f}", driver=driver_text,
                                 r2="–" if chosen.r2 is None else f"{chosen.r2:.3f}",
                                 n=chosen.n)) + "</p>")
        saving = energy.saving
        if saving is None:
            out.append(f'<p class="warn">{_e(tr("energy.no_current", lang))}</p>')
        else:
            ratio = ("–" if saving.saving_ratio is None
                     else f"{saving.saving_ratio * 100:.1f} %")
            out.append(_table(None, [
                [_e(tr("energy.expected", lang)), f"{saving.expected_kwh:,.2f} kWh"],
                [_e(tr("energy.actual", lang)), f"{saving.actual_kwh:,.2f} kWh"],
                [_e(tr("energy.saving", lang)), f"<b>{saving.saving_kwh:,.2f} kWh</b>"],
                [_e(tr("energy.saving_ratio", lang)), f"<b>{ratio}</b>"]], "meta"))
            cls = "ok" if saving.claimable else "warn"
            out.append(f'<p class="{cls}">{_e(claim_text(report, lang))}</p>')
            if saving.outside_range:
                outside = tr("energy.outside", lang, count=saving.outside_range)
                out.append(f'<p class="note">{_e(outside)}</p>')
    driver_name = chosen.driver if chosen is not None else "parts_produced"
    base = [(p.driver(driver_name), p.energy_kwh) for p in energy.baseline_points]
    cur = [(p.driver(driver_name), p.energy_kwh) for p in energy.current_points]
    label = tr(f"energy.driver.{driver_name}", lang)
    title = tr("chart.scatter", lang, driver=label)
    out.append("<figure>" + svg.scatter_chart(
        chart_id="scatter", title=title,
        desc=tr("chart.scatter.desc", lang, driver=label, base=len(base), cur=len(cur)),
        baseline=base, current=cur,
        fit=None if chosen is None else (chosen.slope, chosen.intercept, chosen.x_min,
                                         chosen.x_max),
        x_label=label, y_label=f"{kpi_name('energy_kwh', lang)} (kWh)",
        names=(fmt.period_label("baseline", lang, short=True),
               fmt.period_label("current", lang, short=True), tr("chart.fit", lang)),
        no_data=tr("chart.no_data", lang), x_fmt=_number, y_fmt=_number)
        + f"<figcaption>{_e(tr('scatter.data', lang))} "
          f"{_e(tr('energy.ratio_note', lang))}</figcaption></figure>")
    return "".join(out)


def _bucket_label(report: DemonstrationReport, bucket: Bucket, tz: ZoneInfo) -> str:
    if report.bucket == "day":
        return _local(bucket.start_ms, tz, "%m-%d")
    if report.bucket == "hour":
        return _local(bucket.start_ms, tz, "%m-%d %H:00")
    window = report.request.window
    short = window not in ("shift", *CALENDAR_WINDOWS) and window_length_ms(window) < 60_000
    return _local(bucket.start_ms, tz, "%H:%M:%S" if short else "%m-%d %H:%M")


def _pct(v: float) -> str:
    return f"{v * 100:.0f} %"


def _trends(report: DemonstrationReport, lang: Lang) -> str:
    tz = ZoneInfo(report.timezone)
    buckets = report.buckets
    labels = [_bucket_label(report, b, tz) for b in buckets]
    base_idx = [i for i, b in enumerate(buckets) if b.period == "baseline"]
    shaded = (base_idx[0], base_idx[-1]) if base_idx else None
    gap = base_idx[-1] if base_idx and len(base_idx) < len(buckets) else None

    def values(name: str) -> list[float | None]:
        return [None if b.totals.values.get(name) is None else float(b.totals.values[name] or 0)
                for b in buckets]

    def desc(title: str) -> str:
        first = labels[0] if labels else ""
        return tr("chart.desc", lang, title=title, n=len(buckets), first=first,
                  last=labels[-1] if labels else "")

    charts: list[str] = []
    palette = [("oee", svg.CURRENT_COLOR, "", "circle"),
               ("availability", "#12807a", "5 3", "square"),
               ("performance", "#c2620a", "2 2", "triangle"),
               ("quality_ratio", "#5b8a21", "8 3 2 3", "diamond")]
    title = tr("chart.oee", lang)
    charts.append(svg.line_chart(
        chart_id="trend-oee", title=title, desc=desc(title), labels=labels,
        series=[svg.Series("OEE" if n == "oee" else kpi_name(n, lang), values(n), c, d, m)
                for n, c, d, m in palette],
        y_fmt=_pct, y_label="%", shaded=shaded, shaded_label=fmt.period_label("baseline", lang),
        gap_after=gap, no_data=tr("chart.no_data", lang)))
    singles: list[tuple[str, Callable[[float], str], tuple[float, str, Callable[[float], str]]
                        | None]] = [
        ("defect_rate", lambda v: f"{v * 100:.2g} %", None),
        ("cycle_time_mean_s", _number, None),
        ("energy_per_good_unit_kwh", _number, None),
        ("kgce_per_good_unit", _number, None),
        ("co2_per_good_unit_kg", _number, None),
    ]
    for name, y_fmt, right in singles:
        title = kpi_name(name, lang)
        charts.append(svg.line_chart(
            chart_id=f"trend-{name}", title=title, desc=desc(title), labels=labels,
            series=[svg.Series(kpi_name(name, lang), values(name))], y_fmt=y_fmt,
            y_label=kpi_unit(name, lang), shaded=shaded,
            shaded_label=fmt.period_label("baseline", lang),
            gap_after=gap, no_data=tr("chart.no_data", lang), right_axis=right))
    bucket_note = tr(f"trend.bucket.{report.bucket}", lang, window=report.request.window)
    return (f"<h2>{_e(tr('section.trends', lang))}</h2><p class=\"note\">{_e(bucket_note)} "
            f"{_e(tr('chart.shaded', lang))}.</p>"
            + "".join(f"<figure>{c}</figure>" for c in charts))


_TREND_COLUMNS = ("oee", "availability", "performance", "quality_ratio", "defect_rate",
                  "cycle_time_mean_s", "energy_per_good_unit_kwh", "kgce_per_good_unit",
                  "co2_per_good_unit_kg", "parts_produced", "energy_kwh")


def _trend_data(report: DemonstrationReport, lang: Lang) -> str:
    tz = ZoneInfo(report.timezone)
    head = [_e(tr("col.period", lang)), _e(tr("col.bucket", lang)),
            _e(tr("col.windows", lang)),
            *(_e(fmt.kpi_label(n, lang)) for n in _TREND_COLUMNS)]
    rows = [[_e(fmt.period_label(b.period, lang, short=True)),
             _e(_local(b.start_ms, tz, "%m-%d %H:%M")), str(b.totals.windows),
             *(_e(fmt.value(n, b.totals.values.get(n), lang)) for n in _TREND_COLUMNS)]
            for b in report.buckets]
    return f"<h3>{_e(tr('trend.data', lang))}</h3>" + _table(head, rows, "dense")


_PART_KPIS = ("oee", "defect_rate", "kgce_per_good_unit")


def _parts(report: DemonstrationReport, lang: Lang) -> str:
    out = [f"<h2>{_e(tr('section.parts', lang))}</h2>"]
    names = [fmt.scope_label(p.scope, lang, with_site=False) for p in report.parts]
    for kpi in _PART_KPIS:
        base = [_float(p.baseline.values.get(kpi)) for p in report.parts]
        cur = [_float(p.current.values.get(kpi)) for p in report.parts]
        label = kpi_name(kpi, lang)
        value_fmt: Callable[[float], str] = (
            (lambda v: f"{v * 100:.1f} %") if kpi in fmt.PERCENT_FIELDS else _number)
        out.append("<figure>" + svg.bar_chart(
            chart_id=f"parts-{kpi}", title=tr("chart.parts", lang, kpi=fmt.kpi_label(kpi, lang)),
            desc=tr("chart.bars.desc", lang, kpi=label), categories=names, baseline=base,
            current=cur, fmt=value_fmt,
            names=(fmt.period_label("baseline", lang, short=True),
                   fmt.period_label("current", lang, short=True)),
            no_data=tr("chart.no_data", lang)) + "</figure>")
    cols = (*_PART_KPIS, "parts_produced", "energy_kwh")
    head = [_e(tr("col.scope", lang)),
            *(f"{_e(fmt.kpi_label(k, lang))}<br>{_e(fmt.period_label(p, lang, short=True))}"
              for k in cols for p in ("baseline", "current"))]
    rows = [[_e(name), *(_e(fmt.value(k, getattr(part, p).values.get(k), lang))
                         for k in cols for p in ("baseline", "current"))]
            for name, part in zip(names, report.parts, strict=True)]
    out.append(f"<h3>{_e(tr('parts.data', lang))}</h3>" + _table(head, rows, "dense"))
    return "".join(out)


def _float(v: float | int | None) -> float | None:
    return None if v is None else float(v)


def _coverage(report: DemonstrationReport, lang: Lang) -> str:
    head = [_e(tr(k, lang)) for k in ("col.period", "col.windows", "col.observed",
                                      "col.partial", "col.energy_windows", "col.complete",
                                      "col.flags")]
    rows = []
    for name in PERIODS:
        t: PeriodTotals = report.totals(name)
        found = (str(t.windows) if t.windows_expected is None
                 else f"{t.windows} / {t.windows_expected}")
        observed = fmt.hours(t.observed_s, lang) + (
            "" if t.expected_s is None else f" / {fmt.hours(t.expected_s, lang)}")
        rows.append([_e(f"{fmt.period_label(name, lang)} {report.period(name).text}"),
                     found, _e(observed), str(t.partial_windows), str(t.energy_windows),
                     _e(tr("yes" if t.complete else "no", lang)),
                     _e(fmt.flags(t) or tr("none", lang))])
    notes = [tr("note.prefix", lang) + n
             for name in PERIODS for n in fmt.notes(report.totals(name), name, lang)]
    return (f"<h2>{_e(tr('section.coverage', lang))}</h2>" + _table(head, rows)
            + "".join(f'<p class="note">{_e(n)}</p>' for n in notes))


def _targets(report: DemonstrationReport, lang: Lang) -> str:
    head = [_e(tr(k, lang)) for k in ("col.group", "col.kpi", "col.requirement")]
    head.append("")
    source = (tr("source.file", lang) + f" {report.targets_source}"
              if report.targets_source else "")
    rows = [[_e(fmt.target_group(t.group, lang)), _e(kpi_name(t.kpi, lang)),
             _e(fmt.requirement(t, lang)),
             _e(tr("source.default", lang) if t in DEFAULT_TARGETS else source)]
            for t in report.targets]
    return f"<h3>{_e(tr('section.targets', lang))}</h3>" + _table(head, rows)


def _figures(report: DemonstrationReport, lang: Lang) -> str:
    base, cur = report.comparison.baseline.values, report.comparison.current.values
    head = [_e(tr(k, lang)) for k in ("col.figure", "col.unit", "col.baseline", "col.current",
                                      "col.change")]
    rows = []
    for name in PERIOD_FIELDS:
        rel = relative_difference(base.get(name), cur.get(name))
        rows.append([f'{_e(kpi_name(name, lang))} <span class="field">{_e(name)}</span>',
                     _e(kpi_unit(name, lang)), _e(fmt.value(name, base.get(name), lang)),
                     _e(fmt.value(name, cur.get(name), lang)),
                     f"{_e(fmt.change(rel, lang))} "
                     f"{_dir(direction(name, base.get(name), cur.get(name)), lang)}"])
    return f"<h2>{_e(tr('section.figures', lang))}</h2>" + _table(head, rows)


def _method(lang: Lang) -> str:
    return (f"<h3>{_e(tr('section.method', lang))}</h3>"
            f'<p class="note">{_e(tr("method.rates", lang))}</p>'
            f'<p class="note">{_e(tr("method.records", lang))}</p>')


def render_html(report: DemonstrationReport) -> str:
    """The whole report as one HTML document in the report's language."""
    lang = report.lang
    sections = [_header(report, lang) + _verdicts(report, lang), _energy(report, lang),
                _trends(report, lang)]
    if report.parts:
        sections.append(_parts(report, lang))
    sections.append(_coverage(report, lang) + _targets(report, lang) + _method(lang))
    sections.append(_figures(report, lang) + _trend_data(report, lang))
    title = f"{tr('title', lang)} – {fmt.scope_label(report.scope, lang)}"
    body = "".join(f"<section>{s}</section>" for s in sections)
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (f'<!DOCTYPE html>\n<html lang="{html_lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="edge-agent {_e(__version__)}">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
