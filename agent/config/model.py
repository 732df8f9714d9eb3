"""The edge agent's configuration (``agent.toml``), validated item by item.

The keys the KPI engine reads (``site``, ``kpi``, ``calendar``, ``lines``, ``machines``,
``meters``) are fixed by docs/architecture.md; the rest (sources, signals, MQTT, outbox) is ours.
Whole-file checks (references, uniqueness, resolvable roles) are in ``validate.py``.
"""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.config.common import Id, MqttSettings, StrictModel, check_id
from agent.health import HealthSettings
from agent.sources.modbus import DataType as DataType
from agent.sources.modbus import ModbusSourceSection as ModbusSourceSection
from agent.sources.opcua import OpcUaSourceSection as OpcUaSourceSection
from agent.sources.registry import SignalAddress, SourceSection, address_problem
from rules.calendar import zone
from rules.spec import ELECTRICITY, GBT2589_CARRIERS, WEEKDAYS, check_window_label
from rules.types import MACHINE_STATES


def _parse_hhmm(value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a time of day like '08:00'") from err


class AgentSection(StrictModel):
    """Identity and local state of this agent process."""

    id: Id = "edge-agent"
    """Names the agent in its status topic, so it is an MQTT topic level like every id:
    letters, digits, '_', '.', '-', starting with a letter or digit."""
    state_dir: Path = Path("/var/lib/edge-agent")
    """Directory of the outbox, the KPI engine's checkpoint and journal, and the OPC UA
    client certificates (``pki/<source id>``); it must survive restarts and be writable by
    the agent's user."""

    _id = field_validator("id")(check_id)


class SiteSection(StrictModel):
    """The factory: its id, local time zone (for the shift calendar) and grid factor."""

    id: Id
    """The site's level in every topic (``{prefix}/{site}/{line}/{machine}/kpi``): like
    every id, letters, digits, '_', '.', '-', starting with a letter or digit, so never
    '/', '+' or '#'."""
    timezone: str = "UTC"
    """IANA time zone of the site (``Asia/Shanghai``): shifts, breaks, tariff periods and
    the 1d/1w/1mo windows are in its local time."""
    grid_factor_kg_per_kwh: float = Field(0.5306, ge=0, le=5)
    """CO2 emission factor of the grid electricity, in kg CO2 per kWh, giving ``co2_kg``;
    take the regional factor the authorities publish (the default is China's national
    average)."""

    _id = field_validator("id")(check_id)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        zone(value)
        return value


class KpiSection(StrictModel):
    """Which windows to compute and how long to wait for late samples."""

    windows: list[str] = Field(default_factory=lambda: ["1m", "15m", "1h"], min_length=1)
    """Fixed lengths (``"1m"``, ``"15m"``, ``"1h"``, ``"8h"``, ...) aligned to the UTC
    epoch; calendar windows ``"1d"`` (local days), ``"1w"`` (ISO weeks from Monday) and
    ``"1mo"`` (months), from local midnight in ``site.timezone``; ``"shift"``, one window
    per shift of ``[calendar]``."""
    lateness_s: float = Field(5.0, ge=0, le=3600)
    """Seconds a window waits after its end for late samples before its records are emitted;
    raise it for devices whose values arrive late (slow polls, buffered gateways), at the
    cost of records that much later."""

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for label in value:
            check_window_label(label)
        if len(set(value)) != len(value):
            raise ValueError("windows are listed twice")
        return value


def parse_weekday(value: str) -> int:
    """ISO weekday (1 = Monday) of a name ``"mon"`` .. ``"sun"``."""
    name = value.strip().lower()
    if name not in WEEKDAYS:
        raise ValueError(f"{value!r} is not a weekday ({', '.join(WEEKDAYS)})")
    return WEEKDAYS.index(name) + 1


def parse_days(items: list[str]) -> frozenset[int]:
    """ISO weekdays of ``["mon", "wed-fri"]``; a range may wrap (``"sat-mon"``)."""
    out: set[int] = set()
    for item in items:
        first, sep, last = item.partition("-")
        a = parse_weekday(first)
        b = parse_weekday(last) if sep else a
        out.update((a - 1 + k) % 7 + 1 for k in range((b - a) % 7 + 1))
    return frozenset(out)


def parse_day(value: str) -> date:
    """A date written ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError as err:
        raise ValueError(f"{value!r} is not a date like '2026-10-01'") from err


def parse_day_range(value: str) -> list[date]:
    """The dates of ``"2026-10-01"`` or of an inclusive range ``"2026-10-01..2026-10-07"``."""
    first, sep, last = value.partition("..")
    a = parse_day(first)
    b = parse_day(last) if sep else a
    if b < a:
        raise ValueError(f"{value!r} ends before it starts")
    if (b - a).days > 366:
        raise ValueError(f"{value!r} spans more than a year")
    return [a + timedelta(days=k) for k in range((b - a).days + 1)]


def _date_text(value: object) -> object:
    # TOML has date literals (off_days = [2026-10-01]); they arrive as datetime.date.
    return value.isoformat() if isinstance(value, date) else value


class ShiftSection(StrictModel):
    """One shift in site-local time; an end at or before the start crosses midnight."""

    name: Id
    """The shift's name (``early``, ``night``), to tell the shifts apart."""
    start: str
    """Start in site-local time, ``HH:MM``."""
    end: str
    """End in site-local time, ``HH:MM``; at or before ``start``, the shift ends the next
    day."""
    days: list[str] | None = None
    """Weekdays the shift starts on: ``"mon"`` .. ``"sun"`` and ranges such as
    ``"mon-fri"``; not set, every day. A night shift belongs to the day it starts on."""
    breaks: list[tuple[str, str]] = Field(default_factory=list)
    """Planned breaks as ``[start, end]`` pairs of ``HH:MM`` inside the shift: planned
    downtime whatever the machines do, so they never count against availability."""

    @model_validator(mode="after")
    def _times(self) -> Self:
        _parse_hhmm(self.start)
        _parse_hhmm(self.end)
        for begin, end in self.breaks:
            _parse_hhmm(begin)
            _parse_hhmm(end)
        if self.days is not None:
            if not self.days:
                raise ValueError("days is empty: leave it out for every day")
            parse_days(self.days)
        return self

    def weekdays(self) -> frozenset[int]:
        """The ISO weekdays the shift starts on."""
        return frozenset(range(1, 8)) if self.days is None else parse_days(self.days)

    def times(self) -> tuple[time, time, tuple[tuple[time, time], ...]]:
        """Start, end and breaks as ``datetime.time``."""
        return (
            _parse_hhmm(self.start),
            _parse_hhmm(self.end),
            tuple((_parse_hhmm(a), _parse_hhmm(b)) for a, b in self.breaks),
        )


class CalendarSection(StrictModel):
    """Optional working calendar; without one every hour is scheduled.

    Weekly shifts, dated exceptions (``off_days``, ``make_up_days``) and optionally a
    country's public holidays. Time outside the calendar is outside planned operation
    time whatever a machine does. In ``[calendars.<name>]`` (a calendar lines or machines
    follow instead of the site's), every key left out is taken from ``[calendar]``.
    """

    shifts: list[ShiftSection] = Field(default_factory=list)
    """Shifts in site-local time; none: every hour of every day that is not an off day."""
    off_days: list[str] = Field(default_factory=list)
    """Dates on which no shift starts: ``"2026-10-01"``, TOML dates, or inclusive ranges
    ``"2026-10-01..2026-10-07"``. They win over public holidays' make-up days."""
    make_up_days: dict[str, str] = Field(default_factory=dict)
    """Dates worked with the shifts of a weekday, e.g. ``{ "2026-09-20" = "mon" }``: a
    weekend day worked in exchange for a holiday (调休). They win over public holidays."""
    public_holidays: str | None = None
    """Country (ISO 3166 code, ``"CN"``; a subdivision as ``"DE-BY"``) whose public
    holidays are off days and whose make-up working days are worked, from the
    ``holidays`` package; ``"none"`` turns inherited ones off."""
    make_up_follows: str = "mon"
    """Whose shifts the public holidays' make-up working days follow (``make_up_days``
    name their own)."""

    @field_validator("off_days", mode="before")
    @classmethod
    def _off_text(cls, value: object) -> object:
        return [_date_text(v) for v in value] if isinstance(value, list) else value

    @field_validator("off_days")
    @classmethod
    def _off(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_day_range(item)
        return value

    @field_validator("make_up_days")
    @classmethod
    def _make_up(cls, value: dict[str, str]) -> dict[str, str]:
        for day, follows in value.items():
            parse_day(day)
            try:
                parse_weekday(follows)
            except ValueError as err:
                raise ValueError(f"{day}: {err}") from None
        return value

    @field_validator("make_up_follows")
    @classmethod
    def _follows(cls, value: str) -> str:
        parse_weekday(value)
        return value

    @field_validator("public_holidays")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"none|[A-Za-z]{2,3}(-[A-Za-z0-9]{1,5})?",
                                                  value):
            raise ValueError(f"{value!r} is not a country code like 'CN' or 'DE-BY' (or "
                             "'none')")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        both = sorted(self.off_dates() & set(self.make_up_dates()))
        if both:
            raise ValueError(f"{both[0].isoformat()} is both in off_days and in make_up_days")
        return self

    def off_dates(self) -> frozenset[date]:
        """Every date of ``off_days``."""
        return frozenset(d for item in self.off_days for d in parse_day_range(item))

    def make_up_dates(self) -> dict[date, int]:
        """``make_up_days`` as dates and ISO weekdays."""
        return {parse_day(d): parse_weekday(w) for d, w in self.make_up_days.items()}


class OutboxSection(StrictModel):
    """Bounds of the on-disk outbox, and how hard it syncs."""

    max_bytes: int = Field(256 * 2**20, ge=2**20)
    """Most bytes of topics and payloads the outbox holds (at least 1 MiB); when full the
    oldest messages are dropped and counted. Size it for the longest broker outage to be
    bridged."""
    max_age_s: float = Field(7 * 86400, gt=0)
    """Seconds an undelivered message is kept (default 7 days); older ones are dropped and
    counted, since a platform rarely wants records that stale."""
    synchronous: Literal["full", "normal"] = "full"
    """``full`` fsyncs every commit (nothing stored is lost on a power cut); ``normal``
    survives a crash of the process but may lose the last commits on a power cut, for media
    where every fsync counts."""
    drain_rate_per_s: float | None = Field(None, gt=0)
    """Most messages a second published from a backlog after an outage (not set: as fast as
    the broker acknowledges), so a large backlog does not flood a shared broker or uplink."""


class _SignalSource(StrictModel):
    source: Id
    """The ``[[sources]]`` item the value is read through; its type decides which of
    the address keys apply."""


class SignalSection(SignalAddress, _SignalSource):
    """Where one role of a machine or meter comes from: an OPC UA node or a Modbus register.

    OPC UA: ``node`` (NodeId, ``nsu=URI;...`` preferred) or ``browse_path``, with optional
    per-node ``deadband`` (``deadband_type`` absolute or percent of EURange),
    ``sampling_interval_ms`` and ``queue_size`` overriding the source's.
    Modbus: ``unit``, ``table``, ``address`` (0-based), ``type`` (``length`` for a
    string), word/byte order.
    Both: ``scale``/``offset`` turn a numeric value into the role's unit
    (``value * scale + offset``); ``engineering_unit`` says which unit the device reports
    an energy (Wh, kWh, MWh) or power (W, kW, MW) role in, and the agent converts it to the
    role's kWh or kW (after scale and offset); ``map`` turns raw values into state names
    (keys are the raw values as text, e.g. ``"2"``), for OPC UA nodes and Modbus
    registers alike.
    """

    scale: float = 1.0
    """Factor applied to a numeric raw value (``value * scale + offset``): a register
    counting 0.01 kWh steps takes ``0.01``."""
    offset: float = 0.0
    """Added after ``scale``, in the role's unit."""
    engineering_unit: str | None = None
    """The unit the device reports an energy (``Wh``, ``kWh``, ``MWh``) or power (``W``,
    ``kW``, ``MW``) role in; the value is converted to the role's kWh or kW after scale and
    offset. Not set: already in the role's unit."""
    map: dict[str, str] | None = None
    """Raw value (as text, ``"2"``) to machine state (``producing``, ``setup``, ``idle``,
    ``unplanned_down``, ``planned_down``, ``off``), for a controller's state codes; a code
    missing from it gives a bad sample."""

    @model_validator(mode="after")
    def _address(self) -> Self:
        problem = address_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if self.map is not None and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError("map translates raw codes as they are; give no scale or offset "
                             "with it")
        if self.map is not None:
            bad = sorted(set(self.map.values()) - MACHINE_STATES)
            if bad:
                raise ValueError(f"map values {bad} are not machine states "
                                 f"({', '.join(sorted(MACHINE_STATES))})")
        return self


class MachineSignals(StrictModel):
    """The roles a machine can provide (docs/architecture.md, "Semantic signals")."""

    state: SignalSection | None = None
    """The machine's state: a node or register whose value is a state name, or whose codes
    ``map`` turns into one."""
    parts_total: SignalSection | None = None
    """Cumulative part counter (produced parts, good and bad); wraps at the machine's
    ``counter_modulus``."""
    parts_bad: SignalSection | None = None
    """Cumulative scrap counter; give it or ``parts_good``, whichever the controller counts."""
    parts_good: SignalSection | None = None
    """Cumulative good-part counter, for controllers that count good parts instead of scrap."""
    power_kw: SignalSection | None = None
    """Instantaneous active power of the machine in kW (optional): threshold alarms, and the
    state from power where configured."""

    @model_validator(mode="after")
    def _one_quality_counter(self) -> Self:
        if self.parts_bad is not None and self.parts_good is not None:
            raise ValueError("configure parts_bad or parts_good, not both")
        return self


class StateRuleSection(StrictModel):
    """One row of a machine's state rule table; the first row whose condition holds
    gives the machine's state (docs/commissioning.md, "Machines without a controller")."""

    when: str | None = None
    """The condition, over the machine's ``inputs``: names, numbers, ``true``/``false``,
    ``and``, ``or``, ``not``, parentheses and comparisons ``==``, ``!=``, ``<``, ``<=``,
    ``>``, ``>=`` (``"program_running and spindle_on"``, ``"mode == 2"``); a bare name
    holds when its value is not 0. Left out on the last row, and only there: the state
    when no other row holds."""
    state: str
    """The machine state while the row decides: ``producing``, ``setup``, ``idle``,
    ``unplanned_down``, ``planned_down`` or ``off``."""

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            from rules.derived_state import parse_condition

            parse_condition(value)
        return value

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        if value not in MACHINE_STATES:
            raise ValueError(f"{value!r} is not a machine state "
                             f"({', '.join(sorted(MACHINE_STATES))})")
        return value


class PowerCyclesSection(StrictModel):
    """Part counting from the power curve: one part per rise to ``above_kw`` whose length
    lies within ``[min_s, max_s]``."""

    above_kw: float = Field(gt=0)
    """The cutting power a rise must reach; it ends below ``above_kw - hysteresis_kw``."""
    min_s: float = Field(gt=0)
    """The shortest rise that is a part (shorter: a jog, a spindle test)."""
    max_s: float = Field(gt=0)
    """The longest rise that is a part (longer: several parts without a pause, a
    warm-up)."""

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s:g}) is below min_s ({self.min_s:g})")
        return self


