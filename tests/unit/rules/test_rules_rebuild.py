"""KpiEngine.rebuild: a new plant's engine continuing the old one's state, by id.

The scenario: two machines on one line, a meter on ``m1``, one-minute windows; the
engine is rebuilt 25 s into the first minute, and the samples before and after are
those of a reference engine that never was, so what a carried id computes can be told
from what it would have computed without the rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from rules_helpers import S, smp

from rules.engine import CONFIG_RELOAD, Carry, KpiEngine, StateCarry, carry_state
from rules.spec import (
    EngineSpec,
    LineSpec,
    MachineSpec,
    MeterSpec,
    StateDurationAlarmSpec,
)
from rules.types import KpiRecord, Sample

T = 1_741_017_600_000  # 2025-03-03T16:00:00Z, a minute boundary
CUT_S = 25
END_S = 90
FIRST = T + 60 * S  # the end of the window open at the rebuild

BASE = EngineSpec(
    site_id="site",
    windows=("1m",),
    lateness_s=1.0,
    lines=(LineSpec("L1", "m1"),),
    machines=(MachineSpec("m1", "L1", 10.0), MachineSpec("m2", "L1", 10.0)),
    meters=(MeterSpec("e1", "m1", None, 0.1),),
)
KEEP_ALL: dict[str, Carry] = {"m1": "all", "m2": "all"}


def series(t_from: int, t_to: int, machines: tuple[str, ...] = ("m1", "m2")) -> list[Sample]:
    """Producing from 0 s; a part every 10 s, a scrap every 30 s; 0.1 kWh per 5 s."""
    out: list[Sample] = []
    for t in range(t_from, t_to):
        ts = T + t * S
        for mid in machines:
            if t == 0:
                out.append(smp(ts, mid, "state", "producing"))
            if t % 10 == 0:
                out.append(smp(ts, mid, "parts_total", 100 + t // 10))
            if t % 30 == 0:
                out.append(smp(ts, mid, "parts_bad", 7 + t // 30))
        if t % 5 == 0:
            out.append(smp(ts, "e1", "energy_kwh", round(500 + (t // 5) / 10, 1)))
    return out


def reference(spec: EngineSpec = BASE) -> dict[str | None, KpiRecord]:
    """The first minute's machine records of an engine that was never rebuilt."""
    engine = KpiEngine(spec)
    for s in series(0, END_S):
        engine.add(s)
    return first_minute(engine.finish(T + END_S * S).records)


def before_rebuild() -> KpiEngine:
    """An engine fed the samples before the rebuild; the first 20 s are sealed."""
    engine = KpiEngine(BASE)
    for s in series(0, CUT_S):
        engine.add(s)
    engine.add(smp(T + (CUT_S - 1) * S, "m1", "power_kw", 3.0))  # moves time on
    return engine


def first_minute(records: list[KpiRecord]) -> dict[str | None, KpiRecord]:
    return {r.machine: r for r in records if r.window_end_ms == FIRST and r.machine}


@dataclass(frozen=True)
class Case:
    name: str
    carry: StateCarry
    spec: EngineSpec = BASE
    after: Callable[[Sample], Sample | None] = lambda s: s
    """What becomes of each sample after the rebuild (None: not sent)."""
    extra: tuple[Sample, ...] = ()
    """Sent right after the rebuild, before the rest."""
    check: Callable[[dict[str | None, KpiRecord]], None] = lambda got: None
    expect_ids: tuple[str, ...] = ("m1", "m2")


def _kept(got: dict[str | None, KpiRecord]) -> None:
    want = reference()
    assert got["m1"] == want["m1"] and got["m2"] == want["m2"]
    assert CONFIG_RELOAD not in got["m1"].flags


def _rebased(s: Sample) -> Sample:
    """m1's counter now read from a register that counts from elsewhere."""
    if s.device == "m1" and s.signal == "parts_total":
        return s._replace(value=int(s.value or 0) + 500_000)  # type: ignore[call-overload]
    return s


