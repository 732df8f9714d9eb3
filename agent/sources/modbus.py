"""Modbus sources: ``type = "modbus"`` in ``[[sources]]``, read by collectors/modbus.py.

Everything the agent knows about Modbus (TCP, RTU, RTU over TCP) as a source type: the
source and signal keys, their checks, the collector spec built from them (meter presets
included), and what a reload compares. A register's width and its required keys come
from the one type table of :mod:`collectors.decode`, checked when the file is read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Literal, Self, get_args

from pydantic import Field, field_validator, model_validator

from agent.config.common import Id, StrictModel, check_id
from agent.config.load import label
from agent.sources.base import Problems, located, problems_of, scaling, signal_uses
from collectors.decode import DTYPES, LAST_ADDRESS, MAX_REGISTERS_PER_READ, point_problem

if TYPE_CHECKING:
    from agent.config.model import AgentConfig, SignalSection
    from collectors.modbus import (
        ModbusCollector,
        ModbusDeviceSpec,
        ModbusSourceSpec,
        RegisterPoint,
    )


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
    """The source's id, as signals name it in ``source``."""
    type: Literal["modbus"]
    """``modbus``: a Modbus TCP device or gateway, an RTU serial bus, or RTU over TCP."""
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    """``tcp`` (Modbus TCP), ``rtu`` (a serial RS-485 bus at ``serial_port``) or
    ``rtu-over-tcp`` (RTU frames through a transparent serial device server at
    ``host:port``)."""
    host: str = "127.0.0.1"
    """Host name or address of the device or gateway (``tcp``, ``rtu-over-tcp``)."""
    port: int = Field(502, ge=1, le=65535)
    """TCP port (502 for Modbus TCP; device servers often use another)."""
    serial_port: str | None = None
    """Serial device of an RTU bus (``/dev/ttyUSB0``, ``/dev/ttyS1``)."""
    baudrate: int = 9600
    """Bit rate of the RTU bus; every device on it must use the same."""
    parity: Literal["N", "E", "O"] = "N"
    """Parity of the RTU bus: ``N`` none, ``E`` even, ``O`` odd."""
    stopbits: Literal[1, 2] = 1
    """Stop bits of the RTU bus (1, or 2 for devices that want them without parity)."""
    bytesize: Literal[7, 8] = 8
    """Data bits per character of the RTU bus (8; 7 for rare old devices)."""
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    """Seconds between polls of each device; shorter gives finer energy and power data, at
    more load on the link (a serial bus carries one request at a time)."""
    timeout_s: float = Field(0.3, gt=0, le=60)
    """Seconds to wait for a reply; keep it short so that a dead device holds the link only
    ``timeout_s x (retries + 1)``."""
    retries: int = Field(1, ge=0, le=5)
    """Repeats of a request that got no reply before the device counts as failing."""
    max_gap: int = Field(8, ge=0, le=100)
    """Unused registers a read may span to merge two signals into one request (fewer round
    trips); 0 for devices that refuse reads of registers they do not map."""
    units: dict[int, ModbusUnitSection] = Field(default_factory=dict)
    """``[sources.units.<unit id>]``: timeout and retries for one device (a slow meter)
    without slowing the others down."""

    _id = field_validator("id")(check_id)

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


DataType = Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string"]
"""The register types of :mod:`collectors.decode`; its table gives each one's width."""

if set(get_args(DataType)) != DTYPES:
    raise RuntimeError("DataType must list exactly the types of collectors.decode.DTYPES")


