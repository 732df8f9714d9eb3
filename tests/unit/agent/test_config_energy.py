"""Config of energy carriers, the electricity coal basis and the tariff: specs and errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from agent.config import load_agent_config
from agent.config.build import engine_spec
from rules.errors import ConfigError
from rules.kpi import EnergyFactors

PLANT = (
    '[site]\nid = "s"\n[[lines]]\nid = "l"\noutput_machine = "m"\n'
    '[[machines]]\nid = "m"\nline = "l"\nideal_cycle_time_s = 10\n'
    '[[meters]]\nid = "e"\nmachine = "m"\n'
    '[[meters]]\nid = "g"\nline = "l"\ncarrier = "natural_gas"\nresolution = 0.1\n'
    'modulus = 100000\n'
)


def _load(tmp_path: Path, text: str) -> tuple[object, ...]:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    spec = engine_spec(load_agent_config(path, kpi_only=True))
    return spec.meters, spec.carrier_specs(), spec.tariff


def _errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path, kpi_only=True)
    return info.value.render()


def test_defaults_are_the_gbt2589_table_and_overrides_apply(tmp_path: Path) -> None:
    meters, carriers, tariff = _load(tmp_path, PLANT + (
        '[energy]\ncoal_basis = "equal_value"\nequal_value_kgce_per_kwh = 0.3\n'
        '[energy.carriers.steam]\nkgce_per_unit = 0.11\n'
        '[energy.carriers.diesel]\nunit = "kg"\nkgce_per_unit = 1.4571\n'
        'co2_kg_per_unit = 3.1\n'))
    gas = meters[1]  # type: ignore[index]
    assert (gas.carrier, gas.resolution_kwh, gas.modulus_kwh) == ("natural_gas", 0.1, 100000)
    by_name = {c.name: c for c in carriers}  # type: ignore[attr-defined]
    assert by_name["electricity"].kgce_per_unit == 0.3
    assert by_name["electricity"].co2_kg_per_unit == 0.5306
    assert by_name["natural_gas"].kgce_per_unit == 1.2143
    assert by_name["steam"].kgce_per_unit == 0.11
    assert by_name["water"].kgce_per_unit is None
    assert by_name["compressed_air"].kgce_per_unit is None
    assert (by_name["diesel"].unit, by_name["diesel"].field) == ("kg", None)
    assert tariff is None


def test_a_tariff_without_seasons_is_one_flat_price(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(PLANT + '[tariff]\nprices = { flat = 0.7 }\n'
                    'carrier_prices = { natural_gas = 3.2 }\n', encoding="utf-8")
    spec = engine_spec(load_agent_config(path, kpi_only=True))
    assert spec.tariff is not None and spec.tariff.currency == "CNY"
    assert spec.tariff.prices == (("flat", 0.7),)
    factors = EnergyFactors.of(spec)
    assert factors.price == {"natural_gas": Fraction("3.2")} and factors.priced


@pytest.mark.parametrize(("extra", "phrase"), [
    ('[energy]\ncoal_basis = "equal_value"\n', "needs equal_value_kgce_per_kwh"),
    ('[energy.carriers.hydrogen]\nkgce_per_unit = 1\n', "needs unit"),
    ('[energy.carriers.natural_gas]\nunit = "kg"\n', "unit is 'm3'"),
    ('[energy.carriers.electricity]\nkgce_per_unit = 0.3\n', "coal_basis"),
    ('[tariff]\nprices = { valley = 0.3 }\n[[tariff.seasons]]\nmonths = [1]\n'
     'periods = [{ start = "00:00", end = "00:00", period = "valley" }]\n',
     "months [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] are in no season"),
    ('[tariff]\nprices = { valley = 0.3 }\n[[tariff.seasons]]\nmonths = [1]\n'
     'periods = [{ start = "00:00", end = "07:00", period = "valley" }]\n',
     "gap at 07:00"),
    ('[tariff]\nprices = { flat = 0.3 }\n[[tariff.seasons]]\n'
     'months = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n'
     'periods = [{ start = "00:00", end = "00:00", period = "valley" }]\n',
     "uses valley but prices has none"),
])
def test_bad_energy_config_is_named(tmp_path: Path, extra: str, phrase: str) -> None:
    rendered = _errors(tmp_path, PLANT + extra)
    assert phrase in rendered, rendered


@pytest.mark.parametrize(("meter", "phrase"), [
    ('carrier = "steam"\nresolution_kwh = 0.1\n', "resolution_kwh: electricity only"),
    ('resolution = 0.1\n', "resolution: for a meter of another carrier"),
])
def test_meter_keys_follow_its_carrier(tmp_path: Path, meter: str, phrase: str) -> None:
    text = PLANT + f'[[meters]]\nid = "x"\nmachine = "m"\n{meter}'
    rendered = _errors(tmp_path, text)
    assert 'meters[2]' in rendered and phrase in rendered, rendered


def test_unknown_carrier_and_missing_reading_are_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(PLANT + '[[meters]]\nid = "x"\nmachine = "m"\ncarrier = "biogas"\n'
                    '[tariff]\ncarrier_prices = { lpg = 5 }\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    text = info.value.render()
    assert 'meters[2] "x": carrier: unknown carrier \'biogas\'' in text, text
    assert 'meters[1] "g": signals.reading: required role of a natural_gas meter' in text
    assert "tariff.carrier_prices.lpg: unknown carrier 'lpg'" in text
