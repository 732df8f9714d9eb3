"""State and part counts from power alone: thresholds, hysteresis, dwell, cycles, and the
records of such machines flagged ``state_source = "power"``."""

from __future__ import annotations

import json

import pytest
from rules_helpers import T0, H, M, S, pick, run, smp

from rules.engine import KpiEngine
from rules.power_state import (
    IDLE,
    OFF,
    PRODUCING,
    CycleSpec,
    PowerDeriver,
    PowerStateSpec,
    classify,
)
from rules.spec import EngineSpec, LineSpec, MachineSpec, MeterSpec, ThresholdAlarmSpec
from rules.types import Sample

SPEC = PowerStateSpec("e1", off_below_kw=1.0, producing_above_kw=10.0, hysteresis_kw=2.0)


@pytest.mark.parametrize(("power", "current", "level"), [
    (0.0, None, OFF), (0.99, None, OFF), (1.0, None, IDLE), (9.99, None, IDLE),
    (10.0, None, PRODUCING),
    # leaving off takes off_below + hysteresis
    (2.9, OFF, OFF), (3.0, OFF, IDLE), (12.0, OFF, PRODUCING),
    # leaving producing takes producing_above - hysteresis
    (8.0, PRODUCING, PRODUCING), (7.99, PRODUCING, IDLE), (0.5, PRODUCING, OFF),
    # idle leaves at the thresholds themselves
    (0.99, IDLE, OFF), (10.0, IDLE, PRODUCING), (5.0, IDLE, IDLE),
    (-0.3, IDLE, OFF),  # a meter reading a little export
])
def test_levels_with_hysteresis(power: float, current: str | None, level: str) -> None:
    assert classify(SPEC, power, current) == level


def _states(spec: PowerStateSpec, readings: list[tuple[float, object]]
            ) -> list[tuple[str | None, int]]:
    deriver = PowerDeriver(spec)
    out = []
    for t_s, value in readings:
        bad = value == "bad"
        reading = smp(T0 + round(t_s * 1000), "e1", "power_kw", 0.0 if bad else value,
                      "bad" if bad else "good")
        state, _, parts = deriver.update(reading)
        out.append((state, parts))
    return out


DWELL = PowerStateSpec("e1", 1.0, 10.0, 1.0, min_dwell_s=3.0)


@pytest.mark.parametrize(("readings", "states"), [
    # from unknown the first reading decides at once
    ([(0, 15.0)], [PRODUCING]),
    ([(0, 0.0), (1, 5.0)], [OFF, OFF]),
    # a new level must be read for min_dwell_s: confirmed by the reading 3 s after the first
    ([(0, 5.0), (1, 15.0), (2, 15.0), (3, 15.0), (4, 15.0)],
     [IDLE, IDLE, IDLE, IDLE, PRODUCING]),
    # a spike shorter than the dwell changes nothing
    ([(0, 5.0), (1, 15.0), (2, 15.0), (3, 5.0), (4, 15.0), (5, 5.0)], [IDLE] * 6),
    # the candidate restarts when the level changes again before the dwell
    ([(0, 15.0), (1, 5.0), (2, 0.0), (4, 0.0), (5, 0.0)],
     [PRODUCING, PRODUCING, PRODUCING, PRODUCING, OFF]),
    # within the hysteresis the state holds (producing down to 9 kW with h = 1)
    ([(0, 15.0), (1, 9.5), (5, 9.1), (9, 9.0)], [PRODUCING] * 4),
    # a bad reading makes the state unknown; the next good one decides at once
    ([(0, 15.0), (1, "bad"), (2, 5.0)], [PRODUCING, None, IDLE]),
    ([(0, 15.0), (1, "fast")], [PRODUCING, None]),
])
def test_dwell_and_unknown(readings: list[tuple[float, object]], states: list[str | None]
                           ) -> None:
    assert [s for s, _ in _states(DWELL, readings)] == states


CYCLES = PowerStateSpec("e1", 1.0, 10.0, 1.0, cycles=CycleSpec(12.0, 3.0, 8.0))


@pytest.mark.parametrize(("readings", "parts"), [
    # a rise of 5 s (first reading at/above to first below above - hysteresis)
    ([(0, 3.0), (1, 20.0), (3, 20.0), (6, 3.0)], 1),
    # too short, too long
    ([(0, 3.0), (1, 20.0), (3, 3.0)], 0),
    ([(0, 3.0), (1, 20.0), (10, 3.0)], 0),
    # a dip that stays within the hysteresis (11.5 >= 12 - 1) does not end the rise
    ([(0, 3.0), (1, 20.0), (3, 11.5), (5, 20.0), (7, 3.0)], 1),
    # two rises, each a part; the bounds are inclusive
    ([(0, 20.0), (3, 3.0), (4, 20.0), (12, 3.0)], 2),
    # a bad reading abandons the rise in progress
    ([(0, 20.0), (2, "bad"), (3, 20.0), (4, 3.0)], 0),
])
def test_cycles(readings: list[tuple[float, object]], parts: int) -> None:
    assert sum(p for _, p in _states(CYCLES, readings)) == parts


def test_a_deriver_continues_from_its_checkpoint() -> None:
    first = PowerDeriver(CYCLES)
    for t_s, p in ((0, 3.0), (1, 20.0), (2, 20.0)):
        first.update(Sample(T0 + t_s * S, "e1", "power_kw", p))
    second = PowerDeriver(CYCLES)
    second.load_json(json.loads(json.dumps(first.to_json())))
    assert second.to_json() == first.to_json()
    assert second.update(Sample(T0 + 5 * S, "e1", "power_kw", 3.0))[2] == 1
    second.load_json({"state": "running", "candidate": 4, "since": "x"})
    assert second.to_json() == {"state": None, "candidate": None, "since": None,
                                "cycle_from": None}