def _totals_kept_baseline_reset(got: dict[str | None, KpiRecord]) -> None:
    want = reference()
    m1 = got["m1"]
    # 100 -> 101 sealed before; the buffered reading at 20 s goes with the old baseline,
    # the first one after (30 s) is a new baseline, then 2 more parts
    assert m1.parts_produced == 3 and want["m1"].parts_produced == 5
    assert m1.producing_time_s == want["m1"].producing_time_s == 60  # its state is kept
    assert m1.energy_kwh == want["m1"].energy_kwh  # the meter is kept whole
    assert CONFIG_RELOAD in m1.flags
    assert got["m2"] == want["m2"]


def _fresh_machine(got: dict[str | None, KpiRecord]) -> None:
    m1 = got["m1"]
    # nothing of before: its state is unknown until reported, its counter a new baseline
    assert m1.parts_produced == 2
    assert m1.producing_time_s == 0
    assert m1.energy_kwh is None and m1.planned_busy_time_s == 0
    assert CONFIG_RELOAD in m1.flags
    assert got["m2"] == reference()["m2"]


def _removed(got: dict[str | None, KpiRecord]) -> None:
    assert set(got) == {"m1"}
    assert got["m1"] == reference(replace(BASE, machines=BASE.machines[:1]))["m1"]


def _added(got: dict[str | None, KpiRecord]) -> None:
    m3 = got["m3"]
    # its initial value, stamped an hour before the rebuild, counts from the rebuild on
    assert m3.producing_time_s == 60 - CUT_S
    assert m3.planned_busy_time_s == 60 - CUT_S  # the time before is unknown
    assert m3.parts_produced == 2  # baseline at the rebuild (103), then 104 and 105
    assert CONFIG_RELOAD in m3.flags
    assert got["m1"] == reference()["m1"]


def _meter_rebased(got: dict[str | None, KpiRecord]) -> None:
    want = reference()
    m1 = got["m1"]
    assert m1.parts_produced == want["m1"].parts_produced
    # 0.4 kWh sealed before; the buffered reading at 20 s goes with the old baseline, so
    # the interval from it to the first reading after the rebuild is not counted
    assert want["m1"].energy_kwh == pytest.approx(1.2)
    assert m1.energy_kwh == pytest.approx(1.1)
    assert CONFIG_RELOAD in m1.flags


CASES = [
    Case("a device kept keeps its open windows and counters",
         StateCarry(machines=KEEP_ALL, meters={"e1": "all"}, lines={"L1": "all"}),
         check=_kept),
    Case("reordered ids are matched by id",
         StateCarry(machines=KEEP_ALL, meters={"e1": "all"}, lines={"L1": "all"}),
         spec=replace(BASE, machines=BASE.machines[::-1]), check=_kept),
    Case("a device whose signals changed keeps its totals, not its baselines",
         StateCarry(machines={"m1": "totals", "m2": "all"}, meters={"e1": "all"},
                    lines={"L1": "all"}, at_ms=T + CUT_S * S),
         after=_rebased, check=_totals_kept_baseline_reset),
    Case("a device carried none starts fresh",
         StateCarry(machines={"m2": "all"}, meters={"e1": "none"}, lines={"L1": "all"}),
         after=lambda s: None if s.device == "e1" else s, check=_fresh_machine),
    Case("a removed device's state goes",
         StateCarry(machines={"m1": "all"}, meters={"e1": "all"}, lines={"L1": "all"}),
         spec=replace(BASE, machines=BASE.machines[:1]),
         after=lambda s: None if s.device == "m2" else s, check=_removed,
         expect_ids=("m1",)),
    Case("a device added observes from the rebuild",
         StateCarry(machines=KEEP_ALL, meters={"e1": "all"}, lines={"L1": "all"},
                    at_ms=T + CUT_S * S),
         spec=replace(BASE, machines=(*BASE.machines, MachineSpec("m3", "L1", 10.0))),
         extra=(smp(T - 3_600 * S, "m3", "state", "producing"),
                smp(T - 3_600 * S, "m3", "parts_total", 103)),
         check=_added, expect_ids=("m1", "m2", "m3")),
    Case("a meter whose register changed takes a new baseline at the rebuild",
         StateCarry(machines=KEEP_ALL, meters={"e1": "totals"}, lines={"L1": "all"},
                    at_ms=T + CUT_S * S),
         check=_meter_rebased),
]