class PowerStateSection(StrictModel):
    """State from power alone, for a machine without a controller to read: ``off`` below
    ``off_below_kw``, ``producing`` from ``producing_above_kw``, ``idle`` in between;
    its records carry ``state_source = "power"``."""

    off_below_kw: float = Field(ge=0)
    """Below this power the machine is off."""
    producing_above_kw: float = Field(gt=0)
    """At or above this power the machine produces."""
    hysteresis_kw: float = Field(0.0, ge=0)
    """How far past the threshold it came through the power must go to leave a state
    (``off`` ends at ``off_below_kw + hysteresis_kw``, ``producing`` below
    ``producing_above_kw - hysteresis_kw``)."""
    min_dwell_s: float = Field(0.0, ge=0, le=3600)
    """How long a new level must be read before the state changes; each change is that
    late (plus up to one reading interval)."""
    meter: Id | None = None
    """The meter whose ``power_kw`` is read, one attached to this machine; default: the
    machine's own ``signals.power_kw``, else its one meter."""
    cycles: PowerCyclesSection | None = None
    """Count parts from the power curve (the machine then has no ``parts_total``)."""

    @model_validator(mode="after")
    def _bands(self) -> Self:
        if self.producing_above_kw <= self.off_below_kw:
            raise ValueError(f"producing_above_kw ({self.producing_above_kw:g}) must be "
                             f"above off_below_kw ({self.off_below_kw:g})")
        band = self.producing_above_kw - self.off_below_kw
        if self.hysteresis_kw >= band:
            raise ValueError(f"hysteresis_kw ({self.hysteresis_kw:g}) must be smaller than "
                             f"producing_above_kw - off_below_kw ({band:g})")
        if self.cycles is not None and self.cycles.above_kw <= self.hysteresis_kw:
            raise ValueError(f"cycles.above_kw ({self.cycles.above_kw:g}) must be above "
                             f"hysteresis_kw ({self.hysteresis_kw:g})")
        return self


