"""Alarms (raise/clear, hysteresis, minimum duration) and live mode (watermark, lateness)."""

from __future__ import annotations

from collections.abc import Sequence

from rules_helpers import T0, H, M, S, one_machine, smp

from rules.engine import KpiEngine
from rules.spec import KpiLimitAlarmSpec, StateDurationAlarmSpec, ThresholdAlarmSpec
from rules.types import AlarmEvent

POWER = ThresholdAlarmSpec("power_high", "e1", "power_kw", 100.0, 80.0, 10.0, "critical")


def _events(
    alarm: object, samples: Sequence[tuple[int, str, str, object]], end: int
) -> list[AlarmEvent]:
    eng = KpiEngine(one_machine(windows=("1m",), alarms=(alarm,)))
    for ts, dev, sig, val in samples:
        eng.add(smp(ts, dev, sig, val))
    return eng.finish(end).alarms


def test_threshold_hysteresis_and_min_duration() -> None:
    samples = [
        (T0, "e1", "power_kw", 90.0),
        (T0 + 1 * S, "e1", "power_kw", 120.0),
        (T0 + 5 * S, "e1", "power_kw", 95.0),  # not above: pending raise cancelled
        (T0 + 6 * S, "e1", "power_kw", 130.0),
        (T0 + 20 * S, "e1", "power_kw", 110.0),
        (T0 + 25 * S, "e1", "power_kw", 90.0),  # between the limits: stays raised
        (T0 + 30 * S, "e1", "power_kw", 70.0),  # below clear_below: cleared
        (T0 + 40 * S, "e1", "power_kw", 100.0),  # at the limit is not above
        (T0 + 50 * S, "e1", "power_kw", 100.5),
    ]
    events = _events(POWER, samples, T0 + 55 * S)
    assert [(e.ts_ms - T0, e.state) for e in events] == [(16 * S, "raised"), (30 * S, "cleared")]
    raised = events[0]
    assert (raised.rule, raised.severity, raised.line, raised.machine) == (
        "power_high", "critical", "L1", "m1"
    )
    assert events[1].value == 70.0


def test_threshold_zero_duration_and_bad_quality_ignored() -> None:
    alarm = ThresholdAlarmSpec("hot", "m1", "power_kw", 10.0, 5.0)
    eng = KpiEngine(one_machine(windows=("1m",), alarms=(alarm,)))
    eng.add(smp(T0, "m1", "power_kw", 50.0, "bad"))
    eng.add(smp(T0 + S, "m1", "power_kw", 11.0))
    eng.add(smp(T0 + 2 * S, "m1", "power_kw", 1.0))
    events = eng.finish(T0 + M).alarms
    assert [(e.ts_ms - T0, e.state) for e in events] == [(S, "raised"), (2 * S, "cleared")]


def test_state_duration_alarm() -> None:
    alarm = StateDurationAlarmSpec("long_idle", "m1", "idle", 300.0)
    samples = [
        (T0, "m1", "state", "idle"),
        (T0 + 5 * M, "m1", "state", "producing"),  # exactly 300 s: not longer
        (T0 + 10 * M, "m1", "state", "idle"),
        (T0 + 12 * M, "m1", "state", "idle"),  # repeated report: same stretch
        (T0 + 20 * M, "m1", "state", "producing"),
    ]
    events = _events(alarm, samples, T0 + 30 * M)
    assert [(e.ts_ms - T0, e.state) for e in events] == [(15 * M, "raised"), (20 * M, "cleared")]


