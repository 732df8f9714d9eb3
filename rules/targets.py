"""Targets a plant must demonstrate against its baseline, and each KPI's verdict.

The provincial plan for intelligent-manufacturing demonstration projects states its
targets as reductions against the baseline: operating cost, production cycle and defect
rate down 30 % by 2020 and 50 % by 2025. The green-factory evaluation (GB/T 36132) asks
for energy and CO2 per unit of output to go down. Those are :data:`DEFAULT_TARGETS`; a
site adds its own (a plant's kgce-per-unit ceiling, an OEE floor) or replaces a default
with the same KPI and group, from a targets file (:func:`parse_targets`).

How each KPI is measured:

- production cycle: the mean actual cycle time (``cycle_time_mean_s``, producing time /
  parts produced), the one cycle figure the records carry;
- operating cost: energy cost per good unit (``energy_cost_per_good_unit``), when the
  records carry it (tariffs configured); otherwise it is "not measured", never guessed.

A change is stated with its direction in words, never as a bare sign: a rate whose lower
value is better (defect rate, cycle time, per-unit energy, coal, CO2, cost) "improved"
when it went down; OEE and its factors "improved" when they went up; sums (parts, hours,
kWh) have no better direction and went "up" or "down". A change smaller than half a
tenth of a percent (what prints as 0.0 %) is "unchanged".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rules.errors import ConfigError
from rules.report import RATE_FIELDS
from rules.types import KpiRecord

__all__ = [
    "DEFAULT_TARGETS",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "OPERATING_COST",
    "TARGETABLE",
    "TARGET_KINDS",
    "VERDICT_KPIS",
    "KpiVerdicts",
    "Target",
    "Verdict",
    "assess",
    "direction",
    "energy_cost_per_good_unit",
    "judge",
    "parse_targets",
    "relative_difference",
    "targets_for",
]

OPERATING_COST = "energy_cost_per_good_unit"
"""The record field that measures operating cost (energy cost per good unit)."""

LOWER_IS_BETTER: frozenset[str] = frozenset({
    "defect_rate", "cycle_time_mean_s", "energy_per_unit_kwh", "energy_per_good_unit_kwh",
    "kgce_per_good_unit", "co2_per_good_unit_kg", OPERATING_COST,
})
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    {"availability", "performance", "quality_ratio", "oee"})

TARGETABLE: tuple[str, ...] = (*RATE_FIELDS, OPERATING_COST)
"""The figures a target may name: the period rates and the operating cost."""

VERDICT_KPIS: tuple[str, ...] = (
    OPERATING_COST, "cycle_time_mean_s", "defect_rate", "oee", "availability",
    "performance", "quality_ratio", "energy_per_good_unit_kwh", "kgce_per_good_unit",
    "co2_per_good_unit_kg",
)
"""The rows of the verdict table, in the plan's order: its three targets first."""

TargetKind = Literal["reduce_by", "increase_by", "at_most", "at_least"]
TARGET_KINDS: tuple[TargetKind, ...] = ("reduce_by", "increase_by", "at_most", "at_least")

Direction = Literal["improved", "worse", "unchanged", "up", "down"]
Status = Literal["met", "not_met", "not_measured"]

UNCHANGED_BELOW = 0.0005
"""|relative change| below this (it prints as 0.0 %) is "unchanged"."""

_SLACK = 1e-9  # a reduction computed as 0.29999999999 meets a 30 % target


@dataclass(frozen=True, slots=True)
class Target:
    """One requirement on one KPI of the reported period.

    ``reduce_by`` / ``increase_by`` are fractions of the baseline value (0.3 = 30 %;
    ``reduce_by`` 0 means "lower than the baseline"); ``at_most`` / ``at_least`` are
    values in the KPI's own unit. ``group`` names the set the target belongs to (the
    column it appears in): ``plan-2020``, ``plan-2025``, ``green-factory`` for the
    defaults, the file's own names otherwise. ``site`` limits it to one site's reports.
    """

    kpi: str
    kind: TargetKind
    value: float
    group: str
    site: str | None = None


def _plan(group: str, reduction: float) -> tuple[Target, ...]:
    return tuple(Target(kpi, "reduce_by", reduction, group)
                 for kpi in (OPERATING_COST, "cycle_time_mean_s", "defect_rate"))


