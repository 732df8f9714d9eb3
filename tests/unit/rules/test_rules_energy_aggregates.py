"""Energy registers (docs/kpi.md "Energy") and line/site aggregates (docs/kpi.md "Aggregates")."""

from __future__ import annotations

from fractions import Fraction

import pytest
from rules_helpers import T0, H, M, S, one_machine, pick, run, smp

from rules.energy import RESET, ROLLOVER, MeterModel, share
from rules.engine import KpiEngine
from rules.spec import EngineSpec, LineSpec, MachineSpec, MeterSpec
from rules.types import KpiRecord, Sample

# (name, modulus, max_power_kw, old, new, dt_min, expected steps, flag)
REGISTER_CASES = [
    ("rollover plausible", 1e8, 500.0, 99999950.3, 12.4, 10, 621, ROLLOVER),
    ("rollover implausible at 100 kW", 1e8, 100.0, 99999950.3, 12.4, 10, 124, RESET),
    ("no max power: 10/90 rule says rollover", 1e8, None, 99999950.3, 12.4, 10, 621, ROLLOVER),
    ("no max power: 10/90 rule says reset", 1e8, None, 5000.0, 12.4, 10, 124, RESET),
    ("no modulus: reset", None, 500.0, 99999950.3, 12.4, 10, 124, RESET),
    ("same time: implausible", 1e8, 500.0, 99999950.3, 12.4, 0, 124, RESET),
    ("increase", 1e8, 500.0, 12.4, 13.0, 1, 6, None),
]


@pytest.mark.parametrize(
    ("name", "modulus", "max_kw", "old", "new", "dt_min", "steps", "flag"),
    REGISTER_CASES,
    ids=[c[0] for c in REGISTER_CASES],
)
def test_register_increase(
    name: str, modulus: float | None, max_kw: float | None, old: float, new: float,
    dt_min: int, steps: int, flag: str | None,
) -> None:
    model = MeterModel.from_spec(MeterSpec("e", "m", None, 0.1, modulus, max_kw))
    a, b = model.to_steps(old), model.to_steps(new)
    assert a is not None and b is not None
    assert model.increase(a, b, dt_min * M) == (steps, flag)


def test_share_is_exact() -> None:
    parts = [share(7, 0, 3000, a, a + 1000) for a in (0, 1000, 2000)]
    assert parts == [Fraction(7, 3)] * 3
    assert sum(parts) == 7
    assert share(7, 0, 3000, -100, 5000) == 7
    assert share(7, 0, 3000, 3000, 4000) == 0


def _meter_run(readings: list[tuple[int, float, str]], **kw: object) -> list:  # type: ignore[type-arg]
    samples = [smp(T0 - H, "m1", "state", "producing")]
    samples += [smp(T0 + ms, "e1", "energy_kwh", v, q) for ms, v, q in readings]
    return run(one_machine(**kw), samples, end=T0 + 2 * H)


def test_energy_spread_across_window_boundary() -> None:
    records = _meter_run([(H - 30 * S, 100.0, "good"), (H + 60 * S, 112.0, "good")])
    a, b = pick(records, start=T0), pick(records, start=T0 + H)
    assert a.energy_kwh == 4.0
    assert b.energy_kwh == 8.0


def test_energy_fractional_share_sums_to_total() -> None:
    spec_kw = {"windows": ("1m",), "meters": (MeterSpec("e1", "m1", None, 0.01),)}
    readings = [(0, 5.00, "good"), (70 * S, 5.01, "good"), (200 * S, 5.04, "good")]
    records = _meter_run(readings, **spec_kw)
    mine = [r for r in records if r.machine == "m1" and r.energy_kwh is not None]
    total = sum(Fraction(repr(r.energy_kwh)) for r in mine)
    assert float(total) == pytest.approx(0.04, abs=1e-15)
    assert pick(records, start=T0).energy_kwh == pytest.approx(0.01 * 60 / 70, abs=1e-15)


def test_bad_reading_ignored_not_a_reset() -> None:
    readings = [(0, 100.0, "good"), (10 * M, 5.0, "bad"), (20 * M, 110.0, "good")]
    rec = pick(_meter_run(readings), start=T0)
    assert rec.energy_kwh == 10.0
    assert "meter_reset" not in rec.flags
    assert "bad_quality" in rec.flags


def test_meter_reset_in_engine() -> None:
    readings = [(0, 5000.0, "good"), (10 * M, 3.0, "good")]
    rec = pick(_meter_run(readings), start=T0)
    assert rec.energy_kwh == 3.0
    assert "meter_reset" in rec.flags


def test_no_energy_data_without_meter() -> None:
    rec = pick(_meter_run([]), start=T0)
    assert rec.energy_kwh is None and rec.co2_kg is None
    assert "no_energy_data" in rec.flags


def _plant() -> EngineSpec:
    return EngineSpec(
        site_id="site",
        windows=("1h",),
        lateness_s=7200.0,  # hourly meter readings: keep the window open until they arrive
        lines=(LineSpec("LA", "a2"), LineSpec("LB", "b1")),
        machines=(
            MachineSpec("a1", "LA", 30.0),
            MachineSpec("a2", "LA", 60.0),
            MachineSpec("b1", "LB", 20.0),
        ),
        meters=(
            MeterSpec("ea1", "a1", None, 0.1),
            MeterSpec("ea2", "a2", None, 0.1),
            MeterSpec("eLA", None, "LA", 0.1),
            MeterSpec("eb1", "b1", None, 0.1),
            MeterSpec("esite", None, None, 0.1),
        ),
    )


