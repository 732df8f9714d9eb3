"""Config reload on SIGHUP: what changed, what must restart, what keeps its state.

:func:`plan_reload` is pure: two validated configs in, a :class:`ReloadPlan` out. It says

* which **sources** (collectors) must be restarted, started or stopped;
* which **machines, meters and lines** changed, and for each how much engine state can
  be carried over (``carry``, see :class:`Change`); everything unchanged keeps its open
  windows, counter baselines and last state;
* whether the change is **plant-wide** for the KPI engine (windows, shift calendar,
  time zone): then no state can be carried and the engine starts afresh, as after a
  restart with such a change;
* whether something that **cannot change live** changed (site id, ``[agent]``,
  ``[mqtt]``, ``[outbox]``, ``[health]``): then the reload is rejected, the running
  config stays in force, and the message says a restart is needed.

:func:`engine_carry` turns a plan into the engine's :class:`rules.engine.StateCarry`;
the engine alone knows its state and carries it (:meth:`KpiEngine.rebuild`), and
:func:`rebuild_engine` falls back to a fresh engine where it cannot. :func:`reload_config`
is the SIGHUP handler's front half: load, validate and plan, reporting errors without
touching what runs.

Counter baselines are distrusted rather than trusted whenever the raw values may now
come from somewhere else (another register, node, scale, or a re-pointed source): a
wrong baseline turns into a bogus production or energy jump, while a reset one loses at
most the parts or energy between the last reading before and the first after the reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from agent.config import load_run_config
from agent.config.build import engine_spec
from agent.config.model import (
    AgentConfig,
    MachineSection,
    MeterSection,
    SignalSection,
)
from agent.sources.opcua import profile_roles
from agent.sources.registry import SourceSection, meaning_keys, source_type
from rules.engine import CONFIG_RELOAD, Carry, KpiEngine, StateCarry, carry_state
from rules.errors import ConfigError
from rules.spec import EngineSpec, LineSpec, MachineSpec, MeterSpec

__all__ = [
    "RELOAD_FLAG",
    "Carry",
    "Change",
    "ReloadOutcome",
    "ReloadPlan",
    "carry_engine_state",
    "engine_carry",
    "plan_reload",
    "rebuild_engine",
    "reload_config",
]

log = logging.getLogger(__name__)

RELOAD_FLAG = CONFIG_RELOAD
"""Flag on the records of open windows whose machine, line or meter was changed by a
reload (their totals mix two configs, or start at the reload)."""

RESTART_ONLY_SECTIONS = ("agent", "mqtt", "outbox", "health")
"""Top-level sections the running process cannot swap: the state directory and outbox
file, the broker session (client id, LWT, TLS) and the health listener."""

_COUNTER_ROLES = ("parts_total", "parts_bad", "parts_good")
"""Cumulative machine roles: their engine state is a baseline tied to the raw source."""

_MEANING_KEYS = meaning_keys()
"""Signal settings that decide which raw value is read and what it means (each source
type names its own); the others (deadband, sampling interval, queue size) only change
how often it is reported."""


@dataclass(frozen=True, slots=True)
class Change:
    """One added, removed or changed source, machine, meter or line."""

    id: str
    kind: Literal["added", "removed", "changed"]
    reasons: tuple[str, ...] = ()
    carry: Carry = "none"

    def describe(self) -> str:
        """``cnc-01 changed (ideal_cycle_time_s 45.0 -> 40.0)``."""
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return f"{self.id} {self.kind}{why}"


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload from one config to another takes. Ids are in config order."""

    rejected: tuple[str, ...] = ()
    """Why the new config cannot be applied while running (empty: it can)."""
    engine_reset: tuple[str, ...] = ()
    """Plant-wide KPI changes: the engine starts afresh (open windows are lost)."""
    sources: tuple[Change, ...] = ()
    machines: tuple[Change, ...] = ()
    meters: tuple[Change, ...] = ()
    lines: tuple[Change, ...] = ()
    alarms: tuple[Change, ...] = ()
    other: tuple[str, ...] = ()
    """Engine-wide settings that apply live without losing state (grid factor, lateness)."""
    unchanged_sources: tuple[str, ...] = ()
    unchanged_machines: tuple[str, ...] = ()
    unchanged_meters: tuple[str, ...] = ()
    unchanged_lines: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """True when the new config can be applied live."""
        return not self.rejected

    @property
    def changed(self) -> bool:
        """True when there is anything to apply."""
        return bool(self.engine_reset or self.sources or self.machines or self.meters
                    or self.lines or self.alarms or self.other)

    @property
    def engine_changed(self) -> bool:
        """True when the KPI engine must be rebuilt (with or without carried state)."""
        return bool(self.engine_reset or self.machines or self.meters or self.lines
                    or self.alarms or self.other)

    @property
    def sources_to_stop(self) -> tuple[str, ...]:
        """Collectors to cancel: removed and changed sources."""
        return tuple(c.id for c in self.sources if c.kind != "added")

    @property
    def sources_to_start(self) -> tuple[str, ...]:
        """Collectors to (re)start from the new config: added and changed sources."""
        return tuple(c.id for c in self.sources if c.kind != "removed")

    def carry(self, kind: Literal["machines", "meters", "lines"], item_id: str) -> Carry:
        """How much engine state of one machine, meter or line survives."""
        unchanged, changes = {
            "machines": (self.unchanged_machines, self.machines),
            "meters": (self.unchanged_meters, self.meters),
            "lines": (self.unchanged_lines, self.lines),
        }[kind]
        if item_id in unchanged:
            return "all"
        for change in changes:
            if change.id == item_id:
                return change.carry
        return "none"

    def summary(self) -> str:
        """One line per group, for the reload log message."""
        if self.rejected:
            return "rejected: " + "; ".join(self.rejected)
        if not self.changed:
            return "no changes"
        out: list[str] = []
        if self.engine_reset:
            out.append("KPI engine restarts afresh: " + "; ".join(self.engine_reset))
        for name, changes in (("sources", self.sources), ("machines", self.machines),
                              ("meters", self.meters), ("lines", self.lines),
                              ("alarms", self.alarms)):
            if changes:
                out.append(f"{name}: " + ", ".join(c.describe() for c in changes))
        if self.other:
            out.append("settings: " + ", ".join(self.other))
        return "\n".join(out)