class MachineSection(StrictModel):
    """A machine whose KPIs are computed and published."""

    id: Id
    """The machine's id: its level in the topics and the ``machine`` of its records."""
    line: Id
    """The ``[[lines]]`` id the machine belongs to."""
    ideal_cycle_time_s: float = Field(gt=0, le=86_400)
    """Seconds one part takes at the ideal rate (ISO 22400 planned run time per item), the
    base of performance and OEE; take it from the machine's program or its best sustained
    rate."""
    counter_modulus: int = Field(2**32, ge=2)
    """Where the machine's part counters wrap to 0 (2^32 for a 32-bit PLC counter, 10000 for
    a 4-digit display), so a wrap is counted as parts, not as a reset."""
    calendar: Id | None = None
    """A calendar of ``[calendars]`` the machine follows instead of its line's (or the
    site's)."""
    signals: MachineSignals = MachineSignals()
    """``[machines.signals.<role>]``: where each role (``state``, ``parts_total``, ...) is
    read from."""
    inputs: dict[str, SignalSection] = Field(default_factory=dict)
    """``[machines.inputs.<name>]``: signals the ``state_rules`` read (booleans, numbers),
    addressed like ``signals``; each becomes a sample signal ``<name>`` of the machine."""
    state_rules: list[StateRuleSection] = Field(default_factory=list)
    """``[[machines.state_rules]]``: the state from ``inputs``, first matching row wins;
    instead of ``signals.state``."""
    power_state: PowerStateSection | None = None
    """The state (and optionally the part count) from power thresholds; instead of
    ``signals.state``."""
    profile: str | None = None
    """A companion specification the machine's controller publishes, whose model gives
    the roles the machine does not configure under ``signals``: ``"opc40501"`` (umati,
    OPC UA for Machine Tools; docs/commissioning.md, "umati machine tools"). Needs
    ``source`` and ``machine_tool``."""
    source: Id | None = None
    """The OPC UA source the ``profile`` is read through."""
    machine_tool: str | None = None
    """The machine's MachineTool object, for ``profile``: a NodeId (``nsu=<uri>;i=...``
    preferred, namespaces by URI) or a browse path with the source's ``namespaces``
    aliases (``Objects/ma:Machines/vendor:VMC-850``)."""

    _id = field_validator("id")(check_id)


