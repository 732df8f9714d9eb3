"""The edge agent's configuration (``agent.toml``), validated item by item.

The keys the KPI engine reads (``site``, ``kpi``, ``calendar``, ``lines``, ``machines``,
``meters``) are fixed by DESIGN.md; the rest (sources, signals, MQTT, outbox) is ours.
Whole-file checks (references, uniqueness, resolvable roles) are in ``validate.py``.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from agent.config.common import MqttSettings, StrictModel
from agent.health import HealthSettings
from rules.spec import window_length_ms
from rules.types import MACHINE_STATES

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_id(value: str) -> str:
    # Ids become MQTT topic levels; "_" prefixes are reserved for _line/_site/_agent.
    if not _ID_RE.match(value):
        raise ValueError(
            f"id {value!r} must start with a letter or digit and contain only letters, "
            "digits, '_', '.', '-' (ids starting with '_' are reserved)"
        )
    return value


Id = Annotated[str, Field(min_length=1, max_length=64)]


def _parse_hhmm(value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a time of day like '08:00'") from err


class AgentSection(StrictModel):
    """Identity and local state of this agent process."""

    id: Id = "edge-agent"
    state_dir: Path = Path("/var/lib/edge-agent")

    _id = field_validator("id")(_check_id)


class SiteSection(StrictModel):
    """The factory: its id, local time zone (for the shift calendar) and grid factor."""

    id: Id
    timezone: str = "UTC"
    grid_factor_kg_per_kwh: float = Field(0.5306, ge=0, le=5)

    _id = field_validator("id")(_check_id)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "'Asia/Shanghai')") from err
        return value


class KpiSection(StrictModel):
    """Which windows to compute and how long to wait for late samples."""

    windows: list[str] = Field(default_factory=lambda: ["1m", "15m", "1h"], min_length=1)
    lateness_s: float = Field(5.0, ge=0, le=3600)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for label in value:
            if label != "shift":
                window_length_ms(label)
        if len(set(value)) != len(value):
            raise ValueError("windows are listed twice")
        return value


class ShiftSection(StrictModel):
    """One shift in site-local time; an end at or before the start crosses midnight."""

    name: Id
    start: str
    end: str
    breaks: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _times(self) -> Self:
        _parse_hhmm(self.start)
        _parse_hhmm(self.end)
        for begin, end in self.breaks:
            _parse_hhmm(begin)
            _parse_hhmm(end)
        return self

    def times(self) -> tuple[time, time, tuple[tuple[time, time], ...]]:
        """Start, end and breaks as ``datetime.time``."""
        return (
            _parse_hhmm(self.start),
            _parse_hhmm(self.end),
            tuple((_parse_hhmm(a), _parse_hhmm(b)) for a, b in self.breaks),
        )


class CalendarSection(StrictModel):
    """Optional shift calendar; without one every hour is scheduled."""

    shifts: list[ShiftSection] = Field(default_factory=list)


class OutboxSection(StrictModel):
    """Bounds of the on-disk outbox, and how hard it syncs."""

    max_bytes: int = Field(256 * 2**20, ge=2**20)
    max_age_s: float = Field(7 * 86400, gt=0)
    synchronous: Literal["full", "normal"] = "full"
    drain_rate_per_s: float | None = Field(None, gt=0)


class OpcUaSourceSection(StrictModel):
    """An OPC UA server. Namespaces are given by URI and resolved at connect time.

    ``deadband`` is the default for every unmapped signal of the source (a signal's own
    ``deadband`` wins; 0 turns it off for that signal). Security: ``security_policy`` and
    ``security_mode`` (``Sign`` or ``SignAndEncrypt``); the client certificate is
    ``certificate``/``private_key`` or is created in ``pki_dir`` (default
    ``<agent.state_dir>/pki/<source id>``); servers are trusted by ``trust_dir``
    (default ``pki_dir/trusted``) and/or pinned ``server_thumbprints`` (SHA-1 or SHA-256).
    ``max_clock_skew_s`` (0: off) flags source timestamps that far from the receive time;
    ``clock_skew_action`` keeps them (``flag``) or uses the receive time (``receive``).
    ``watchdog_s`` is the interval of the liveness probe and the keep-alive period asked
    of the server: a subscription that sends neither a change nor a keep-alive for twice
    the granted period plus ``timeout_s`` is connected but silent, and is reconnected.
    """

    id: Id
    type: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    namespaces: dict[str, str] = Field(default_factory=dict)
    publishing_interval_ms: int = Field(500, ge=10, le=600_000)
    sampling_interval_ms: int = Field(0, ge=0, le=600_000)
    queue_size: int = Field(100, ge=1, le=100_000)
    timeout_s: float = Field(5.0, gt=0, le=120)
    session_timeout_s: float = Field(60.0, gt=0)
    watchdog_s: float = Field(10.0, gt=0)
    username: str | None = None
    password_env: str | None = None
    deadband: float | None = Field(None, ge=0)
    deadband_type: Literal["absolute", "percent"] = "absolute"
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                             "Aes256_Sha256_RsaPss"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    application_uri: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
    pki_dir: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    trust_dir: Path | None = None
    server_thumbprints: list[str] = Field(default_factory=list)
    max_clock_skew_s: float = Field(5.0, ge=0, le=86_400)
    clock_skew_action: Literal["flag", "receive"] = "flag"

    _id = field_validator("id")(_check_id)

    @field_validator("server_thumbprints")
    @classmethod
    def _thumbprints(cls, value: list[str]) -> list[str]:
        from collectors.opcua_security import normalize_thumbprint

        for thumb in value:
            normalize_thumbprint(thumb)
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError("security_policy and security_mode must both be 'None' or both "
                             "be set (e.g. 'Basic256Sha256' with 'SignAndEncrypt')")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither (then one is "
                             "created in pki_dir)")
        if self.deadband_type == "percent" and self.deadband is not None and self.deadband > 100:
            raise ValueError("a percent deadband must be within 0..100")
        return self


class ModbusUnitSection(StrictModel):
    """Overrides for one unit id of a Modbus source (``[sources.units.<unit id>]``)."""

    timeout_s: float | None = Field(None, gt=0, le=60)
    """Reply timeout of this unit's requests (default: the source's)."""
    retries: int | None = Field(None, ge=0, le=5)
    """Retries of this unit's requests (default: the source's)."""


class ModbusSourceSection(StrictModel):
    """A Modbus TCP gateway or device, an RTU serial bus, or RTU over TCP.

    ``timeout_s`` and ``retries`` apply to every request; ``units`` overrides them for
    single unit ids (a slow meter), so dead devices on the link still fail fast.
    """

    id: Id
    type: Literal["modbus"]
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    timeout_s: float = Field(0.3, gt=0, le=60)
    retries: int = Field(1, ge=0, le=5)
    max_gap: int = Field(8, ge=0, le=100)
    units: dict[int, ModbusUnitSection] = Field(default_factory=dict)

    _id = field_validator("id")(_check_id)

    @field_validator("units")
    @classmethod
    def _unit_ids(cls, units: dict[int, ModbusUnitSection]) -> dict[int, ModbusUnitSection]:
        bad = sorted(u for u in units if not 0 <= u <= 255)
        if bad:
            raise ValueError(f"unit id {bad[0]} is outside 0..255")
        return units

    @model_validator(mode="after")
    def _transport(self) -> Self:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport 'rtu' needs serial_port (e.g. '/dev/ttyUSB0')")
        return self


Source = Annotated[OpcUaSourceSection | ModbusSourceSection, Field(discriminator="type")]

DataType = Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string"]


class SignalSection(StrictModel):
    """Where one role of a machine or meter comes from: an OPC UA node or a Modbus register.

    OPC UA: ``node`` (NodeId, ``nsu=URI;...`` preferred) or ``browse_path``, with optional
    per-node ``deadband`` (``deadband_type`` absolute or percent of EURange),
    ``sampling_interval_ms`` and ``queue_size`` overriding the source's.
    Modbus: ``unit``, ``table``, ``address`` (0-based), ``type``, word/byte order.
    Both: ``scale``/``offset`` turn a numeric value into the role's unit
    (``value * scale + offset``); ``engineering_unit`` says which unit the device reports
    an energy (Wh, kWh, MWh) or power (W, kW, MW) role in, and the agent converts it to the
    role's kWh or kW (after scale and offset); ``map`` turns raw values into state names
    (keys are the raw values as text, e.g. ``"2"``), for OPC UA nodes and Modbus
    registers alike.
    """

    source: Id
    node: str | None = None
    browse_path: str | None = None
    unit: int | None = Field(None, ge=0, le=255)
    table: Literal["holding", "input", "coil", "discrete"] | None = None
    address: int | None = Field(None, ge=0, le=65535)
    type: DataType = "u16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    engineering_unit: str | None = None
    map: dict[str, str] | None = None
    deadband: float | None = Field(None, ge=0)
    deadband_type: Literal["absolute", "percent"] = "absolute"
    sampling_interval_ms: int | None = Field(None, ge=0, le=600_000)
    queue_size: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _address(self) -> Self:
        opcua = self.node is not None or self.browse_path is not None
        modbus = self.table is not None or self.address is not None
        if opcua and modbus:
            raise ValueError("give either an OPC UA node/browse_path or a Modbus table/address")
        if not opcua and not modbus:
            raise ValueError("needs node or browse_path (OPC UA) or table and address (Modbus)")
        if self.node is not None and self.browse_path is not None:
            raise ValueError("give node or browse_path, not both")
        if modbus and (self.table is None or self.address is None):
            raise ValueError("a Modbus signal needs both table and address")
        if modbus and (self.deadband is not None or self.sampling_interval_ms is not None
                       or self.queue_size is not None):
            raise ValueError("deadband, sampling_interval_ms and queue_size are OPC UA "
                             "settings; a Modbus signal is polled at its source's interval")
        if self.deadband_type == "percent" and self.deadband is not None and self.deadband > 100:
            raise ValueError("a percent deadband must be within 0..100")
        if self.map is not None and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError("map translates raw codes as they are; give no scale or offset "
                             "with it")
        if self.map is not None:
            bad = sorted(set(self.map.values()) - MACHINE_STATES)
            if bad:
                raise ValueError(f"map values {bad} are not machine states "
                                 f"({', '.join(sorted(MACHINE_STATES))})")
        return self

    @property
    def is_opcua(self) -> bool:
        """True when the signal is addressed as an OPC UA node."""
        return self.node is not None or self.browse_path is not None


class MachineSignals(StrictModel):
    """The roles a machine can provide (DESIGN.md, "Semantic signals")."""

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
    signals: MachineSignals = MachineSignals()

    _id = field_validator("id")(_check_id)


class LineSection(StrictModel):
    """A line; its output machine's counts are the line's output."""

    id: Id
    output_machine: Id

    _id = field_validator("id")(_check_id)


class MeterSignals(StrictModel):
    """Roles of a meter; a ``preset`` on the meter fills these from a known register map."""

    energy_kwh: SignalSection | None = None
    power_kw: SignalSection | None = None


class MeterSection(StrictModel):
    """An energy meter measuring one machine or, failing that, one line."""

    id: Id
    machine: Id | None = None
    line: Id | None = None
    resolution_kwh: float = Field(0.01, gt=0)
    modulus_kwh: float | None = Field(None, gt=0)
    max_power_kw: float | None = Field(None, gt=0)
    source: Id | None = None
    unit: int | None = Field(None, ge=0, le=255)
    preset: str | None = None
    signals: MeterSignals = MeterSignals()

    _id = field_validator("id")(_check_id)

    @model_validator(mode="after")
    def _attached(self) -> Self:
        if (self.machine is None) == (self.line is None):
            raise ValueError("a meter measures exactly one of: machine, line")
        if self.preset is not None and (self.source is None or self.unit is None):
            raise ValueError("preset needs source and unit")
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
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSection = OutboxSection()
    health: HealthSettings = HealthSettings()
    sources: list[Source] = Field(default_factory=list)
    lines: list[LineSection] = Field(default_factory=list)
    machines: list[MachineSection] = Field(default_factory=list)
    meters: list[MeterSection] = Field(default_factory=list)
    alarms: list[AlarmSection] = Field(default_factory=list)

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
