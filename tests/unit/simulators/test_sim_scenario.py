"""Scenario loading: the packaged default, the generator, and errors that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rules.errors import ConfigError
from simulators.scenario import default_scenario, load_scenario, scenario_from_dict

MINIMAL = """
[[machines]]
id = "cnc-01"
[[machines.programs]]
name = "O1"
cycle_time_s = 30.0
"""


def _places(err: ConfigError) -> list[str]:
    return [place for place, _ in err.errors]


def test_packaged_default_loads() -> None:
    scenario = load_scenario()
    assert [m.id for m in scenario.machines] == ["cnc-01", "cnc-02", "cnc-03"]
    meters = scenario.effective_meters
    assert [m.id for m in meters] == ["meter-01", "meter-02", "meter-03"]
    assert scenario.unit_ids() == [1, 2, 3]
    assert meters[0].resolution_kwh == Decimal("0.01")
    assert meters[2].layout == "scaled32"


def test_minimal_file_gets_one_meter_per_machine(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL)
    scenario = load_scenario(path)
    (meter,) = scenario.effective_meters
    assert (meter.id, meter.machine, meter.layout) == ("meter-01", "cnc-01", "sdm630")
    assert meter.effective_modulus_kwh == Decimal("10000")
    assert scenario.machines[0].programs[0].cycle_time_s.mean == 30.0


def test_em24_meter_defaults_to_tenths_and_an_eight_digit_register(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'em24'\n"
                    "[[meters]]\nid = 'm2'\nmachine = 'cnc-01'\nlayout = 'em24'\n"
                    "resolution_kwh = 1\n")
    m1, m2 = load_scenario(path).effective_meters
    assert (m1.resolution_kwh, m1.effective_modulus_kwh) == (Decimal("0.1"), Decimal("1e8"))
    assert m2.resolution_kwh == Decimal("1")


@pytest.mark.parametrize(("layout", "modulus"), [
    ("dtsu666", Decimal("10000")), ("adl400", Decimal("1e7")), ("pm5xxx", Decimal("1e7")),
    ("pac3200", Decimal("1e7"))])
def test_new_meter_layouts_load_with_their_defaults(tmp_path: Path, layout: str,
                                                    modulus: Decimal) -> None:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL + f"[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = '{layout}'\n"
                    "initial_kwh = 1234.56\n")
    (meter,) = load_scenario(path).effective_meters
    assert (meter.layout, meter.resolution_kwh) == (layout, Decimal("0.01"))
    assert meter.effective_modulus_kwh == modulus


@pytest.mark.parametrize("machines", [1, 2, 50])
@pytest.mark.parametrize("fast", [True, False])
def test_default_scenario_generator(machines: int, fast: bool) -> None:
    scenario = default_scenario(machines=machines, seed=4, fast=fast)
    assert len(scenario.machines) == machines
    assert scenario.unit_ids() == list(range(1, machines + 1))
    assert scenario.seed == 4
    if fast:
        for machine in scenario.machines:
            for program in machine.programs:
                assert program.cycle_time_s.max is not None
                assert program.cycle_time_s.max <= 4.0
                assert program.cycle_time_s.min is not None
                assert program.cycle_time_s.min >= 1.0


@pytest.mark.parametrize(
    ("text", "place", "fragment"),
    [
        (MINIMAL.replace("30.0", "-1.0"), 'machines[0] "cnc-01": programs[0].cycle_time_s.mean',
         "greater than or equal"),
        (MINIMAL + "colour = 'red'\n", 'machines[0] "cnc-01": programs[0].colour',
         "Extra inputs"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-09'\n", 'meters[0] "m1": machine',
         "not defined"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nmodulus_kwh = 1000000\n",
         'meters[0] "m1": modulus_kwh', "float32"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nresolution_kwh = 0\n",
         'meters[0] "m1": resolution_kwh', "greater than 0"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'em24'\n"
         "resolution_kwh = 0.01\n", 'meters[0] "m1": resolution_kwh', "0.1 kWh"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'em24'\n"
         "modulus_kwh = 1000000000\n", 'meters[0] "m1": modulus_kwh', "signed 32-bit"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'em42'\n",
         'meters[0] "m1": layout', "em24"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'dtsu666'\n"
         "modulus_kwh = 1000000\n", 'meters[0] "m1": modulus_kwh', "float32"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'adl400'\n"
         "resolution_kwh = 0.005\n", 'meters[0] "m1": resolution_kwh', "0.01 kWh"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'adl400'\n"
         "modulus_kwh = 100000000\n", 'meters[0] "m1": modulus_kwh', "unsigned 32-bit"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'pm5xxx'\n"
         "resolution_kwh = 0.0005\n", 'meters[0] "m1": resolution_kwh', "0.001 kWh"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'pac3200'\n"
         "resolution_kwh = 0.0005\n", 'meters[0] "m1": resolution_kwh', "0.001 kWh"),
        (MINIMAL + "[[meters]]\nid = 'm1'\nmachine = 'cnc-01'\nlayout = 'pac3200'\n"
         "modulus_kwh = 10000000000000\n", 'meters[0] "m1": modulus_kwh', "float64"),
        (MINIMAL + "[[machines]]\nid = 'cnc-01'\n[[machines.programs]]\nname = 'x'\n"
         "cycle_time_s = 1\n", 'machines[1] "cnc-01": id', "duplicate"),
        (MINIMAL + "[[faults]]\nat_s = 1\nkind = 'meter_reset'\ntarget = 'cnc-01'\n",
         "faults[0]: target", "meter"),
        (MINIMAL + "[calendar]\ntimezone = 'Mars/Olympus'\n", "calendar.timezone",
         "unknown time zone"),
        (MINIMAL + "[[calendar.shifts]]\nname = 'A'\nstart = '8:00'\nend = '16:00'\n",
         "calendar.shifts[0].start", "HH:MM"),
    ],
)
def test_bad_scenario_names_the_key(tmp_path: Path, text: str, place: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    err = info.value
    assert err.source == str(path)
    assert place in _places(err), err.errors
    assert any(fragment in msg for p, msg in err.errors if p == place), err.errors


def test_every_error_is_reported_at_once() -> None:
    raw = {"machines": [{"id": "a", "programs": [{"name": "p", "cycle_time_s": 0}]},
                        {"id": "b", "programs": []}]}
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(raw)
    assert len(info.value.errors) == 2


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[machines]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_scenario(bad)


@pytest.mark.parametrize(("fault", "place", "fragment"), [
    ("kind = 'modbus_slow'\ntarget = 'meter-01'\n", "faults[0]: value", "delay"),
    ("kind = 'opcua_node_missing'\ntarget = 'cnc-01'\nnode = 'Production/Nope'\n",
     "faults[0]: node", "not a variable path"),
    ("kind = 'counter_reset'\ntarget = 'cnc-01'\nnode = 'Production/PartsScrapInLifetime'\n",
     "faults[0]: node", "only opcua_node_missing"),
    ("kind = 'opcua_node_missing'\ntarget = 'meter-01'\n", "faults[0]: target", "machine"),
])
def test_new_fault_kinds_are_checked(tmp_path: Path, fault: str, place: str,
                                     fragment: str) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(MINIMAL + "[[faults]]\nat_s = 1\n" + fault)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert any(p == place and fragment in msg for p, msg in info.value.errors), \
        info.value.errors


def test_node_fault_with_a_real_path_loads(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(MINIMAL + "[[faults]]\nat_s = 1\nkind = 'opcua_node_missing'\n"
                    "target = 'cnc-01'\nnode = 'Production/PartsScrapInLifetime'\n"
                    "[[faults]]\nat_s = 2\nkind = 'modbus_slow'\ntarget = 'meter-01'\n"
                    "value = 0.5\n")
    scenario = load_scenario(path)
    assert [f.kind for f in scenario.faults] == ["opcua_node_missing", "modbus_slow"]


def test_generated_plant_can_meter_only_its_first_machines() -> None:
    scenario = default_scenario(machines=250, meters=25)
    meters = scenario.effective_meters
    assert len(scenario.machines) == 250
    assert [m.machine for m in meters] == [m.id for m in scenario.machines[:25]]
    assert scenario.unit_ids() == list(range(1, 26))
    assert default_scenario(machines=3, meters=0).effective_meters == []
    with pytest.raises(ValueError, match="meters"):
        default_scenario(machines=3, meters=4)