class LineSection(StrictModel):
    """A line; its output machine's counts are the line's output."""

    id: Id
    """The line's id: its level in the topics and the ``line`` of its records."""
    output_machine: Id
    """The machine whose parts are the line's output (the last one, or the one that counts
    what leaves the line); the line's schedule-based KPIs are its."""
    calendar: Id | None = None
    """A calendar of ``[calendars]`` the line's machines follow instead of the site's."""

    _id = field_validator("id")(check_id)


class MeterSignals(StrictModel):
    """Roles of a meter; a ``preset`` on the meter fills these from a known register map.

    An electricity meter reads ``energy_kwh`` (and optionally ``power_kw``); a meter of
    any other carrier reads its cumulative register as ``reading``, in the carrier's unit.
    """

    energy_kwh: SignalSection | None = None
    """Cumulative active energy register of an electricity meter, in kWh
    (``engineering_unit`` for Wh or MWh)."""
    power_kw: SignalSection | None = None
    """Instantaneous active power in kW (optional): it enters no KPI, but alarms may watch
    it and a machine's state may come from it."""
    reading: SignalSection | None = None
    """Cumulative register of a meter of another carrier (gas, steam, water, compressed
    air), in the carrier's unit."""


class MeterSection(StrictModel):
    """An energy meter measuring one machine or, failing that, one line."""

    id: Id
    """The meter's id, as samples and alarms name it."""
    machine: Id | None = None
    """The machine the meter measures; its energy is attributed to that machine (and its
    line)."""
    line: Id | None = None
    """The line the meter measures, when it feeds a whole line rather than one machine."""
    carrier: Id = ELECTRICITY
    """What the meter measures: ``electricity``, ``natural_gas``, ``steam``, ``water``,
    ``compressed_air`` or a carrier of ``[energy.carriers]``."""
    resolution_kwh: float = Field(0.01, gt=0)
    """Smallest step of the electricity meter's energy register in kWh; readings are counted
    in these steps, so the value sets how exact energy per part can be."""
    modulus_kwh: float | None = Field(None, gt=0)
    """Where the energy register rolls over to 0, in kWh (not set: it never does); needed to
    count a rollover as energy instead of a meter reset."""
    max_power_kw: float | None = Field(None, gt=0)
    """Highest power the meter's load can draw, in kW: a drop of the register is a rollover
    only if the energy it implies fits under it, else a reset or a replaced meter."""
    resolution: float | None = Field(None, gt=0)
    """Register step of a meter of another carrier than electricity, in its unit
    (default 0.01); an electricity meter gives ``resolution_kwh``."""
    modulus: float | None = Field(None, gt=0)
    """Where such a meter's register rolls over, in its unit (``modulus_kwh`` for
    electricity)."""
    source: Id | None = None
    """The Modbus source the ``preset`` registers are read through."""
    unit: int | None = Field(None, ge=0, le=255)
    """The meter's Modbus unit id (slave address), for ``preset``."""
    preset: str | None = None
    """A known meter model whose register map gives its signals (``sdm630``, ``dtsu666``,
    ``adl400``, ``pac3200``, ``em24``, ``pm5xxx``, ``scaled32``); needs ``source`` and
    ``unit``."""
    signals: MeterSignals = MeterSignals()
    """``[meters.signals.<role>]``: the meter's registers, when no ``preset`` gives them."""

    _id = field_validator("id")(check_id)

    @model_validator(mode="after")
    def _attached(self) -> Self:
        if (self.machine is None) == (self.line is None):
            raise ValueError("a meter measures exactly one of: machine, line")
        if self.preset is not None and (self.source is None or self.unit is None):
            raise ValueError("preset needs source and unit")
        electric = self.carrier == ELECTRICITY
        if electric:
            wrong = [k for k in ("resolution", "modulus") if getattr(self, k) is not None]
            wrong += ["signals.reading"] if self.signals.reading is not None else []
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: for a meter of another carrier; an "
                                 "electricity meter gives resolution_kwh, modulus_kwh and "
                                 "signals.energy_kwh")
        else:
            wrong = [k for k in ("resolution_kwh", "modulus_kwh", "max_power_kw", "preset")
                     if k in self.model_fields_set]
            wrong += [f"signals.{r}" for r in ("energy_kwh", "power_kw")
                      if getattr(self.signals, r) is not None]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: electricity only; a "
                                 f"{self.carrier} meter gives resolution, modulus and "
                                 "signals.reading")
        return self

    @property
    def register(self) -> tuple[float, float | None]:
        """``(resolution, modulus)`` of the register in the carrier's unit."""
        if self.carrier == ELECTRICITY:
            return self.resolution_kwh, self.modulus_kwh
        return (0.01 if self.resolution is None else self.resolution), self.modulus


