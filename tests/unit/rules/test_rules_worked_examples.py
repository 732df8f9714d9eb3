"""docs/kpi.md "Worked examples", verbatim, end to end through the engine and record builder."""

from __future__ import annotations

from datetime import time

import pytest
from rules_helpers import T0, H, M, one_machine, pick, run, smp

from rules.energy import ROLLOVER, MeterModel, exact
from rules.kpi import WindowId, machine_record
from rules.spec import MachineSpec, MeterSpec, ShiftSpec
from rules.totals import IDLE, PRODUCING, SETUP, UNPLANNED, MachineTotals


def test_example_1_one_shift_end_to_end() -> None:
    """POT 540 min, break 60, idle 40, unplanned 20, setup 30; ideal 45 s; PQ 480, SQ 24."""
    spec = one_machine(
        windows=("shift",),
        shifts=(ShiftSpec("A", time(8), time(17), ((time(12), time(13)),)),),
        meters=(),
    )
    states = [
        (0, "setup"), (30, "producing"), (120, "idle"), (160, "producing"),
        (180, "unplanned_down"), (200, "producing"),
    ]
    samples = [smp(T0 + m * M, "m1", "state", s) for m, s in states]
    samples += [smp(T0, "m1", "parts_total", 0), smp(T0, "m1", "parts_bad", 0)]
    samples += [smp(T0 + 500 * M, "m1", "parts_total", 480)]
    samples += [smp(T0 + 500 * M, "m1", "parts_bad", 24)]
    rec = pick(run(spec, samples, end=T0 + 9 * H), window="shift")
    assert (rec.window_start_ms, rec.window_end_ms) == (T0, T0 + 9 * H)
    assert rec.planned_busy_time_s == 480 * 60
    assert rec.producing_time_s == 390 * 60
    assert rec.setup_time_s == 30 * 60
    assert rec.idle_time_s == 40 * 60
    assert rec.unplanned_down_time_s == 20 * 60
    assert (rec.parts_produced, rec.parts_scrap, rec.parts_good) == (480, 24, 456)
    assert rec.availability == 0.8125
    assert rec.performance == pytest.approx(0.923077, abs=5e-7)
    assert rec.quality_ratio == 0.95
    assert rec.oee == 0.7125
    assert rec.defect_rate == 0.05
    assert rec.cycle_time_mean_s == 48.75
    assert rec.ideal_cycle_time_s == 45.0
    assert rec.flags == ("no_energy_data",)


def test_example_1_record_builder() -> None:
    """The same figures from the totals alone (no calendar involved)."""
    totals = MachineTotals()
    totals.times[PRODUCING] = 390 * M
    totals.times[SETUP] = 30 * M
    totals.times[IDLE] = 40 * M
    totals.times[UNPLANNED] = 20 * M
    totals.produced, totals.scrap = 480, 24
    rec = machine_record(
        WindowId("site", "shift", 0, 9 * H), MachineSpec("m1", "L1", 45.0), totals, exact(0.5306)
    )
    assert (rec.availability, rec.quality_ratio, rec.oee) == (0.8125, 0.95, 0.7125)
    assert rec.performance == pytest.approx(0.923077, abs=5e-7)
    assert (rec.defect_rate, rec.cycle_time_mean_s) == (0.05, 48.75)


def test_example_2_idle_all_window() -> None:
    """PBT 480 min, idle all window, PQ 0: availability 0, oee 0, the rest null."""
    spec = one_machine(windows=("8h",), meters=())
    samples = [smp(T0, "m1", "state", "idle"), smp(T0, "m1", "parts_total", 7)]
    samples += [smp(T0 + 4 * H, "m1", "parts_total", 7)]
    rec = pick(run(spec, samples, end=T0 + 8 * H))
    assert rec.planned_busy_time_s == 480 * 60
    assert rec.availability == 0
    assert rec.oee == 0
    assert rec.oee is not None
    assert rec.performance is None
    assert rec.quality_ratio is None
    assert rec.defect_rate is None
    assert rec.cycle_time_mean_s is None


def test_example_3_meter_rollover() -> None:
    """99999950.3 then 12.4 ten minutes apart, 0.1 kWh, modulus 1e8, 500 kW: 62.1 kWh."""
    model = MeterModel.from_spec(MeterSpec("e1", "m1", None, 0.1, 100000000.0, 500.0))
    old, new = model.to_steps(99999950.3), model.to_steps(12.4)
    assert (old, new) == (999999503, 124)
    assert old is not None and new is not None
    assert model.increase(old, new, 10 * M) == (621, ROLLOVER)

    spec = one_machine(windows=("1h",), machines=(MachineSpec("m1", "L1", 5.0),))
    samples = [
        smp(T0, "m1", "state", "producing"),
        smp(T0, "m1", "parts_total", 0),
        smp(T0, "m1", "parts_bad", 0),
        smp(T0 + 5 * M, "e1", "energy_kwh", 99999950.3),
        smp(T0 + 15 * M, "e1", "energy_kwh", 12.4),
        smp(T0 + 50 * M, "m1", "parts_total", 414),
    ]
    rec = pick(run(spec, samples, end=T0 + H))
    assert rec.energy_kwh == 62.1
    assert rec.parts_good == 414
    assert rec.energy_per_good_unit_kwh == 0.15
    assert rec.co2_kg == 32.95026
    assert rec.kgce_per_good_unit == 0.018435
    assert rec.flags == ("meter_rollover",)
