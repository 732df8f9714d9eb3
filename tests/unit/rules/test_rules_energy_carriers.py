"""Meters of every carrier and the time-of-use cost in the engine (windows, checkpoints)."""

from __future__ import annotations

from datetime import time

import pytest
from rules_helpers import T0, H, M, one_machine, pick, run, smp

from rules.engine import KpiEngine
from rules.errors import ConfigError
from rules.spec import (
    CarrierSpec,
    EngineSpec,
    MeterSpec,
    TariffSeason,
    TariffSpec,
    default_carriers,
)
from rules.types import KpiRecord, Sample

# T0 is 08:00 UTC: valley before it, flat after
TARIFF = TariffSpec((("flat", 0.6), ("valley", 0.3)), (
    TariffSeason(frozenset(range(1, 13)), ((time(0), time(8), "valley"),
                                           (time(8), time(0), "flat"))),))
CARRIERS = default_carriers(0.5)
PRICED = tuple(
    CarrierSpec(c.name, c.unit, c.field, c.kgce_per_unit, c.co2_kg_per_unit,
                3.0 if c.name == "natural_gas" else None)
    for c in CARRIERS)
METERS = (MeterSpec("e1", "m1", None, 0.1), MeterSpec("g1", "m1", None, 0.1,
                                                      carrier="natural_gas"))


def _spec() -> EngineSpec:
    return one_machine(windows=("15m",), lateness_s=3600.0, meters=METERS, carriers=PRICED,
                       tariff=TARIFF)


def _samples() -> list[Sample]:
    start, end = T0 - 30 * M, T0 + 30 * M
    return [
        smp(start, "m1", "state", "producing"),
        smp(start, "e1", "energy_kwh", 100.0), smp(start, "g1", "reading", 100.0),
        smp(end, "e1", "energy_kwh", 110.0), smp(end, "g1", "reading", 112.0),
        smp(end, "m1", "state", "producing"),
    ]


def test_an_interval_is_priced_where_its_energy_falls() -> None:
    """10 kWh over 07:30-08:30: 2.5 kWh a quarter, valley 0.75 then flat 1.5; gas 3 m3 a
    quarter at 3.0."""
    records = run(_spec(), _samples(), end=T0 + 30 * M + 1)
    costs: list[float] = []
    for k, price in enumerate((0.3, 0.3, 0.6, 0.6)):
        rec = pick(records, start=T0 - 30 * M + k * 15 * M)
        assert rec.energy_kwh == 2.5 and rec.natural_gas_m3 == 3.0
        assert rec.energy_cost == pytest.approx(2.5 * price + 9.0, rel=1e-12)
        assert rec.kgce == pytest.approx(2.5 * 0.1229 + 3 * 1.2143, rel=1e-12)
        assert rec.co2_kg == 1.25  # gas has no CO2 factor here
        costs.append(rec.energy_cost or 0.0)
    assert sum(costs) == pytest.approx(5 * 0.3 + 5 * 0.6 + 36.0, rel=1e-12)


def test_a_gas_meter_alone_is_energy_data_without_electricity() -> None:
    spec = one_machine(windows=("1h",), meters=(METERS[1],))
    samples = [smp(T0, "m1", "state", "producing"), smp(T0, "g1", "reading", 5.0),
               smp(T0 + H, "g1", "reading", 7.5), smp(T0 + H, "m1", "state", "producing")]
    rec = pick(run(spec, samples, end=T0 + H + 1), start=T0)
    assert (rec.energy_kwh, rec.natural_gas_m3, rec.energy_cost) == (None, 2.5, None)
    assert rec.kgce == pytest.approx(2.5 * 1.2143, rel=1e-12)
    assert "no_energy_data" not in rec.flags


def test_cost_and_quantities_survive_a_checkpoint() -> None:
    """The 1h window 08:00-09:00 is open with cost and gas in it when the state is saved."""
    spec = one_machine(windows=("15m", "1h"), lateness_s=0.0, meters=METERS, carriers=PRICED,
                       tariff=TARIFF)
    samples = sorted(_samples(), key=lambda s: s.ts_ms)
    whole = KpiEngine(spec)
    for s in samples:
        whole.add(s)
    expected = whole.finish(T0 + 30 * M + 1).records
    first = KpiEngine(spec)
    for s in samples:
        first.add(s)
    done = first.advance(T0 + 15 * M).records
    state = first.snapshot()
    assert any("cost" in w and "other" in w for w in _energy_states(state)), state
    second = KpiEngine.restore(spec, state)
    assert _final(done + second.finish(T0 + 30 * M + 1).records) == _final(expected)


_ENERGY = ("energy_kwh", "natural_gas_m3", "kgce", "co2_kg", "energy_cost")


def _final(records: list[KpiRecord]) -> dict[object, tuple[object, ...]]:
    """The energy figures that finally stand per record key (a later record replaces)."""
    return {r.key: tuple(getattr(r, name) for name in _ENERGY) for r in records}


def _energy_states(state: object) -> list[dict[str, object]]:
    """Every serialised EnergyTotals in a checkpoint."""
    found: list[dict[str, object]] = []
    if isinstance(state, dict):
        if "kwh" in state and "seen" in state:
            found.append(state)
        for value in state.values():
            found += _energy_states(value)
    elif isinstance(state, list):
        for value in state:
            found += _energy_states(value)
    return found


def test_an_unknown_carrier_is_refused() -> None:
    with pytest.raises(ConfigError, match="carrier 'biogas' unknown"):
        KpiEngine(one_machine(meters=(MeterSpec("x", "m1", None, carrier="biogas"),)))
