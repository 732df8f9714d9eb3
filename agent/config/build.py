"""Turn the validated config into what the engine and the collectors take.

``rules`` and ``collectors`` cannot import the config models, so each gets plain
immutable specs built here, in one place.
"""

from __future__ import annotations

from collections import defaultdict

from agent.config.common import resolve_secret
from agent.config.model import (
    AgentConfig,
    AlarmSection,
    ModbusSourceSection,
    OpcUaSourceSection,
    SignalSection,
)
from agent.config.units import unit_factor
from collectors.modbus import ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint
from collectors.opcua import Deadband, OpcUaSourceSpec, OpcUaTag
from collectors.presets import preset_points
from rules.spec import (
    AlarmSpec,
    EngineSpec,
    KpiLimitAlarmSpec,
    LineSpec,
    MachineSpec,
    MeterSpec,
    ShiftSpec,
    StateDurationAlarmSpec,
    ThresholdAlarmSpec,
)


def _alarm(a: AlarmSection) -> AlarmSpec:
    if a.kind == "threshold":
        assert a.device is not None and a.signal is not None and a.raise_above is not None
        clear = a.clear_below if a.clear_below is not None else a.raise_above
        return ThresholdAlarmSpec(a.name, a.device, a.signal, a.raise_above, clear,
                                  a.min_duration_s, a.severity)
    if a.kind == "state_duration":
        assert a.machine is not None and a.state is not None and a.max_duration_s is not None
        return StateDurationAlarmSpec(a.name, a.machine, a.state, a.max_duration_s, a.severity)
    assert a.machine is not None and a.field is not None and a.limit is not None
    assert a.window is not None
    return KpiLimitAlarmSpec(a.name, a.machine, a.field, a.limit, a.window, a.severity)


def engine_spec(cfg: AgentConfig) -> EngineSpec:
    """The KPI engine's view of the plant."""
    shifts = []
    for s in cfg.calendar.shifts:
        start, end, breaks = s.times()
        shifts.append(ShiftSpec(s.name, start, end, breaks))
    return EngineSpec(
        site_id=cfg.site.id,
        timezone=cfg.site.timezone,
        grid_factor_kg_per_kwh=cfg.site.grid_factor_kg_per_kwh,
        windows=tuple(cfg.kpi.windows),
        lateness_s=cfg.kpi.lateness_s,
        shifts=tuple(shifts),
        lines=tuple(LineSpec(ln.id, ln.output_machine) for ln in cfg.lines),
        machines=tuple(
            MachineSpec(m.id, m.line, m.ideal_cycle_time_s, m.counter_modulus,
                        good_counter=m.signals.parts_good is not None)
            for m in cfg.machines
        ),
        meters=tuple(
            MeterSpec(mt.id, mt.machine, mt.line, mt.resolution_kwh, mt.modulus_kwh,
                      mt.max_power_kw)
            for mt in cfg.meters
        ),
        alarms=tuple(_alarm(a) for a in cfg.alarms),
    )


def _scaling(role: str, sig: SignalSection) -> tuple[float, float]:
    """``(scale, offset)`` with the declared engineering unit folded in."""
    factor = unit_factor(role, sig.engineering_unit)
    return sig.scale * factor, sig.offset * factor


def _deadband(value: float | None, kind: str) -> Deadband | None:
    if value is None:
        return None
    return Deadband("percent" if kind == "percent" else "absolute", value)