class ModbusAddress(StrictModel):
    """The Modbus keys of a signal: unit, table, address and how the value is laid out."""

    unit: int | None = Field(None, ge=0, le=255)
    """Modbus unit id (slave address, 0..255) of the device behind the source; for Modbus
    TCP devices often 1 or 255."""
    table: Literal["holding", "input", "coil", "discrete"] | None = None
    """Which table the value is in: ``holding`` registers (function 3), ``input`` registers
    (4), ``coil`` (1) or ``discrete`` inputs (2)."""
    address: int | None = Field(None, ge=0, le=LAST_ADDRESS)
    """0-based protocol address of the (first) register: holding register 40001 in a manual
    is address 0. ``edge-agent modbus-read`` shows both numbers."""
    type: DataType = "u16"
    """Modbus data type of the register(s); its width in registers follows from it."""
    length: int | None = Field(None, ge=1, le=MAX_REGISTERS_PER_READ)
    """Size of a ``type = "string"`` in registers (2 characters each): required for a
    string, refused for every other type."""
    word_order: Literal["big", "little"] = "big"
    """Order of the registers of a 32/64-bit value: ``big`` has the most significant word
    first (Modbus convention, ABCD), ``little`` the least (CDAB)."""
    byte_order: Literal["big", "little"] = "big"
    """Order of the two bytes inside each register: ``big`` (Modbus convention) or
    ``little`` for devices that swap them (BADC, DCBA)."""


