"""Whole-file checks of ``agent.toml``: what no single item can know on its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent.config.calendars import effective, public_days
from agent.config.derived import check_state_sources
from agent.config.load import label
from agent.config.model import (
    AgentConfig,
    CalendarSection,
    MachineSection,
    MeterSection,
    SignalSection,
    parse_weekday,
)
from agent.config.units import unit_problem
from agent.sources.opcua import profile_problems, profile_roles
from agent.sources.registry import SOURCE_TYPES, SourceSection, addressed_as, source_type
from rules.types import MACHINE_STATES

Problems = list[tuple[str, str]]


def _dupes(kind: str, ids: Iterable[str]) -> Problems:
    counts = Counter(ids)
    return [(kind, f"id {name!r} is used {n} times") for name, n in counts.items() if n > 1]


def check_kpi(cfg: AgentConfig) -> Problems:
    """What the KPI engine needs: unique ids, lines and machines that reference each other."""
    out: Problems = []
    out += _dupes("machines", (m.id for m in cfg.machines))
    out += _dupes("meters", (m.id for m in cfg.meters))
    out += _dupes("lines", (ln.id for ln in cfg.lines))
    shared = {m.id for m in cfg.machines} & {m.id for m in cfg.meters}
    out += [("meters", f"id {name!r} is also a machine id") for name in sorted(shared)]
    lines = {ln.id for ln in cfg.lines}
    machines = {m.id: m for m in cfg.machines}
    for i, m in enumerate(cfg.machines):
        if m.line not in lines:
            out.append((label("machines", i, m.id) + ": line",
                        f'line "{m.line}" is not defined in [[lines]]'))
    for i, ln in enumerate(cfg.lines):
        out_machine = machines.get(ln.output_machine)
        if out_machine is None:
            out.append((label("lines", i, ln.id) + ": output_machine",
                        f'machine "{ln.output_machine}" is not defined'))
        elif out_machine.line != ln.id:
            out.append((label("lines", i, ln.id) + ": output_machine",
                        f'machine "{ln.output_machine}" belongs to line "{out_machine.line}"'))
    for i, mt in enumerate(cfg.meters):
        where = label("meters", i, mt.id)
        if mt.machine is not None and mt.machine not in machines:
            out.append((where + ": machine", f'machine "{mt.machine}" is not defined'))
        if mt.line is not None and mt.line not in lines:
            out.append((where + ": line", f'line "{mt.line}" is not defined'))
    if "shift" in cfg.kpi.windows and not cfg.calendar.shifts:
        out.append(("kpi.windows", "'shift' needs [[calendar.shifts]]"))
    out += _check_calendars(cfg)
    out += _check_alarms(cfg)
    out += check_state_sources(cfg)
    return out


def _check_calendar(where: str, cal: CalendarSection) -> Problems:
    out: Problems = _dupes(f"{where}.shifts", (s.name for s in cal.shifts))
    code = cal.public_holidays
    if code is not None and code.lower() != "none":
        try:
            public_days(code)
        except ValueError as err:
            out.append((f"{where}.public_holidays", str(err)))
    if cal.shifts:
        runs = frozenset().union(*(s.weekdays() for s in cal.shifts))
        for day, follows in cal.make_up_days.items():
            if parse_weekday(follows) not in runs:
                out.append((f"{where}.make_up_days.{day}",
                            f"no shift starts on {follows!r}, so the day would have no shifts"))
    return out


def _check_calendars(cfg: AgentConfig) -> Problems:
    """Each calendar as the engine will see it; lines and machines name existing ones."""
    out = _check_calendar("calendar", cfg.calendar)
    for name in cfg.calendars:
        out += _check_calendar(f"calendars.{name}", effective(cfg, name))
    items: list[tuple[str, list[Any]]] = [("lines", list(cfg.lines)),
                                          ("machines", list(cfg.machines))]
    for kind, entries in items:
        for i, item in enumerate(entries):
            if item.calendar is not None and item.calendar not in cfg.calendars:
                known = (f"defined: {', '.join(sorted(cfg.calendars))}" if cfg.calendars
                         else "there is no [calendars.<name>] table")
                out.append((label(kind, i, item.id) + ": calendar",
                            f'calendar "{item.calendar}" is not defined ({known})'))
    return out


def _check_alarms(cfg: AgentConfig) -> Problems:
    out: Problems = []
    devices = {m.id for m in cfg.machines} | {m.id for m in cfg.meters}
    for i, alarm in enumerate(cfg.alarms):
        where = f'alarms[{i}] "{alarm.name}"'
        if alarm.device is not None and alarm.device not in devices:
            out.append((where + ": device", f'device "{alarm.device}" is not defined'))
        if alarm.machine is not None and alarm.machine not in {m.id for m in cfg.machines}:
            out.append((where + ": machine", f'machine "{alarm.machine}" is not defined'))
        if alarm.state is not None and alarm.state not in MACHINE_STATES:
            out.append((where + ": state", f"{alarm.state!r} is not a machine state"))
        if alarm.window is not None and alarm.window not in cfg.kpi.windows:
            out.append((where + ": window", f"window {alarm.window!r} is not in kpi.windows"))
    out += _dupes("alarms", (a.name for a in cfg.alarms))
    return out


def _check_signal(where: str, sig: SignalSection, sources: dict[str, SourceSection]) -> Problems:
    role = where.rsplit(".", 1)[-1]
    if sig.engineering_unit is not None:
        problem = unit_problem(role, sig.engineering_unit)
        if problem is not None:
            return [(where + ".engineering_unit", problem)]
    src = sources.get(sig.source)
    if src is None:
        return [(where + ".source", f'source "{sig.source}" is not defined')]
    kind = source_type(src.type)
    if kind not in addressed_as(sig):
        return [(where, f'source "{sig.source}" is {kind.title}: give {kind.address_phrase}')]
    return kind.check_signal(where, sig, src)


def _machine_roles(i: int, m: MachineSection, sources: dict[str, SourceSection]) -> Problems:
    where = label("machines", i, m.id)
    out: Problems = []
    sig = m.signals
    # A state from state_rules or power_state replaces signals.state; a machine read by
    # its power alone has no counters to require (it may count parts from its power).
    derived = bool(m.state_rules) or m.power_state is not None
    required: tuple[str, ...] = ("parts_total",) if derived else ("state", "parts_total")
    if m.power_state is not None:
        required = ()
    profiled = profile_roles(m)  # roles a companion-spec profile provides
    out += profile_problems(where, m, sources)
    for role in required:
        if getattr(sig, role) is None and role not in profiled:
            out.append((f"{where}: signals.{role}", "required role is not configured"))
    if (sig.parts_bad is None and sig.parts_good is None and m.power_state is None
            and "parts_good" not in profiled):
        out.append((f"{where}: signals.parts_bad",
                    "configure parts_bad (scrap counter) or parts_good (good counter)"))
    for role in ("state", "parts_total", "parts_bad", "parts_good", "power_kw"):
        s = getattr(sig, role)
        if s is not None:
            out += _check_signal(f"{where}: signals.{role}", s, sources)
    for name, s in m.inputs.items():
        out += _check_signal(f"{where}: inputs.{name}", s, sources)
    return out


def _meter_roles(i: int, mt: MeterSection, sources: dict[str, SourceSection]) -> Problems:
    where = label("meters", i, mt.id)
    out: Problems = []
    if mt.preset is not None:
        from collectors.presets import PRESETS  # the register maps import pymodbus

        if mt.preset.lower() not in PRESETS:
            out.append((f"{where}: preset",
                        f"unknown preset {mt.preset!r} (known: {', '.join(sorted(PRESETS))})"))
        src = sources.get(mt.source or "")
        if src is None:
            out.append((f"{where}: source", f'source "{mt.source}" is not defined'))
        elif not source_type(src.type).takes_presets:
            kinds = " or ".join(t.title for t in SOURCE_TYPES.values() if t.takes_presets)
            out.append((f"{where}: source", f'source "{mt.source}" is not a {kinds} source'))
    elif mt.carrier != "electricity" and mt.signals.reading is None:
        out.append((f"{where}: signals.reading",
                    f"required role of a {mt.carrier} meter is not configured"))
    elif mt.carrier == "electricity" and mt.signals.energy_kwh is None:
        out.append((f"{where}: signals.energy_kwh",
                    "required role is not configured (or give preset, source and unit)"))
    for role in ("energy_kwh", "power_kw", "reading"):
        s = getattr(mt.signals, role)
        if s is not None:
            out += _check_signal(f"{where}: signals.{role}", s, sources)
    return out


def check_sources(cfg: AgentConfig) -> Problems:
    """Sources: unique ids and endpoints, timeouts shorter than intervals, roles resolvable."""
    out: Problems = []
    out += _dupes("sources", (s.id for s in cfg.sources))
    endpoints: Counter[str] = Counter()
    for i, src in enumerate(cfg.sources):
        kind = source_type(src.type)
        endpoints[kind.endpoint(src)] += 1
        out += kind.check_file(cfg, i, src)
    out += [("sources", f"endpoint {ep} is configured {n} times")
            for ep, n in endpoints.items() if n > 1]
    by_id = {s.id: s for s in cfg.sources}
    for i, m in enumerate(cfg.machines):
        out += _machine_roles(i, m, by_id)
    for i, mt in enumerate(cfg.meters):
        out += _meter_roles(i, mt, by_id)
    return out


def _check_carriers(cfg: AgentConfig) -> Problems:
    known = cfg.energy.carrier_names()
    out: Problems = [
        (label("meters", i, mt.id) + ": carrier",
         f"unknown carrier {mt.carrier!r} (known: {', '.join(sorted(known))}; define "
         "others in [energy.carriers])")
        for i, mt in enumerate(cfg.meters) if mt.carrier not in known]
    if cfg.tariff is not None:
        out += [(f"tariff.carrier_prices.{name}", f"unknown carrier {name!r}")
                for name in cfg.tariff.carrier_prices if name not in known]
    return out


def check_agent(cfg: AgentConfig) -> Problems:
    """Every whole-file check for ``edge-agent run`` and ``check-config``."""
    return check_kpi(cfg) + check_sources(cfg) + _check_carriers(cfg)
