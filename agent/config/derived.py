"""A machine's state from other signals than ``signals.state``: the config's side.

``[[machines.state_rules]]`` over ``[machines.inputs.<name>]`` (:mod:`rules.derived_state`)
or ``[machines.power_state]`` (:mod:`rules.power_state`). The checks here name their
config place; :func:`state_from_spec` builds what the engine takes from a validated
config.
"""

from __future__ import annotations

import re

from agent.config.load import label
from agent.config.model import AgentConfig, MachineSection, MeterSection
from rules.derived_state import (
    RESERVED_NAMES,
    StateRule,
    StateRulesSpec,
    parse_condition,
)
from rules.power_state import CycleSpec, PowerStateSpec

__all__ = ["check_state_sources", "power_device", "state_from_spec"]

Problems = list[tuple[str, str]]

_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ROLE_NAMES = frozenset({"state", "parts_total", "parts_bad", "parts_good", "power_kw",
                         "energy_kwh", "reading"})


def _reads_power(mt: MeterSection) -> bool:
    """A meter that reads ``power_kw``: its own signal, or a preset (every preset maps it)."""
    return mt.signals.power_kw is not None or mt.preset is not None


def power_device(cfg: AgentConfig, m: MachineSection) -> tuple[str | None, str]:
    """The device whose ``power_kw`` gives the state of ``m``, or None and why not."""
    ps = m.power_state
    assert ps is not None
    if ps.meter is not None:
        meter = next((mt for mt in cfg.meters if mt.id == ps.meter), None)
        if meter is None:
            return None, f'meter "{ps.meter}" is not defined'
        if meter.machine != m.id:
            whose = (f'machine "{meter.machine}"' if meter.machine is not None
                     else f'line "{meter.line}"')
            return None, f'meter "{ps.meter}" measures {whose}, not this machine'
        if not _reads_power(meter):
            return None, (f'meter "{ps.meter}" reads no power: give it signals.power_kw or '
                          "a preset")
        return meter.id, ""
    if m.signals.power_kw is not None:
        return m.id, ""
    found = [mt.id for mt in cfg.meters if mt.machine == m.id and _reads_power(mt)]
    if len(found) == 1:
        return found[0], ""
    if not found:
        return None, ("no power to read: give signals.power_kw, or a meter of this machine "
                      "that reads power_kw (or has a preset)")
    return None, (f"meters {', '.join(map(repr, found))} all measure this machine: name "
                  "one with power_state.meter")


def _rules_spec(m: MachineSection) -> StateRulesSpec:
    return StateRulesSpec(
        inputs=tuple(m.inputs),
        rules=tuple(StateRule(r.state, None if r.when is None else parse_condition(r.when),
                              r.when or "") for r in m.state_rules))


def _power_spec(device: str, m: MachineSection) -> PowerStateSpec:
    ps = m.power_state
    assert ps is not None
    cycles = None if ps.cycles is None else CycleSpec(ps.cycles.above_kw, ps.cycles.min_s,
                                                      ps.cycles.max_s)
    return PowerStateSpec(device=device, off_below_kw=ps.off_below_kw,
                          producing_above_kw=ps.producing_above_kw,
                          hysteresis_kw=ps.hysteresis_kw, min_dwell_s=ps.min_dwell_s,
                          cycles=cycles)


def state_from_spec(cfg: AgentConfig, m: MachineSection
                    ) -> StateRulesSpec | PowerStateSpec | None:
    """What the engine derives the state of ``m`` from (None: ``signals.state``)."""
    if m.state_rules:
        return _rules_spec(m)
    if m.power_state is not None:
        device, _ = power_device(cfg, m)
        return _power_spec(device or m.id, m)
    return None


def _check_machine(cfg: AgentConfig, i: int, m: MachineSection) -> Problems:
    where = label("machines", i, m.id)
    out: Problems = []
    rules, power = bool(m.state_rules), m.power_state is not None
    if m.signals.state is not None and (rules or power):
        out.append((f"{where}: signals.state", "the state comes from one place: give "
                    f"signals.state or {'state_rules' if rules else 'power_state'}, not both"))
    if rules and power:
        out.append((f"{where}: power_state", "give state_rules or power_state, not both"))
    if m.inputs and not rules:
        out.append((f"{where}: inputs", "inputs are read for state_rules only; add "
                    "[[machines.state_rules]] or remove them"))
    for name, sig in m.inputs.items():
        at = f"{where}: inputs.{name}"
        if not _INPUT_NAME.match(name) or name in RESERVED_NAMES:
            out.append((at, f"{name!r} cannot name an input: use letters, digits and '_', "
                        "starting with a letter, and none of "
                        f"{', '.join(sorted(RESERVED_NAMES))}"))
        elif name in _ROLE_NAMES:
            out.append((at, f"{name!r} is a role: name the input otherwise (a role is "
                        "configured under signals)"))
        if sig.map is not None:
            out.append((f"{at}.map", "an input is compared as a number; map is for "
                        "signals.state"))
    if rules:
        out += [(f"{where}: {p}", msg) for p, msg in _rules_spec(m).problems()]
    if power:
        device, why = power_device(cfg, m)
        if device is None:
            out.append((f"{where}: power_state" + (".meter" if m.power_state and
                                                   m.power_state.meter else ""), why))
        else:
            out += [(f"{where}: {p}", msg) for p, msg in _power_spec(device, m).problems()]
        if m.power_state is not None and m.power_state.cycles is not None and (
                m.signals.parts_total is not None):
            out.append((f"{where}: power_state.cycles", "parts come from one place: give "
                        "signals.parts_total or power_state.cycles, not both"))
    return out


def check_state_sources(cfg: AgentConfig) -> Problems:
    """Every machine's state comes from exactly one place, and a derived one is usable."""
    out: Problems = []
    for i, m in enumerate(cfg.machines):
        out += _check_machine(cfg, i, m)
    return out