def test_kpi_limit_alarm() -> None:
    alarm = KpiLimitAlarmSpec("epu", "m1", "energy_per_unit_kwh", 1.0, "1m")
    samples: list[tuple[int, str, str, object]] = [(T0, "m1", "state", "producing")]
    counts, energy = 0, 100.0
    for minute, (parts, kwh) in enumerate([(5, 2.0), (5, 10.0), (5, 2.0), (0, 1.0)]):
        samples.append((T0 + minute * M, "m1", "parts_total", counts))
        samples.append((T0 + minute * M, "e1", "energy_kwh", energy))
        counts += parts
        energy += kwh
    samples.append((T0 + 4 * M, "m1", "parts_total", counts))
    samples.append((T0 + 4 * M, "e1", "energy_kwh", energy))
    events = _events(alarm, samples, T0 + 4 * M)
    assert [(e.ts_ms - T0, e.state, e.value) for e in events] == [
        (2 * M, "raised", 2.0), (3 * M, "cleared", 0.4)
    ]


def test_live_mode_lateness_and_carry_forward() -> None:
    eng = KpiEngine(one_machine(windows=("1m",), lateness_s=5.0, meters=()))
    eng.add(smp(T0 + 10 * S, "m1", "state", "producing"))
    eng.add(smp(T0 + 10 * S, "m1", "parts_total", 0))
    out = eng.advance(T0 + M + 4 * S)
    assert out.records == []  # end + lateness not reached
    eng.add(smp(T0 + 59 * S, "m1", "parts_total", 3))  # late but within lateness
    out = eng.advance(T0 + M + 5 * S)
    (rec,) = [r for r in out.records if r.machine == "m1"]
    assert rec.parts_produced == 3 and rec.producing_time_s == 50.0
    assert "incomplete" in rec.flags
    eng.add(smp(T0 + 58 * S, "m1", "parts_total", 4))  # too late: window closed
    assert eng.stats["late_dropped"] == 1
    # Nothing more arrives: the state is carried forward as far as the watermark.
    out = eng.advance(T0 + 3 * H)
    m1 = [r for r in out.records if r.machine == "m1"]
    assert len(m1) == 178  # ends up to 02:59, the 03:00 end + 5 s is beyond the watermark
    assert all(r.producing_time_s == 60.0 for r in m1)
    assert all(r.flags == ("no_energy_data",) for r in m1)
    assert eng.stats["windows_closed"] == 179


def test_no_output_before_any_sample() -> None:
    eng = KpiEngine(one_machine())
    assert eng.advance(T0 + 5 * H).records == []
    assert eng.finish().records == []


def test_restore_refuses_another_plant() -> None:
    import pytest

    from rules.spec import MachineSpec

    eng = KpiEngine(one_machine())
    eng.add(smp(T0, "m1", "state", "idle"))
    state = eng.snapshot()
    other = one_machine(machines=(MachineSpec("m9", "L1", 45.0),), lines=(), meters=())
    with pytest.raises(ValueError):
        KpiEngine.restore(other, state)
    with pytest.raises(ValueError):
        KpiEngine.restore(one_machine(), {**state, "version": 99})
    again = KpiEngine.restore(one_machine(), state)
    assert again.finish(T0 + H).records == eng.finish(T0 + H).records


def test_finish_drops_samples_after_explicit_end() -> None:
    eng = KpiEngine(one_machine(meters=(), lateness_s=3600.0))
    eng.add(smp(T0, "m1", "state", "producing"))
    eng.add(smp(T0, "m1", "parts_total", 0))
    eng.add(smp(T0 + 30 * M, "m1", "parts_total", 10))
    eng.add(smp(T0 + 30 * M + 1, "m1", "parts_total", 20))
    (rec,) = [r for r in eng.finish(T0 + 30 * M + 1).records if r.machine == "m1"]
    assert rec.parts_produced == 10
    assert rec.producing_time_s == 30 * 60 + 0.001
    assert "incomplete" in rec.flags
    assert eng.stats["ignored_after_end"] == 1


def test_threshold_alarm_on_energy_register() -> None:
    alarm = ThresholdAlarmSpec("big", "e1", "energy_kwh", 1000.0, 10.0)
    events = _events(alarm, [(T0, "e1", "energy_kwh", 999.0), (T0 + S, "e1", "energy_kwh",
                                                                1001.0)], T0 + M)
    assert [(e.ts_ms - T0, e.state) for e in events] == [(S, "raised")]
