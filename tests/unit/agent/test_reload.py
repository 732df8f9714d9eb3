"""The reload planner (table-driven), carrying engine state across, and the loader front."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.config import AgentConfig
from agent.config.build import engine_spec
from agent.reload import (
    RELOAD_FLAG,
    ReloadPlan,
    carry_engine_state,
    plan_reload,
    rebuild_engine,
    reload_config,
)
from rules.engine import KpiEngine
from rules.types import KpiRecord, Sample

BASE: dict[str, Any] = {
    "agent": {"id": "a1", "state_dir": "/tmp/edge-agent-test-state"},
    "site": {"id": "s1"},
    "kpi": {"windows": ["1m"], "lateness_s": 1.0},
    "mqtt": {"host": "127.0.0.1", "port": 1883, "password": "hunter2-secret"},
    "sources": [
        {"id": "plc", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840"},
        {"id": "gw", "type": "modbus", "port": 5020},
    ],
    "lines": [{"id": "line-a", "output_machine": "cnc-01"}],
    "machines": [
        {"id": "cnc-01", "line": "line-a", "ideal_cycle_time_s": 45.0, "signals": {
            "state": {"source": "plc", "node": "ns=2;s=State1"},
            "parts_total": {"source": "plc", "node": "ns=2;s=Total1"},
            "parts_bad": {"source": "plc", "node": "ns=2;s=Bad1"},
        }},
        {"id": "cnc-02", "line": "line-a", "ideal_cycle_time_s": 30.0, "signals": {
            "state": {"source": "gw", "unit": 1, "table": "holding", "address": 0,
                      "map": {"1": "producing", "2": "idle"}},
            "parts_total": {"source": "gw", "unit": 1, "table": "holding", "address": 2,
                            "type": "u32"},
            "parts_bad": {"source": "gw", "unit": 1, "table": "holding", "address": 4,
                          "type": "u32"},
        }},
    ],
    "meters": [
        {"id": "meter-01", "machine": "cnc-02", "resolution_kwh": 0.1, "signals": {
            "energy_kwh": {"source": "gw", "unit": 2, "table": "holding", "address": 0,
                           "type": "u32", "scale": 0.1},
        }},
    ],
}


def cfg_of(raw: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate(raw)


def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    change(raw)
    return raw


def machine(raw: dict[str, Any], mid: str) -> dict[str, Any]:
    return next(m for m in raw["machines"] if m["id"] == mid)


def _add_machine(raw: dict[str, Any]) -> None:
    raw["machines"].append({"id": "cnc-03", "line": "line-a", "ideal_cycle_time_s": 60.0,
                            "signals": {"state": {"source": "plc", "node": "ns=2;s=State3"},
                                        "parts_total": {"source": "plc",
                                                        "node": "ns=2;s=Total3"}}})


def _good_counter(raw: dict[str, Any]) -> None:
    sig = machine(raw, "cnc-01")["signals"]
    sig["parts_good"] = sig.pop("parts_bad")


@dataclass
class Case:
    name: str
    change: Callable[[dict[str, Any]], None]
    rejected: tuple[str, ...] = ()
    engine_reset: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)  # id -> kind
    machines: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (kind, carry)
    meters: dict[str, tuple[str, str]] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)
    other: int = 0


CASES = [
    Case("unchanged", lambda raw: None),
    Case("one source's url changed",
         lambda raw: raw["sources"][0].update(url="opc.tcp://10.0.0.7:4840"),
         sources={"plc": "changed"},
         # the counters read through a re-pointed source lose their baselines
         machines={"cnc-01": ("changed", "totals")}),
    Case("a source's timeout changed: restart the collector only",
         lambda raw: raw["sources"][0].update(timeout_s=9.0),
         sources={"plc": "changed"}),
    Case("a slow unit's own timeout: restart that collector, keep every count",
         lambda raw: raw["sources"][1].update(units={"2": {"timeout_s": 0.25}}),
         sources={"gw": "changed"}),
    Case("a machine added", _add_machine,
         sources={"plc": "changed"}, machines={"cnc-03": ("added", "none")}),
    Case("a machine removed",
         lambda raw: raw.update(machines=raw["machines"][:1], meters=[]),
         sources={"gw": "changed"}, machines={"cnc-02": ("removed", "none")},
         meters={"meter-01": ("removed", "none")}),
    Case("a machine's ideal cycle changed",
         lambda raw: machine(raw, "cnc-02").update(ideal_cycle_time_s=28.0),
         machines={"cnc-02": ("changed", "all")}),
    Case("a counter register moved",
         lambda raw: machine(raw, "cnc-02")["signals"]["parts_total"].update(address=6),
         sources={"gw": "changed"}, machines={"cnc-02": ("changed", "totals")}),
    Case("a state map changed: collector only, state kept",
         lambda raw: machine(raw, "cnc-02")["signals"]["state"].update(
             map={"1": "producing", "2": "idle", "3": "setup"}),
         sources={"gw": "changed"}),
    Case("scrap counter replaced by a good counter", _good_counter,
         sources={"plc": "changed"}, machines={"cnc-01": ("changed", "none")}),
    Case("a meter register's engineering unit changed: counts restart from a new baseline",
         lambda raw: raw["meters"][0]["signals"]["energy_kwh"].update(
             engineering_unit="MWh"),
         sources={"gw": "changed"}, meters={"meter-01": ("changed", "totals")}),
    Case("meter resolution changed",
         lambda raw: raw["meters"][0].update(resolution_kwh=0.01),
         meters={"meter-01": ("changed", "totals")}),
    Case("a line added",
         lambda raw: raw["lines"].append({"id": "line-b", "output_machine": "cnc-02"}),
         lines={"line-b": "added"}),
    Case("grid factor changed applies live",
         lambda raw: raw["site"].update(grid_factor_kg_per_kwh=0.6), other=1),
    Case("coal basis changed applies live",
         lambda raw: raw.update(energy={"coal_basis": "equal_value",
                                        "equal_value_kgce_per_kwh": 0.3}), other=1),
    Case("an off day added: the engine restarts",
         lambda raw: raw.update(calendar={"off_days": ["2026-10-01"]}),
         engine_reset=("calendar",)),
    Case("windows changed: the engine restarts",
         lambda raw: raw["kpi"].update(windows=["1m", "15m"]),
         engine_reset=("kpi.windows",)),
    Case("time zone changed: the engine restarts",
         lambda raw: raw["site"].update(timezone="Asia/Shanghai"),
         engine_reset=("site.timezone",)),
    Case("site id changed: rejected",
         lambda raw: raw["site"].update(id="s2"), rejected=("site.id",)),
    Case("mqtt changed: rejected",
         lambda raw: raw["mqtt"].update(password="other-secret", port=8883),
         rejected=("[mqtt] changed (port, password)",)),
    Case("state dir changed: rejected",
         lambda raw: raw["agent"].update(state_dir="/elsewhere"), rejected=("[agent]",)),
    Case("outbox changed: rejected",
         lambda raw: raw.update(outbox={"max_bytes": 2**21}), rejected=("[outbox]",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(case: Case) -> None:
    plan = plan_reload(cfg_of(BASE), cfg_of(edit(case.change)))
    assert len(plan.rejected) == len(case.rejected)
    for got, want in zip(plan.rejected, case.rejected, strict=True):
        assert want in got and "restart" in got
    assert "hunter2" not in " ".join(plan.rejected) and "other-secret" not in plan.summary()
    if case.rejected:
        assert not plan.accepted and not plan.changed
        return
    assert plan.accepted
    assert [r.split(" ")[0] for r in plan.engine_reset] == list(case.engine_reset)
    assert {c.id: c.kind for c in plan.sources} == case.sources
    assert {c.id: (c.kind, c.carry) for c in plan.machines} == case.machines
    assert {c.id: (c.kind, c.carry) for c in plan.meters} == case.meters
    assert {c.id: c.kind for c in plan.lines} == case.lines
    assert len(plan.other) == case.other
    for c in (*plan.sources, *plan.machines, *plan.meters, *plan.lines):
        assert c.kind != "changed" or c.reasons, c
    expect_changed = bool(case.engine_reset or case.sources or case.machines or case.meters
                          or case.lines or case.other)
    assert plan.changed == expect_changed
    # everything not named as changed is listed as unchanged (keeps its state)
    assert set(plan.unchanged_sources) == {"plc", "gw"} - set(case.sources)
    named = {m["id"] for m in edit(case.change)["machines"]}
    assert set(plan.unchanged_machines) == named - set(case.machines)


def test_plan_helpers_and_summary() -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["sources"][0].update(url="opc.tcp://h:1")
        machine(raw, "cnc-02").update(ideal_cycle_time_s=28.0)

    plan = plan_reload(cfg_of(BASE), cfg_of(edit(change)))
    assert plan.sources_to_stop == ("plc",) and plan.sources_to_start == ("plc",)
    assert plan.carry("machines", "cnc-02") == "all"
    assert plan.carry("machines", "cnc-01") == "totals"
    assert plan.carry("machines", "nope") == "none"
    text = plan.summary()
    assert "sources: plc changed (url changed)" in text
    assert "ideal_cycle_time_s 30.0 -> 28.0" in text
    assert plan_reload(cfg_of(BASE), cfg_of(BASE)).summary() == "no changes"


# ------------------------------------------------------------- carrying engine state

T0 = 1_800_000_000_000 - (1_800_000_000_000 % 60_000)  # a minute boundary


def samples(t_from_s: int, t_to_s: int, machines: tuple[str, ...]) -> list[Sample]:
    """A part every 10 s on each machine, producing, scrap every 30 s, energy rising."""
    out: list[Sample] = []
    for t in range(t_from_s, t_to_s):
        ts = T0 + t * 1000
        for mid in machines:
            if t == 0 or (mid == "cnc-03" and t == t_from_s):
                out.append(Sample(ts, mid, "state", "producing"))
            if t % 10 == 0:
                out.append(Sample(ts, mid, "parts_total", 1000 + t // 10))
            if t % 30 == 0 and mid != "cnc-03":
                out.append(Sample(ts, mid, "parts_bad", 50 + t // 30))
        if t % 5 == 0:
            out.append(Sample(ts, "meter-01", "energy_kwh", 100.0 + t * 0.1))
    return out


def by_machine(records: list[KpiRecord], window_end: int) -> dict[str | None, KpiRecord]:
    return {r.machine: r for r in records
            if r.window_end_ms == window_end and r.line is not None and r.machine is not None}


def run_with_reload(old: AgentConfig, new: AgentConfig, cut_s: int, end_s: int,
                    after: tuple[str, ...]) -> tuple[list[KpiRecord], ReloadPlan]:
    plan = plan_reload(old, new)
    engine = KpiEngine(engine_spec(old))
    records: list[KpiRecord] = []
    for s in samples(0, cut_s, ("cnc-01", "cnc-02")):
        engine.add(s)
    records += engine.collect().records
    engine = rebuild_engine(engine, engine_spec(new), plan)
    for s in samples(cut_s, end_s, after):
        engine.add(s)
    records += engine.finish(T0 + end_s * 1000).records
    return records, plan


def reference(cfg: AgentConfig, end_s: int, machines: tuple[str, ...]) -> list[KpiRecord]:
    engine = KpiEngine(engine_spec(cfg))
    for s in samples(0, end_s, machines):
        engine.add(s)
    return engine.finish(T0 + end_s * 1000).records


def test_unchanged_machines_keep_their_open_windows_across_a_reload() -> None:
    old = cfg_of(BASE)

    def change(raw: dict[str, Any]) -> None:
        _add_machine(raw)
        machine(raw, "cnc-02").update(ideal_cycle_time_s=28.0)
        raw["machines"].reverse()  # order must not matter: state is matched by id

    new = cfg_of(edit(change))
    got, plan = run_with_reload(old, new, cut_s=25, end_s=90,
                                after=("cnc-01", "cnc-02", "cnc-03"))
    end = T0 + 60_000
    mine = by_machine(got, end)
    # cnc-01 is unchanged: exactly what an engine without a reload computes
    want_old = by_machine(reference(old, 90, ("cnc-01", "cnc-02")), end)
    assert mine["cnc-01"] == want_old["cnc-01"]
    # cnc-02's ideal cycle changed: its whole open window uses the new value
    want_new = by_machine(reference(new, 90, ("cnc-01", "cnc-02")), end)
    assert mine["cnc-02"] == want_new["cnc-02"]
    assert mine["cnc-02"].energy_kwh == want_old["cnc-02"].energy_kwh
    # the added machine only has data from the reload on, and says so
    assert RELOAD_FLAG in mine["cnc-03"].flags
    assert RELOAD_FLAG not in mine["cnc-01"].flags
    # the next window is normal for everyone
    later = by_machine(got, T0 + 120_000)
    assert RELOAD_FLAG not in later["cnc-03"].flags
    assert plan.carry("machines", "cnc-03") == "none"


def test_rebaselined_counter_neither_jumps_nor_loses_the_window() -> None:
    old = cfg_of(BASE)
    new = cfg_of(edit(
        lambda raw: machine(raw, "cnc-01")["signals"]["parts_total"].update(node="ns=2;s=T")))
    plan = plan_reload(old, new)
    engine = KpiEngine(engine_spec(old))
    for s in samples(0, 25, ("cnc-01", "cnc-02")):
        engine.add(s)
    engine = rebuild_engine(engine, engine_spec(new), plan)
    # the new node counts from somewhere else entirely
    for s in samples(25, 90, ("cnc-01", "cnc-02")):
        if s.device == "cnc-01" and s.signal == "parts_total":
            s = Sample(s.ts_ms, s.device, s.signal, int(s.value or 0) + 500_000)
        engine.add(s)
    first = by_machine(engine.finish(T0 + 90_000).records, T0 + 60_000)
    # parts 1..2 before the reload are kept, the jump is not counted, the gap is lost
    assert first["cnc-01"].parts_produced is not None
    assert 0 < first["cnc-01"].parts_produced <= 6
    assert RELOAD_FLAG in first["cnc-01"].flags
    assert first["cnc-01"].producing_time_s == 60


def test_a_reload_keeps_where_observation_started() -> None:
    """An agent that started without a checkpoint 20 s into a minute and is reloaded
    later: the minute is still observed only from the start, for everyone."""
    old = cfg_of(BASE)
    new = cfg_of(edit(lambda raw: machine(raw, "cnc-02").update(ideal_cycle_time_s=28.0)))
    plan = plan_reload(old, new)
    engine = KpiEngine(engine_spec(old))
    engine.observe_from(T0 + 20_000)
    engine.add(Sample(T0 - 3_600_000, "cnc-01", "state", "producing"))  # an initial value
    for s in samples(20, 30, ("cnc-01", "cnc-02")):
        engine.add(s)
    engine = rebuild_engine(engine, engine_spec(new), plan)
    assert engine.observing_from_ms == T0 + 20_000
    for s in samples(30, 90, ("cnc-01", "cnc-02")):
        engine.add(s)
    records = engine.finish(T0 + 90_000).records
    assert min(r.window_end_ms for r in records) == T0 + 60_000
    first = [r for r in records if r.window_end_ms == T0 + 60_000]
    assert {r.observed_s for r in first} == {40.0}
    assert all("incomplete" in r.flags for r in first)
    assert by_machine(records, T0 + 60_000)["cnc-01"].producing_time_s == 40.0


def test_no_carry_for_plant_wide_changes_or_foreign_snapshots() -> None:
    old = cfg_of(BASE)
    new = cfg_of(edit(lambda raw: raw["kpi"].update(windows=["5m"])))
    plan = plan_reload(old, new)
    snap = KpiEngine(engine_spec(old)).snapshot()
    assert carry_engine_state(snap, engine_spec(new), plan) is None
    same = plan_reload(old, old)
    assert carry_engine_state({**snap, "version": 99}, engine_spec(old), same) is None
    fresh = rebuild_engine(KpiEngine(engine_spec(old)), engine_spec(new), plan)
    assert fresh.spec.windows == ("5m",)


def test_a_fresh_engine_after_a_reload_observes_from_the_reload() -> None:
    old = cfg_of(BASE)
    new = cfg_of(edit(lambda raw: raw["kpi"].update(windows=["5m"])))
    fresh = rebuild_engine(KpiEngine(engine_spec(old)), engine_spec(new),
                           plan_reload(old, new), now_ms=T0 + 90_000)
    assert fresh.observing_from_ms == T0 + 90_000
    # A restarted source's initial value, stamped long before the reload, books nothing
    # into the windows before it.
    fresh.add(Sample(T0 - 3_600_000, "cnc-01", "state", "producing"))
    fresh.add(Sample(T0 + 400_000, "cnc-01", "state", "idle"))
    records = fresh.advance(T0 + 900_000).records
    assert records and min(r.window_end_ms for r in records) == T0 + 300_000
    first = [r for r in records if r.window_end_ms == T0 + 300_000]
    assert all("incomplete" in r.flags for r in first)
    assert {r.observed_s for r in first} == {210.0}


def test_alarm_states_follow_their_names() -> None:
    alarm = {"name": "long-idle", "kind": "state_duration", "machine": "cnc-01",
             "state": "idle", "max_duration_s": 5.0}
    old = cfg_of(edit(lambda raw: raw.update(alarms=[alarm])))
    new = cfg_of(edit(lambda raw: raw.update(alarms=[
        {**alarm, "name": "new-one", "max_duration_s": 100.0}, alarm])))
    plan = plan_reload(old, new)
    assert {c.id: c.kind for c in plan.alarms} == {"new-one": "added"}
    engine = KpiEngine(engine_spec(old))
    engine.add(Sample(T0, "cnc-01", "state", "idle"))
    engine.add(Sample(T0 + 70_000, "cnc-01", "parts_total", 1))  # seals the first minute
    raised = engine.collect().alarms
    assert [a.state for a in raised] == ["raised"]
    carried = carry_engine_state(engine.snapshot(), engine_spec(new), plan)
    assert carried is not None
    assert carried["alarms"][1] == engine.snapshot()["alarms"][0]
    restored = KpiEngine.restore(engine_spec(new), carried)
    restored.add(Sample(T0 + 80_000, "cnc-01", "state", "producing"))
    restored.add(Sample(T0 + 130_000, "cnc-01", "parts_total", 2))
    events = restored.collect().alarms
    # the carried alarm clears (it was raised before); the new rule never raised
    assert [(a.state, a.rule) for a in events] == [("cleared", "long-idle")]


# ------------------------------------------------------------------ reload_config


def write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_bytes(tomli_w.dumps(raw).encode())
    return path


async def test_reload_config_invalid_file_keeps_the_running_config(tmp_path: Path) -> None:
    current = cfg_of(BASE)
    bad = edit(lambda raw: machine(raw, "cnc-01").update(ideal_cycle_time_s=-1))
    outcome = await reload_config(write(tmp_path / "agent.toml", bad), current)
    assert outcome.config is current
    assert not outcome.applicable and outcome.plan is None
    assert outcome.errors and "ideal_cycle_time_s" in outcome.errors[0][0]
    assert "running config stays in force" in outcome.message


async def test_reload_config_missing_or_broken_file(tmp_path: Path) -> None:
    current = cfg_of(BASE)
    missing = await reload_config(tmp_path / "nope.toml", current)
    assert missing.config is current and missing.errors == (("", "file not found"),)
    (tmp_path / "broken.toml").write_text("[site\n")
    broken = await reload_config(tmp_path / "broken.toml", current)
    assert broken.config is current and "not valid TOML" in broken.errors[0][1]


async def test_reload_config_rejected_change_keeps_the_running_config(tmp_path: Path) -> None:
    current = cfg_of(BASE)
    raw = edit(lambda raw: raw["site"].update(id="elsewhere"))
    outcome = await reload_config(write(tmp_path / "agent.toml", raw), current)
    assert outcome.config is current and not outcome.applicable
    assert outcome.plan is not None and "site.id" in outcome.message


async def test_reload_config_valid_change(tmp_path: Path) -> None:
    current = cfg_of(BASE)
    raw = edit(lambda raw: machine(raw, "cnc-02").update(ideal_cycle_time_s=28.0))
    outcome = await reload_config(write(tmp_path / "agent.toml", raw), current)
    assert outcome.applicable and outcome.config.machines[1].ideal_cycle_time_s == 28.0
    assert outcome.plan is not None and [c.id for c in outcome.plan.machines] == ["cnc-02"]
    same = await reload_config(write(tmp_path / "same.toml", BASE), current)
    assert not same.applicable and same.message.endswith("no changes")