class CarrierSection(StrictModel):
    """Factors of an energy carrier, overriding the GB/T 2589 defaults of a known one or
    defining a carrier of the site's own (``unit`` required then)."""

    unit: str | None = Field(None, min_length=1, max_length=16)
    """The carrier's unit (``m3``, ``t``); required for a carrier of the site's own, and for
    a known one only its own unit is accepted."""
    kgce_per_unit: float | None = Field(None, ge=0, le=100)
    """Standard coal (kgce) per unit; a known carrier's default when left out."""
    co2_kg_per_unit: float | None = Field(None, ge=0, le=100)
    """CO2 per unit; none by default: a carrier without one adds nothing to ``co2_kg``."""


class EnergySection(StrictModel):
    """Standard coal basis of electricity and the carriers' factors."""

    coal_basis: Literal["equivalent", "equal_value"] = "equivalent"
    """``equivalent`` (当量值, 0.1229 kgce/kWh, GB/T 2589) or ``equal_value`` (等价值:
    ``equal_value_kgce_per_kwh``, e.g. the year's published coal use of power supply)."""
    equal_value_kgce_per_kwh: float | None = Field(None, gt=0, le=1)
    """Standard coal per kWh of electricity for ``coal_basis = "equal_value"`` (e.g. the
    year's published coal consumption of power supply, about 0.3 kgce/kWh)."""
    carriers: dict[Id, CarrierSection] = Field(default_factory=dict)
    """``[energy.carriers.<name>]``: factors per carrier."""

    @model_validator(mode="after")
    def _basis(self) -> Self:
        if self.coal_basis == "equal_value" and self.equal_value_kgce_per_kwh is None:
            raise ValueError("coal_basis 'equal_value' needs equal_value_kgce_per_kwh")
        if self.coal_basis == "equivalent" and self.equal_value_kgce_per_kwh is not None:
            raise ValueError("equal_value_kgce_per_kwh is used only with coal_basis "
                             "'equal_value'")
        for name, c in self.carriers.items():
            if name == ELECTRICITY:
                raise ValueError("carriers.electricity: electricity's factors are "
                                 "energy.coal_basis and site.grid_factor_kg_per_kwh")
            if name not in GBT2589_CARRIERS and c.unit is None:
                raise ValueError(f"carriers.{name}: a carrier of the site's own needs unit")
            if name in GBT2589_CARRIERS and c.unit not in (None, GBT2589_CARRIERS[name][0]):
                raise ValueError(f"carriers.{name}: unit is {GBT2589_CARRIERS[name][0]!r} "
                                 "(the record field's); convert with the signal's scale")
        return self

    def carrier_names(self) -> set[str]:
        """Every carrier a meter may name."""
        return set(GBT2589_CARRIERS) | set(self.carriers)


