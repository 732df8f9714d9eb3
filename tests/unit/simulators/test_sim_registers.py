"""Register maps: SDM630 float32 high word first, scaled32 and EM24 low word first."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from simulators.ledger import event_to_entry
from simulators.machine import PartDone, StateChange
from simulators.meter import EnergyStep, MeterImage
from simulators.registers import (
    EM24_SEGMENTS,
    LAYOUTS,
    decode_float32_hi_lo,
    decode_i32_lo_hi,
    decode_u32_lo_hi,
    em24_registers,
    scaled32_registers,
    sdm630_registers,
)

IMAGE = MeterImage(power_w=12_345.5, voltages_v=(229.1, 230.2, 231.3),
                   currents_a=(20.1, 19.9, 20.0), power_factor=0.88, frequency_hz=50.01,
                   energy_counts=123_456, resolution_kwh=Decimal("0.01"))


def test_sdm630_addresses() -> None:
    regs = sdm630_registers(IMAGE)
    assert len(regs) == 0x180
    def f(addr: int) -> float:
        return decode_float32_hi_lo(regs[addr:addr + 2])
    assert f(0x0000) == struct.unpack(">f", struct.pack(">f", 229.1))[0]
    assert round(f(0x0002), 3) == 230.2 and round(f(0x0004), 3) == 231.3
    assert round(f(0x0006), 3) == 20.1 and round(f(0x000A), 3) == 20.0
    assert f(0x0034) == 12_345.5
    assert round(f(0x003E), 5) == 0.88
    assert round(f(0x0046), 3) == 50.01
    assert round(f(0x0048) * 100) == 123_456
    assert f(0x0156) == f(0x0048)
    # high word first: the first register holds the sign/exponent bits
    assert regs[0x0034] == struct.unpack(">HH", struct.pack(">f", 12_345.5))[0]


def test_scaled32_low_word_first() -> None:
    regs = scaled32_registers(IMAGE)
    assert regs[0] == 123_456 & 0xFFFF and regs[1] == 123_456 >> 16
    assert decode_u32_lo_hi(regs[0:2]) == 123_456
    assert decode_u32_lo_hi(regs[2:4]) == 123_455  # 0.1 W units, rounded half to even
    assert decode_u32_lo_hi(regs[4:6]) == 2291
    assert decode_u32_lo_hi(regs[0x0A:0x0C]) == 20_100
    assert decode_u32_lo_hi(regs[0x10:0x12]) == 880
    assert decode_u32_lo_hi(regs[0x12:0x14]) == 5001
    assert decode_u32_lo_hi(regs[0x14:0x16]) == 10_000


def test_em24_low_word_first_in_tenths() -> None:
    image = MeterImage(power_w=12_345.5, voltages_v=(229.1, 230.2, 231.3),
                       currents_a=(20.1, 19.9, 20.0), power_factor=0.88, frequency_hz=50.01,
                       energy_counts=1_234_567, resolution_kwh=Decimal("0.1"))
    regs = em24_registers(image)
    assert len(regs) == 0x60
    def i32(addr: int) -> int:
        return decode_i32_lo_hi(regs[addr:addr + 2])
    assert i32(0x0000) == 2291 and i32(0x0002) == 2302 and i32(0x0004) == 2313
    assert i32(0x000C) == 20_100 and i32(0x0010) == 20_000
    assert i32(0x0028) == 123_455  # W x10, rounded half to even
    assert sum(i32(0x0012 + 2 * i) for i in range(3)) == pytest.approx(123_455, abs=2)
    assert regs[0x0031] == 880 and regs[0x002E] == 880
    assert regs[0x0033] == 500  # 50.01 Hz in 0.1 Hz
    assert i32(0x0034) == 1_234_567  # kWh (+) TOT: 123 456.7 kWh in tenths
    assert regs[0x0034] == 1_234_567 & 0xFFFF and regs[0x0035] == 1_234_567 >> 16
    assert i32(0x004E) == 0


def test_em24_energy_register_counts_tenths_whatever_the_resolution() -> None:
    image = MeterImage(power_w=0.0, voltages_v=(230.0,) * 3, currents_a=(0.0,) * 3,
                       power_factor=1.0, frequency_hz=50.0, energy_counts=42,
                       resolution_kwh=Decimal("1"))
    regs = em24_registers(image)
    assert decode_i32_lo_hi(regs[0x0034:0x0036]) == 420
    assert regs[0x0028] == regs[0x0029] == 0


def test_signed_low_word_first_decoding() -> None:
    assert decode_i32_lo_hi([0xFFFF, 0xFFFF]) == -1
    assert decode_i32_lo_hi([0x0000, 0x8000]) == -(2**31)
    assert decode_i32_lo_hi([0xFFFF, 0x7FFF]) == 2**31 - 1


def test_every_layout_names_its_block_and_segments() -> None:
    assert set(LAYOUTS) == {"sdm630", "scaled32", "em24"}
    assert LAYOUTS["em24"].segments == EM24_SEGMENTS
    assert {name: layout.block.function_code for name, layout in LAYOUTS.items()} == {
        "sdm630": 4, "scaled32": 3, "em24": 3}


def test_ledger_lines() -> None:
    ts = 1_790_000_000_123
    assert event_to_entry(StateChange(ts, "cnc-01", "producing", 1, 9000.0, 40.0, 10)) == {
        "kind": "state", "device": "cnc-01", "ts": "2026-09-21T14:13:20.123Z",
        "state": "producing"}
    part = event_to_entry(PartDone(ts, "cnc-01", False, 11, 3, "O1", 0.0, 0.0, 10))
    assert part == {"kind": "part", "device": "cnc-01", "ts": "2026-09-21T14:13:20.123Z",
                    "good": False, "parts_total": 11, "parts_scrap": 3, "program": "O1"}
    energy = event_to_entry(EnergyStep(ts - 1000, ts, "meter-01", 3, 100_003, Decimal("0.01")))
    assert energy is not None
    assert energy["kwh"] == "0.03" and energy["register_kwh"] == "1000.03"
    assert energy["ts_start"] == "2026-09-21T14:13:19.123Z"


def test_only_the_published_segments_carry_values() -> None:
    from decimal import Decimal

    from simulators.meter import MeterImage
    from simulators.registers import (
        SCALED32_SEGMENTS,
        SDM630_SEGMENTS,
        scaled32_registers,
        sdm630_registers,
    )

    image = MeterImage(power_w=12_345.6, voltages_v=(229.1, 230.2, 231.3),
                       currents_a=(18.1, 17.9, 18.0), power_factor=0.87, frequency_hz=50.01,
                       energy_counts=482_137, resolution_kwh=Decimal("0.01"))
    for regs, segments in ((sdm630_registers(image), SDM630_SEGMENTS),
                           (scaled32_registers(image), SCALED32_SEGMENTS),
                           (em24_registers(image), EM24_SEGMENTS)):
        inside = {i for lo, hi in segments for i in range(lo, hi)}
        assert all(word == 0 for i, word in enumerate(regs) if i not in inside)
        assert any(regs[i] for i in inside)
