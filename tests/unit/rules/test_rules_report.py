"""A period's KPIs from its window records, and the change against a baseline (KPI.md)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from rules_helpers import T0, H, M, one_machine, run, smp

from rules.report import PERIOD_FIELDS, Scope, compare, relative_change, summarize
from rules.spec import LineSpec, MachineSpec, MeterSpec
from rules.types import KpiRecord, Sample

SITE = Scope("site")
LINE = Scope("site", "line", "L1")
MACHINE = Scope("site", "machine", "m1")


def _plant_samples(seed: int, hours: int) -> list[Sample]:
    """Two machines of one line and their meters, changing state every few minutes."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for machine, meter in (("m1", "e1"), ("m2", "e2")):
        parts = bad = 0
        kwh = 1000.0
        out += [smp(T0, machine, "parts_total", 0), smp(T0, machine, "parts_bad", 0)]
        t = T0
        while t < T0 + hours * H:
            state = rng.choice(["producing", "producing", "producing", "idle", "setup",
                                "unplanned_down"])
            out.append(smp(t, machine, "state", state))
            step = rng.randint(2, 11) * M + rng.randint(0, 59_999)
            if state == "producing":
                made = step // (50 * 1000)
                parts += made
                bad += sum(rng.random() < 0.04 for _ in range(made))
            kwh += round(step / H * (30 if state == "producing" else 4), 1)
            t += step
            out += [smp(t, machine, "parts_total", parts), smp(t, machine, "parts_bad", bad),
                    smp(t, meter, "energy_kwh", round(kwh, 1))]
    return out


def _spec() -> object:
    return one_machine(
        windows=("15m", "1h"),
        lines=(LineSpec("L1", "m2"),),
        machines=(MachineSpec("m1", "L1", 45.0), MachineSpec("m2", "L1", 48.0)),
        meters=(MeterSpec("e1", "m1", None, 0.1, 100000000.0, 500.0),
                MeterSpec("e2", "m2", None, 0.1, 100000000.0, 500.0)),
    )


@pytest.mark.parametrize("scope", [MACHINE, LINE, SITE], ids=str)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_four_quarter_hours_sum_to_their_hour(scope: Scope, seed: int) -> None:
    """Summing the 15m records of an hour gives that hour's own 1h record: the period
    arithmetic is the window arithmetic (sums, then ratios), never an average."""
    records = run(_spec(), _plant_samples(seed, 3), end=T0 + 3 * H)  # type: ignore[arg-type]
    for hour in range(3):
        start, end = T0 + hour * H, T0 + (hour + 1) * H
        (own,) = [r for r in records if r.window == "1h" and scope.matches(r)
                  and r.window_start_ms == start]
        period = summarize(records, scope, "15m", start, end)
        assert (period.windows, period.windows_expected) == (4, 4)
        for name in PERIOD_FIELDS:
            want = getattr(own, name)
            got = period.values[name]
            if want is None:
                assert got is None, name
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name
        if scope != SITE:
            assert period.values["oee"] is not None


def _rec(end_ms: int, *, pq: int, sq: int, pbt: float = 3600.0, apt: float = 3000.0,
         ideal: float | None = 45.0, kwh: float | None = 10.0, machine: str | None = "m1",
         line: str | None = "L1", window: str = "1h", flags: tuple[str, ...] = ()) -> KpiRecord:
    gq = pq - sq
    return KpiRecord(
        site="site", line=line, machine=machine, window=window,
        window_start_ms=end_ms - H, window_end_ms=end_ms,
        planned_busy_time_s=pbt, producing_time_s=apt, parts_produced=pq, parts_good=gq,
        parts_scrap=sq, ideal_cycle_time_s=ideal,
        oee=None if ideal is None or pbt == 0 else ideal * gq / pbt,
        energy_kwh=kwh, co2_kg=None if kwh is None else kwh * 0.5306, flags=flags)


def test_kpi_md_defect_rate_from_2_to_1_5_percent_is_a_25_percent_reduction() -> None:
    records = [_rec(T0 + H, pq=1000, sq=20), _rec(T0 + 2 * H, pq=1000, sq=15)]
    base = summarize(records, MACHINE, "1h", T0, T0 + H)
    cur = summarize(records, MACHINE, "1h", T0 + H, T0 + 2 * H)
    report = compare(cur, base)
    assert base.values["defect_rate"] == 0.02 and cur.values["defect_rate"] == 0.015
    assert report.change["defect_rate"] == pytest.approx(0.25)
    assert report.change["parts_produced"] == 0.0
    assert report.change["energy_per_good_unit_kwh"] == pytest.approx(
        (10 / 980 - 10 / 985) / (10 / 980))


