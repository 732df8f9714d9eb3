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

    _id = field_validator("id")(check_id)


class SiteSection(StrictModel):
    """The factory: its id, local time zone (for the shift calendar) and grid factor."""

    id: Id
    """The site's level in every topic (``{prefix}/{site}/{line}/{machine}/kpi``): like
    every id, letters, digits, '_', '.', '-', starting with a letter or digit, so never
    '/', '+' or '#'."""
    timezone: str = "UTC"
    grid_factor_kg_per_kwh: float = Field(0.5306, ge=0, le=5)

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
    start: str
    end: str
    days: list[str] | None = None
    """Weekdays the shift starts on: ``"mon"`` .. ``"sun"`` and ranges such as
    ``"mon-fri"``; not set, every day. A night shift belongs to the day it starts on."""
    breaks: list[tuple[str, str]] = Field(default_factory=list)

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
    max_age_s: float = Field(7 * 86400, gt=0)
    synchronous: Literal["full", "normal"] = "full"
    drain_rate_per_s: float | None = Field(None, gt=0)


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
    offset: float = 0.0
    engineering_unit: str | None = None
    map: dict[str, str] | None = None

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
    parts_total: SignalSection | None = None
    parts_bad: SignalSection | None = None
    parts_good: SignalSection | None = None
    power_kw: SignalSection | None = None

    @model_validator(mode="after")
    def _one_quality_counter(self) -> Self:
        if self.parts_bad is not None and self.parts_good is not None:
            raise ValueError("configure parts_bad or parts_good, not both")
        return self


class MachineSection(StrictModel):
    """A machine whose KPIs are computed and published."""

    id: Id
    line: Id
    ideal_cycle_time_s: float = Field(gt=0, le=86_400)
    counter_modulus: int = Field(2**32, ge=2)
    calendar: Id | None = None
    """A calendar of ``[calendars]`` the machine follows instead of its line's (or the
    site's)."""
    signals: MachineSignals = MachineSignals()

    _id = field_validator("id")(check_id)


class LineSection(StrictModel):
    """A line; its output machine's counts are the line's output."""

    id: Id
    output_machine: Id
    calendar: Id | None = None
    """A calendar of ``[calendars]`` the line's machines follow instead of the site's."""

    _id = field_validator("id")(check_id)


class MeterSignals(StrictModel):
    """Roles of a meter; a ``preset`` on the meter fills these from a known register map.

    An electricity meter reads ``energy_kwh`` (and optionally ``power_kw``); a meter of
    any other carrier reads its cumulative register as ``reading``, in the carrier's unit.
    """

    energy_kwh: SignalSection | None = None
    power_kw: SignalSection | None = None
    reading: SignalSection | None = None


class MeterSection(StrictModel):
    """An energy meter measuring one machine or, failing that, one line."""

    id: Id
    machine: Id | None = None
    line: Id | None = None
    carrier: Id = ELECTRICITY
    """What the meter measures: ``electricity``, ``natural_gas``, ``steam``, ``water``,
    ``compressed_air`` or a carrier of ``[energy.carriers]``."""
    resolution_kwh: float = Field(0.01, gt=0)
    modulus_kwh: float | None = Field(None, gt=0)
    max_power_kw: float | None = Field(None, gt=0)
    resolution: float | None = Field(None, gt=0)
    """Register step of a meter of another carrier than electricity, in its unit
    (default 0.01); an electricity meter gives ``resolution_kwh``."""
    modulus: float | None = Field(None, gt=0)
    """Where such a meter's register rolls over, in its unit (``modulus_kwh`` for
    electricity)."""
    source: Id | None = None
    unit: int | None = Field(None, ge=0, le=255)
    preset: str | None = None
    signals: MeterSignals = MeterSignals()

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
    end: str
    period: Literal["critical_peak", "peak", "flat", "valley"]

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
    periods: list[TariffPeriodSection] = Field(min_length=1)

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
    kind: Literal["threshold", "state_duration", "kpi_limit"]
    device: Id | None = None
    machine: Id | None = None
    signal: str | None = None
    raise_above: float | None = None
    clear_below: float | None = None
    min_duration_s: float = Field(0.0, ge=0)
    state: str | None = None
    max_duration_s: float | None = Field(None, gt=0)
    field: str | None = None
    limit: float | None = None
    window: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"

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
    site: SiteSection
    kpi: KpiSection = KpiSection()
    calendar: CalendarSection = CalendarSection()
    calendars: dict[Id, CalendarSection] = Field(default_factory=dict)
    """Named calendars (``[calendars.<name>]``) that lines and machines may follow
    instead of the site's ``[calendar]``; a key left out is the site calendar's."""
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSection = OutboxSection()
    health: HealthSettings = HealthSettings()
    sources: list[SourceSection] = Field(default_factory=list)
    lines: list[LineSection] = Field(default_factory=list)
    machines: list[MachineSection] = Field(default_factory=list)
    meters: list[MeterSection] = Field(default_factory=list)
    alarms: list[AlarmSection] = Field(default_factory=list)
    energy: EnergySection = EnergySection()
    tariff: TariffSection | None = None
    """Energy prices; none: records have no ``energy_cost``."""

    def signals(self) -> list[tuple[str, str, SignalSection]]:
        """Every configured ``(device id, role, signal)`` of machines, then meters (meter
        presets are not signals: they are expanded where collectors are built)."""
        out: list[tuple[str, str, SignalSection]] = []
        items: list[MachineSection | MeterSection] = [*self.machines, *self.meters]
        for item in items:
            for role in type(item.signals).model_fields:
                sig = getattr(item.signals, role)
                if sig is not None:
                    out.append((item.id, role, sig))
        return out