# ------------------------------------------------------------------------ planning


def _differing_keys(old: BaseModel, new: BaseModel) -> list[str]:
    """Names of the fields whose values differ (never the values: they may be secret)."""
    return [name for name in type(old).model_fields
            if getattr(old, name) != getattr(new, name)]


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _meaning(sig: SignalSection | None) -> tuple[Any, ...] | None:
    if sig is None:
        return None
    return tuple(getattr(sig, key, None) for key in _MEANING_KEYS)


def _profile(m: MachineSection) -> tuple[Any, ...]:
    """What a machine's profile reads: a change moves its counters' raw values."""
    return (m.profile, m.source, m.machine_tool, sorted(profile_roles(m)))


def _source_inputs(cfg: AgentConfig) -> dict[str, list[tuple[str, str, Any]]]:
    """Per source id: every (device, role, signal) it reads, and meter presets on it.

    That is what a collector is built from besides its own section, so two equal
    entries mean the same collector.
    """
    out: dict[str, list[tuple[str, str, Any]]] = {}
    for device, role, sig in cfg.signals():
        out.setdefault(sig.source, []).append((device, role, sig))
    for mt in cfg.meters:
        if mt.preset is not None and mt.source is not None:
            out.setdefault(mt.source, []).append((mt.id, "preset", (mt.preset, mt.unit)))
    for m in cfg.machines:
        if m.profile is not None and m.source is not None:
            out.setdefault(m.source, []).append((m.id, "profile", _profile(m)))
    for items in out.values():
        items.sort(key=lambda t: (t[0], t[1]))
    return out