@pytest.mark.parametrize(("spec", "place"), [
    (PowerStateSpec("e1", 10.0, 10.0), "power_state.producing_above_kw"),
    (PowerStateSpec("e1", 1.0, 10.0, 9.0), "power_state.hysteresis_kw"),
    (PowerStateSpec("e1", 1.0, 10.0, 1.0, cycles=CycleSpec(12.0, 5.0, 2.0)),
     "power_state.cycles"),
    (PowerStateSpec("e1", 1.0, 10.0, 2.0, cycles=CycleSpec(2.0, 1.0, 2.0)),
     "power_state.cycles.above_kw"),
    (PowerStateSpec("e1", -1.0, 10.0), "power_state"),
    (PowerStateSpec("e1", float("nan"), 10.0), "power_state"),
])
def test_inconsistent_thresholds_name_their_key(spec: PowerStateSpec, place: str) -> None:
    assert [p for p, _ in spec.problems()] == [place]


# ---------------------------------------------------------------- in the engine

def _plant(cycles: CycleSpec | None = None, dwell_s: float = 0.0) -> EngineSpec:
    """m1 read by its meter e1's power (output machine of L1), m2 from a state signal."""
    power = PowerStateSpec("e1", 1.0, 10.0, 1.0, dwell_s, cycles)
    return EngineSpec(
        site_id="site", windows=("1h",),
        lines=(LineSpec("L1", "m1"), LineSpec("L2", "m2")),
        machines=(MachineSpec("m1", "L1", 45.0, state_from=power),
                  MachineSpec("m2", "L2", 30.0)),
        meters=(MeterSpec("e1", "m1", None, 0.01),),
        alarms=(ThresholdAlarmSpec("hot", "e1", "power_kw", 30.0, 25.0),),
    )


def _power(t_s: float, kw: float) -> Sample:
    return smp(T0 + round(t_s * 1000), "e1", "power_kw", kw)


def test_power_states_parts_and_the_flag_on_records() -> None:
    samples = [_power(t, 20.0 if t % 60 < 40 else 3.0) for t in range(0, 1800, 5)]
    samples += [_power(t, 0.0) for t in range(1800, 3600, 5)]
    samples += [smp(T0, "m2", "state", "producing"), smp(T0, "m2", "parts_total", 0)]
    records = run(_plant(CycleSpec(12.0, 20.0, 60.0)), samples, T0 + H)
    m1 = pick(records, window="1h")
    assert m1.producing_time_s == 30 * 40
    assert m1.idle_time_s == 30 * 20
    assert m1.unplanned_down_time_s == 1800  # off counts as unplanned down
    assert m1.parts_produced == 30 and m1.parts_good == 30
    assert m1.state_source == "power"
    assert m1.to_json_dict()["state_source"] == "power"
    assert pick(records, machine=None, line="L1").state_source == "power"
    assert pick(records, machine=None, line=None).state_source == "power"
    m2 = pick(records, machine="m2", line="L2")
    assert m2.state_source is None and "state_source" not in m2.to_json_dict()
    assert pick(records, machine=None, line="L2").state_source is None


def test_the_dwell_delays_both_ends_of_a_state() -> None:
    samples = [_power(t, 20.0 if 600 <= t < 1200 else 3.0) for t in range(0, 3600)]
    records = run(_plant(dwell_s=10.0), samples, T0 + H)
    rec = pick(records, window="1h")
    assert rec.producing_time_s == 600  # entered and left 10 s late
    assert rec.parts_produced == 0  # no cycles configured


def test_threshold_alarms_still_watch_the_meter_power() -> None:
    eng = KpiEngine(_plant())
    for t in range(0, 120):
        eng.add(_power(t, 35.0 if 30 <= t < 60 else 3.0))
    alarms = eng.finish(T0 + 2 * M).alarms
    assert [(a.rule, a.state) for a in alarms] == [("hot", "raised"), ("hot", "cleared")]


def test_a_restored_engine_continues_a_cycle_in_progress() -> None:
    spec = _plant(CycleSpec(12.0, 20.0, 60.0), dwell_s=5.0)
    samples = [_power(t, 20.0 if t % 60 < 40 else 3.0) for t in range(0, 600)]
    whole = run(spec, samples, T0 + H)
    first = KpiEngine(spec)
    for s in samples[:321]:  # the machine is in the middle of a rise at 320 s
        first.add(s)
    second = KpiEngine.restore(spec, json.loads(json.dumps(first.snapshot())))
    for s in samples[321:]:
        second.add(s)
    split = first.collect().records + second.finish(T0 + H).records
    assert [r.to_json_dict() for r in split] == [r.to_json_dict() for r in whole]
    assert pick(split, window="1h").parts_produced == 10


def test_a_power_device_that_does_not_exist_is_a_config_error() -> None:
    from rules.errors import ConfigError

    spec = EngineSpec(site_id="site", lines=(LineSpec("L1", "m1"),), machines=(
        MachineSpec("m1", "L1", 45.0, state_from=PowerStateSpec("e9", 1.0, 10.0)),))
    with pytest.raises(ConfigError, match="neither a machine nor a meter"):
        KpiEngine(spec)
