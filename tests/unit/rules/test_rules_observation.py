"""The observation boundary: a record only for what the engine observed.

Each case is a stream of events (samples, and ``OBSERVE`` markers standing for
:meth:`KpiEngine.observe_from`) and the records it must give. Samples are fed in the
order listed (arrival order, as a collector delivers them), not sorted by time: an OPC UA
initial value arrives after the start, dated long before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import time
from typing import Any

import pytest
from rules_helpers import T0, H, M, S, one_machine, smp

from rules.engine import SNAPSHOT_VERSION, EngineOutput, KpiEngine
from rules.spec import EngineSpec, ShiftSpec
from rules.types import KpiRecord, Sample

ABSENT: dict[str, Any] = {"absent": True}


@dataclass(frozen=True)
class Observe:
    """``observe_from(ts_ms)`` at this point of the stream."""

    ts_ms: int


Event = Sample | Observe


def feed(engine: KpiEngine, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, Observe):
            engine.observe_from(event.ts_ms)
        else:
            engine.add(event)


def records_of(spec: EngineSpec, events: list[Event], end: int | None) -> list[KpiRecord]:
    engine = KpiEngine(spec)
    feed(engine, events)
    return engine.finish(end).records


@dataclass(frozen=True)
class Case:
    name: str
    spec: EngineSpec
    events: list[Event]
    end: int | None
    # (window label, window start) -> expected machine-record fields, or ABSENT
    expect: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


WINDOWS = ("15m", "1h")
LATE = 2 * 3600.0  # meters read every few minutes are still on time: no energy_carried

CASES = [
    Case(
        "fresh start mid-window, initial values dated long before it",
        one_machine(windows=WINDOWS, lateness_s=LATE),
        [
            Observe(T0 + 20 * M),
            smp(T0 - 60 * M, "m1", "state", "producing"),
            smp(T0 - 30 * M, "m1", "parts_total", 100),
            smp(T0 - 90 * M, "e1", "energy_kwh", 500.0),
            smp(T0 + 29 * M, "m1", "parts_total", 110),
            smp(T0 + 30 * M, "e1", "energy_kwh", 505.0),
            smp(T0 + 59 * M, "m1", "parts_total", 130),
            smp(T0 + 60 * M, "e1", "energy_kwh", 506.0),
        ],
        None,
        {
            ("1h", T0 - H): ABSENT,
            ("15m", T0 - 15 * M): ABSENT,
            ("15m", T0): ABSENT,
            ("15m", T0 + 15 * M): {
                "observed_s": 600.0, "planned_busy_time_s": 600.0, "producing_time_s": 600.0,
                "parts_produced": 10, "energy_kwh": 5.0, "incomplete": True},
            ("15m", T0 + 30 * M): {
                "observed_s": 900.0, "planned_busy_time_s": 900.0, "parts_produced": 0,
                "energy_kwh": 0.5, "incomplete": False},
            ("15m", T0 + 45 * M): {
                "observed_s": 900.0, "parts_produced": 20, "energy_kwh": 0.5,
                "incomplete": False},
            ("1h", T0): {
                "observed_s": 2400.0, "planned_busy_time_s": 2400.0,
                "producing_time_s": 2400.0, "parts_produced": 30, "energy_kwh": 6.0,
                "incomplete": True},
        },
    ),
    Case(
        "no observation start given: observed from the oldest sample",
        one_machine(windows=WINDOWS, meters=()),
        [
            smp(T0 + 20 * M, "m1", "state", "producing"),
            smp(T0 + 20 * M, "m1", "parts_total", 100),
            smp(T0 + 29 * M, "m1", "parts_total", 110),
            smp(T0 + 59 * M, "m1", "parts_total", 130),
            smp(T0 + 60 * M, "m1", "parts_total", 131),
        ],
        None,
        {
            ("15m", T0): ABSENT,
            ("15m", T0 + 15 * M): {"observed_s": 600.0, "parts_produced": 10,
                                   "incomplete": True},
            ("1h", T0): {"observed_s": 2400.0, "parts_produced": 30, "incomplete": True},
            # The window starting at the last sample's instant keeps that sample.
            ("1h", T0 + H): {"observed_s": 0.0, "parts_produced": 1, "incomplete": True},
        },
    ),
    Case(
        "restart without a checkpoint mid-stream: the downtime is not observed",
        one_machine(windows=WINDOWS, lateness_s=LATE),
        [
            smp(T0, "m1", "state", "producing"),
            smp(T0, "m1", "parts_total", 100),
            smp(T0, "e1", "energy_kwh", 500.0),
            smp(T0 + 10 * M - 1, "m1", "parts_total", 120),
            smp(T0 + 10 * M - 1, "e1", "energy_kwh", 502.0),
            Observe(T0 + 35 * M),
            smp(T0 + 20 * M, "m1", "state", "idle"),  # changed while no agent ran
            smp(T0 + 25 * M, "m1", "parts_total", 150),  # a new baseline, not +30
            smp(T0 + 25 * M, "e1", "energy_kwh", 510.0),  # likewise, not +8 kWh
            smp(T0 + 50 * M, "m1", "parts_total", 160),
            smp(T0 + 60 * M, "e1", "energy_kwh", 513.0),
        ],
        None,
        {
            ("15m", T0): {"observed_s": 600.0, "producing_time_s": 600.0,
                          "planned_busy_time_s": 600.0, "parts_produced": 20,
                          "energy_kwh": 2.0, "incomplete": True},
            ("15m", T0 + 15 * M): ABSENT,
            ("15m", T0 + 30 * M): {"observed_s": 600.0, "idle_time_s": 600.0,
                                   "producing_time_s": 0.0, "parts_produced": 0,
                                   "energy_kwh": 1.2, "incomplete": True},
            ("15m", T0 + 45 * M): {"observed_s": 900.0, "idle_time_s": 900.0,
                                   "parts_produced": 10, "energy_kwh": 1.8,
                                   "incomplete": False},
            ("1h", T0): {"observed_s": 2100.0, "producing_time_s": 600.0,
                         "idle_time_s": 1500.0, "planned_busy_time_s": 2100.0,
                         "parts_produced": 30, "energy_kwh": 5.0, "incomplete": True},
        },
    ),
    Case(
        "two starts with nothing in between: the later one counts",
        one_machine(windows=WINDOWS, meters=()),
        [
            Observe(T0 + 5 * M),
            Observe(T0 + 20 * M),
            smp(T0 - H, "m1", "state", "setup"),
            smp(T0 + 60 * M, "m1", "state", "setup"),
        ],
        T0 + H,
        {
            ("15m", T0): ABSENT,
            ("15m", T0 + 15 * M): {"observed_s": 600.0, "setup_time_s": 600.0},
            ("1h", T0): {"observed_s": 2400.0, "setup_time_s": 2400.0, "incomplete": True},
        },
    ),
    Case(
        "start in a planned break: no unknown scheduled time, still incomplete",
        one_machine(windows=("1h",), meters=(), shifts=(
            ShiftSpec("A", time(8, 0), time(16, 0), ((time(12, 0), time(12, 30)),)),)),
        [
            Observe(T0 + 4 * H + 10 * M),
            smp(T0 + 3 * H, "m1", "state", "producing"),
            smp(T0 + 5 * H, "m1", "state", "producing"),
        ],
        T0 + 5 * H,
        {
            ("1h", T0 + 3 * H): ABSENT,
            ("1h", T0 + 4 * H): {"observed_s": 3000.0, "planned_busy_time_s": 1800.0,
                                 "producing_time_s": 1800.0, "availability": 1.0,
                                 "incomplete": True},
        },
    ),
    Case(
        "observed before the first sample arrived: recorded, its state unknown",
        one_machine(windows=("15m",), meters=()),
        [
            Observe(T0 + 5 * M),
            smp(T0 + 40 * M, "m1", "state", "idle"),
            smp(T0 + 60 * M, "m1", "state", "idle"),
        ],
        T0 + H,
        {
            ("15m", T0): {"observed_s": 600.0, "planned_busy_time_s": 0.0,
                          "incomplete": True},
            ("15m", T0 + 15 * M): {"observed_s": 900.0, "planned_busy_time_s": 0.0,
                                   "incomplete": True},
            ("15m", T0 + 30 * M): {"observed_s": 900.0, "idle_time_s": 300.0,
                                   "incomplete": True},
            ("15m", T0 + 45 * M): {"observed_s": 900.0, "idle_time_s": 900.0,
                                   "incomplete": False},
        },
    ),
]


def _machine_records(records: list[KpiRecord]) -> dict[tuple[str, int], KpiRecord]:
    out = {}
    for r in records:
        if r.machine == "m1":
            assert (r.window, r.window_start_ms) not in out
            out[(r.window, r.window_start_ms)] = r
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_observation_cases(case: Case) -> None:
    records = records_of(case.spec, case.events, case.end)
    by_window = _machine_records(records)
    for key, want in case.expect.items():
        got = by_window.get(key)
        if want.get("absent"):
            assert got is None, f"{key}: emitted, expected none: {got}"
            continue
        assert got is not None, f"{key}: no record"
        for name, value in want.items():
            if name == "incomplete":
                assert ("incomplete" in got.flags) is value, (key, got.flags)
            elif isinstance(value, float):
                assert getattr(got, name) == pytest.approx(value, abs=1e-9), (key, name)
            else:
                assert getattr(got, name) == value, (key, name)
    # Line and site records of a window carry the machine record's observed_s.
    for r in records:
        own = by_window[(r.window, r.window_start_ms)]
        assert r.observed_s == own.observed_s, r
        assert r.observed_s is not None
        assert 0 <= r.observed_s <= (r.window_end_ms - r.window_start_ms) / 1000
        complete = r.observed_s == (r.window_end_ms - r.window_start_ms) / 1000
        if not complete:
            assert "incomplete" in r.flags, r


def test_nothing_before_the_first_start_is_emitted() -> None:
    """The first start of a site with a 15m/1h plan: the hour in progress is one
    incomplete record, and no empty records are made for the quarters before."""
    spec = one_machine(windows=("1m", "15m", "1h"))
    start = T0 + 47 * M + 30 * S
    events: list[Event] = [Observe(start), smp(T0 - 5 * H, "m1", "state", "producing"),
                           smp(T0 - 5 * H, "m1", "parts_total", 7)]
    events += [smp(start + i * 10 * S, "e1", "energy_kwh", 100.0 + i) for i in range(80)]
    records = records_of(spec, events, start + 800 * S)
    assert records
    assert min(r.window_end_ms for r in records) > start
    first = [r for r in records if r.window_start_ms <= start < r.window_end_ms]
    assert {r.window for r in first} == {"1m", "15m", "1h"}
    assert all("incomplete" in r.flags for r in first)
    assert {(r.window, r.observed_s) for r in first} == {
        ("1m", 30.0), ("15m", 750.0), ("1h", 750.0)}
    assert all(r.parts_produced == 0 for r in records)  # 7 is a baseline


def test_a_start_earlier_than_what_was_seen_moves_after_it() -> None:
    engine = KpiEngine(one_machine(windows=("15m",)))
    assert engine.observing_from_ms is None
    engine.add(smp(T0 + 10 * M, "m1", "state", "idle"))
    engine.observe_from(T0)
    assert engine.observing_from_ms == T0 + 10 * M + 1
    engine.observe_from(T0 + 12 * M)
    assert engine.observing_from_ms == T0 + 12 * M


def _snapshot_json(engine: KpiEngine) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(engine.snapshot()))
    return data


@pytest.mark.parametrize("lateness_s", [5.0, LATE])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_checkpoint_anywhere_around_a_start_changes_nothing(
    case: Case, lateness_s: float
) -> None:
    """Snapshot, JSON round trip and restore after every event (kill -9 and restart
    with the checkpoint), including right after the observation start itself."""
    spec = replace(case.spec, lateness_s=lateness_s)
    whole = records_of(spec, case.events, case.end)
    for cut in range(len(case.events) + 1):
        first = KpiEngine(spec)
        feed(first, case.events[:cut])
        early = first.collect()
        second = KpiEngine.restore(spec, _snapshot_json(first))
        assert second.snapshot() == first.snapshot()
        feed(second, case.events[cut:])
        # A window closed before the cut may come again, revised, after it (a meter's
        # closing reading arrived later); downstream the latest copy of a key wins.
        assert _latest(early.records + second.finish(case.end).records) == _latest(whole), cut


def _latest(records: list[KpiRecord]) -> dict[tuple[Any, ...], KpiRecord]:
    out: dict[tuple[Any, ...], KpiRecord] = {}
    for r in records:
        out[(r.site, r.line, r.machine, r.window, r.window_end_ms)] = r
    return out


def _as_v1(state: dict[str, Any]) -> dict[str, Any]:
    """What a version 1 engine would have stored in the same place."""
    old = {k: v for k, v in state.items() if k not in ("observe_from", "gaps")}
    old["version"] = 1
    old["open"] = [[i, a, b, {k: v for k, v in t.items() if k != "observed"}]
                   for i, a, b, t in state["open"]]
    old["out_records"] = [{k: v for k, v in r.items() if k != "observed_s"}
                          for r in state["out_records"]]
    return old


@pytest.mark.parametrize("live", [False, True])
def test_a_version_1_checkpoint_restores_as_observed_since_its_oldest_sample(
    live: bool,
) -> None:
    spec = one_machine(windows=("15m", "1h"))
    events = [smp(T0 + 20 * M + i * M, "m1", "parts_total", i) for i in range(30)]
    events += [smp(T0 + 20 * M + i * M, "e1", "energy_kwh", 10.0 + i) for i in range(30)]
    events.sort(key=lambda s: s.ts_ms)
    whole = KpiEngine(spec)
    old = KpiEngine(spec)
    want: list[EngineOutput] = []
    got: list[EngineOutput] = []
    for s in events[:40]:
        whole.add(s)
        old.add(s)
    if live:
        want.append(whole.advance(events[39].ts_ms))
        got.append(old.advance(events[39].ts_ms))
    restored = KpiEngine.restore(spec, _as_v1(_snapshot_json(old)))
    assert restored.snapshot()["version"] == SNAPSHOT_VERSION
    for s in events[40:]:
        whole.add(s)
        restored.add(s)
    want.append(whole.finish())
    got.append(restored.finish())
    assert [r for o in got for r in o.records] == [r for o in want for r in o.records]


def test_an_unknown_snapshot_version_is_refused() -> None:
    spec = one_machine()
    state = _snapshot_json(KpiEngine(spec))
    state["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        KpiEngine.restore(spec, state)
