"""Scenario files: what the bundled plant simulates, validated when loaded.

A scenario is TOML (see ``default_scenario.toml`` beside this module). It is checked in
two layers, like the agent's own config: each table by its model, then the whole
(unique ids, meters pointing at real machines, fault targets that exist, register
layouts able to carry the configured resolution). Every problem is reported at once in
a :class:`~rules.errors.ConfigError`, each named by its place in the file, e.g.
``machines[1] "cnc-02": programs[0].cycle_time_s.mean``.
"""

from __future__ import annotations

import math
import tomllib
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.calendar import zone
from rules.errors import ConfigError
from simulators.nodes import variable_by_path

__all__ = [
    "CalendarSpec",
    "CyclicCalendarSpec",
    "Distribution",
    "FaultSpec",
    "MachineSpec",
    "MeterSpec",
    "PowerSpec",
    "ProgramSpec",
    "Scenario",
    "ShiftSpec",
    "default_scenario",
    "load_scenario",
]

MAX_UNIT_ID = 247
"""Highest Modbus unit id a serial line or gateway may address."""

FLOAT32_LAYOUTS: frozenset[str] = frozenset({"sdm630", "dtsu666"})
"""Layouts whose energy register is a float32 in kWh (precision bounds the modulus)."""
EM24_ENERGY_STEP_KWH = Decimal("0.1")
"""The ``em24`` energy register counts tenths of a kWh, whatever the meter's resolution."""
FIXED_STEP_LAYOUTS: dict[str, tuple[Decimal, int, str]] = {
    "adl400": (Decimal("0.01"), 2**32, "an unsigned 32-bit register"),
    "pm5xxx": (Decimal("0.001"), 2**63, "a signed 64-bit register"),
    "pac3200": (Decimal("0.001"), 2**53, "a float64 exactly"),
}
"""Layouts whose energy register counts a fixed step (kWh) whatever the meter's
resolution: the step, how many steps the register carries exactly (the largest modulus
in steps), and what the register is."""

FaultKind = Literal[
    "opcua_restart",
    "opcua_bad_status",
    "opcua_node_missing",
    "modbus_exception",
    "modbus_silent",
    "modbus_slow",
    "counter_reset",
    "meter_reset",
    "clock_skew",
]