class TariffPeriodSection(StrictModel):
    """A period of the day in local time; an end at or before the start crosses midnight."""

    start: str
    """Start in site-local time, ``HH:MM`` on a whole minute."""
    end: str
    """End in site-local time, ``HH:MM``; at or before ``start``, the period crosses
    midnight."""
    period: Literal["critical_peak", "peak", "flat", "valley"]
    """Which price of ``prices`` applies: ``critical_peak``, ``peak``, ``flat`` or
    ``valley``."""

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        parsed = _parse_hhmm(value)
        if parsed.second or parsed.microsecond:
            raise ValueError(f"{value!r}: periods start and end on a whole minute")
        return value


class TariffSeasonSection(StrictModel):
    """The months a pattern of periods applies in."""

    months: list[int] = Field(min_length=1)
    """Months (1..12) the season's periods apply in."""
    periods: list[TariffPeriodSection] = Field(min_length=1)
    """``[[tariff.seasons.periods]]``: the periods of a day, covering all 24 hours."""

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[int]) -> list[int]:
        bad = [m for m in value if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"months {bad} are not 1..12")
        return value

    @model_validator(mode="after")
    def _cover(self) -> Self:
        from rules.tariff import day_pieces

        day_pieces(tuple((_parse_hhmm(p.start), _parse_hhmm(p.end), p.period)
                         for p in self.periods))
        return self


