"""Every meter preset decodes the simulator's register layout of the same name back to the
readings it was built from, and the new presets sit at the addresses their vendors publish."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from collectors.decode import decode_registers, plan_reads, point_width
from collectors.modbus import RegisterPoint
from collectors.presets import PRESETS, preset_points
from simulators.meter import MeterImage
from simulators.registers import LAYOUTS

TABLE_OF_FUNCTION = {3: "holding", 4: "input"}

IMAGES = (
    MeterImage(power_w=12_345.5, voltages_v=(229.1, 230.2, 231.3),
               currents_a=(20.1, 19.9, 20.0), power_factor=0.88, frequency_hz=50.01,
               energy_counts=482_137, resolution_kwh=Decimal("0.01")),
    MeterImage(power_w=0.0, voltages_v=(398.7, 401.2, 400.0), currents_a=(0.0, 0.0, 0.0),
               power_factor=1.0, frequency_hz=49.98, energy_counts=7,
               resolution_kwh=Decimal("0.1")),
)

NEW_PRESETS = ("dtsu666", "adl400", "pm5xxx", "pac3200")


def _read(name: str, image: MeterImage) -> dict[str, RegisterPoint | float]:
    layout = LAYOUTS[name]
    regs = layout.registers(image)
    table = TABLE_OF_FUNCTION[layout.block.function_code]
    values: dict[str, RegisterPoint | float] = {}
    for point in preset_points(name, "m", resolution_kwh=float(image.resolution_kwh)):
        assert point.table == table, (name, point.signal)
        at = point.address - layout.block.start
        words = regs[at:at + point_width(point)]
        value = decode_registers(words, point.dtype, point.word_order, point.byte_order,
                                 point.scale, point.offset)
        assert isinstance(value, int | float)
        values[point.signal] = float(value)
        values[f"{point.signal}.point"] = point
    return values


def test_every_preset_has_a_simulated_layout() -> None:
    assert set(PRESETS) == set(LAYOUTS)


@pytest.mark.parametrize("image", IMAGES, ids=["loaded", "idle"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_decodes_its_layout(name: str, image: MeterImage) -> None:
    if name == "em24" and image.resolution_kwh == Decimal("0.01"):
        # em24 counts tenths of a kWh; the scenario refuses a finer meter resolution.
        image = replace(image, energy_counts=image.energy_counts // 10,
                        resolution_kwh=Decimal("0.1"))
    got = _read(name, image)

    def near(signal: str, want: float, floor: float) -> None:
        point = got[f"{signal}.point"]
        assert isinstance(point, RegisterPoint)
        assert got[signal] == pytest.approx(want, abs=max(floor, abs(point.scale))), signal

    energy = got["energy_kwh"]
    assert isinstance(energy, float)
    assert Decimal(round(energy * 1000)) / 1000 == image.energy_kwh
    near("power_kw", image.power_w / 1000, 1e-6)
    for i in range(3):
        near(f"voltage_l{i + 1}", image.voltages_v[i], 1e-3)
        near(f"current_l{i + 1}", image.currents_a[i], 1e-5)
    near("power_factor", image.power_factor, 1e-6)
    near("frequency_hz", image.frequency_hz, 1e-4)
    if "export_energy_kwh" in got:
        assert got["export_energy_kwh"] == 0.0
    for ratio in ("ct_ratio", "pt_ratio"):
        if ratio in got:
            assert got[ratio] == pytest.approx(1.0)


@pytest.mark.parametrize("max_gap", [0, 8, 100])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_merged_reads_stay_inside_the_simulated_block(name: str, max_gap: int) -> None:
    """However far the collector merges reads, the simulator answers every one of them."""
    block = LAYOUTS[name].block
    for read in plan_reads(preset_points(name, "m"), max_gap):
        assert block.start <= read.address
        assert read.address + read.count <= block.start + block.count, read


def _by_signal(name: str) -> dict[str, RegisterPoint]:
    return {p.signal: p for p in preset_points(name, "m")}


def test_dtsu666_addresses() -> None:
    p = _by_signal("DTSU666")
    assert (p["energy_kwh"].address, p["energy_kwh"].dtype, p["energy_kwh"].scale) == (
        0x401E, "f32", 1.0)  # ImpEp, kWh
    assert p["power_kw"].address == 0x2012 and p["power_kw"].scale == pytest.approx(1e-4)
    assert (p["voltage_l1"].address, p["voltage_l1"].scale) == (0x2006, 0.1)
    assert (p["current_l1"].address, p["current_l1"].scale) == (0x200C, 0.001)
    assert (p["ct_ratio"].address, p["pt_ratio"].address) == (0x0006, 0x0007)
    assert all(pt.table == "holding" and pt.word_order == "big" for pt in p.values())


def test_adl400_reads_forward_energy_not_the_combined_total() -> None:
    p = _by_signal("adl400")
    assert (p["energy_kwh"].address, p["energy_kwh"].dtype, p["energy_kwh"].scale) == (
        0x000A, "u32", 0.01)
    assert (p["power_kw"].address, p["power_kw"].dtype, p["power_kw"].scale) == (
        0x016A, "i32", 0.001)
    assert (p["voltage_l1"].dtype, p["current_l1"].scale) == ("u16", 0.01)
    assert all(pt.table == "holding" and pt.word_order == "big" for pt in p.values())


def test_pm5xxx_addresses_are_register_numbers_minus_one() -> None:
    p = _by_signal("pm5xxx")
    assert (p["energy_kwh"].address, p["energy_kwh"].dtype, p["energy_kwh"].scale) == (
        3203, "i64", 0.001)  # register 3204, INT64 Wh
    assert (p["power_kw"].address, p["power_kw"].dtype, p["power_kw"].scale) == (
        3059, "f32", 1.0)  # register 3060, kW
    assert (p["current_l1"].address, p["voltage_l1"].address) == (2999, 3027)
    assert p["frequency_hz"].address == 3109


def test_pac3200_reads_the_float64_import_energy_in_wh() -> None:
    p = _by_signal("pac3200")
    assert (p["energy_kwh"].address, p["energy_kwh"].dtype, p["energy_kwh"].scale) == (
        801, "f64", 0.001)
    assert (p["power_kw"].address, p["power_kw"].scale) == (65, 0.001)
    assert p["voltage_l1"].address == 1
    assert all(pt.table == "input" and pt.word_order == "big" for pt in p.values())


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_new_presets_flag_a_wrong_word_order(name: str) -> None:
    """The energy register must not decode to the same value with the words swapped, or
    the round trip above could not tell a wrong word order from the right one."""
    image = IMAGES[0]
    layout = LAYOUTS[name]
    regs = layout.registers(image)
    point = _by_signal(name)["energy_kwh"]
    words = regs[point.address:point.address + point_width(point)]
    swapped = decode_registers(words, point.dtype, "little", "big", point.scale)
    assert swapped != pytest.approx(float(image.energy_kwh), rel=1e-6)