class _Model(BaseModel):
    """Strict base: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Model):
    """A random duration in seconds; a bare number in TOML means a fixed duration.

    ``normal`` draws are clipped to ``[min, max]``; ``exponential`` uses only ``mean``
    (memoryless failures), clipped the same way.
    """

    mean: Annotated[float, Field(ge=0.0)]
    sd: Annotated[float, Field(ge=0.0)] = 0.0
    min: Annotated[float, Field(ge=0.0)] | None = None
    max: Annotated[float, Field(gt=0.0)] | None = None
    kind: Literal["normal", "exponential", "uniform"] = "normal"

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"mean": float(data)}
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> Distribution:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.kind == "uniform" and (self.min is None or self.max is None):
            raise ValueError("a uniform distribution needs both min and max")
        return self


class ProgramSpec(_Model):
    """One NC program: how long a part takes and how many parts a job (batch) has."""

    name: Annotated[str, Field(min_length=1)]
    cycle_time_s: Distribution
    batch_size: Annotated[tuple[int, int], Field()] = (10, 50)
    weight: Annotated[float, Field(gt=0.0)] = 1.0
    scrap_probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if low < 1 or high < low:
            raise ValueError("batch_size must be a positive count or a range [low, high]")
        return value

    @field_validator("cycle_time_s")
    @classmethod
    def _positive_cycle(cls, value: Distribution) -> Distribution:
        if value.mean <= 0.0:
            raise ValueError("mean cycle time must be greater than 0")
        return value


class PowerSpec(_Model):
    """Active power in kW drawn in each machine state; ``jitter`` is a relative spread."""

    off: Annotated[float, Field(ge=0.0)] = 0.0
    idle: Annotated[float, Field(ge=0.0)] = 2.0
    setup: Annotated[float, Field(ge=0.0)] = 3.0
    producing: Annotated[float, Field(ge=0.0)] = 15.0
    unplanned_down: Annotated[float, Field(ge=0.0)] = 1.5
    planned_down: Annotated[float, Field(ge=0.0)] = 1.0
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    power_factor_producing: Annotated[float, Field(gt=0.0, le=1.0)] = 0.88
    power_factor_other: Annotated[float, Field(gt=0.0, le=1.0)] = 0.55

    def kw(self, state: str) -> float:
        """Nominal power for a state name (one of the six machine states)."""
        value: float = getattr(self, state)
        return value


class MachineSpec(_Model):
    """One CNC machine and the statistics that drive it."""

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    manufacturer: str = "Example Machine Works"
    model: str = "VMC-850"
    serial_number: str = ""
    programs: Annotated[list[ProgramSpec], Field(min_length=1)]
    setup_time_s: Distribution = Distribution(mean=600.0, sd=120.0, min=120.0)
    idle_time_s: Distribution = Distribution(mean=120.0, sd=60.0, min=0.0)
    scrap_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    mtbf_s: Annotated[float, Field(gt=0.0)] | None = 4 * 3600.0
    mttr_s: Distribution = Distribution(mean=900.0, kind="exponential", min=60.0)
    spindle_speed_rpm: Annotated[float, Field(ge=0.0)] = 8000.0
    spindle_load_pct: Annotated[float, Field(ge=0.0, le=200.0)] = 45.0
    initial_parts_total: Annotated[int, Field(ge=0)] = 0
    initial_parts_scrap: Annotated[int, Field(ge=0)] = 0
    counter_modulus: Annotated[int, Field(ge=2, le=2**32)] = 2**32
    power_on_s: Annotated[int, Field(ge=0)] = 0
    power: PowerSpec = PowerSpec()
    profile: Literal["opc40501"] | None = None
    """``"opc40501"``: the OPC UA server also serves the machine as an OPC 40501-1
    (umati) MachineTool object under ``Objects/Machines`` (see ``simulators.umati``)."""

    @model_validator(mode="after")
    def _counters(self) -> MachineSpec:
        if self.initial_parts_total >= self.counter_modulus:
            raise ValueError("initial_parts_total must be below counter_modulus")
        if self.initial_parts_scrap >= self.counter_modulus:
            raise ValueError("initial_parts_scrap must be below counter_modulus")
        return self


class MeterSpec(_Model):
    """One energy meter, coupled to one machine (its power follows that machine's state).

    ``layout`` picks the register map: ``sdm630`` (float32 input registers, high word
    first), ``scaled32`` (unsigned 32-bit integers in holding registers, low word
    first), ``em24`` (signed 32-bit integers in holding registers, low word first,
    energy in 0.1 kWh), ``dtsu666`` (float32 holding registers, high word first, energy
    in kWh), ``adl400`` (16- and 32-bit integers in holding registers, high word first,
    energy in 0.01 kWh), ``pm5xxx`` (float32 holding registers, energy INT64 in Wh) or
    ``pac3200`` (float32 input registers, energy float64 in Wh); the agent's presets of
    the same names read them. The energy register moves in steps of ``resolution_kwh``
    (default 0.01 kWh, 0.1 kWh for ``em24``) and rolls over at ``modulus_kwh``.
    """

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    machine: Annotated[str, Field(min_length=1)]
    unit_id: Annotated[int, Field(ge=1, le=MAX_UNIT_ID)] | None = None
    layout: Literal["sdm630", "scaled32", "em24", "dtsu666", "adl400", "pm5xxx",
                    "pac3200"] = "sdm630"
    resolution_kwh: Decimal = Decimal("0.01")
    modulus_kwh: Decimal | None = None
    initial_kwh: Decimal = Decimal("0")
    update_interval_s: Annotated[float, Field(ge=0.05, le=60.0)] = 1.0
    voltage_v: Annotated[float, Field(gt=0.0)] = 230.0
    frequency_hz: Annotated[float, Field(gt=0.0)] = 50.0

    @model_validator(mode="before")
    @classmethod
    def _layout_resolution(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("layout") == "em24" \
                and "resolution_kwh" not in data:
            return {**data, "resolution_kwh": EM24_ENERGY_STEP_KWH}
        return data

    @field_validator("resolution_kwh", "modulus_kwh", "initial_kwh", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Any:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, int | float | str):
            try:
                return Decimal(str(value))
            except InvalidOperation as err:
                raise ValueError(f"{value!r} is not a number") from err
        raise ValueError("must be a number")

    @field_validator("resolution_kwh")
    @classmethod
    def _resolution(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value <= 0:
            raise ValueError("must be greater than 0")
        # Energy is integrated in integer microjoules; a resolution step must be whole.
        if (value * 3_600_000_000_000) % 1 != 0:
            raise ValueError("is finer than the simulator's 1 microjoule integration step")
        return value

    @property
    def effective_modulus_kwh(self) -> Decimal:
        """The rollover point: configured, or the layout's default."""
        if self.modulus_kwh is not None:
            return self.modulus_kwh
        if self.layout in FLOAT32_LAYOUTS:
            return Decimal("10000")
        if self.layout == "em24":
            return Decimal("100000000")  # the meter's 8-digit kWh display
        return Decimal("10000000")


class ShiftSpec(_Model):
    """A shift in local wall-clock time; breaks inside it are planned downtime."""

    name: Annotated[str, Field(min_length=1)]
    start: str
    end: str
    breaks: list[tuple[str, str]] = []

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        _parse_hhmm(value)
        return value

    @field_validator("breaks")
    @classmethod
    def _breaks(cls, value: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for start, end in value:
            _parse_hhmm(start)
            _parse_hhmm(end)
        return value


class CyclicCalendarSpec(_Model):
    """A repeating pattern (aligned to the UNIX epoch) for demos and tests.

    Offsets are seconds into each period: ``breaks`` are planned downtime, ``off`` is
    unscheduled time (machine switched off).
    """

    period_s: Annotated[float, Field(gt=0.0)]
    breaks: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []

    @model_validator(mode="after")
    def _inside(self) -> CyclicCalendarSpec:
        spans = sorted([*self.breaks, *self.off])
        last_end = 0.0
        for start, end in spans:
            if not 0.0 <= start < end <= self.period_s:
                raise ValueError(f"span [{start}, {end}] must lie inside [0, period_s]")
            if start < last_end:
                raise ValueError(f"span [{start}, {end}] overlaps another span")
            last_end = end
        return self


class CalendarSpec(_Model):
    """When the machines are scheduled to work; no shifts and no cycle = always."""

    timezone: str = "UTC"
    shifts: list[ShiftSpec] = []
    cyclic: CyclicCalendarSpec | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> CalendarSpec:
        if self.shifts and self.cyclic is not None:
            raise ValueError("use either shifts or cyclic, not both")
        return self


class FaultSpec(_Model):
    """A fault the plant injects by itself, ``at_s`` seconds of model time after it
    started (on the unskewed clock, so exact also with an accelerated or manual clock).

    ``target`` is a machine id (OPC UA and counter faults) or a meter id (Modbus and
    meter faults); ``clock_skew`` needs none and sets the skew to ``value`` seconds;
    ``modbus_slow`` answers ``value`` seconds late; ``opcua_node_missing`` removes the
    variable ``node`` (a path under the machine such as
    ``"Production/PartsProducedInLifetime"``) or, without ``node``, the whole machine.
    A fault with ``duration_s`` is cleared again after that long (``opcua_restart``:
    the downtime, default 2 s).
    """

    at_s: Annotated[float, Field(ge=0.0)]
    kind: FaultKind
    target: str | None = None
    duration_s: Annotated[float, Field(gt=0.0)] | None = None
    value: float | None = None
    code: Annotated[int, Field(ge=1, le=255)] | None = None
    status: str | None = None
    node: str | None = None


class Scenario(_Model):
    """A whole simulated plant: machines, meters, calendar and scheduled faults."""

    name: str = "scenario"
    seed: int = 1
    clock_skew_s: float = 0.0
    calendar: CalendarSpec = CalendarSpec()
    machines: Annotated[list[MachineSpec], Field(min_length=1)]
    meters: list[MeterSpec] | None = None
    faults: list[FaultSpec] = []
    telemetry_hz: Annotated[float, Field(ge=0.0, le=50.0)] = 0.0
    """How often every cutting machine's spindle speed and load are served anew, as a
    controller's live readings move all the time (0: they change only at state changes
    and parts). The readings follow :meth:`simulators.machine.Machine.spindle_at`; they
    are not in the ledger, which keeps states, parts and energy."""

    @property
    def effective_meters(self) -> list[MeterSpec]:
        """The meters to serve: configured, or one ``sdm630`` per machine."""
        if self.meters is not None:
            return list(self.meters)
        return [
            MeterSpec(id=f"meter-{i + 1:02d}", machine=machine.id)
            for i, machine in enumerate(self.machines)
        ]

    def unit_ids(self) -> list[int]:
        """Modbus unit id of each effective meter: configured, else its 1-based position."""
        return [
            meter.unit_id if meter.unit_id is not None else i + 1
            for i, meter in enumerate(self.effective_meters)
        ]


def _parse_hhmm(value: str) -> tuple[int, int]:
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 24 or minute > 59 or (hour == 24 and minute != 0):
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    return hour, minute


def parse_hhmm(value: str) -> tuple[int, int]:
    """``"08:30"`` -> ``(8, 30)``; used by the calendar once the scenario is valid."""
    return _parse_hhmm(value)


def _float32_spacing(value: float) -> float:
    """Distance between adjacent float32 numbers at ``value`` (its ULP)."""
    if value <= 0.0:
        return 2.0**-149
    exponent = math.floor(math.log2(value))
    return 2.0 ** (exponent - 23)


def _item_name(raw: Any, section: str, index: int) -> str:
    try:
        item = raw[section][index]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return f' "{item["id"]}"'
    return ""


def _place(loc: tuple[int | str, ...], raw: Any) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and isinstance(loc[0], str):
                out += _item_name(raw, loc[0], part)
        else:
            if i == 2 and isinstance(loc[1], int):
                out += ": " + part
            else:
                out += ("." if out else "") + part
    return out


def _cross_check(scenario: Scenario) -> list[tuple[str, str]]:
    """The whole-scenario layer: relations between items."""
    errors: list[tuple[str, str]] = []
    machine_ids: dict[str, int] = {}
    for i, machine in enumerate(scenario.machines):
        place = f'machines[{i}] "{machine.id}"'
        if machine.id in machine_ids:
            errors.append((f"{place}: id", f"duplicate of machines[{machine_ids[machine.id]}]"))
        machine_ids.setdefault(machine.id, i)
        names = [p.name for p in machine.programs]
        for j, name in enumerate(names):
            if name in names[:j]:
                errors.append((f"{place}: programs[{j}].name", f"duplicate program {name!r}"))
    meters = scenario.effective_meters
    meter_ids: dict[str, int] = {}
    unit_ids: dict[int, int] = {}
    for i, (meter, unit) in enumerate(zip(meters, scenario.unit_ids(), strict=True)):
        place = f'meters[{i}] "{meter.id}"'
        if meter.id in meter_ids or meter.id in machine_ids:
            errors.append((f"{place}: id", "duplicate id (meter and machine ids share one space)"))
        meter_ids.setdefault(meter.id, i)
        if unit in unit_ids:
            errors.append((f"{place}: unit_id",
                           f"unit id {unit} already used by meters[{unit_ids[unit]}]"))
        unit_ids.setdefault(unit, i)
        if not 1 <= unit <= MAX_UNIT_ID:
            errors.append((f"{place}: unit_id", f"unit id {unit} outside 1..{MAX_UNIT_ID}"))
        if meter.machine not in machine_ids:
            errors.append((f"{place}: machine", f"machine {meter.machine!r} is not defined"))
        modulus = meter.effective_modulus_kwh
        res = meter.resolution_kwh
        if not modulus.is_finite() or modulus <= 0 or modulus % res != 0:
            errors.append((f"{place}: modulus_kwh",
                           "must be a positive multiple of resolution_kwh"))
            continue
        if meter.initial_kwh < 0 or meter.initial_kwh >= modulus or meter.initial_kwh % res != 0:
            errors.append((f"{place}: initial_kwh",
                           "must be a multiple of resolution_kwh in [0, modulus_kwh)"))
        if meter.layout in FLOAT32_LAYOUTS:
            spacing = _float32_spacing(float(modulus))
            if spacing > float(res) / 2:
                errors.append((f"{place}: modulus_kwh",
                               f"float32 cannot carry {res} kWh steps up to {modulus} kWh "
                               f"(spacing {spacing:g}); lower modulus_kwh"))
        elif meter.layout == "em24":
            if res % EM24_ENERGY_STEP_KWH != 0:
                errors.append((f"{place}: resolution_kwh",
                               f"em24 counts energy in {EM24_ENERGY_STEP_KWH} kWh; "
                               f"{res} kWh is not a whole number of them"))
            elif modulus / EM24_ENERGY_STEP_KWH > 2**31 - 1:
                errors.append((f"{place}: modulus_kwh",
                               f"{modulus / EM24_ENERGY_STEP_KWH} tenths of a kWh do not fit "
                               "a signed 32-bit register"))
        elif meter.layout in FIXED_STEP_LAYOUTS:
            step, most, what = FIXED_STEP_LAYOUTS[meter.layout]
            if res % step != 0:
                errors.append((f"{place}: resolution_kwh",
                               f"{meter.layout} counts energy in {step} kWh; "
                               f"{res} kWh is not a whole number of them"))
            elif modulus / step > most:
                errors.append((f"{place}: modulus_kwh",
                               f"{modulus / step} steps of {step} kWh do not fit {what}"))
        elif modulus / res > 2**32:
            errors.append((f"{place}: modulus_kwh",
                           f"{modulus / res} steps do not fit an unsigned 32-bit register"))
    for i, fault in enumerate(scenario.faults):
        place = f"faults[{i}]"
        if fault.kind == "clock_skew":
            if fault.value is None:
                errors.append((f"{place}: value", "clock_skew needs value (seconds)"))
            continue
        if fault.status is not None and not _is_bad_status(fault.status):
            errors.append((f"{place}: status",
                           f"{fault.status!r} is not the name of a Bad status code"))
        if fault.kind == "modbus_slow" and (fault.value is None or fault.value <= 0):
            errors.append((f"{place}: value", "modbus_slow needs value (delay in seconds > 0)"))
        if fault.node is not None:
            if fault.kind != "opcua_node_missing":
                errors.append((f"{place}: node", "only opcua_node_missing takes a node"))
            elif not _is_variable_path(fault.node):
                errors.append((f"{place}: node",
                               f"{fault.node!r} is not a variable path under a machine"))
        machine_kinds = {"opcua_bad_status", "opcua_node_missing", "counter_reset"}
        wants = "machine" if fault.kind in machine_kinds else "meter"
        if fault.kind == "opcua_restart":
            continue
        pool = machine_ids if wants == "machine" else meter_ids
        if fault.target is None or fault.target not in pool:
            errors.append((f"{place}: target", f"{fault.kind} needs the id of a {wants}"))
    return errors


def _is_variable_path(path: str) -> bool:
    try:
        variable_by_path(path)
    except KeyError:
        return False
    return True


def _is_bad_status(name: str) -> bool:
    from asyncua.ua.status_codes import StatusCodes

    return name.startswith("Bad") and isinstance(getattr(StatusCodes, name, None), int)


def scenario_from_dict(raw: dict[str, Any], source: str = "") -> Scenario:
    """Validate parsed TOML (or any mapping) into a :class:`Scenario`.

    Raises :class:`ConfigError` listing every problem with its place.
    """
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as err:
        errors = [
            (_place(tuple(e["loc"]), raw), e["msg"]) for e in err.errors()
        ]
        raise ConfigError(errors, source=source) from err
    problems = _cross_check(scenario)
    if problems:
        raise ConfigError(problems, source=source)
    return scenario


def load_scenario(path: Path | None = None) -> Scenario:
    """Read and validate a scenario file; ``None`` loads the packaged default.

    A missing file, bad TOML or a bad value raises :class:`ConfigError` naming the key.
    """
    if path is None:
        text = resources.files("simulators").joinpath("default_scenario.toml").read_text("utf-8")
        source = "default_scenario.toml"
    else:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as err:
            raise ConfigError([("", f"cannot read scenario: {err.strerror or err}")],
                              source=source) from err
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"invalid TOML: {err}")], source=source) from err
    return scenario_from_dict(raw, source=source)