def _after_samples(case: Case) -> list[Sample]:
    machines = tuple(m.id for m in case.spec.machines)
    out = []
    for s in series(CUT_S, END_S, machines):
        moved = case.after(s)
        if moved is not None:
            out.append(moved)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rebuild(case: Case) -> None:
    engine = before_rebuild()
    records = engine.collect().records
    before = json.dumps(engine.snapshot(), sort_keys=True)
    rebuilt = engine.rebuild(case.spec, case.carry)
    assert json.dumps(engine.snapshot(), sort_keys=True) == before  # the old one is as it was
    assert rebuilt.spec is case.spec
    for s in (*case.extra, *_after_samples(case)):
        rebuilt.add(s)
    records += rebuilt.finish(T + END_S * S).records
    got = first_minute(records)
    assert tuple(sorted(got)) == case.expect_ids
    case.check(got)
    # the next window is an ordinary one for everyone
    later = [r for r in records if r.window_end_ms == FIRST + 60 * S]
    assert later and all(CONFIG_RELOAD not in r.flags for r in later)


def test_rebuilding_to_the_same_plant_keeping_everything_changes_nothing() -> None:
    """Every part of the state is carried: a snapshot key a rebuild forgot would differ."""
    engine = KpiEngine(BASE)
    engine.observe_from(T + 2 * S)
    for s in series(0, CUT_S):
        engine.add(s)
    engine.advance(T + CUT_S * S)
    keep = StateCarry(machines=KEEP_ALL, meters={"e1": "all"}, lines={"L1": "all"})
    assert engine.rebuild(BASE, keep).snapshot() == engine.snapshot()


def test_a_rebuild_across_another_slice_grid_is_refused() -> None:
    engine = KpiEngine(BASE)
    for other in (replace(BASE, windows=("5m",)), replace(BASE, timezone="Asia/Shanghai"),
                  replace(BASE, site_id="elsewhere")):
        with pytest.raises(ValueError):
            engine.rebuild(other, StateCarry())
    with pytest.raises(ValueError, match="version"):
        carry_state({**engine.snapshot(), "version": 99}, BASE, StateCarry())


def test_alarm_states_follow_their_names_and_restart_when_told() -> None:
    long_idle = StateDurationAlarmSpec("long-idle", "m1", "idle", 5.0)
    old = replace(BASE, alarms=(long_idle,))
    engine = KpiEngine(old)
    engine.add(smp(T, "m1", "state", "idle"))
    engine.add(smp(T + 70 * S, "m1", "parts_total", 1))  # seals the first minute
    assert [a.state for a in engine.collect().alarms] == ["raised"]
    carry = StateCarry(machines=KEEP_ALL, meters={"e1": "all"}, lines={"L1": "all"})
    added = StateDurationAlarmSpec("new-one", "m1", "idle", 100.0)
    new = replace(BASE, alarms=(added, long_idle))  # re-indexed: long-idle is now 1

    def after_producing(rebuilt: KpiEngine) -> list[tuple[str, str]]:
        rebuilt.add(smp(T + 80 * S, "m1", "state", "producing"))
        rebuilt.add(smp(T + 130 * S, "m1", "parts_total", 2))
        return [(a.state, a.rule) for a in rebuilt.collect().alarms]

    # the carried alarm clears (it was raised before); the new rule never raised
    assert after_producing(engine.rebuild(new, carry)) == [("cleared", "long-idle")]
    # a rule whose state restarts was never raised, so nothing clears
    restarted = replace(carry, fresh_alarms=frozenset({"long-idle"}))
    assert after_producing(engine.rebuild(new, restarted)) == []


def test_a_fresh_start_floor_ends_once_sealed_past() -> None:
    """What a rebuild started afresh is no longer held in the engine's state (nor in its
    checkpoint) once the slice holding the rebuild is sealed."""
    engine = KpiEngine(BASE)
    for s in series(0, CUT_S):
        engine.add(s)
    rebuilt = engine.rebuild(BASE, StateCarry(machines={"m2": "all"}, at_ms=T + CUT_S * S))
    assert rebuilt.snapshot()["device_from"] == {"m1": T + CUT_S * S, "e1": T + CUT_S * S}
    restored = KpiEngine.restore(BASE, json.loads(json.dumps(rebuilt.snapshot())))
    assert restored.snapshot() == rebuilt.snapshot()
    for s in series(CUT_S, END_S):
        rebuilt.add(s)
    assert rebuilt.snapshot()["device_from"] == {}
