"""An independent Modbus master (Debian's ``mbpoll``) reads the meters using only the
register map that ``edge-agent sim modbus`` prints, and gets the ledger's values.

The plant runs on a manual clock, so the served values stand still while ``mbpoll``
runs; the clock is stepped ten minutes first so the energy registers have moved away
from their initial values. Without ``mbpoll`` the test is skipped, except under CI
(``CI=true``), where a missing tool is a failure.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from simulators.cli import print_register_map
from simulators.ledger import read_ledger
from simulators.meter import MeterImage
from simulators.plant import Plant, SimClock
from simulators.scenario import Scenario, default_scenario, scenario_from_dict

pytestmark = pytest.mark.integration

START_MS = 1_709_532_000_000  # 2024-03-04T06:00:00Z


@pytest.fixture
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mbpoll is not installed (Debian package mbpoll)")
        pytest.skip("mbpoll is not installed")
    return path


NEW_LAYOUTS = {"dtsu666": "4321.09", "adl400": "76543.21", "pm5xxx": "1234567.89",
               "pac3200": "2345678.90"}
"""meter-04..07 (units 11..14): one meter of each of these layouts, starting here."""

def _scenario() -> Scenario:
    raw = default_scenario(machines=2, seed=13, fast=True).model_dump(mode="python",
                                                                      exclude_none=True)
    raw["meters"][0].update({"layout": "sdm630", "initial_kwh": Decimal("4821.37")})
    raw["meters"][1].update({"layout": "scaled32", "initial_kwh": Decimal("123456.78"),
                             "modulus_kwh": Decimal("1000000")})
    raw["meters"].append({**raw["meters"][0], "id": "meter-03", "unit_id": 7,
                          "layout": "em24", "initial_kwh": Decimal("98765.4"),
                          "resolution_kwh": Decimal("0.1")})
    for n, (layout, initial) in enumerate(NEW_LAYOUTS.items(), start=4):
        meter = {**raw["meters"][n % 2], "id": f"meter-{n:02d}", "unit_id": 7 + n,
                 "layout": layout, "initial_kwh": Decimal(initial)}
        meter.pop("modulus_kwh", None)
        raw["meters"].append(meter)
    return scenario_from_dict(raw)



def _parse_map(text: str) -> dict[str, Any]:
    """What a person would take from the printed map: endpoint, units, addresses."""
    endpoint = re.search(r"^Modbus TCP: ([\d.]+):(\d+)$", text, re.M)
    assert endpoint, text
    units = {
        m.group(2): {"unit": int(m.group(1)), "layout": m.group(3),
                     "resolution": Decimal(m.group(4))}
        for m in re.finditer(r"unit (\d+): (\S+) \((\w+), ([\d.]+) kWh steps", text)
    }
    # Each layout's section starts with a line that starts with its name in ``quotes``.
    parts = re.split(r"^\s*``(\w+)``(?=[ :(])", text, flags=re.M)
    sections: dict[str, dict[str, int]] = {}
    for name, section in zip(parts[1::2], parts[2::2], strict=True):
        rows = re.findall(r"^\s*(0x[0-9A-F]{4}) (.+)$", section, re.M)
        sections[name] = {desc: int(addr, 16) for addr, desc in rows}
    return {"host": endpoint.group(1), "port": int(endpoint.group(2)), "units": units,
            "registers": sections}


def _address(registers: dict[str, int], words: str) -> int:
    hits = [addr for desc, addr in registers.items() if desc.startswith(words)]
    assert len(hits) == 1, (words, registers)
    return hits[0]


async def _mbpoll(tool: str, host: str, port: int, unit: int, table: str, address: int,
                  count: int, big_endian: bool) -> tuple[dict[int, str], str]:
    """Run ``mbpoll`` once; returns ``{reference: text}`` and stderr."""
    args = [tool, "-m", "tcp", "-p", str(port), "-a", str(unit), "-0", "-r", str(address),
            "-c", str(count), "-t", table, "-1", "-o", "3"]
    if big_endian:
        args.append("-B")
    proc = await asyncio.create_subprocess_exec(*args, host, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    values = {int(ref): val for ref, val in re.findall(r"^\[(\d+)\]:\s+(\S+)$",
                                                       out.decode(), re.M)}
    return values, err.decode()


def _ledger_registers(path: Path) -> dict[str, Decimal]:
    modulus: dict[str, Decimal] = {}
    value: dict[str, Decimal] = {}
    for e in read_ledger(path):
        if e["kind"] == "init":
            modulus[e["device"]] = Decimal(e["modulus_kwh"])
            value[e["device"]] = Decimal(e["register_kwh"])
        elif e["kind"] == "energy":
            dev = e["device"]
            value[dev] = (value[dev] + Decimal(e["kwh"])) % modulus[dev]
    return value


async def test_mbpoll_reads_every_layout_from_the_printed_map(tmp_path: Path,
                                                              mbpoll: str) -> None:
    clock = SimClock(manual=True, start_ms=START_MS)
    async with Plant(_scenario(), ledger_dir=tmp_path, clock=clock) as plant:
        await plant.step(600)
        buf = io.StringIO()
        print_register_map(plant, buf)
        published = _parse_map(buf.getvalue())
        images = {m: plant.meter_model(m).image() for m, _ in plant.meters}
        truth = _ledger_registers(plant.ledger_paths()["modbus"])
        host, port = published["host"], published["port"]
        reads: dict[str, dict[str, Any]] = {}
        for meter, info in published["units"].items():
            regs = published["registers"][info["layout"]]
            unit = info["unit"]
            if info["layout"] == "sdm630":
                energy_at = _address(regs, "total import active energy kWh")
                energy, err = await _mbpoll(mbpoll, host, port, unit, "3:float", energy_at, 1,
                                            big_endian=True)
                assert energy, err
                block, err = await _mbpoll(mbpoll, host, port, unit, "3:float", 0x0000, 32,
                                           big_endian=True)
                assert block, err
                reads[meter] = {
                    "energy": float(energy[energy_at]),
                    "volts": float(block[_address(regs, "L1/L2/L3 line-to-neutral voltage")]),
                    "amps": float(block[_address(regs, "L1/L2/L3 current A")]),
                    "power": float(block[_address(regs, "total system power W")]),
                    "pf": float(block[_address(regs, "total system power factor")]),
                }
            elif info["layout"] == "em24":
                block, err = await _mbpoll(mbpoll, host, port, unit, "4:int", 0x0000, 23,
                                           big_endian=False)
                assert block, err
                energy_at = _address(regs, "kWh (+) TOT")
                energy, err = await _mbpoll(mbpoll, host, port, unit, "4:int", energy_at, 1,
                                            big_endian=False)
                assert energy, err
                words, err = await _mbpoll(mbpoll, host, port, unit, "4", 0x002E, 6,
                                           big_endian=False)
                assert words, err
                reads[meter] = {
                    "energy": int(energy[energy_at]),
                    "power": int(block[_address(regs, "system active power,")]),
                    "volts": int(block[_address(regs, "phase 1/2/3 to neutral voltage")]),
                    "amps": int(block[_address(regs, "line 1/2/3 current")]),
                    "pf": int(words[_address(regs, "system power factor")]),
                    "hz": int(words[_address(regs, "frequency")]),
                }
            elif info["layout"] in NEW_LAYOUTS:
                reads[meter] = await _read_new_layout(mbpoll, host, port, unit,
                                                      info["layout"], regs)
            else:
                block, err = await _mbpoll(mbpoll, host, port, unit, "4:int", 0x0000, 11,
                                           big_endian=False)
                assert block, err
                reads[meter] = {
                    "energy": int(block[_address(regs, "total import active energy")]),
                    "power": int(block[_address(regs, "total active power")]),
                    "volts": int(block[_address(regs, "L1/L2/L3 voltage")]),
                    "amps": int(block[_address(regs, "L1/L2/L3 current")]),
                    "pf": int(block[_address(regs, "total power factor")]),
                    "step_mwh": int(block[_address(regs, "energy resolution")]),
                }
        _, missing = await _mbpoll(mbpoll, host, port, 99, "3:float", 0x0048, 1,
                                   big_endian=True)

    assert set(reads) == {f"meter-{n:02d}" for n in range(1, 8)}
    assert set(published["registers"]) >= {"sdm630", "scaled32", "em24", *NEW_LAYOUTS}
    sdm, image = reads["meter-01"], images["meter-01"]
    assert Decimal(round(sdm["energy"] * 100)) / 100 == truth["meter-01"] == image.energy_kwh
    assert truth["meter-01"] != Decimal("4821.37"), "energy should have moved in 10 minutes"
    assert sdm["volts"] == pytest.approx(image.voltages_v[0], rel=1e-5)
    assert sdm["amps"] == pytest.approx(image.currents_a[0], rel=1e-5, abs=1e-6)
    assert sdm["power"] == pytest.approx(image.power_w, rel=1e-5, abs=1e-3)
    assert sdm["pf"] == pytest.approx(image.power_factor, rel=1e-5)

    scaled, image = reads["meter-02"], images["meter-02"]
    assert scaled["energy"] * Decimal("0.01") == truth["meter-02"] == image.energy_kwh
    assert truth["meter-02"] != Decimal("123456.78")
    assert scaled["power"] == round(image.power_w * 10)
    assert scaled["volts"] == round(image.voltages_v[0] * 10)
    assert scaled["amps"] == round(image.currents_a[0] * 1000)
    assert scaled["pf"] == round(image.power_factor * 1000)
    assert scaled["step_mwh"] == 10_000

    em24, image = reads["meter-03"], images["meter-03"]
    assert em24["energy"] * Decimal("0.1") == truth["meter-03"] == image.energy_kwh
    assert truth["meter-03"] != Decimal("98765.4")
    assert em24["power"] == round(image.power_w * 10)
    assert em24["volts"] == round(image.voltages_v[0] * 10)
    assert em24["amps"] == round(image.currents_a[0] * 1000)
    assert em24["pf"] == round(image.power_factor * 1000)
    assert em24["hz"] == round(image.frequency_hz * 10)

    for n, (layout, initial) in enumerate(NEW_LAYOUTS.items(), start=4):
        meter = f"meter-{n:02d}"
        got, image = reads[meter], images[meter]
        assert truth[meter] == image.energy_kwh != Decimal(initial), meter
        _check_new_layout(layout, got, image)
    assert "Gateway path unavailable" in missing


def _words_of(values: dict[int, str], address: int, count: int) -> list[int]:
    return [int(values[address + i], 16) for i in range(count)]


async def _read_new_layout(tool: str, host: str, port: int, unit: int, layout: str,
                           regs: dict[str, int]) -> dict[str, Any]:
    """Read one meter of a layout in :data:`NEW_LAYOUTS` the way its printed map says."""

    async def read(table: str, address: int, count: int, big_endian: bool = True
                   ) -> dict[int, str]:
        values, err = await _mbpoll(tool, host, port, unit, table, address, count,
                                    big_endian=big_endian)
        assert values, (layout, address, err)
        return values

    if layout == "dtsu666":
        energy_at = _address(regs, "ImpEp import active energy kWh")
        energy = await read("4:float", energy_at, 1)
        block = await read("4:float", 0x2000, 35)
        ratios = await read("4", _address(regs, "IrAt"), 2, big_endian=False)
        return {"energy": Decimal(round(float(energy[energy_at]) * 100)) / 100,
                "volts": float(block[_address(regs, "Ua/Ub/Uc phase voltage")]),
                "amps": float(block[_address(regs, "Ia/Ib/Ic current")]),
                "power": float(block[_address(regs, "Pt total active power")]),
                "pf": float(block[_address(regs, "PFt total power factor")]),
                "hz": float(block[_address(regs, "Freq frequency")]),
                "ratios": (int(ratios[_address(regs, "IrAt")]),
                           int(ratios[_address(regs, "UrAt")]))}
    if layout == "adl400":
        energy_at = _address(regs, "forward active total energy")
        energy = await read("4:int", energy_at, 1)
        words = await read("4", 0x0061, 0x17, big_endian=False)
        power_at = _address(regs, "total active power")
        power = await read("4:int", power_at, 1)
        pf_at = _address(regs, "PF total power factor")
        pf = await read("4", pf_at, 1, big_endian=False)
        return {"energy": int(energy[energy_at]), "power": int(power[power_at]),
                "volts": int(words[_address(regs, "Ua/Ub/Uc phase voltage")]),
                "amps": int(words[_address(regs, "Ia/Ib/Ic current")]),
                "hz": int(words[_address(regs, "frequency")]), "pf": int(pf[pf_at])}
    if layout == "pm5xxx":
        first = _address(regs, "Current A/B/C")
        block = await read("4:float", first, 56)
        energy_at = _address(regs, "Active Energy Delivered (Into Load), INT64 Wh")
        energy = await read("4:hex", energy_at, 4, big_endian=False)
        wh = struct.unpack(">q", struct.pack(">4H", *_words_of(energy, energy_at, 4)))[0]
        return {"energy_wh": wh,
                "power": float(block[_address(regs, "Active Power Total")]),
                "volts": float(block[_address(regs, "Voltage A-N/B-N/C-N")]),
                "amps": float(block[first]),
                "pf": float(block[_address(regs, "Power Factor Total")]),
                "hz": float(block[_address(regs, "Frequency")])}
    assert layout == "pac3200"
    block = await read("3:float", 0x0001, 35)
    energy_at = _address(regs, "active energy import tariff 1")
    energy = await read("3:hex", energy_at, 4, big_endian=False)
    wh = struct.unpack(">d", struct.pack(">4H", *_words_of(energy, energy_at, 4)))[0]
    return {"energy_wh": wh, "power": float(block[_address(regs, "total active power W")]),
            "volts": float(block[_address(regs, "voltage L1-N/L2-N/L3-N")]),
            "amps": float(block[_address(regs, "current L1/L2/L3")]),
            "pf": float(block[_address(regs, "total power factor")]),
            "hz": float(block[_address(regs, "frequency Hz")])}


def _check_new_layout(layout: str, got: dict[str, Any], image: MeterImage) -> None:
    """What ``mbpoll`` read, in the units the printed map gives, against the served model."""
    if layout == "dtsu666":  # float32 in 0.1 V, 0.001 A, 0.1 W, 0.001, 0.01 Hz; kWh
        assert got["energy"] == image.energy_kwh
        assert got["volts"] == pytest.approx(image.voltages_v[0] * 10, rel=1e-5)
        assert got["amps"] == pytest.approx(image.currents_a[0] * 1000, rel=1e-5, abs=1e-3)
        assert got["power"] == pytest.approx(image.power_w * 10, rel=1e-5, abs=1e-2)
        assert got["pf"] == pytest.approx(image.power_factor * 1000, rel=1e-5)
        assert got["hz"] == pytest.approx(image.frequency_hz * 100, rel=1e-5)
        assert got["ratios"] == (1, 10)
    elif layout == "adl400":  # integers in 0.01 kWh, W, 0.1 V, 0.01 A, 0.01 Hz, 0.001
        assert got["energy"] == image.energy_kwh * 100
        assert got["power"] == round(image.power_w)
        assert got["volts"] == round(image.voltages_v[0] * 10)
        assert got["amps"] == round(image.currents_a[0] * 100)
        assert got["hz"] == round(image.frequency_hz * 100)
        assert got["pf"] == round(image.power_factor * 1000)
    else:  # pm5xxx: INT64 Wh and float32 kW; pac3200: float64 Wh and float32 W
        assert got["energy_wh"] == image.energy_kwh * 1000
        power = image.power_w / 1000 if layout == "pm5xxx" else image.power_w
        assert got["power"] == pytest.approx(power, rel=1e-5, abs=1e-6)
        assert got["volts"] == pytest.approx(image.voltages_v[0], rel=1e-5)
        assert got["amps"] == pytest.approx(image.currents_a[0], rel=1e-5, abs=1e-6)
        assert got["pf"] == pytest.approx(image.power_factor, rel=1e-5)
        assert got["hz"] == pytest.approx(image.frequency_hz, rel=1e-5)