def test_line_and_site_aggregates() -> None:
    samples = []
    for machine, produced, bad in (("a1", 100, 1), ("a2", 50, 5), ("b1", 150, 0)):
        samples += [
            smp(T0, machine, "state", "producing"),
            smp(T0, machine, "parts_total", 0),
            smp(T0, machine, "parts_bad", 0),
            smp(T0 + 30 * M, machine, "parts_total", produced),
            smp(T0 + 30 * M, machine, "parts_bad", bad),
        ]
    for meter, kwh in (("ea1", 10.0), ("ea2", 20.0), ("eLA", 5.0), ("eb1", 40.0), ("esite", 25.0)):
        samples += [smp(T0, meter, "energy_kwh", 1000.0), smp(T0 + H, meter, "energy_kwh",
                                                              1000.0 + kwh)]
    records = run(_plant(), samples, end=T0 + H + 1)
    records = [r for r in records if r.window_start_ms == T0]
    assert [(r.machine, r.line) for r in records] == [
        ("a1", "LA"), ("a2", "LA"), ("b1", "LB"), (None, "LA"), (None, "LB"), (None, None)
    ]
    a2 = pick(records, machine="a2", line="LA")
    la = pick(records, machine=None, line="LA")
    assert (la.parts_produced, la.parts_scrap, la.parts_good) == (50, 5, 45)
    assert la.availability == a2.availability == 1.0
    assert la.performance == a2.performance
    assert la.oee == a2.oee
    assert la.ideal_cycle_time_s == 60.0
    assert la.energy_kwh == 35.0
    assert la.energy_per_unit_kwh == 35.0 / 50
    assert la.energy_per_good_unit_kwh == 35.0 / 45
    assert a2.energy_kwh == 20.0
    # every machine of the line: a1 scraps 1 of 100, a2 5 of 50
    assert la.scrap_all_machines == 6
    assert la.rolled_throughput_yield == pytest.approx(0.99 * 0.9, rel=1e-15)
    assert a2.scrap_all_machines is None and a2.rolled_throughput_yield is None
    site = pick(records, machine=None, line=None)
    assert site.energy_kwh == 100.0
    assert (site.parts_produced, site.parts_scrap, site.parts_good) == (200, 5, 195)
    assert site.energy_per_good_unit_kwh == 100.0 / 195
    assert site.co2_kg == pytest.approx(53.06, abs=1e-12)
    # quality from the lines' outputs (a2 and b1), scrap from every machine
    assert (site.quality_ratio, site.defect_rate) == (195 / 200, 5 / 200)
    assert site.scrap_all_machines == 6
    assert site.rolled_throughput_yield is None
    for name in ("availability", "performance", "oee", "cycle_time_mean_s",
                 "ideal_cycle_time_s"):
        assert getattr(site, name) is None, name


def _sparse_meter_samples() -> list[Sample]:
    samples = [smp(T0, "m1", "state", "producing"), smp(T0, "e1", "energy_kwh", 10.0)]
    samples += [smp(T0 + 30 * M, "m1", "state", "producing")]
    samples += [smp(T0 + 50 * M + 30 * S, "e1", "energy_kwh", 20.0)]
    return samples


def test_sparse_meter_energy_is_revised_into_its_windows() -> None:
    """A meter silent for longer than the lateness: the windows it spans are emitted on
    time and revised once its closing reading arrives, each with its exact share."""
    spec = one_machine(windows=("1m",), lateness_s=5.0)
    latest: dict[int, KpiRecord] = {}
    for r in run(spec, _sparse_meter_samples(), end=T0 + H):
        if r.machine == "m1":
            latest[r.window_end_ms] = r
    per_minute = 10.0 / 50.5
    for end, r in latest.items():
        if end > T0 + 51 * M:
            continue  # after the last reading: no closing reading, no energy
        start = end - M
        inside = max(0, min(end, T0 + 50 * M + 30 * S) - max(start, T0)) / M
        assert r.energy_kwh == pytest.approx(per_minute * inside, abs=1e-12), end
        assert "energy_carried" not in r.flags and "energy_pending" not in r.flags
    assert sum(r.energy_kwh or 0.0 for r in latest.values()) == pytest.approx(10.0, abs=1e-12)
    # the windows closed before the closing reading arrived were emitted, then revised
    assert all("revised" in latest[T0 + k * M].flags for k in range(1, 30))


def test_sparse_meter_energy_beyond_the_revision_horizon_is_carried_not_lost() -> None:
    """Past the revision horizon the energy of the closed part of the interval goes to the
    earliest open window, flagged, so the total is kept."""
    spec = one_machine(windows=("1m",), lateness_s=5.0)
    eng = KpiEngine(spec, revision_horizon_s=0.0)
    for s in sorted(_sparse_meter_samples(), key=lambda x: x.ts_ms):
        eng.add(s)
    records = [r for r in eng.finish(T0 + H).records if r.machine == "m1"]
    energy = [r.energy_kwh or 0.0 for r in records]
    assert sum(energy) == pytest.approx(10.0, abs=1e-12)
    carried = [r for r in records if "energy_carried" in r.flags]
    assert len(carried) == 1
