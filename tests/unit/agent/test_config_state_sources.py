"""A machine's state from ``state_rules`` over ``inputs`` or from ``power_state``: what
loads, what the engine and the collectors get from it, and every error named by place."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.config import load_agent_config
from agent.config.build import engine_spec, modbus_specs, opcua_specs
from agent.runtime import Agent
from rules.derived_state import StateRulesSpec
from rules.errors import ConfigError
from rules.power_state import CycleSpec, PowerStateSpec

BASE: dict[str, Any] = {
    "site": {"id": "s"},
    "agent": {"state_dir": "/nonexistent"},
    "sources": [{"id": "plc", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840"},
                {"id": "gw", "type": "modbus", "host": "127.0.0.1", "port": 5020}],
    "lines": [{"id": "L", "output_machine": "cnc-01"}],
    "machines": [
        {"id": "cnc-01", "line": "L", "ideal_cycle_time_s": 45.0,
         "signals": {"parts_total": {"source": "plc", "node": "ns=2;s=Parts"},
                     "parts_bad": {"source": "plc", "node": "ns=2;s=Scrap"}},
         "inputs": {"emergency_stop": {"source": "plc", "node": "ns=2;s=EStop"},
                    "program_running": {"source": "plc", "node": "ns=2;s=Run"},
                    "mode": {"source": "gw", "unit": 3, "table": "holding",
                             "address": 10, "type": "u16"}},
         "state_rules": [{"when": "emergency_stop", "state": "unplanned_down"},
                         {"when": "program_running and mode == 1", "state": "producing"},
                         {"when": "mode == 2", "state": "setup"},
                         {"state": "idle"}]},
        {"id": "saw-02", "line": "L", "ideal_cycle_time_s": 30.0,
         "power_state": {"off_below_kw": 0.5, "producing_above_kw": 8.0,
                         "hysteresis_kw": 0.5, "min_dwell_s": 5.0,
                         "cycles": {"above_kw": 10.0, "min_s": 20.0, "max_s": 90.0}}},
        {"id": "press-03", "line": "L", "ideal_cycle_time_s": 12.0,
         "signals": {"power_kw": {"source": "gw", "unit": 5, "table": "input",
                                  "address": 0, "type": "f32"}},
         "power_state": {"off_below_kw": 0.2, "producing_above_kw": 3.0}},
    ],
    "meters": [{"id": "meter-02", "machine": "saw-02", "source": "gw", "unit": 2,
                "preset": "sdm630"}],
}


def _load(tmp_path: Path, raw: dict[str, Any]) -> Any:
    path = tmp_path / "agent.toml"
    path.write_text(tomli_w.dumps(raw))
    return load_agent_config(path)


def test_the_engine_and_the_collectors_get_the_derived_states(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE)
    spec = engine_spec(cfg)
    rules, saw, press = (m.state_from for m in spec.machines)
    assert isinstance(rules, StateRulesSpec)
    assert rules.inputs == ("emergency_stop", "program_running", "mode")
    assert [r.state for r in rules.rules] == ["unplanned_down", "producing", "setup", "idle"]
    assert saw == PowerStateSpec("meter-02", 0.5, 8.0, 0.5, 5.0, CycleSpec(10.0, 20.0, 90.0))
    assert press == PowerStateSpec("press-03", 0.2, 3.0)
    tags = {(t.device, t.signal) for spec_ in opcua_specs(cfg) for t in spec_.tags}
    assert {("cnc-01", "emergency_stop"), ("cnc-01", "program_running")} <= tags
    points = {(p.device, p.signal) for spec_ in modbus_specs(cfg)
              for dev in spec_.devices for p in dev.points}
    assert {("cnc-01", "mode"), ("meter-02", "power_kw"), ("press-03", "power_kw")} <= points
    assert ("cnc-01", "mode", cfg.machines[0].inputs["mode"]) in cfg.signals()


def test_the_restart_hold_does_not_wait_for_a_machine_read_through_its_meter(
        tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    raw["agent"] = {"state_dir": str(tmp_path / "state")}
    agent = Agent(_load(tmp_path, raw))
    try:
        assert agent._devices() == {"cnc-01", "press-03", "meter-02"}
    finally:
        agent.outbox.close()


Mutation = Callable[[dict[str, Any]], None]


def _m(i: int, **changes: Any) -> Mutation:
    def apply(raw: dict[str, Any]) -> None:
        raw["machines"][i].update(changes)
    return apply


def _rule(j: int, **changes: Any) -> Mutation:
    def apply(raw: dict[str, Any]) -> None:
        raw["machines"][0]["state_rules"][j].update(changes)
    return apply


def _power(i: int, **changes: Any) -> Mutation:
    def apply(raw: dict[str, Any]) -> None:
        raw["machines"][i]["power_state"].update(changes)
    return apply


def _input(name: str, sig: dict[str, Any]) -> Mutation:
    def apply(raw: dict[str, Any]) -> None:
        raw["machines"][0]["inputs"][name] = sig
    return apply


PLC = {"source": "plc", "node": "ns=2;s=X"}
CNC = 'machines[0] "cnc-01"'
SAW = 'machines[1] "saw-02"'
PRESS = 'machines[2] "press-03"'


@pytest.mark.parametrize(("mutate", "expected"), [
    (_rule(1, when="program_running and spindle_on"),
     f"{CNC}: state_rules[1].when: 'spindle_on' is not an input of the machine"),
    (_rule(1, when="program_running and"), f"{CNC}: state_rules[1]: when: syntax error"),
    (_rule(2, when="mode * 2 == 4"), f"{CNC}: state_rules[2]: when: arithmetic is not "
                                     "allowed"),
    (_rule(2, when="__import__('os').system('x')"), f"{CNC}: state_rules[2]: when: a "
                                                    "function call is not allowed"),
    (_rule(0, state="stopped"), f"{CNC}: state_rules[0]: state: 'stopped' is not a machine "
                                "state"),
    (_rule(3, when="not emergency_stop"), f"{CNC}: state_rules[3].when: the last rule "
                                          "must leave out 'when'"),
    (lambda raw: raw["machines"][0]["state_rules"][0].pop("when"),
     f"{CNC}: state_rules[0].when: only the last rule may leave out 'when'"),
    (lambda raw: raw["machines"][0]["signals"].update(
        state={**PLC, "map": {"1": "producing"}}),
     f"{CNC}: signals.state: the state comes from one place: give signals.state or "
     "state_rules, not both"),
    (_input("parts_total", PLC), f"{CNC}: inputs.parts_total: 'parts_total' is a role"),
    (_input("and", PLC), f"{CNC}: inputs.and: 'and' cannot name an input"),
    (_input("spindle-on", PLC), f"{CNC}: inputs.spindle-on: 'spindle-on' cannot name"),
    (_input("door", {**PLC, "map": {"1": "idle"}}), f"{CNC}: inputs.door.map: an input is "
                                                    "compared as a number"),
    (_input("door", {"source": "plc9", "node": "ns=2;s=D"}),
     f'{CNC}: inputs.door.source: source "plc9" is not defined'),
    (_input("door", {"source": "gw", "table": "coil", "address": 1}),
     f"{CNC}: inputs.door.unit: a Modbus signal needs the unit"),
    (_input("load", {**PLC, "engineering_unit": "kW"}),
     f"{CNC}: inputs.load.engineering_unit: load is not measured in a unit"),
    (_m(0, state_rules=[]), f"{CNC}: inputs: inputs are read for state_rules only"),
    (_m(0, signals={"parts_bad": {"source": "plc", "node": "ns=2;s=Scrap"}}),
     f"{CNC}: signals.parts_total: required role is not configured"),
    (_m(1, state_rules=[{"state": "idle"}]), f"{SAW}: power_state: give state_rules or "
                                             "power_state, not both"),
    (_power(1, hysteresis_kw=7.5), f"{SAW}: power_state: hysteresis_kw (7.5) must be "
                                   "smaller than producing_above_kw - off_below_kw (7.5)"),
    (_power(1, producing_above_kw=0.5), f"{SAW}: power_state: producing_above_kw (0.5) "
                                        "must be above off_below_kw"),
    (_power(1, min_dwell_s=-1), f"{SAW}: power_state.min_dwell_s: Input should be "
                                "greater than or equal to 0"),
    (_power(1, cycles={"above_kw": 10.0, "min_s": 90.0, "max_s": 20.0}),
     f"{SAW}: power_state.cycles: max_s (20) is below min_s (90)"),
    (_power(1, meter="meter-09"), f'{SAW}: power_state.meter: meter "meter-09" is not '
                                  "defined"),
    (_power(2, meter="meter-02"), f'{PRESS}: power_state.meter: meter "meter-02" measures '
                                  'machine "saw-02", not this machine'),
    (lambda raw: raw["meters"].clear(), f"{SAW}: power_state: no power to read"),
    (lambda raw: raw["meters"].append({"id": "meter-22", "machine": "saw-02", "source": "gw",
                                       "unit": 22, "preset": "em24"}),
     f"{SAW}: power_state: meters 'meter-02', 'meter-22' all measure this machine"),
    (lambda raw: raw["meters"].__setitem__(0, {"id": "meter-02", "machine": "saw-02",
                                               "signals": {"energy_kwh": {**PLC}}}),
     f"{SAW}: power_state: no power to read"),
    (_m(1, signals={"parts_total": {**PLC}}), f"{SAW}: power_state.cycles: parts come "
                                              "from one place"),
    (_m(1, signals={"state": {**PLC, "map": {"1": "idle"}}}),
     f"{SAW}: signals.state: the state comes from one place: give signals.state or "
     "power_state, not both"),
])
def test_errors_name_their_place(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, raw)
    lines = info.value.render().splitlines()
    assert any(expected in line for line in lines), "\n".join(lines)


def test_a_power_machine_needs_no_counters(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE)
    saw = cfg.machines[1]
    assert saw.signals.parts_total is None and saw.signals.parts_bad is None
    assert saw.power_state is not None and saw.power_state.meter is None


def test_the_commissioning_examples_load(tmp_path: Path) -> None:
    """The TOML examples of docs/commissioning.md, "Machines without a controller", are
    valid configs (with the site, sources and line they assume)."""
    import re

    doc = (Path(__file__).resolve().parents[3] / "docs" / "commissioning.md").read_text()
    section = doc.split("## Machines without a controller", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    head = ('[site]\nid = "s"\n[[sources]]\nid = "plc"\ntype = "opcua"\n'
            'url = "opc.tcp://127.0.0.1:4840"\n[[sources]]\nid = "gw"\ntype = "modbus"\n'
            'host = "127.0.0.1"\nport = 5020\n[[lines]]\nid = "line-a"\n')
    for block in blocks:
        machine = re.search(r'^id = "([^"]+)"', block, flags=re.MULTILINE)
        assert machine is not None
        path = tmp_path / "agent.toml"
        path.write_text(head + f'output_machine = "{machine.group(1)}"\n' + block)
        cfg = load_agent_config(path)
        assert engine_spec(cfg).machines[0].state_from is not None


def test_a_reload_applies_new_thresholds_and_rules(tmp_path: Path) -> None:
    """Changing only how a state is derived is a machine change: the running engine is
    rebuilt with it (the open windows' totals kept, flagged), not left deriving the old way."""
    from agent.reload import plan_reload, rebuild_engine
    from rules.engine import KpiEngine
    from rules.types import Sample

    old = _load(tmp_path, BASE)
    raw = copy.deepcopy(BASE)
    raw["machines"][1]["power_state"]["producing_above_kw"] = 12.0
    raw["machines"][0]["state_rules"][2]["state"] = "planned_down"
    new = _load(tmp_path, raw)
    plan = plan_reload(old, new)
    changed = {c.id: c for c in plan.machines}
    assert set(changed) == {"cnc-01", "saw-02"} and plan.engine_changed
    assert changed["saw-02"].carry == "totals"
    assert "power_state" in " ".join(changed["saw-02"].reasons)
    t0 = 1_767_254_400_000
    engine = KpiEngine(engine_spec(old))
    engine.add(Sample(t0, "meter-02", "power_kw", 10.0))
    rebuilt = rebuild_engine(engine, engine_spec(new), plan, now_ms=t0 + 1)
    saw = rebuilt.spec.machines[1].state_from
    assert isinstance(saw, PowerStateSpec) and saw.producing_above_kw == 12.0
    assert plan_reload(old, _load(tmp_path, BASE)).machines == ()