class TariffSection(StrictModel):
    """Energy prices: electricity by time-of-use period, other carriers per unit."""

    currency: str = Field("CNY", min_length=1, max_length=8)
    """Currency code of the prices, as records and reports show ``energy_cost`` (``CNY``)."""
    prices: dict[Literal["critical_peak", "peak", "flat", "valley"], float] = Field(
        default_factory=dict)
    """Price per kWh of each period the seasons use."""
    seasons: list[TariffSeasonSection] = Field(default_factory=list)
    """Every month in exactly one season; none: one flat price all day (``prices.flat``)."""
    carrier_prices: dict[Id, float] = Field(default_factory=dict)
    """Price per unit of a carrier other than electricity (``natural_gas = 3.6``)."""

    @model_validator(mode="after")
    def _whole_year(self) -> Self:
        if any(v < 0 for v in self.prices.values()) or any(
                v < 0 for v in self.carrier_prices.values()):
            raise ValueError("prices must not be negative")
        if ELECTRICITY in self.carrier_prices:
            raise ValueError("carrier_prices.electricity: electricity is priced by prices "
                             "and seasons")
        if not self.seasons:
            if self.prices and set(self.prices) != {"flat"}:
                raise ValueError("without seasons only prices.flat applies; add seasons "
                                 "for time-of-use periods")
            return self
        seen: dict[int, int] = {}
        for i, season in enumerate(self.seasons):
            for m in season.months:
                if m in seen:
                    raise ValueError(f"month {m} is in seasons[{seen[m]}] and seasons[{i}]")
                seen[m] = i
            used = {p.period for p in season.periods}
            missing = sorted(used - set(self.prices))
            if missing:
                raise ValueError(f"seasons[{i}] uses {', '.join(missing)} but prices has "
                                 "none for it")
        absent = [m for m in range(1, 13) if m not in seen]
        if absent:
            raise ValueError(f"months {absent} are in no season")
        return self