DEFAULT_TARGETS: tuple[Target, ...] = (
    *_plan("plan-2020", 0.30),
    *_plan("plan-2025", 0.50),
    Target("kgce_per_good_unit", "reduce_by", 0.0, "green-factory"),
    Target("co2_per_good_unit_kg", "reduce_by", 0.0, "green-factory"),
)
"""The provincial plan's figures against the baseline (2020: -30 %, 2025: -50 % for
operating cost, production cycle and defect rate) and the green-factory requirement
(energy, as standard coal, and CO2 per good unit lower than the baseline)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target applied to one period: ``required`` is the value the KPI had to reach
    (None when the baseline it derives from is unknown), ``status`` whether it did."""

    target: Target
    status: Status
    required: float | None


@dataclass(frozen=True, slots=True)
class KpiVerdicts:
    """One KPI's row: both values, the change in words and every target's verdict.

    ``relative`` is (current - baseline) / baseline, the figure's own change; its sign
    follows the figure (OEE from 0.705 to 0.889 is +26.1 %), ``direction`` says whether
    that is good.
    """

    kpi: str
    baseline: float | None
    current: float | None
    relative: float | None
    direction: Direction | None
    verdicts: tuple[Verdict, ...]


def relative_difference(baseline: float | int | None,
                        current: float | int | None) -> float | None:
    """(current - baseline) / baseline; None when either is undefined or baseline is 0."""
    if baseline is None or current is None or baseline == 0:
        return None
    return (current - baseline) / baseline


def direction(kpi: str, baseline: float | int | None,
              current: float | int | None) -> Direction | None:
    """The change from ``baseline`` to ``current`` in words (see the module doc)."""
    if baseline is None or current is None:
        return None
    rel = relative_difference(baseline, current)
    if current == baseline or (rel is not None and abs(rel) < UNCHANGED_BELOW):
        return "unchanged"
    went_up = current > baseline
    if kpi in LOWER_IS_BETTER:
        return "worse" if went_up else "improved"
    if kpi in HIGHER_IS_BETTER:
        return "improved" if went_up else "worse"
    return "up" if went_up else "down"


def judge(target: Target, baseline: float | int | None,
          current: float | int | None) -> Verdict:
    """Whether ``current`` meets ``target``; not measured when a value it needs is None."""
    kind, value = target.kind, target.value
    required: float | None
    if kind in ("at_most", "at_least"):
        required = value
    elif baseline is None:
        required = None
    elif kind == "reduce_by":
        required = baseline * (1 - value)
    else:
        required = baseline * (1 + value)
    if current is None or required is None:
        return Verdict(target, "not_measured", required)
    if kind == "at_most":
        met = current <= value
    elif kind == "at_least":
        met = current >= value
    else:
        rel = relative_difference(baseline, current)
        if rel is None:  # a zero baseline: no relative change can be stated
            return Verdict(target, "not_measured", required)
        if kind == "reduce_by":
            met = -rel >= value - _SLACK and current < (baseline or 0)
        else:
            met = rel >= value - _SLACK and current > (baseline or 0)
    return Verdict(target, "met" if met else "not_met", required)


def targets_for(site: str, targets: Iterable[Target]) -> tuple[Target, ...]:
    """The targets that apply to ``site``'s reports: of those with the same KPI and group,
    the most specific one (this site's own, then the file's, then the default)."""
    def rank(target: Target) -> int:
        return 2 if target.site is not None else 0 if target in DEFAULT_TARGETS else 1

    best: dict[tuple[str, str], Target] = {}
    for target in targets:
        if target.site not in (None, site):
            continue
        key = (target.kpi, target.group)
        if key not in best or rank(target) >= rank(best[key]):
            best[key] = target
    return tuple(best.values())


def assess(baseline: Mapping[str, float | int | None], current: Mapping[str, float | int | None],
           targets: Sequence[Target], kpis: Sequence[str] = VERDICT_KPIS) -> list[KpiVerdicts]:
    """One row per KPI of ``kpis`` (and of every other KPI a target names), each target of
    that KPI judged; a KPI missing from the values is "not measured"."""
    names = list(kpis) + [t.kpi for t in targets if t.kpi not in kpis]
    rows: list[KpiVerdicts] = []
    for kpi in dict.fromkeys(names):
        base, cur = baseline.get(kpi), current.get(kpi)
        rows.append(KpiVerdicts(
            kpi, base, cur, relative_difference(base, cur), direction(kpi, base, cur),
            tuple(judge(t, base, cur) for t in targets if t.kpi == kpi)))
    return rows


