"""Time model, counters and null rules (docs/kpi.md "Time model", "Counts", "KPIs")."""

from __future__ import annotations

import pytest
from rules_helpers import T0, H, M, S, one_machine, pick, run, smp

from rules.counters import RESET, WRAP, as_count, counter_increase
from rules.spec import LineSpec, MachineSpec
from rules.types import Sample

# (name, state samples as (minute offset, state or None for a bad-quality sample),
#  finish end offset in minutes, expected (PBT, APT, setup, unplanned, idle) in minutes,
#  incomplete?)
TIME_CASES = [
    ("carried into window", [(-10, "producing")], 60, (60, 60, 0, 0, 0), False),
    ("unknown before first sample", [(15, "producing")], 60, (45, 45, 0, 0, 0), True),
    ("bad source is unknown", [(0, "producing"), (20, None), (30, "producing")], 60,
     (50, 50, 0, 0, 0), True),
    ("planned_down is PDOT", [(0, "producing"), (40, "planned_down")], 60,
     (40, 40, 0, 0, 0), False),
    ("off is unplanned down", [(0, "off"), (30, "unplanned_down"), (45, "setup")], 60,
     (60, 0, 15, 45, 0), False),
    ("after end of input unknown", [(0, "idle")], 30, (30, 0, 0, 0, 30), True),
]


@pytest.mark.parametrize(
    ("name", "states", "end_min", "expected", "incomplete"),
    TIME_CASES,
    ids=[c[0] for c in TIME_CASES],
)
def test_time_model(
    name: str,
    states: list[tuple[int, str | None]],
    end_min: int,
    expected: tuple[int, ...],
    incomplete: bool,
) -> None:
    samples = [
        smp(T0 + m * M, "m1", "state", "idle" if s is None else s, "bad" if s is None else "good")
        for m, s in states
    ]
    rec = pick(run(one_machine(meters=()), samples, end=T0 + end_min * M), start=T0)
    got = (
        rec.planned_busy_time_s, rec.producing_time_s, rec.setup_time_s,
        rec.unplanned_down_time_s, rec.idle_time_s,
    )
    assert got == tuple(60.0 * x for x in expected)
    assert ("incomplete" in rec.flags) == incomplete
    if any(s is None for _, s in states):
        assert "bad_quality" in rec.flags


def test_pbt_zero_nulls_schedule_kpis_but_reports_counts_and_energy() -> None:
    samples = [
        smp(T0, "m1", "state", "planned_down"),
        smp(T0, "m1", "parts_total", 10),
        smp(T0 + 30 * M, "m1", "parts_total", 15),
        smp(T0, "e1", "energy_kwh", 100.0),
        smp(T0 + 30 * M, "e1", "energy_kwh", 101.5),
    ]
    rec = pick(run(one_machine(), samples, end=T0 + H), start=T0)
    assert rec.planned_busy_time_s == 0
    for name in ("availability", "performance", "quality_ratio", "oee", "defect_rate",
                 "cycle_time_mean_s"):
        assert getattr(rec, name) is None, name
    assert rec.parts_produced == 5
    assert rec.energy_kwh == 1.5
    assert rec.energy_per_unit_kwh == 0.3
    assert rec.energy_per_good_unit_kwh == 0.3


def test_machine_without_any_data_gets_zeros_nulls_incomplete() -> None:
    spec = one_machine(
        machines=(MachineSpec("m1", "L1", 45.0), MachineSpec("m2", "L1", 30.0)), meters=()
    )
    records = run(spec, [smp(T0, "m1", "state", "producing")], end=T0 + H)
    rec = pick(records, machine="m2", start=T0)
    assert rec.planned_busy_time_s == 0 and rec.parts_produced == 0
    assert rec.availability is None and rec.oee is None and rec.energy_kwh is None
    assert rec.ideal_cycle_time_s == 30.0
    assert rec.flags == ("incomplete", "no_energy_data")


@pytest.mark.parametrize(
    ("old", "new", "modulus", "expected"),
    [
        (100, 150, 2**32, (50, None)),
        (7, 7, 2**32, (0, None)),
        (2**32 - 10, 5, 2**32, (15, WRAP)),
        (1000, 3, 2**32, (3, RESET)),
        (900, 50, 1000, (150, WRAP)),  # old exactly at 90 %
        (899, 50, 1000, (50, RESET)),  # old below the top 10 %
        (950, 100, 1000, (100, RESET)),  # new not in the bottom 10 %
        (950, 99, 1000, (149, WRAP)),
    ],
)
def test_counter_increase(
    old: int, new: int, modulus: int, expected: tuple[int, str | None]
) -> None:
    assert counter_increase(old, new, modulus) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (5.0, 5), (5.5, None), (-1, None), (True, None), ("5", None), (None, None)],
)
def test_as_count(value: object, expected: int | None) -> None:
    assert as_count(value) == expected


