"""Targets and verdicts: directions in words, each kind of target, the targets file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from rules_helpers import T0, H

from rules.errors import ConfigError
from rules.targets import (
    DEFAULT_TARGETS,
    OPERATING_COST,
    Target,
    assess,
    direction,
    energy_cost_per_good_unit,
    judge,
    parse_targets,
    relative_difference,
    targets_for,
)
from rules.types import KpiRecord


@pytest.mark.parametrize(
    ("kpi", "baseline", "current", "want"),
    [
        ("oee", 0.705, 0.889, "improved"),  # the sign that used to read -26.1 %
        ("availability", 0.9, 0.8, "worse"),
        ("defect_rate", 0.02, 0.015, "improved"),
        ("defect_rate", 0.015, 0.02, "worse"),
        ("cycle_time_mean_s", 50.0, 60.0, "worse"),
        ("kgce_per_good_unit", 0.012, 0.010, "improved"),
        (OPERATING_COST, 1.2, 1.0, "improved"),
        ("parts_produced", 100, 200, "up"),  # a sum has no better direction
        ("energy_kwh", 200.0, 100.0, "down"),
        ("oee", 0.8, 0.8, "unchanged"),
        ("oee", 0.8, 0.80001, "unchanged"),  # +0.00125 %: prints as 0.0 %
        ("oee", 0.8, 0.801, "improved"),  # +0.125 %
        ("oee", None, 0.8, None),
        ("oee", 0.8, None, None),
        ("defect_rate", 0.0, 0.01, "worse"),  # no relative change, still a direction
    ],
)
def test_a_change_is_stated_in_words(kpi: str, baseline: float | None, current: float | None,
                                     want: str | None) -> None:
    assert direction(kpi, baseline, current) == want


def test_the_relative_difference_follows_the_figure() -> None:
    assert relative_difference(0.705, 0.889) == pytest.approx(0.26099, abs=1e-5)
    assert relative_difference(100, 200) == 1.0
    assert relative_difference(0, 1) is None and relative_difference(None, 1) is None


def _t(kind: str, value: float, kpi: str = "defect_rate") -> Target:
    return Target(kpi, kind, value, "g")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "baseline", "current", "status", "required"),
    [
        (_t("reduce_by", 0.3), 0.02, 0.014, "met", 0.014),  # exactly 30 %, float-safe
        (_t("reduce_by", 0.3), 0.02, 0.0141, "not_met", 0.014),
        (_t("reduce_by", 0.5), 0.02, 0.01, "met", 0.01),
        (_t("reduce_by", 0.5), 0.02, 0.025, "not_met", 0.01),
        (_t("reduce_by", 0.0), 0.02, 0.0199, "met", 0.02),  # "down"
        (_t("reduce_by", 0.0), 0.02, 0.02, "not_met", 0.02),  # unchanged is not down
        (_t("reduce_by", 0.3), None, 0.01, "not_measured", None),
        (_t("reduce_by", 0.3), 0.02, None, "not_measured", 0.014),
        (_t("reduce_by", 0.3), 0.0, 0.0, "not_measured", 0.0),  # no defects to reduce
        (_t("increase_by", 0.1, "oee"), 0.7, 0.77, "met", 0.77),
        (_t("increase_by", 0.1, "oee"), 0.7, 0.76, "not_met", 0.77),
        (_t("at_most", 0.012, "kgce_per_good_unit"), None, 0.011, "met", 0.012),
        (_t("at_most", 0.012, "kgce_per_good_unit"), 0.01, 0.013, "not_met", 0.012),
        (_t("at_least", 0.85, "oee"), 0.9, 0.85, "met", 0.85),
        (_t("at_least", 0.85, "oee"), 0.9, 0.8499, "not_met", 0.85),
        (_t("at_least", 0.85, "oee"), 0.9, None, "not_measured", 0.85),
    ],
)
def test_each_kind_of_target_is_judged(target: Target, baseline: float | None,
                                       current: float | None, status: str,
                                       required: float | None) -> None:
    verdict = judge(target, baseline, current)
    assert verdict.status == status
    if required is None:
        assert verdict.required is None
    else:
        assert verdict.required == pytest.approx(required)


def test_the_defaults_are_the_plans_figures() -> None:
    by_group: dict[str, set[tuple[str, str, float]]] = {}
    for t in DEFAULT_TARGETS:
        by_group.setdefault(t.group, set()).add((t.kpi, t.kind, t.value))
    assert by_group == {
        "plan-2020": {(OPERATING_COST, "reduce_by", 0.3), ("cycle_time_mean_s", "reduce_by", 0.3),
                      ("defect_rate", "reduce_by", 0.3)},
        "plan-2025": {(OPERATING_COST, "reduce_by", 0.5), ("cycle_time_mean_s", "reduce_by", 0.5),
                      ("defect_rate", "reduce_by", 0.5)},
        "green-factory": {("kgce_per_good_unit", "reduce_by", 0.0),
                          ("co2_per_good_unit_kg", "reduce_by", 0.0)},
    }


def test_assess_marks_what_the_records_lack_as_not_measured() -> None:
    base = {"defect_rate": 0.02, "cycle_time_mean_s": 50.0, "oee": 0.7,
            "kgce_per_good_unit": 0.012, "co2_per_good_unit_kg": 0.05}
    cur = {"defect_rate": 0.009, "cycle_time_mean_s": 40.0, "oee": 0.8,
           "kgce_per_good_unit": 0.011, "co2_per_good_unit_kg": 0.05}
    rows = {row.kpi: row for row in assess(base, cur, DEFAULT_TARGETS)}
    cost = rows[OPERATING_COST]
    assert (cost.baseline, cost.current, cost.direction) == (None, None, None)
    assert [v.status for v in cost.verdicts] == ["not_measured", "not_measured"]
    assert [(v.target.group, v.status) for v in rows["defect_rate"].verdicts] == [
        ("plan-2020", "met"), ("plan-2025", "met")]
    assert [(v.target.group, v.status) for v in rows["cycle_time_mean_s"].verdicts] == [
        ("plan-2020", "not_met"), ("plan-2025", "not_met")]  # -20 %
    assert rows["oee"].verdicts == () and rows["oee"].direction == "improved"
    assert [v.status for v in rows["co2_per_good_unit_kg"].verdicts] == ["not_met"]
    # A KPI only a target names gets its own row.
    extra = assess(base, cur, [_t("at_most", 5.0, "energy_per_unit_kwh")], kpis=("oee",))
    assert [row.kpi for row in extra] == ["oee", "energy_per_unit_kwh"]


@dataclass(frozen=True, slots=True)
class _CostRecord(KpiRecord):
    """A record as agents with tariffs send it (the fields the report looks for)."""

    energy_cost: float | None = None
    energy_cost_per_good_unit: float | None = None


def _rec(end: int, good: int, **cost: float | None) -> KpiRecord:
    return _CostRecord(site="s", line="L1", machine="m1", window="1h", window_start_ms=end - H,
                       window_end_ms=end, parts_produced=good, parts_good=good, **cost)


def test_operating_cost_comes_from_the_records_when_they_carry_it() -> None:
    plain = KpiRecord(site="s", line="L1", machine="m1", window="1h", window_start_ms=T0,
                      window_end_ms=T0 + H, parts_good=10, parts_produced=10)
    assert energy_cost_per_good_unit([plain]) is None
    # Summed cost over summed good parts, never an average of the windows' ratios.
    records = [_rec(T0 + H, 100, energy_cost=50.0), _rec(T0 + 2 * H, 300, energy_cost=30.0),
               _rec(T0 + 3 * H, 50, energy_cost_per_good_unit=0.4),
               _rec(T0 + 4 * H, 999)]  # no cost stated: neither its cost nor its parts
    assert energy_cost_per_good_unit(records) == pytest.approx((50 + 30 + 20) / 450)


def test_a_targets_file_adds_and_replaces_per_site() -> None:
    data = {"target": [
        {"kpi": "kgce_per_good_unit", "at_most": 0.012, "group": "plant 2026"},
        {"kpi": "defect_rate", "reduce_by": 0.4, "group": "plan-2020", "site": "hb-sjz-01"},
    ]}
    targets = parse_targets(data)
    assert len(targets) == len(DEFAULT_TARGETS) + 2
    mine = targets_for("hb-sjz-01", targets)
    defect_2020 = [t for t in mine if (t.kpi, t.group) == ("defect_rate", "plan-2020")]
    assert [t.value for t in defect_2020] == [0.4]
    other = targets_for("hb-ts-02", targets)
    assert [t.value for t in other if (t.kpi, t.group) == ("defect_rate", "plan-2020")] == [0.3]
    assert Target("kgce_per_good_unit", "at_most", 0.012, "plant 2026") in other
    only = parse_targets({"defaults": False, "target": [{"kpi": "oee", "at_least": 0.85}]})
    assert only == (Target("oee", "at_least", 0.85, "site"),)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"targets": []}, "targets.toml: targets: unknown key"),
        ({"defaults": "yes"}, "targets.toml: defaults: must be true or false"),
        ({"target": {"kpi": "oee"}}, "targets.toml: target: must be an array of tables"),
        ({"target": [{"at_most": 1}]}, "targets.toml: target[0]: kpi: missing"),
        ({"target": [{"kpi": "oeee", "at_least": 0.8}]},
         "targets.toml: target[0] \"oeee\": kpi: 'oeee' is not a KPI a target can name"),
        ({"target": [{"kpi": "oee"}]},
         "targets.toml: target[0] \"oee\": give exactly one of reduce_by, increase_by, at_most"),
        ({"target": [{"kpi": "oee", "at_least": 0.8, "at_most": 0.9}]},
         "(found at_most, at_least)"),
        ({"target": [{"kpi": "kgce_per_good_unit", "at_most": "low"}]},
         "target[0] \"kgce_per_good_unit\": at_most: must be a number, not 'low'"),
        ({"target": [{"kpi": "defect_rate", "reduce_by": 30}]},
         "target[0] \"defect_rate\": reduce_by: is a fraction of the baseline (0.3 = 30 %)"),
        ({"target": [{"kpi": "oee", "at_least": -1}]}, "at_least: must not be negative"),
        ({"target": [{"kpi": "oee", "at_least": True}]}, "at_least: must be a number"),
        ({"target": [{"kpi": "oee", "at_least": 0.8, "group": ""}]},
         "target[0] \"oee\": group: must be a non-empty string"),
        ({"target": [{"kpi": "oee", "at_least": 0.8, "unit": "%"}]},
         "target[0] \"oee\": unit: unknown key"),
        ({"target": [{"kpi": "oee", "at_least": 0.8}, {"kpi": "oee", "at_least": 0.9}]},
         "target[1] \"oee\": repeats target[0]"),
        ({"target": ["oee"]}, "target[0]: must be a table"),
    ],
)
def test_a_bad_targets_file_names_the_place(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_targets(data, "targets.toml")
    assert message in str(err.value)


def test_every_problem_of_a_targets_file_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_targets({"target": [{"kpi": "x", "at_most": 1}, {"kpi": "oee", "at_most": "y"}]})
    assert [place for place, _ in err.value.errors] == ['target[0] "x": kpi',
                                                        'target[1] "oee": at_most']