def energy_cost_per_good_unit(records: Iterable[KpiRecord]) -> float | None:
    """A period's energy cost per good unit, from its window records: the summed cost of
    the windows that state one over the good parts of those same windows.

    Records carry it once tariffs are configured: a window's ``energy_cost`` when the
    record has that sum, else its ``energy_cost_per_good_unit`` times its good parts.
    None when no window states a cost (the KPI is then not measured).
    """
    cost = 0.0
    good = 0
    seen = False
    for record in records:
        total = getattr(record, "energy_cost", None)
        per_good = getattr(record, OPERATING_COST, None)
        if total is None and per_good is not None:
            total = per_good * record.parts_good
        if total is None:
            continue
        seen = True
        cost += float(total)
        good += record.parts_good
    return cost / good if seen and good > 0 else None


# ---------------------------------------------------------------- the targets file

_TOP_KEYS = frozenset({"defaults", "target"})
_ITEM_KEYS = frozenset({"kpi", "group", "site", *TARGET_KINDS})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _item(raw: Any, place: str, errors: list[tuple[str, str]]) -> Target | None:
    if not isinstance(raw, Mapping):
        errors.append((place, "must be a table ([[target]])"))
        return None
    kpi = raw.get("kpi")
    if isinstance(kpi, str):
        place = f'{place} "{kpi}"'
    before = len(errors)
    for key in sorted(set(raw) - _ITEM_KEYS):
        errors.append((f"{place}: {key}", "unknown key (allowed: "
                       + ", ".join(sorted(_ITEM_KEYS)) + ")"))
    if kpi is None:
        errors.append((f"{place}: kpi", "missing (one of: " + ", ".join(TARGETABLE) + ")"))
    elif not isinstance(kpi, str) or kpi not in TARGETABLE:
        errors.append((f"{place}: kpi", f"{kpi!r} is not a KPI a target can name (one of: "
                       + ", ".join(TARGETABLE) + ")"))
    kinds = [k for k in TARGET_KINDS if k in raw]
    value: float | None = None
    if len(kinds) != 1:
        errors.append((place, "give exactly one of " + ", ".join(TARGET_KINDS)
                       + (f" (found {', '.join(kinds)})" if kinds else "")))
    else:
        value = _number(raw[kinds[0]])
        where = f"{place}: {kinds[0]}"
        if value is None:
            errors.append((where, f"must be a number, not {raw[kinds[0]]!r}"))
        elif value < 0:
            errors.append((where, f"must not be negative (got {value:g})"))
        elif kinds[0] == "reduce_by" and value >= 1:
            errors.append((where, f"is a fraction of the baseline (0.3 = 30 %), below 1; "
                           f"got {value:g}"))
    group = raw.get("group", "site")
    if not isinstance(group, str) or not group.strip():
        errors.append((f"{place}: group", "must be a non-empty string"))
    site = raw.get("site")
    if site is not None and (not isinstance(site, str) or not site):
        errors.append((f"{place}: site", "must be a site id (a non-empty string)"))
    if len(errors) > before or value is None:
        return None
    return Target(str(kpi), kinds[0], value, str(group).strip(), site)


def parse_targets(data: Mapping[str, Any], source: str = "") -> tuple[Target, ...]:
    """The targets of a parsed targets file: the defaults (unless ``defaults = false``)
    and each ``[[target]]``; one with the KPI and group of a default replaces it (see
    :func:`targets_for`).

    Every problem is collected into one :class:`ConfigError` naming its place, e.g.
    ``target[1] "kgce_per_good_unit": at_most: must be a number, not 'low'``.
    """
    errors: list[tuple[str, str]] = []
    for key in sorted(set(data) - _TOP_KEYS):
        errors.append((key, "unknown key (allowed: defaults, [[target]])"))
    defaults = data.get("defaults", True)
    if not isinstance(defaults, bool):
        errors.append(("defaults", f"must be true or false, not {defaults!r}"))
    items = data.get("target", [])
    if not isinstance(items, list):
        errors.append(("target", "must be an array of tables ([[target]])"))
        items = []
    own = [_item(raw, f"target[{i}]", errors) for i, raw in enumerate(items)]
    seen: dict[tuple[str, str, str | None], int] = {}
    for i, target in enumerate(own):
        if target is None:
            continue
        ident = (target.kpi, target.group, target.site)
        if ident in seen:
            errors.append((f'target[{i}] "{target.kpi}"',
                           f"repeats target[{seen[ident]}] (same kpi, group and site)"))
        seen.setdefault(ident, i)
    if errors:
        raise ConfigError(errors, source)
    return (*(DEFAULT_TARGETS if defaults else ()), *(t for t in own if t is not None))