def default_scenario(machines: int = 2, seed: int = 1, fast: bool = True,
                     meters: int | None = None) -> Scenario:
    """A generated plant of ``machines`` CNCs with one SDM630 meter each.

    ``meters`` meters only (on the first machines) instead: a Modbus gateway serves at
    most 247 units, and a large plant meters only some of its machines.

    ``fast`` uses 1-4 s cycles, seconds-long setups and breakdowns and a 60 s cycle
    with a 5 s planned break, so every KPI moves within seconds (demo and tests);
    otherwise the numbers are those of a real job shop running around the clock.
    """
    if machines < 1:
        raise ValueError("machines must be at least 1")
    metered = machines if meters is None else meters
    if not 0 <= metered <= machines:
        raise ValueError("meters must be between 0 and the number of machines")
    machine_specs: list[dict[str, Any]] = []
    meter_specs: list[dict[str, Any]] = []
    for i in range(machines):
        mid = f"cnc-{i + 1:02d}"
        if fast:
            programs = [
                {"name": f"O{1000 + i * 10 + 1}", "cycle_time_s": {"mean": 2.0, "sd": 0.4,
                 "min": 1.0, "max": 4.0}, "batch_size": [6, 14]},
                {"name": f"O{1000 + i * 10 + 2}", "cycle_time_s": {"mean": 3.0, "sd": 0.5,
                 "min": 1.5, "max": 4.0}, "batch_size": [4, 10], "weight": 0.6},
            ]
            timing: dict[str, Any] = {
                "setup_time_s": {"mean": 3.0, "sd": 1.0, "min": 1.0, "max": 6.0},
                "idle_time_s": {"mean": 1.5, "sd": 1.5, "min": 0.0, "max": 4.0},
                "mtbf_s": 45.0,
                "mttr_s": {"mean": 4.0, "kind": "exponential", "min": 1.0, "max": 10.0},
                "scrap_probability": 0.06,
            }
            power: dict[str, Any] = {"producing": 24.0 + 2.0 * (i % 5), "idle": 3.0,
                                     "setup": 5.0, "unplanned_down": 2.0, "planned_down": 1.5}
        else:
            programs = [
                {"name": f"O{2000 + i * 10 + 1}", "cycle_time_s": {"mean": 45.0, "sd": 3.0,
                 "min": 38.0, "max": 70.0}, "batch_size": [40, 120]},
                {"name": f"O{2000 + i * 10 + 2}", "cycle_time_s": {"mean": 75.0, "sd": 5.0,
                 "min": 62.0, "max": 110.0}, "batch_size": [20, 60], "weight": 0.5},
            ]
            timing = {}
            power = {"producing": 15.0 + 1.5 * (i % 5)}
        machine_specs.append({
            "id": mid,
            "manufacturer": "Example Machine Works",
            "model": "VMC-850" if i % 2 == 0 else "HMC-500",
            "serial_number": f"SN-{seed:04d}-{i + 1:04d}",
            "programs": programs,
            "power": power,
            "initial_parts_total": 1000 * (i + 1),
            "initial_parts_scrap": 20 * (i + 1),
            "power_on_s": 3_600 * 1_000 * (i + 1),
            **timing,
        })
        if i >= metered:
            continue
        meter_specs.append({
            "id": f"meter-{i + 1:02d}",
            "machine": mid,
            "initial_kwh": str(Decimal("1000.00") + Decimal("137.25") * (i % 40)),
        })
    raw: dict[str, Any] = {
        "name": f"default-{machines}{'-fast' if fast else ''}",
        "seed": seed,
        "machines": machine_specs,
        "meters": meter_specs,
    }
    if fast:
        raw["calendar"] = {"cyclic": {"period_s": 60.0, "breaks": [[50.0, 55.0]]}}
    return scenario_from_dict(raw, source="default_scenario()")
