"""Turn the validated config into what the engine and the collectors take.

``rules`` and ``collectors`` cannot import the config models, so each gets plain
immutable specs built here, in one place.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import time
from pathlib import Path

from agent.config.calendars import calendar_spec, effective, machine_calendars
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
    ELECTRICITY,
    GBT2589_CARRIERS,
    KGCE_PER_KWH,
    AlarmSpec,
    CarrierSpec,
    EngineSpec,
    KpiLimitAlarmSpec,
    LineSpec,
    MachineSpec,
    MeterSpec,
    StateDurationAlarmSpec,
    TariffSeason,
    TariffSpec,
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


def carrier_specs(cfg: AgentConfig) -> tuple[CarrierSpec, ...]:
    """The GB/T 2589 table with the config's overrides, its own carriers, the electricity
    coal basis, the grid factor and the tariff's flat carrier prices."""
    energy = cfg.energy
    prices = {} if cfg.tariff is None else cfg.tariff.carrier_prices
    out = []
    for name, (unit, fld, kgce) in GBT2589_CARRIERS.items():
        own = energy.carriers.get(name)
        co2 = None if own is None else own.co2_kg_per_unit
        if name == ELECTRICITY:
            kgce = (energy.equal_value_kgce_per_kwh if energy.coal_basis == "equal_value"
                    else KGCE_PER_KWH)
            co2 = cfg.site.grid_factor_kg_per_kwh
        elif own is not None and own.kgce_per_unit is not None:
            kgce = own.kgce_per_unit
        out.append(CarrierSpec(name, unit, fld, kgce, co2, prices.get(name)))
    for name, own in energy.carriers.items():
        if name not in GBT2589_CARRIERS:
            assert own.unit is not None  # EnergySection requires it
            out.append(CarrierSpec(name, own.unit, None, own.kgce_per_unit,
                                   own.co2_kg_per_unit, prices.get(name)))
    return tuple(out)


def tariff_spec(cfg: AgentConfig) -> TariffSpec | None:
    """The electricity tariff; None without prices (carrier prices alone need none)."""
    tariff = cfg.tariff
    if tariff is None or not tariff.prices:
        return None
    seasons = tuple(
        TariffSeason(frozenset(season.months), tuple(
            (time.fromisoformat(p.start), time.fromisoformat(p.end), p.period)
            for p in season.periods))
        for season in tariff.seasons
    ) or (TariffSeason(frozenset(range(1, 13)), ((time(0), time(0), "flat"),)),)
    return TariffSpec(tuple(sorted(tariff.prices.items())), seasons, tariff.currency)


def engine_spec(cfg: AgentConfig) -> EngineSpec:
    """The KPI engine's view of the plant (calendars resolved into plain dates: see
    :mod:`agent.config.calendars`)."""
    site = calendar_spec(cfg.calendar)
    follows = machine_calendars(cfg)
    used = sorted({name for name in follows.values() if name is not None})
    return EngineSpec(
        site_id=cfg.site.id,
        timezone=cfg.site.timezone,
        grid_factor_kg_per_kwh=cfg.site.grid_factor_kg_per_kwh,
        windows=tuple(cfg.kpi.windows),
        lateness_s=cfg.kpi.lateness_s,
        shifts=site.shifts,
        off_days=site.off_days,
        make_up_days=site.make_up_days,
        calendars=tuple(calendar_spec(effective(cfg, name), name) for name in used),
        lines=tuple(LineSpec(ln.id, ln.output_machine) for ln in cfg.lines),
        machines=tuple(
            MachineSpec(m.id, m.line, m.ideal_cycle_time_s, m.counter_modulus,
                        good_counter=m.signals.parts_good is not None,
                        calendar=follows[m.id])
            for m in cfg.machines
        ),
        meters=tuple(
            MeterSpec(mt.id, mt.machine, mt.line, *mt.register, mt.max_power_kw,
                      carrier=mt.carrier)
            for mt in cfg.meters
        ),
        alarms=tuple(_alarm(a) for a in cfg.alarms),
        carriers=carrier_specs(cfg),
        tariff=tariff_spec(cfg),
    )


def _scaling(role: str, sig: SignalSection) -> tuple[float, float]:
    """``(scale, offset)`` with the declared engineering unit folded in."""
    factor = unit_factor(role, sig.engineering_unit)
    return sig.scale * factor, sig.offset * factor


def _deadband(value: float | None, kind: str) -> Deadband | None:
    if value is None:
        return None
    return Deadband("percent" if kind == "percent" else "absolute", value)


def client_pki_dir(cfg: AgentConfig, src: OpcUaSourceSection) -> Path | None:
    """Where a source's client certificate lives (and is created on first connect).

    A secure source without ``pki_dir`` keeps it under the agent's state directory
    (``pki/<source id>``), so it survives restarts and upgrades.
    """
    if src.pki_dir is None and src.security_mode != "None":
        return cfg.agent.state_dir / "pki" / src.id
    return src.pki_dir


def opcua_specs(cfg: AgentConfig, *, secrets: bool = True) -> list[OpcUaSourceSpec]:
    """One spec per OPC UA source with every tag that reads from it.

    ``secrets=False`` leaves passwords unset instead of reading them from the
    environment: for validating the specs where the variables may not exist.
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
    for i, src in enumerate(cfg.sources):
        if isinstance(src, OpcUaSourceSection) and tags.get(src.id):
            specs.append(OpcUaSourceSpec(
                id=src.id, url=src.url, tags=tuple(tags[src.id]),
                namespaces=dict(src.namespaces),
                publishing_interval_ms=src.publishing_interval_ms,
                sampling_interval_ms=src.sampling_interval_ms, queue_size=src.queue_size,
                timeout_s=src.timeout_s, session_timeout_s=src.session_timeout_s,
                watchdog_s=src.watchdog_s, username=src.username,
                password=resolve_secret(None, src.password_env,
                                        f'sources[{i}] "{src.id}": password_env')
                if secrets else None,
                deadband=_deadband(src.deadband, src.deadband_type),
                security_policy=src.security_policy, security_mode=src.security_mode,
                pki_dir=client_pki_dir(cfg, src), certificate=src.certificate,
                private_key=src.private_key,
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
            scale=scale, offset=offset, length=sig.length,
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
