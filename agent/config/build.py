"""Turn the validated config into what the engine and the collectors take.

``rules`` and ``collectors`` cannot import the config models, so each gets plain
immutable specs: the engine's built here, each collector's by its source type in
:mod:`agent.sources`.
"""

from __future__ import annotations

from datetime import time
from typing import TYPE_CHECKING

from agent.config.calendars import calendar_spec, effective, machine_calendars
from agent.config.derived import state_from_spec
from agent.config.model import AgentConfig, AlarmSection
from agent.sources import modbus, opcua
from agent.sources.modbus import ModbusSourceSection
from agent.sources.opcua import OpcUaSourceSection
from agent.sources.opcua import client_pki_dir as client_pki_dir
from agent.sources.registry import source_type
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

if TYPE_CHECKING:
    from collectors.base import Collector
    from collectors.modbus import ModbusSourceSpec
    from collectors.opcua import OpcUaSourceSpec


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
                        good_counter=m.signals.parts_good is not None
                        or "parts_good" in opcua.profile_roles(m),
                        calendar=follows[m.id], state_from=state_from_spec(cfg, m))
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


def opcua_specs(cfg: AgentConfig, *, secrets: bool = True) -> list[OpcUaSourceSpec]:
    """The spec of every OPC UA source something reads through (see
    :meth:`agent.sources.opcua.OpcUaType.spec`; ``secrets=False`` reads no password)."""
    return [spec for i, src in enumerate(cfg.sources) if isinstance(src, OpcUaSourceSection)
            for spec in [opcua.SOURCE.spec(cfg, i, src, secrets=secrets)] if spec is not None]


def modbus_specs(cfg: AgentConfig) -> list[ModbusSourceSpec]:
    """The spec of every Modbus source something reads through, its points grouped by
    unit id (see :meth:`agent.sources.modbus.ModbusType.spec`)."""
    return [spec for i, src in enumerate(cfg.sources) if isinstance(src, ModbusSourceSection)
            for spec in [modbus.SOURCE.spec(cfg, i, src)] if spec is not None]


def make_collectors(cfg: AgentConfig) -> list[Collector]:
    """Every collector the config asks for, one per source something reads through, each
    built by its source type (raises ConfigError naming config places)."""
    return [c for i, src in enumerate(cfg.sources)
            for c in [source_type(src.type).build(cfg, i, src)] if c is not None]