class ModbusType:
    """The Modbus source type (see :class:`agent.sources.base.SourceType`)."""

    name = "modbus"
    title = "Modbus"
    section = ModbusSourceSection
    address = ModbusAddress
    address_keys = ("table", "address")
    address_phrase = "unit, table and address"
    endpoint_keys = ("transport", "host", "port", "serial_port")
    meaning_keys = ("unit", "table", "address", "type", "word_order", "byte_order")
    takes_presets = True

    def address_problem(self, sig: SignalSection) -> str | None:
        """Table and address, a point that fits its table, no OPC UA reporting keys."""
        if sig.table is None or sig.address is None:
            return "a Modbus signal needs both table and address"
        problem = point_problem(sig.table, sig.address, sig.type, sig.length)
        if problem is not None:
            return problem
        if (sig.deadband is not None or sig.sampling_interval_ms is not None
                or sig.queue_size is not None):
            return ("deadband, sampling_interval_ms and queue_size are OPC UA settings; a "
                    "Modbus signal is polled at its source's interval")
        return None

    def endpoint(self, src: ModbusSourceSection) -> str:
        """The serial port of an RTU bus, else ``host:port``."""
        return (src.serial_port or "") if src.transport == "rtu" else f"{src.host}:{src.port}"

    def check_file(self, cfg: AgentConfig, index: int, src: ModbusSourceSection) -> Problems:
        """A request's worst case must fit the poll interval; overrides must name a unit
        some machine or meter reads."""
        where = label("sources", index, src.id)
        read = {use.sig.unit for use in signal_uses(cfg, src.id) if use.sig.unit is not None}
        read |= {mt.unit for mt in cfg.meters if mt.source == src.id and mt.unit is not None}
        out: Problems = []
        worst = src.timeout_s * (src.retries + 1)
        if worst >= src.poll_interval_s:
            out.append((where + ": timeout_s",
                        f"timeout_s x (retries + 1) = {worst:g} s "
                        f"must be shorter than poll_interval_s = {src.poll_interval_s:g} s"))
        for unit, over in sorted(src.units.items()):
            place = f"{where}: units.{unit}"
            if unit not in read:
                out.append((place, f"no machine or meter reads unit {unit} through this source"))
            timeout = over.timeout_s if over.timeout_s is not None else src.timeout_s
            retries = over.retries if over.retries is not None else src.retries
            if timeout * (retries + 1) >= src.poll_interval_s:
                out.append((place, f"timeout_s x (retries + 1) = {timeout * (retries + 1):g} s "
                                   f"must be shorter than poll_interval_s = "
                                   f"{src.poll_interval_s:g} s"))
        return out

    def check_signal(self, where: str, sig: SignalSection, src: ModbusSourceSection) -> Problems:
        """A Modbus signal names the unit (device) it is read from."""
        if sig.unit is None:
            return [(where + ".unit", "a Modbus signal needs the unit (device) id")]
        return []

    def spec(self, cfg: AgentConfig, index: int, src: ModbusSourceSection
             ) -> ModbusSourceSpec | None:
        """The collector's spec, its points grouped by unit id (one device per unit);
        None when nothing is read through ``src``."""
        return self._spec(cfg, index, src)[0]

    def _spec(self, cfg: AgentConfig, index: int, src: ModbusSourceSection
              ) -> tuple[ModbusSourceSpec | None, dict[str, str]]:
        from collectors.modbus import ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
        from collectors.presets import preset_points

        units: dict[int, list[tuple[str, RegisterPoint]]] = defaultdict(list)
        names: dict[int, list[str]] = defaultdict(list)
        for use in signal_uses(cfg, src.id):
            sig = use.sig
            assert sig.unit is not None and sig.table is not None and sig.address is not None
            scale, offset = scaling(use.role, sig)
            units[sig.unit].append((use.place, RegisterPoint(
                device=use.device, signal=use.role, table=sig.table, address=sig.address,
                dtype=sig.type, word_order=sig.word_order, byte_order=sig.byte_order,
                scale=scale, offset=offset, length=sig.length,
                value_map=dict(sig.map) if sig.map else None)))
            if use.device not in names[sig.unit]:
                names[sig.unit].append(use.device)
        for i, mt in enumerate(cfg.meters):
            if mt.preset is not None and mt.source == src.id and mt.unit is not None:
                preset = f'{label("meters", i, mt.id)}: preset'
                table = preset_points(mt.preset, mt.id, resolution_kwh=mt.resolution_kwh)
                units[mt.unit] += [(preset, pt) for pt in table]
                if mt.id not in names[mt.unit]:
                    names[mt.unit].append(mt.id)
        where = label("sources", index, src.id)
        base = f"modbus source {src.id!r}"
        rename = {base: where}
        if not units:
            return None, rename
        devices: list[ModbusDeviceSpec] = []
        for i, (unit, points) in enumerate(sorted(units.items())):
            over = src.units.get(unit)
            device = ModbusDeviceSpec(id="+".join(names[unit]), unit=unit,
                                      points=tuple(pt for _, pt in points),
                                      timeout_s=over.timeout_s if over else None,
                                      retries=over.retries if over else None)
            dplace = f"{base} devices[{i}] {device.id!r}"
            rename[dplace] = f"{where}: unit {unit}"
            for j, (place, pt) in enumerate(points):
                rename[f"{dplace} points[{j}] {pt.signal}"] = place
            devices.append(device)
        spec = ModbusSourceSpec(
            id=src.id, transport=src.transport, host=src.host, port=src.port,
            serial_port=src.serial_port, baudrate=src.baudrate, parity=src.parity,
            stopbits=src.stopbits, bytesize=src.bytesize, devices=tuple(devices),
            poll_interval_s=src.poll_interval_s, timeout_s=src.timeout_s,
            retries=src.retries, max_gap=src.max_gap,
        )
        return spec, rename

    def _collector(self, cfg: AgentConfig, index: int, src: ModbusSourceSection
                   ) -> ModbusCollector | None:
        from collectors.modbus import ModbusCollector

        spec, rename = self._spec(cfg, index, src)
        return None if spec is None else located(lambda: ModbusCollector(spec), rename)

    def check(self, cfg: AgentConfig, index: int, src: ModbusSourceSection) -> Problems:
        """What :meth:`build` would refuse (Modbus reads no secrets)."""
        return problems_of(lambda: self._collector(cfg, index, src))

    def check_host(self, cfg: AgentConfig, index: int, src: ModbusSourceSection) -> Problems:
        """Nothing: a serial adapter may be plugged in after the check, and the collector
        reports a missing one as an unavailable link, not a config error."""
        return []

    def build(self, cfg: AgentConfig, index: int, src: ModbusSourceSection
              ) -> ModbusCollector | None:
        """The collector polling every unit read through ``src``."""
        return self._collector(cfg, index, src)


SOURCE = ModbusType()