@pytest.mark.parametrize(
    ("readings", "produced", "flags"),
    [
        ([2**32 - 5, 2**32 - 1, 3], 8, {"counter_wrap"}),
        ([500, 520, 4, 10], 30, {"counter_reset"}),
        ([10.0, 12.0, 15], 5, set()),
    ],
)
def test_counters_in_engine(readings: list[int | float], produced: int, flags: set[str]) -> None:
    samples = [smp(T0, "m1", "state", "producing")]
    samples += [smp(T0 + i * M, "m1", "parts_total", v) for i, v in enumerate(readings)]
    rec = pick(run(one_machine(meters=()), samples, end=T0 + H), start=T0)
    assert rec.parts_produced == produced
    assert flags <= set(rec.flags)
    assert not ({"counter_wrap", "counter_reset"} - flags) & set(rec.flags)


def test_counts_attributed_by_sample_time_and_bad_quality_ignored() -> None:
    samples = [
        smp(T0, "m1", "state", "producing"),
        smp(T0 + 50 * M, "m1", "parts_total", 100),
        smp(T0 + 59 * M, "m1", "parts_total", 0, "bad"),  # would look like a reset
        smp(T0 + 61 * M, "m1", "parts_total", 110),
        smp(T0 + 62 * M, "m1", "parts_total", "garbage"),
        smp(T0 + 70 * M, "m1", "parts_total", 130),
    ]
    records = run(one_machine(meters=()), samples, end=T0 + 2 * H)
    first, second = pick(records, start=T0), pick(records, start=T0 + H)
    assert first.parts_produced == 0
    assert "bad_quality" in first.flags and "counter_reset" not in first.flags
    assert second.parts_produced == 30
    assert "invalid_value" in second.flags


def test_good_counter_role() -> None:
    spec = one_machine(machines=(MachineSpec("m1", "L1", 10.0, good_counter=True),), meters=())
    samples = [
        smp(T0, "m1", "state", "producing"),
        smp(T0, "m1", "parts_total", 0),
        smp(T0, "m1", "parts_good", 0),
        smp(T0 + 30 * M, "m1", "parts_total", 100),
        smp(T0 + 30 * M, "m1", "parts_good", 97),
        smp(T0 + 30 * M, "m1", "parts_bad", 3),  # not configured for this machine
    ]
    from rules.engine import KpiEngine

    eng = KpiEngine(spec)
    for s in samples:
        eng.add(s)
    rec = pick(eng.finish(T0 + H).records, start=T0)
    assert (rec.parts_produced, rec.parts_good, rec.parts_scrap) == (100, 97, 3)
    assert eng.stats["ignored_unknown"] == 1


def test_performance_over_1_not_clamped() -> None:
    samples = [
        smp(T0, "m1", "state", "producing"),
        smp(T0, "m1", "parts_total", 0),
        smp(T0 + 30 * M, "m1", "parts_total", 100),  # 100 * 45 s > 3600 s
    ]
    rec = pick(run(one_machine(meters=()), samples, end=T0 + H), start=T0)
    assert rec.performance == 1.25
    assert rec.oee == 1.25
    assert "performance_over_1" in rec.flags


def test_record_order_and_unknown_devices() -> None:
    from rules.engine import KpiEngine

    spec = one_machine(
        windows=("15m", "1m"),
        machines=(MachineSpec("m1", "L1", 45.0), MachineSpec("m2", "L2", 45.0)),
        lines=(LineSpec("L1", "m1"), LineSpec("L2", "m2")),
        meters=(),
    )
    eng = KpiEngine(spec)
    eng.add(Sample(T0, "m2", "state", "idle"))
    eng.add(Sample(T0, "nope", "state", "idle"))
    eng.add(Sample(T0, "m1", "temperature", 41.0))
    eng.add(Sample(T0, "m1", "power_kw", 3.0))
    out = eng.finish(T0 + 15 * M)
    keys = [(r.window_end_ms, r.window, r.machine, r.line) for r in out.records]
    assert len(keys) == 16 * 5  # 15 one-minute windows + one 15-minute window, 5 records each
    assert keys[:5] == [(T0 + M, "1m", "m1", "L1"), (T0 + M, "1m", "m2", "L2"),
                        (T0 + M, "1m", None, "L1"), (T0 + M, "1m", None, "L2"),
                        (T0 + M, "1m", None, None)]
    assert keys[-10:-5] == [(T0 + 15 * M, "15m", "m1", "L1"), (T0 + 15 * M, "15m", "m2", "L2"),
                            (T0 + 15 * M, "15m", None, "L1"), (T0 + 15 * M, "15m", None, "L2"),
                            (T0 + 15 * M, "15m", None, None)]
    assert keys[-5][1] == "1m"
    assert eng.stats["ignored_unknown"] == 2
    assert eng.stats["samples"] == 4
    assert eng.stats["windows_closed"] == 16
    assert all(r.window_end_ms - r.window_start_ms in (M, 15 * M) for r in out.records)
    assert S == 1000