def _input_diff(old: list[tuple[str, str, Any]], new: list[tuple[str, str, Any]]) -> list[str]:
    before = {(d, r): v for d, r, v in old}
    after = {(d, r): v for d, r, v in new}
    out = []
    for key in sorted(before.keys() | after.keys()):
        name = f"{key[0]}.{key[1]}"
        if key not in after:
            out.append(f"{name} removed")
        elif key not in before:
            out.append(f"{name} added")
        elif before[key] != after[key]:
            out.append(f"{name} changed")
    return out


def _plan_sources(old: AgentConfig, new: AgentConfig) -> tuple[list[Change], list[str],
                                                                set[str]]:
    """Source changes, unchanged source ids, and ids whose endpoint moved."""
    before = {s.id: s for s in old.sources}
    after = {s.id: s for s in new.sources}
    in_old, in_new = _source_inputs(old), _source_inputs(new)
    changes: list[Change] = []
    unchanged: list[str] = []
    moved: set[str] = set()
    for sid in before:
        if sid not in after:
            changes.append(Change(sid, "removed"))
            moved.add(sid)
    for sid, src in after.items():
        prev: SourceSection | None = before.get(sid)
        if prev is None:
            changes.append(Change(sid, "added"))
            continue
        reasons: list[str] = []
        if type(prev) is not type(src):
            reasons.append(f"type {prev.type} -> {src.type}")
            moved.add(sid)
        else:
            keys = _differing_keys(prev, src)
            if any(k in source_type(src.type).endpoint_keys for k in keys):
                moved.add(sid)
            reasons += [f"{k} changed" for k in keys]
        reasons += _input_diff(in_old.get(sid, []), in_new.get(sid, []))
        if reasons:
            changes.append(Change(sid, "changed", tuple(reasons), carry="none"))
        else:
            unchanged.append(sid)
    return changes, unchanged, moved


_T = TypeVar("_T")


def _plan_items(
    before: Mapping[str, _T], after: Mapping[str, _T],
    judge: Callable[[str, _T, _T], tuple[list[str], Carry]],
) -> tuple[list[Change], list[str]]:
    """Added, removed, changed and unchanged items of one kind (machines, meters, lines).

    ``judge(id, old, new)`` says why an item that exists on both sides changed (no
    reasons: unchanged) and how much of its engine state may be carried over.
    """
    changes: list[Change] = [Change(i, "removed") for i in before if i not in after]
    unchanged: list[str] = []
    for item_id, spec in after.items():
        prev = before.get(item_id)
        if prev is None:
            changes.append(Change(item_id, "added", carry="none"))
            continue
        reasons, carry = judge(item_id, prev, spec)
        if reasons:
            changes.append(Change(item_id, "changed", tuple(reasons), carry))
        else:
            unchanged.append(item_id)
    return changes, unchanged


def _field_changes(prev: object, spec: object, names: Sequence[str]) -> list[str]:
    reasons: list[str] = []
    for name in names:
        a, b = getattr(prev, name), getattr(spec, name)
        if a != b:
            reasons.append(f"{name} {_show(a)} -> {_show(b)}")
    return reasons


