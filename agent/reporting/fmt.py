"""How figures, changes, verdicts and coverage read, in either language.

Times are shown in hours, ratios in percent, counts with thousands separators, per-unit
figures with enough decimals to see a change of a tenth of a percent. Every format
(text, HTML, workbook headings) takes its words from here and :mod:`agent.reporting.i18n`.
"""

from __future__ import annotations

from agent.reporting.i18n import Lang, kpi_name, kpi_unit, tr
from rules.report import PeriodTotals, Scope
from rules.targets import Target, Verdict

__all__ = [
    "PERCENT_FIELDS",
    "change",
    "coverage",
    "direction_word",
    "flags",
    "hours",
    "kpi_label",
    "notes",
    "period_label",
    "required_text",
    "requirement",
    "scope_label",
    "status_word",
    "target_group",
    "value",
    "verdict_text",
]

PERCENT_FIELDS: frozenset[str] = frozenset(
    {"availability", "performance", "quality_ratio", "oee", "defect_rate",
     "rolled_throughput_yield"})
_COUNT_FIELDS = frozenset({"parts_produced", "parts_good", "parts_scrap",
                           "scrap_all_machines"})
_DECIMALS: dict[str, int] = {
    "cycle_time_mean_s": 2, "energy_kwh": 2, "co2_kg": 2, "energy_per_unit_kwh": 4,
    "energy_per_good_unit_kwh": 4, "kgce_per_good_unit": 5, "co2_per_good_unit_kg": 4,
    "energy_cost_per_good_unit": 4, "kgce": 2, "energy_cost": 2,
}


def value(field: str, number: float | int | None, lang: Lang, *, unit: bool = False) -> str:
    """``number`` of KPI ``field`` as the report shows it (``–`` when undefined)."""
    if number is None:
        return tr("dash", lang)
    if field in _COUNT_FIELDS:
        text = f"{int(number):,}"
    elif field.endswith("_time_s"):
        text = f"{number / 3600:,.2f}"
    elif field in PERCENT_FIELDS:
        text = f"{number * 100:.2f} %"
    else:
        text = f"{number:,.{_DECIMALS.get(field, 4)}f}"
    if unit and field not in PERCENT_FIELDS:
        text += f" {kpi_unit(field, lang)}"
    return text


def hours(seconds: float | None, lang: Lang) -> str:
    """A duration in hours (minutes or seconds when shorter than an hour)."""
    if seconds is None:
        return tr("dash", lang)
    if seconds == 0 or seconds >= 3600:
        return tr("hours", lang, value=f"{seconds / 3600:,.2f}")
    if seconds >= 60:
        return tr("minutes", lang, value=f"{seconds / 60:.1f}")
    return tr("seconds", lang, value=f"{seconds:.1f}")


def change(relative: float | None, lang: Lang) -> str:
    """A relative change with its sign, e.g. ``+26.1 %``."""
    if relative is None:
        return tr("dash", lang)
    return "0.0 %" if round(relative * 100, 1) == 0 else f"{relative * 100:+.1f} %"


def direction_word(direction: str | None, lang: Lang) -> str:
    """improved / worse / unchanged / up / down."""
    return "" if direction is None else tr(f"dir.{direction}", lang)


def status_word(status: str, lang: Lang) -> str:
    """met / not met / not measured."""
    return tr(f"status.{status}", lang)


def target_group(group: str, lang: Lang) -> str:
    """The heading of a target set: the defaults' translated names, a file's own as given."""
    known = ("plan-2020", "plan-2025", "green-factory", "site")
    return tr(f"group.{group}", lang) if group in known else group


def requirement(target: Target, lang: Lang) -> str:
    """What the target asks, e.g. ``down 30 % vs baseline`` or ``at most 0.01200 kgce``."""
    if target.kind in ("reduce_by", "increase_by"):
        if target.value == 0:
            return tr(f"kind.{target.kind}.zero", lang)
        return tr(f"kind.{target.kind}", lang, value=f"{target.value * 100:g} %")
    return tr(f"kind.{target.kind}", lang, value=value(target.kpi, target.value, lang,
                                                       unit=True))


def required_text(verdict: Verdict, lang: Lang) -> str:
    """The value the KPI had to reach, e.g. ``≤ 1.40 %`` ("" when unknown)."""
    if verdict.required is None:
        return ""
    kind = verdict.target.kind
    sign = "≥" if kind in ("increase_by", "at_least") else "≤"
    if kind in ("reduce_by", "increase_by") and verdict.target.value == 0:
        sign = "<" if kind == "reduce_by" else ">"
    return f"{sign} {value(verdict.target.kpi, verdict.required, lang)}"


def verdict_text(verdict: Verdict, lang: Lang) -> str:
    """``met (≤ 1.40 %)``-style: the status and the value that had to be reached."""
    word = status_word(verdict.status, lang)
    required = required_text(verdict, lang)
    return f"{word} ({required})" if required else word


def kpi_label(field: str, lang: Lang) -> str:
    """The KPI's standard name with its unit, e.g. ``单位产品综合能耗 (kgce/件)``."""
    unit = kpi_unit(field, lang)
    if not unit:
        return kpi_name(field, lang)
    name = kpi_name(field, lang)
    return f"{name}（{unit}）" if lang == "zh" else f"{name} ({unit})"


def scope_label(scope: Scope, lang: Lang, *, with_site: bool = True) -> str:
    """``site hb-sjz-01`` / ``line line-a of site hb-sjz-01`` / ``产线 line-a`` ..."""
    text = tr(f"scope.{scope.kind}", lang, id=scope.id if scope.id is not None else scope.site)
    if scope.kind == "site" or not with_site:
        return text
    return tr("scope.of_site", lang, scope=text, site=scope.site)


def period_label(name: str, lang: Lang, short: bool = False) -> str:
    """Reported period / baseline period (or their short forms)."""
    return tr(f"period.{name}{'.short' if short else ''}", lang)


def coverage(totals: PeriodTotals, lang: Lang) -> str:
    """Windows found of expected, those without energy data, observed time of expected."""
    if totals.windows_expected is None:
        parts = [tr("cov.windows.shift", lang, found=totals.windows)]
    else:
        parts = [tr("cov.windows", lang, found=totals.windows,
                    expected=totals.windows_expected)]
    if totals.energy_windows != totals.windows:
        parts.append(tr("cov.no_energy", lang, count=totals.windows - totals.energy_windows))
    observed = hours(totals.observed_s, lang)
    if totals.expected_s is None:
        parts.append(tr("cov.observed.shift", lang, observed=observed))
    else:
        parts.append(tr("cov.observed", lang, observed=observed,
                        expected=hours(totals.expected_s, lang)))
    return tr("sep", lang).join(parts)


def flags(totals: PeriodTotals) -> str:
    """The period's flags with their counts, e.g. ``meter_reset x1, incomplete x3``."""
    return ", ".join(f"{k} x{v}" for k, v in sorted(totals.flags.items()))


def notes(totals: PeriodTotals, name: str, lang: Lang) -> list[str]:
    """What a reader must know about a period's coverage before trusting its sums."""
    label = period_label(name, lang, short=True)
    out: list[str] = []
    expected = totals.windows_expected
    if expected is not None and totals.windows < expected:
        out.append(tr("note.missing", lang, period=label, count=expected - totals.windows))
    if totals.partial_windows:
        out.append(tr("note.partial", lang, period=label, count=totals.partial_windows))
    if totals.energy_windows < totals.windows:
        out.append(tr("note.energy", lang, period=label, energy=totals.energy_windows,
                      windows=totals.windows))
    return out