def opcua_specs(cfg: AgentConfig) -> list[OpcUaSourceSpec]:
    """One spec per OPC UA source with every tag that reads from it.

    A secure source without ``pki_dir`` keeps its certificate under the agent's state
    directory (``pki/<source id>``), so it survives restarts and upgrades.
    """
    tags: dict[str, list[OpcUaTag]] = defaultdict(list)
    for device, role, sig in cfg.signals():
        if sig.is_opcua:
            scale, offset = _scaling(role, sig)
            tags[sig.source].append(
                OpcUaTag(device=device, signal=role, node=sig.node, browse_path=sig.browse_path,
                         value_map=dict(sig.map) if sig.map else None,
                         sampling_interval_ms=sig.sampling_interval_ms,
                         queue_size=sig.queue_size,
                         deadband=_deadband(sig.deadband, sig.deadband_type),
                         scale=scale, offset=offset)
            )
    specs = []
    for src in cfg.sources:
        if isinstance(src, OpcUaSourceSection) and tags.get(src.id):
            pki_dir = src.pki_dir
            if pki_dir is None and src.security_mode != "None":
                pki_dir = cfg.agent.state_dir / "pki" / src.id
            specs.append(OpcUaSourceSpec(
                id=src.id, url=src.url, tags=tuple(tags[src.id]),
                namespaces=dict(src.namespaces),
                publishing_interval_ms=src.publishing_interval_ms,
                sampling_interval_ms=src.sampling_interval_ms, queue_size=src.queue_size,
                timeout_s=src.timeout_s, session_timeout_s=src.session_timeout_s,
                watchdog_s=src.watchdog_s, username=src.username,
                password=resolve_secret(None, src.password_env, f"sources {src.id} password_env"),
                deadband=_deadband(src.deadband, src.deadband_type),
                security_policy=src.security_policy, security_mode=src.security_mode,
                pki_dir=pki_dir, certificate=src.certificate, private_key=src.private_key,
                application_uri=src.application_uri, trust_dir=src.trust_dir,
                server_thumbprints=tuple(src.server_thumbprints),
                max_clock_skew_s=src.max_clock_skew_s, clock_skew_action=src.clock_skew_action,
            ))
    return specs


def modbus_specs(cfg: AgentConfig) -> list[ModbusSourceSpec]:
    """One spec per Modbus source, its points grouped by unit id (one device per unit)."""
    units: dict[str, dict[int, list[RegisterPoint]]] = defaultdict(lambda: defaultdict(list))
    names: dict[tuple[str, int], list[str]] = defaultdict(list)
    for device, role, sig in cfg.signals():
        if sig.is_opcua:
            continue
        assert sig.unit is not None and sig.table is not None and sig.address is not None
        scale, offset = _scaling(role, sig)
        units[sig.source][sig.unit].append(RegisterPoint(
            device=device, signal=role, table=sig.table, address=sig.address, dtype=sig.type,
            word_order=sig.word_order, byte_order=sig.byte_order,
            scale=scale, offset=offset,
            value_map=dict(sig.map) if sig.map else None,
        ))
        if device not in names[(sig.source, sig.unit)]:
            names[(sig.source, sig.unit)].append(device)
    for mt in cfg.meters:
        if mt.preset is not None and mt.source is not None and mt.unit is not None:
            units[mt.source][mt.unit].extend(
                preset_points(mt.preset, mt.id, resolution_kwh=mt.resolution_kwh))
            if mt.id not in names[(mt.source, mt.unit)]:
                names[(mt.source, mt.unit)].append(mt.id)
    specs = []
    for src in cfg.sources:
        if isinstance(src, ModbusSourceSection) and units.get(src.id):
            devices = tuple(
                ModbusDeviceSpec(id="+".join(names[(src.id, unit)]), unit=unit,
                                 points=tuple(points),
                                 timeout_s=over.timeout_s if over else None,
                                 retries=over.retries if over else None)
                for unit, points in sorted(units[src.id].items())
                for over in [src.units.get(unit)]
            )
            specs.append(ModbusSourceSpec(
                id=src.id, transport=src.transport, host=src.host, port=src.port,
                serial_port=src.serial_port, baudrate=src.baudrate, parity=src.parity,
                stopbits=src.stopbits, bytesize=src.bytesize, devices=devices,
                poll_interval_s=src.poll_interval_s, timeout_s=src.timeout_s,
                retries=src.retries, max_gap=src.max_gap,
            ))
    return specs