def test_relative_change_is_undefined_without_a_baseline() -> None:
    assert relative_change(None, 1.0) is None
    assert relative_change(1.0, None) is None
    assert relative_change(0, 0.5) is None
    assert relative_change(0.8, 0.6) == pytest.approx(0.25)
    assert relative_change(0.5, 0.6) == pytest.approx(-0.2)


def test_rates_come_from_sums_not_from_averaging_windows() -> None:
    # 10 % defects on 100 parts and 0 % on 900: the period is 1 %, not the mean 5 %.
    records = [_rec(T0 + H, pq=100, sq=10), _rec(T0 + 2 * H, pq=900, sq=0)]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["defect_rate"] == pytest.approx(0.01)
    assert period.values["availability"] == pytest.approx(6000 / 7200)
    assert period.values["cycle_time_mean_s"] == pytest.approx(6000 / 1000)


def test_an_ideal_cycle_time_changed_mid_period_weights_each_window() -> None:
    records = [_rec(T0 + H, pq=60, sq=0, ideal=40.0), _rec(T0 + 2 * H, pq=60, sq=0, ideal=50.0)]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["oee"] == pytest.approx((40 * 60 + 50 * 60) / 7200)
    assert period.values["performance"] == pytest.approx((40 * 60 + 50 * 60) / 6000)


def test_energy_intensity_uses_only_windows_with_energy_data() -> None:
    records = [_rec(T0 + H, pq=100, sq=0, kwh=10.0), _rec(T0 + 2 * H, pq=100, sq=0, kwh=None,
                                                            flags=("no_energy_data",))]
    period = summarize(records, MACHINE, "1h", T0, T0 + 2 * H)
    assert period.values["energy_kwh"] == 10.0
    assert period.values["energy_per_unit_kwh"] == pytest.approx(0.1)  # not 10 / 200
    assert period.values["kgce_per_good_unit"] == pytest.approx(0.1229 * 0.1)
    assert period.energy_windows == 1 and period.windows == 2
    assert period.flags == {"no_energy_data": 1}
    assert not period.complete


def test_no_energy_at_all_leaves_every_energy_figure_undefined() -> None:
    period = summarize([_rec(T0 + H, pq=10, sq=0, kwh=None)], MACHINE, "1h", T0, T0 + H)
    for name in ("energy_kwh", "co2_kg", "energy_per_unit_kwh", "energy_per_good_unit_kwh",
                 "kgce_per_good_unit", "co2_per_good_unit_kg"):
        assert period.values[name] is None, name


def test_a_replayed_record_counts_once_and_the_latest_wins() -> None:
    first = _rec(T0 + H, pq=100, sq=5)
    corrected = replace(first, parts_produced=110, parts_good=105)
    period = summarize([first, corrected, first, corrected], MACHINE, "1h", T0, T0 + H)
    assert period.windows == 1 and period.values["parts_produced"] == 110


def test_only_windows_wholly_inside_the_period_and_of_the_scope_count() -> None:
    records = [
        _rec(T0 + H, pq=1, sq=0),
        _rec(T0 + 2 * H, pq=2, sq=0),
        _rec(T0 + 3 * H, pq=4, sq=0),  # ends after the period
        _rec(T0 + 2 * H, pq=8, sq=0, machine="m2"),  # another machine
        _rec(T0 + 2 * H, pq=16, sq=0, machine=None),  # the line's own record
        _rec(T0 + 2 * H, pq=32, sq=0, window="15m"),  # another window size
    ]
    period = summarize(records, MACHINE, "1h", T0 + 30 * M, T0 + 2 * H + 30 * M)
    assert period.values["parts_produced"] == 2
    assert period.windows_expected == 1
    line = summarize(records, LINE, "1h", T0, T0 + 3 * H)
    assert line.values["parts_produced"] == 16


def test_missing_windows_show_in_the_coverage() -> None:
    period = summarize([_rec(T0 + H, pq=1, sq=0), _rec(T0 + 3 * H, pq=1, sq=0)], MACHINE,
                       "1h", T0, T0 + 3 * H)
    assert (period.windows, period.windows_expected, period.complete) == (2, 3, False)


def test_site_scope_has_no_schedule_rates() -> None:
    site = _rec(T0 + H, pq=100, sq=3, ideal=None, line=None, machine=None)
    period = summarize([replace(site, oee=None)], SITE, "1h", T0, T0 + H)
    assert period.values["oee"] is None and period.values["defect_rate"] is None
    assert period.values["energy_per_good_unit_kwh"] == pytest.approx(10 / 97)


def test_an_empty_period_is_refused() -> None:
    with pytest.raises(ValueError, match="end after"):
        summarize([], MACHINE, "1h", T0, T0)
