"""The machine model: determinism, consistent counters, states that follow the calendar."""

from __future__ import annotations

import random
from collections import Counter

from simulators.machine import CounterEvent, Machine, MachineEvent, PartDone, StateChange
from simulators.scenario import (
    CalendarSpec,
    CyclicCalendarSpec,
    MachineSpec,
    default_scenario,
)
from simulators.schedule import Calendar

T0 = 1_790_000_000_000  # a fixed instant, aligned to the minute


def _spec(**changes: object) -> MachineSpec:
    base = default_scenario(machines=1, seed=1, fast=True).machines[0]
    return base.model_copy(update=changes)


def _run(machine: Machine, until_ms: int, step_ms: int = 137) -> list[MachineEvent]:
    events: list[MachineEvent] = []
    t = machine.now_ms
    while t < until_ms:
        t = min(until_ms, t + step_ms)
        events += machine.advance_to(t)
    return events


def _machine(spec: MachineSpec, calendar: CalendarSpec | None = None, seed: str = "s") -> Machine:
    return Machine(spec, Calendar(calendar or CalendarSpec()), random.Random(seed), T0)


def test_same_seed_same_history_whatever_the_step_size() -> None:
    a = _run(_machine(_spec()), T0 + 600_000, step_ms=1000)
    b = _run(_machine(_spec()), T0 + 600_000, step_ms=7)
    c = _run(_machine(_spec(), seed="other"), T0 + 600_000, step_ms=1000)
    assert a == b
    assert a != c


def test_counters_match_the_events() -> None:
    spec = _spec()
    machine = _machine(spec)
    events = _run(machine, T0 + 3_600_000)
    parts = [e for e in events if isinstance(e, PartDone)]
    assert len(parts) > 500
    scrap = sum(1 for p in parts if not p.good)
    assert machine.parts_total == spec.initial_parts_total + len(parts)
    assert machine.parts_scrap == spec.initial_parts_scrap + scrap
    assert 0.02 < scrap / len(parts) < 0.12  # scrap probability 0.06
    totals = [p.parts_total for p in parts]
    assert totals == list(range(spec.initial_parts_total + 1, machine.parts_total + 1))
    stamps = [e.ts_ms for e in events]
    assert stamps == sorted(stamps)


def test_every_state_occurs_and_transitions_are_real_changes() -> None:
    calendar = CalendarSpec(cyclic=CyclicCalendarSpec(period_s=60, breaks=[(50, 55)],
                                                      off=[(20, 25)]))
    machine = _machine(_spec(), calendar)
    events = _run(machine, T0 + 1_800_000)
    changes = [e for e in events if isinstance(e, StateChange)]
    seen = Counter(e.state for e in changes)
    assert set(seen) == {"off", "idle", "producing", "setup", "unplanned_down", "planned_down"}
    previous: str | None = None
    for change in changes:
        assert change.state != previous
        previous = change.state
    for change in changes:
        phase = change.ts_ms % 60_000
        if change.state == "planned_down":
            assert phase == 50_000
        if change.state == "off":
            assert phase == 20_000


def test_parts_only_complete_while_producing() -> None:
    calendar = CalendarSpec(cyclic=CyclicCalendarSpec(period_s=30, breaks=[(20, 30)]))
    events = _run(_machine(_spec(), calendar), T0 + 600_000)
    for event in events:
        if isinstance(event, PartDone):
            assert event.ts_ms % 30_000 <= 20_000


def test_breakdowns_follow_mtbf() -> None:
    machine = _machine(_spec(mtbf_s=20.0))
    events = _run(machine, T0 + 1_800_000)
    downs = [e for e in events if isinstance(e, StateChange) and e.state == "unplanned_down"]
    assert len(downs) > 20
    no_failures = _machine(_spec(mtbf_s=None))
    events = _run(no_failures, T0 + 1_800_000)
    assert not [e for e in events if isinstance(e, StateChange) and e.state == "unplanned_down"]


def test_counter_wraps_at_its_modulus() -> None:
    machine = _machine(_spec(initial_parts_total=2**32 - 3, initial_parts_scrap=0))
    events = _run(machine, T0 + 120_000)
    wraps = [e for e in events if isinstance(e, CounterEvent) and e.kind == "rollover"]
    assert wraps and wraps[0].before == 2**32 - 1 and wraps[0].after == 0
    parts = [e for e in events if isinstance(e, PartDone)]
    assert [p.parts_total for p in parts[:4]] == [2**32 - 2, 2**32 - 1, 0, 1]


def test_reset_counters() -> None:
    machine = _machine(_spec())
    _run(machine, T0 + 30_000)
    events = machine.reset_counters(T0 + 30_000)
    resets = [e for e in events if isinstance(e, CounterEvent)]
    assert {(e.signal, e.after) for e in resets} == {("parts_total", 0), ("parts_scrap", 0)}
    assert machine.parts_total == 0 and machine.parts_scrap == 0
    parts = [e for e in _run(machine, T0 + 60_000) if isinstance(e, PartDone)]
    assert machine.parts_total == len(parts)