def _plan_machines(
    old: AgentConfig, new: AgentConfig, old_spec: EngineSpec, new_spec: EngineSpec,
    moved: set[str],
) -> tuple[list[Change], list[str]]:
    before_cfg = {m.id: m for m in old.machines}
    after_cfg: dict[str, MachineSection] = {m.id: m for m in new.machines}

    def judge(mid: str, prev: MachineSpec, spec: MachineSpec) -> tuple[list[str], Carry]:
        reasons = _field_changes(prev, spec, ("ideal_cycle_time_s", "line"))
        carry: Carry = "all"
        if prev.counter_modulus != spec.counter_modulus:
            reasons.append(f"counter_modulus {prev.counter_modulus} -> {spec.counter_modulus}")
            carry = "totals"
        old_sigs, new_sigs = before_cfg[mid].signals, after_cfg[mid].signals
        for role in _COUNTER_ROLES:
            a_sig: SignalSection | None = getattr(old_sigs, role)
            b_sig: SignalSection | None = getattr(new_sigs, role)
            if _meaning(a_sig) != _meaning(b_sig):
                reasons.append(f"signals.{role} changed")
                carry = "totals"
            elif b_sig is not None and b_sig.source in moved:
                reasons.append(f"signals.{role}: source {b_sig.source!r} re-pointed")
                carry = "totals"
        if _profile(before_cfg[mid]) != _profile(after_cfg[mid]):
            reasons.append("profile, source or machine_tool changed")
            carry = "totals"
        if prev.state_from != spec.state_from:
            # The state is now derived otherwise: the open windows' times mix both ways.
            reasons.append("state_rules, inputs or power_state changed")
            carry = "totals"
        if prev.good_counter != spec.good_counter:
            # Scrap counted so far and good counted from now would not add up to a window.
            reasons.append("switched between parts_bad and parts_good")
            carry = "none"
        return reasons, carry

    return _plan_items({m.id: m for m in old_spec.machines},
                       {m.id: m for m in new_spec.machines}, judge)


def _plan_meters(
    old: AgentConfig, new: AgentConfig, old_spec: EngineSpec, new_spec: EngineSpec,
    moved: set[str],
) -> tuple[list[Change], list[str]]:
    before_cfg = {m.id: m for m in old.meters}
    after_cfg: dict[str, MeterSection] = {m.id: m for m in new.meters}

    def judge(mid: str, prev: MeterSpec, spec: MeterSpec) -> tuple[list[str], Carry]:
        reasons = _field_changes(prev, spec, ("machine", "line", "max_power_kw"))
        carry: Carry = "all"
        # Another carrier or register step: the buffered readings mean something else.
        counting = _field_changes(prev, spec, ("carrier", "resolution_kwh", "modulus_kwh"))
        if counting:
            reasons += counting
            carry = "totals"
        a_cfg, b_cfg = before_cfg[mid], after_cfg[mid]
        for role in ("energy_kwh", "reading"):
            if _meaning(getattr(a_cfg.signals, role)) != _meaning(getattr(b_cfg.signals, role)):
                reasons.append(f"signals.{role} changed")
                carry = "totals"
        if (a_cfg.preset, a_cfg.source, a_cfg.unit) != (b_cfg.preset, b_cfg.source, b_cfg.unit):
            reasons.append("preset/source/unit changed")
            carry = "totals"
        sources = {b_cfg.source} if b_cfg.source else set()
        for sig in (b_cfg.signals.energy_kwh, b_cfg.signals.reading):
            if sig is not None:
                sources.add(sig.source)
        if carry == "all" and sources & moved:
            reasons.append(f"source {sorted(sources & moved)[0]!r} re-pointed")
            carry = "totals"
        return reasons, carry

    return _plan_items({m.id: m for m in old_spec.meters},
                       {m.id: m for m in new_spec.meters}, judge)


def _plan_lines(old_spec: EngineSpec, new_spec: EngineSpec) -> tuple[list[Change], list[str]]:
    def judge(lid: str, prev: LineSpec, ln: LineSpec) -> tuple[list[str], Carry]:
        if prev == ln:
            return [], "all"
        return [f"output_machine {prev.output_machine!r} -> {ln.output_machine!r}"], "all"

    return _plan_items({ln.id: ln for ln in old_spec.lines},
                       {ln.id: ln for ln in new_spec.lines}, judge)