class AlarmSection(StrictModel):
    """A declarative alarm rule (threshold, state duration or KPI limit)."""

    name: Id
    """The alarm's name, as its events carry it."""
    kind: Literal["threshold", "state_duration", "kpi_limit"]
    """``threshold`` (a signal above a limit), ``state_duration`` (a machine too long in one
    state) or ``kpi_limit`` (a window's KPI above a limit)."""
    device: Id | None = None
    """For ``threshold``: the machine or meter whose signal is watched."""
    machine: Id | None = None
    """For ``state_duration`` and ``kpi_limit``: the machine watched."""
    signal: str | None = None
    """For ``threshold``: the role watched (``power_kw``)."""
    raise_above: float | None = None
    """For ``threshold``: the alarm is raised when the signal stays above this, in the
    role's unit."""
    clear_below: float | None = None
    """For ``threshold``: cleared when the signal falls below this (hysteresis, so a value
    hovering at the limit does not flap); default ``raise_above``."""
    min_duration_s: float = Field(0.0, ge=0)
    """For ``threshold``: seconds the signal must stay above ``raise_above`` before the
    alarm is raised, so a short spike raises nothing."""
    state: str | None = None
    """For ``state_duration``: the machine state watched (``unplanned_down``)."""
    max_duration_s: float | None = Field(None, gt=0)
    """For ``state_duration``: seconds in ``state`` after which the alarm is raised."""
    field: str | None = None
    """For ``kpi_limit``: the KPI record field compared (``energy_per_good_unit_kwh``)."""
    limit: float | None = None
    """For ``kpi_limit``: the alarm is raised for a window whose ``field`` exceeds this."""
    window: str | None = None
    """For ``kpi_limit``: which of ``[kpi] windows`` is compared (``1h``)."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """``info``, ``warning`` or ``critical``, carried by the events so the platform can
    route them."""

    @model_validator(mode="after")
    def _kind(self) -> Self:
        need = {
            "threshold": ("device", "signal", "raise_above"),
            "state_duration": ("machine", "state", "max_duration_s"),
            "kpi_limit": ("machine", "field", "limit", "window"),
        }[self.kind]
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} alarm needs {', '.join(missing)}")
        return self


class AgentConfig(StrictModel):
    """The whole ``agent.toml``."""

    agent: AgentSection = AgentSection()
    """``[agent]``: this agent's id and where it keeps its state."""
    site: SiteSection
    """``[site]``: the factory, its time zone and grid factor (required)."""
    kpi: KpiSection = KpiSection()
    """``[kpi]``: which KPI windows are computed and how long late samples are waited for."""
    calendar: CalendarSection = CalendarSection()
    """``[calendar]``: the site's working calendar (shifts, off days, holidays); without one
    every hour is planned time."""
    calendars: dict[Id, CalendarSection] = Field(default_factory=dict)
    """Named calendars (``[calendars.<name>]``) that lines and machines may follow
    instead of the site's ``[calendar]``; a key left out is the site calendar's."""
    mqtt: MqttSettings = MqttSettings()
    """``[mqtt]``: the broker the records are published to."""
    outbox: OutboxSection = OutboxSection()
    """``[outbox]``: bounds of the on-disk store that holds every record until the broker
    acknowledged it."""
    health: HealthSettings = HealthSettings()
    """``[health]``: the local HTTP endpoint serving ``/healthz``, ``/readyz`` and
    ``/metrics``."""
    sources: list[SourceSection] = Field(default_factory=list)
    """``[[sources]]``: the OPC UA servers and Modbus links signals are read through;
    ``type`` selects the protocol."""
    lines: list[LineSection] = Field(default_factory=list)
    """``[[lines]]``: production lines; every machine belongs to one."""
    machines: list[MachineSection] = Field(default_factory=list)
    """``[[machines]]``: the machines whose KPIs are computed and published, with the
    signals they are read from."""
    meters: list[MeterSection] = Field(default_factory=list)
    """``[[meters]]``: energy meters, each measuring one machine or one line."""
    alarms: list[AlarmSection] = Field(default_factory=list)
    """``[[alarms]]``: alarm rules evaluated by the agent and published on the alarm topics."""
    energy: EnergySection = EnergySection()
    """``[energy]``: the standard coal basis of electricity and the factors of other energy
    carriers."""
    tariff: TariffSection | None = None
    """Energy prices; none: records have no ``energy_cost``."""

    def signals(self) -> list[tuple[str, str, SignalSection]]:
        """Every configured ``(device id, role, signal)`` of machines, then meters (meter
        presets are not signals: they are expanded where collectors are built); a
        machine's ``inputs`` follow its roles, named as the role."""
        out: list[tuple[str, str, SignalSection]] = []
        items: list[MachineSection | MeterSection] = [*self.machines, *self.meters]
        for item in items:
            for role in type(item.signals).model_fields:
                sig = getattr(item.signals, role)
                if sig is not None:
                    out.append((item.id, role, sig))
            if isinstance(item, MachineSection):
                out += [(item.id, name, sig) for name, sig in item.inputs.items()]
        return out
