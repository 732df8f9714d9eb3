"""Register maps: SDM630 float32 high word first, scaled32 and EM24 low word first, and the
DTSU666, ADL400, PM5xxx and PAC3200 maps high word first."""

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
    adl400_registers,
    decode_float32_hi_lo,
    decode_float64_hi_lo,
    decode_i32_lo_hi,
    decode_i64_hi_lo,
    decode_u32_lo_hi,
    dtsu666_registers,
    em24_registers,
    pac3200_registers,
    pm5xxx_registers,
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
    assert set(LAYOUTS) == {"sdm630", "scaled32", "em24", "dtsu666", "adl400", "pm5xxx",
                            "pac3200"}
    assert LAYOUTS["em24"].segments == EM24_SEGMENTS
    assert {name: layout.block.function_code for name, layout in LAYOUTS.items()} == {
        "sdm630": 4, "scaled32": 3, "em24": 3, "dtsu666": 3, "adl400": 3, "pm5xxx": 3,
        "pac3200": 4}
    for name, layout in LAYOUTS.items():
        assert all(0 <= lo < hi <= layout.block.count for lo, hi in layout.segments), name


def _f32(regs: list[int], addr: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", *regs[addr:addr + 2]))[0])


def test_dtsu666_floats_in_chint_units() -> None:
    regs = dtsu666_registers(IMAGE)
    assert len(regs) == 0x4052
    assert regs[0x0006] == 1 and regs[0x0007] == 10  # IrAt 1, UrAt 1.0 in 0.1
    assert round(_f32(regs, 0x2006)) == 2291 and round(_f32(regs, 0x200A)) == 2313  # 0.1 V
    assert round(_f32(regs, 0x200C)) == 20_100  # 0.001 A
    assert _f32(regs, 0x2012) == 123_455.0  # Pt in 0.1 W
    assert round(_f32(regs, 0x202A)) == 880 and round(_f32(regs, 0x2044)) == 5001
    assert round(decode_float32_hi_lo(regs[0x401E:0x4020]) * 100) == 123_456  # ImpEp kWh
    assert regs[0x101E:0x1020] == regs[0x401E:0x4020]
    assert regs[0x4028] == regs[0x4029] == 0
    # high word first: the first register holds the sign and exponent
    assert regs[0x2012] == struct.unpack(">HH", struct.pack(">f", 123_455.0))[0]


def test_adl400_integers_high_word_first() -> None:
    regs = adl400_registers(IMAGE)
    assert len(regs) == 0x180
    assert regs[0x000A] == 123_456 >> 16 and regs[0x000B] == 123_456 & 0xFFFF
    assert regs[0x0000:0x0002] == regs[0x000A:0x000C]  # combined = forward (no reverse)
    assert regs[0x0014] == regs[0x0015] == 0
    assert regs[0x0061:0x0064] == [2291, 2302, 2313]  # 0.1 V
    assert regs[0x0064:0x0067] == [2010, 1990, 2000]  # 0.01 A
    assert regs[0x0077] == 5001 and regs[0x008D] == regs[0x008E] == 1
    total = struct.unpack(">i", struct.pack(">HH", *regs[0x016A:0x016C]))[0]
    assert total == 12_346  # W, rounded half to even
    phases = [struct.unpack(">i", struct.pack(">HH", *regs[a:a + 2]))[0]
              for a in (0x0164, 0x0166, 0x0168)]
    assert sum(phases) == pytest.approx(total, abs=2)
    assert regs[0x017F] == 880 and regs[0x017C] == 880


def test_adl400_saturates_a_16_bit_current() -> None:
    image = MeterImage(power_w=500_000.0, voltages_v=(230.0,) * 3,
                       currents_a=(800.0, 800.0, 800.0), power_factor=0.9,
                       frequency_hz=50.0, energy_counts=0, resolution_kwh=Decimal("0.01"))
    assert adl400_registers(image)[0x0064] == 0xFFFF


def test_pm5xxx_int64_wh_at_register_3204() -> None:
    regs = pm5xxx_registers(IMAGE)
    assert len(regs) == 3211
    assert decode_i64_hi_lo(regs[3203:3207]) == 1_234_560  # 1234.56 kWh in Wh
    assert regs[3203] == regs[3204] == 0 and regs[3206] == 1_234_560 & 0xFFFF
    assert decode_i64_hi_lo(regs[3207:3211]) == 0
    assert _f32(regs, 3059) == pytest.approx(12.3455)  # kW
    assert _f32(regs, 2999) == pytest.approx(20.1) and _f32(regs, 3027) == pytest.approx(229.1)
    assert _f32(regs, 3083) == pytest.approx(0.88) and _f32(regs, 3109) == pytest.approx(50.01)
    assert _f32(regs, 2699) == pytest.approx(1234.56)  # the float32 kWh copy


def test_pac3200_float64_wh_at_offset_801() -> None:
    regs = pac3200_registers(IMAGE)
    assert len(regs) == 0x340
    assert regs[0] == 0  # the map starts at offset 1
    assert decode_float64_hi_lo(regs[801:805]) == 1_234_560.0  # Wh, exact
    assert regs[801] == struct.unpack(">4H", struct.pack(">d", 1_234_560.0))[0]
    assert all(decode_float64_hi_lo(regs[a:a + 4]) == 0.0 for a in (805, 809, 813))
    assert _f32(regs, 65) == 12_345.5  # W
    assert _f32(regs, 1) == pytest.approx(229.1) and _f32(regs, 13) == pytest.approx(20.1)
    assert _f32(regs, 69) == pytest.approx(0.88) and _f32(regs, 55) == pytest.approx(50.01)


def test_64_bit_decoders() -> None:
    assert decode_i64_hi_lo([0xFFFF] * 4) == -1
    assert decode_i64_hi_lo([0, 0, 1, 0]) == 1 << 16
    assert decode_float64_hi_lo(list(struct.unpack(">4H", struct.pack(">d", -2.5)))) == -2.5


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
    image = MeterImage(power_w=12_345.6, voltages_v=(229.1, 230.2, 231.3),
                       currents_a=(18.1, 17.9, 18.0), power_factor=0.87, frequency_hz=50.01,
                       energy_counts=482_137, resolution_kwh=Decimal("0.01"))
    for name, layout in LAYOUTS.items():
        regs = layout.registers(image)
        assert len(regs) == layout.block.count, name
        inside = {i for lo, hi in layout.segments for i in range(lo, hi)}
        assert all(word == 0 for i, word in enumerate(regs) if i not in inside), name
        assert all(any(regs[lo:hi]) for lo, hi in layout.segments), name