def _plan_alarms(old_spec: EngineSpec, new_spec: EngineSpec) -> list[Change]:
    before = {a.name: a for a in old_spec.alarms}
    after = {a.name: a for a in new_spec.alarms}
    out = [Change(name, "removed") for name in before if name not in after]
    for name, rule in after.items():
        if name not in before:
            out.append(Change(name, "added"))
        elif before[name] != rule:
            out.append(Change(name, "changed", ("rule changed; its state restarts",)))
    return out


def plan_reload(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    """What applying ``new`` over the running ``old`` takes (pure; both validated)."""
    rejected: list[str] = []
    if old.site.id != new.site.id:
        rejected.append(
            f"site.id changed ({old.site.id!r} -> {new.site.id!r}): it names every topic, "
            "record and checkpoint; restart the agent to change it"
        )
    for section in RESTART_ONLY_SECTIONS:
        if section not in type(new).model_fields:
            continue  # a section this version of the config does not have
        a, b = getattr(old, section), getattr(new, section)
        if a != b:
            keys = _differing_keys(a, b) if isinstance(a, BaseModel) else []
            what = f" ({', '.join(keys)})" if keys else ""
            rejected.append(f"[{section}] changed{what}: it cannot change while running; "
                            "restart the agent to apply it")
    if rejected:
        return ReloadPlan(rejected=tuple(rejected))

    old_spec, new_spec = engine_spec(old), engine_spec(new)
    reset: list[str] = []
    if old_spec.windows != new_spec.windows:
        reset.append(f"kpi.windows {list(old_spec.windows)} -> {list(new_spec.windows)}")
    if old_spec.timezone != new_spec.timezone:
        reset.append(f"site.timezone {old_spec.timezone!r} -> {new_spec.timezone!r}")
    if old_spec.shifts != new_spec.shifts:
        reset.append("calendar.shifts changed")
    elif old_spec.site_calendar() != new_spec.site_calendar():
        reset.append("calendar changed (off days, make-up days or public holidays)")
    if old_spec.calendars != new_spec.calendars:
        reset.append("calendars changed")
    other: list[str] = []
    if old.energy != new.energy:
        other.append("[energy] changed (coal basis or carrier factors)")
    if old.tariff != new.tariff:
        other.append("[tariff] changed")
    if old_spec.grid_factor_kg_per_kwh != new_spec.grid_factor_kg_per_kwh:
        other.append(f"site.grid_factor_kg_per_kwh {old_spec.grid_factor_kg_per_kwh} -> "
                     f"{new_spec.grid_factor_kg_per_kwh}")
    if old_spec.lateness_s != new_spec.lateness_s:
        other.append(f"kpi.lateness_s {old_spec.lateness_s} -> {new_spec.lateness_s}")

    sources, unchanged_sources, moved = _plan_sources(old, new)
    machines, unchanged_machines = _plan_machines(old, new, old_spec, new_spec, moved)
    meters, unchanged_meters = _plan_meters(old, new, old_spec, new_spec, moved)
    lines, unchanged_lines = _plan_lines(old_spec, new_spec)
    return ReloadPlan(
        engine_reset=tuple(reset),
        sources=tuple(sources),
        machines=tuple(machines),
        meters=tuple(meters),
        lines=tuple(lines),
        alarms=tuple(_plan_alarms(old_spec, new_spec)),
        other=tuple(other),
        unchanged_sources=tuple(unchanged_sources),
        unchanged_machines=tuple(unchanged_machines),
        unchanged_meters=tuple(unchanged_meters),
        unchanged_lines=tuple(unchanged_lines),
    )


# ------------------------------------------------------------- carrying engine state


def engine_carry(plan: ReloadPlan, at_ms: int | None = None) -> StateCarry:
    """The plan's decisions in the engine's terms: how much state each machine, meter and
    line keeps, which alarm rules restart, and when the reload happens (``at_ms``, the
    agent's clock; what is not kept whole observes from then)."""

    def of(unchanged: tuple[str, ...], changes: tuple[Change, ...]) -> dict[str, Carry]:
        out: dict[str, Carry] = dict.fromkeys(unchanged, "all")
        out.update({c.id: c.carry for c in changes if c.kind != "removed"})
        return out

    return StateCarry(
        machines=of(plan.unchanged_machines, plan.machines),
        meters=of(plan.unchanged_meters, plan.meters),
        lines=of(plan.unchanged_lines, plan.lines),
        fresh_alarms=frozenset(c.id for c in plan.alarms),
        at_ms=at_ms,
    )


def carry_engine_state(
    snapshot: Mapping[str, Any], new_spec: EngineSpec, plan: ReloadPlan
) -> dict[str, Any] | None:
    """A snapshot for ``new_spec`` holding the state ``plan`` lets survive (see
    :func:`rules.engine.carry_state`), or None when nothing can be carried (plant-wide
    change, other windows, unknown snapshot format)."""
    if plan.engine_reset or not plan.accepted:
        return None
    try:
        return carry_state(snapshot, new_spec, engine_carry(plan))
    except ValueError:
        return None


def rebuild_engine(engine: KpiEngine, new_spec: EngineSpec, plan: ReloadPlan,
                   now_ms: int | None = None) -> KpiEngine:
    """The engine for ``new_spec``: continuing ``engine``'s state as far as ``plan`` allows
    (:meth:`KpiEngine.rebuild`), or a fresh one when nothing can be carried (logged, with
    the reason).

    ``now_ms`` is the agent's clock at the reload: a fresh engine observes from it, and so
    does whatever a carried one starts afresh (the restarted sources' first values carry
    old source timestamps, and nothing before the reload may be booked from them)."""
    if plan.engine_reset:
        log.warning("reload: the KPI engine starts afresh (%s); open windows are lost",
                    "; ".join(plan.engine_reset))
        return _fresh(new_spec, now_ms)
    try:
        return engine.rebuild(new_spec, engine_carry(plan, now_ms))
    except (ValueError, KeyError, TypeError, IndexError) as err:
        log.warning("reload: could not carry the KPI engine's state (%s); starting afresh",
                    err)
        return _fresh(new_spec, now_ms)


def _fresh(spec: EngineSpec, now_ms: int | None) -> KpiEngine:
    return KpiEngine(spec) if now_ms is None else KpiEngine.started_at(spec, now_ms)


# ---------------------------------------------------------------------- front half


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The result of one reload attempt. ``config`` is the config in force afterwards:
    the new one when ``applicable``, else the unchanged running one."""

    config: AgentConfig
    plan: ReloadPlan | None = None
    errors: tuple[tuple[str, str], ...] = ()
    message: str = ""

    @property
    def applicable(self) -> bool:
        """True when the caller should apply ``plan`` to switch to ``config``."""
        return (self.plan is not None and self.plan.accepted and self.plan.changed
                and not self.errors)


async def reload_config(path: Path, current: AgentConfig) -> ReloadOutcome:
    """Load and validate ``path`` and plan the switch from ``current``.

    Never raises for a bad file: an invalid config, or one that cannot be applied live,
    comes back as an outcome whose ``config`` is ``current`` and whose ``message`` says
    why, so the running agent carries on unchanged. The file is read off the event loop.
    """
    try:
        new = await asyncio.to_thread(load_run_config, path)
    except ConfigError as err:
        return ReloadOutcome(
            config=current, errors=tuple(err.errors),
            message=f"reload of {path} failed; the running config stays in force:\n"
                    f"{err.render()}",
        )
    plan = plan_reload(current, new)
    if not plan.accepted:
        return ReloadOutcome(
            config=current, plan=plan,
            message=f"reload of {path} rejected; the running config stays in force:\n"
                    + "\n".join(plan.rejected),
        )
    if not plan.changed:
        return ReloadOutcome(config=current, plan=plan,
                             message=f"reload of {path}: no changes")
    return ReloadOutcome(config=new, plan=plan,
                         message=f"reload of {path}:\n{plan.summary()}")
