"""Register maps: how a meter's readings are laid out in Modbus registers.

Pure functions from a :class:`~simulators.meter.MeterImage` to register words, so the
maps can be tested without a server. Addresses are 0-based protocol addresses.

``sdm630`` (Eastron SDM630 public map), input registers (function code 4), IEEE-754
float32, high word first; every register in ``0x0000..0x017F`` is readable (unlisted
ones read 0.0) so a collector may merge reads across gaps:

====== =========================================
0x0000 L1/L2/L3 line-to-neutral voltage V (0x0000, 0x0002, 0x0004)
0x0006 L1/L2/L3 current A (0x0006, 0x0008, 0x000A)
0x000C L1/L2/L3 active power W (0x000C, 0x000E, 0x0010)
0x0012 L1/L2/L3 apparent power VA; 0x0018 reactive power var; 0x001E power factor
0x002A average line-to-neutral voltage V; 0x002E average current A; 0x0030 sum of currents A
0x0034 total system power W
0x0038 total system VA; 0x003C total system var
0x003E total system power factor
0x0046 frequency Hz
0x0048 total import active energy kWh (at the meter's resolution, rolls over at its modulus)
0x004A total export active energy kWh (0)
0x00C8 L1-L2/L2-L3/L3-L1 voltage V (0x00C8, 0x00CA, 0x00CC)
0x0156 total active energy kWh (same as 0x0048)
====== =========================================

``scaled32``: holding registers (function code 3), 32-bit integers with the *low* word
first, each word big-endian (the "other" word order):

====== ============================================================
0x0000 total import active energy, unsigned, in resolution steps (e.g. 0.01 kWh)
0x0002 total active power, signed, 0.1 W
0x0004 L1/L2/L3 voltage, unsigned, 0.1 V (0x0004, 0x0006, 0x0008)
0x000A L1/L2/L3 current, unsigned, mA (0x000A, 0x000C, 0x000E)
0x0010 total power factor, signed, 0.001
0x0012 frequency, unsigned, 0.01 Hz
0x0014 energy resolution, unsigned, mWh per step (10 000 for 0.01 kWh)
====== ============================================================

``em24`` (Carlo Gavazzi EM24 public map): holding registers (function code 3), signed
32-bit integers with the low word first (INT32 "LSW first") and 16-bit integers; every
register in ``0x0000..0x005F`` is readable (unlisted ones read 0):

====== ============================================================
0x0000 phase 1/2/3 to neutral voltage, 0.1 V (0x0000, 0x0002, 0x0004)
0x0006 line 1-2/2-3/3-1 voltage, 0.1 V (0x0006, 0x0008, 0x000A)
0x000C line 1/2/3 current, mA (0x000C, 0x000E, 0x0010)
0x0012 phase 1/2/3 active power, 0.1 W (0x0012, 0x0014, 0x0016)
0x0018 phase 1/2/3 apparent power 0.1 VA; 0x001E reactive power 0.1 var
0x0024 system voltage L-N 0.1 V; 0x0026 system voltage L-L 0.1 V
0x0028 system active power, 0.1 W
0x002A system apparent power 0.1 VA; 0x002C system reactive power 0.1 var
0x002E phase 1/2/3 power factor, 16 bit, 0.001 (0x002E, 0x002F, 0x0030)
0x0031 system power factor, 16 bit, 0.001
0x0033 frequency, 16 bit, 0.1 Hz
0x0034 kWh (+) TOT: imported active energy, 0.1 kWh (rolls over at the modulus)
0x0038 system active power demand, 0.1 W
0x004E kWh (-) TOT: exported active energy, 0.1 kWh (0)
====== ============================================================

``dtsu666`` (CHINT DTSU666 public map): holding registers (function code 3), IEEE-754
float32, high word first, in CHINT's units; the transformer ratios are 1 (a directly
connected meter), so secondary and primary side agree; every register in
``0x0000..0x4051`` is readable (unlisted ones read 0):

====== ============================================================
0x0006 IrAt current transformer ratio, 16 bit (1)
0x0007 UrAt voltage transformer ratio, 16 bit, 0.1 (10, i.e. 1.0)
0x101E ImpEp secondary-side import active energy kWh (same as 0x401E)
0x1028 ExpEp secondary-side export active energy kWh (0)
0x2000 Uab/Ubc/Uca line-to-line voltage, 0.1 V (0x2000, 0x2002, 0x2004)
0x2006 Ua/Ub/Uc phase voltage, 0.1 V (0x2006, 0x2008, 0x200A)
0x200C Ia/Ib/Ic current, 0.001 A (0x200C, 0x200E, 0x2010)
0x2012 Pt total active power, 0.1 W
0x2014 Pa/Pb/Pc phase active power, 0.1 W (0x2014, 0x2016, 0x2018)
0x201A Qt total reactive power 0.1 var; 0x201C Qa/Qb/Qc 0.1 var
0x202A PFt total power factor, 0.001
0x202C PFa/PFb/PFc phase power factor, 0.001 (0x202C, 0x202E, 0x2030)
0x2044 Freq frequency, 0.01 Hz
0x401E ImpEp import active energy kWh (at the meter's resolution, rolls over at its modulus)
0x4028 ExpEp export active energy kWh (0)
====== ============================================================

``adl400`` (Acrel ADL400 public map): holding registers (function code 3), integers
high word first; the PT and CT ratios are 1, so secondary and primary side agree;
every register in ``0x0000..0x017F`` is readable (unlisted ones read 0):

====== ============================================================
0x0000 combined total active energy, 32 bit, 0.01 kWh (forward + reverse)
0x000A forward active total energy, 32 bit, 0.01 kWh (rolls over at the modulus)
0x0014 reverse active total energy, 32 bit, 0.01 kWh (0)
0x0061 Ua/Ub/Uc phase voltage, 16 bit, 0.1 V (0x0061, 0x0062, 0x0063)
0x0064 Ia/Ib/Ic current, 16 bit, 0.01 A (0x0064, 0x0065, 0x0066)
0x0077 frequency, 16 bit, 0.01 Hz
0x008D PT voltage ratio, 16 bit (1)
0x008E CT current ratio, 16 bit (1)
0x0164 Pa/Pb/Pc phase active power, signed 32 bit, W (0x0164, 0x0166, 0x0168)
0x016A total active power, signed 32 bit, W
0x016C Qa/Qb/Qc/Qt reactive power, signed 32 bit, var (total at 0x0172)
0x0174 Sa/Sb/Sc/St apparent power, signed 32 bit, VA (total at 0x017A)
0x017C PFa/PFb/PFc phase power factor, signed 16 bit, 0.001 (0x017C, 0x017D, 0x017E)
0x017F PF total power factor, signed 16 bit, 0.001
====== ============================================================

``pm5xxx`` (Schneider PowerLogic PM5100/PM5300/PM5500 public register list):
holding registers (function code 3), float32 and INT64 high word first. The list
numbers registers from 1: protocol address = register number - 1 (the register is
given in brackets). Every register in ``0x0000..0x0C8A`` is readable (unlisted ones
read 0):

====== ============================================================
0x0A8B Active Energy Delivered (Into Load), float32 kWh [2700]
0x0A8D Active Energy Received (Out of Load), float32 kWh (0) [2702]
0x0BB7 Current A/B/C, float32 A (0x0BB7, 0x0BB9, 0x0BBB) [3000, 3002, 3004]
0x0BC1 Current Avg, float32 A [3010]
0x0BCB Voltage A-B/B-C/C-A, float32 V (0x0BCB, 0x0BCD, 0x0BCF) [3020, 3022, 3024]
0x0BD1 Voltage L-L Avg, float32 V [3026]
0x0BD3 Voltage A-N/B-N/C-N, float32 V (0x0BD3, 0x0BD5, 0x0BD7) [3028, 3030, 3032]
0x0BDB Voltage L-N Avg, float32 V [3036]
0x0BED Active Power A/B/C, float32 kW (0x0BED, 0x0BEF, 0x0BF1) [3054, 3056, 3058]
0x0BF3 Active Power Total, float32 kW [3060]
0x0BFB Reactive Power Total, float32 kVAR [3068]
0x0C03 Apparent Power Total, float32 kVA [3076]
0x0C05 Power Factor A/B/C, float32 4Q FP PF (0x0C05, 0x0C07, 0x0C09) [3078, 3080, 3082]
0x0C0B Power Factor Total, float32 4Q FP PF (a consuming inductive load: its PF) [3084]
0x0C25 Frequency, float32 Hz [3110]
0x0C83 Active Energy Delivered (Into Load), INT64 Wh (rolls over at the modulus) [3204]
0x0C87 Active Energy Received (Out of Load), INT64 Wh (0) [3208]
====== ============================================================

``pac3200`` (Siemens SENTRON PAC3200 public map): input registers (function code 4),
IEEE-754 float32 and float64, high word first; the manual's offsets are the protocol
addresses (there is no register 0). Every register in ``0x0000..0x033F`` is readable
(unlisted ones read 0):

====== ============================================================
0x0001 voltage L1-N/L2-N/L3-N V (0x0001, 0x0003, 0x0005)
0x0007 voltage L1-L2/L2-L3/L3-L1 V (0x0007, 0x0009, 0x000B)
0x000D current L1/L2/L3 A (0x000D, 0x000F, 0x0011)
0x0013 apparent power L1/L2/L3 VA; 0x0019 active power L1/L2/L3 W; 0x001F reactive var
0x0025 power factor L1/L2/L3 (0x0025, 0x0027, 0x0029)
0x0037 frequency Hz
0x0039 average voltage L-N V; 0x003B average voltage L-L V; 0x003D average current A
0x003F total apparent power VA
0x0041 total active power W
0x0043 total reactive power var
0x0045 total power factor
0x0321 active energy import tariff 1, float64 Wh (rolls over at the modulus)
0x0325 active energy import tariff 2, float64 Wh (0)
0x0329 active energy export tariff 1, float64 Wh (0)
====== ============================================================
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from simulators.meter import MeterImage

__all__ = [
    "ADL400_BLOCK",
    "ADL400_SEGMENTS",
    "DTSU666_BLOCK",
    "DTSU666_SEGMENTS",
    "EM24_BLOCK",
    "EM24_SEGMENTS",
    "LAYOUTS",
    "PAC3200_BLOCK",
    "PAC3200_SEGMENTS",
    "PM5XXX_BLOCK",
    "PM5XXX_SEGMENTS",
    "SCALED32_BLOCK",
    "SCALED32_SEGMENTS",
    "SDM630_BLOCK",
    "SDM630_SEGMENTS",
    "Layout",
    "RegisterBlock",
    "adl400_registers",
    "decode_float32_hi_lo",
    "decode_float64_hi_lo",
    "decode_i32_lo_hi",
    "decode_i64_hi_lo",
    "decode_u32_lo_hi",
    "dtsu666_registers",
    "em24_registers",
    "pac3200_registers",
    "pm5xxx_registers",
    "scaled32_registers",
    "sdm630_registers",
]


@dataclass(frozen=True, slots=True)
class RegisterBlock:
    """Where a layout's registers live: function code, first address, word count."""

    function_code: int
    start: int
    count: int


SDM630_BLOCK = RegisterBlock(function_code=4, start=0x0000, count=0x0180)
SCALED32_BLOCK = RegisterBlock(function_code=3, start=0x0000, count=0x0020)
EM24_BLOCK = RegisterBlock(function_code=3, start=0x0000, count=0x0060)

SDM630_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0000, 0x004C), (0x00C8, 0x00CE),
                                                (0x0156, 0x0158))
"""``[start, end)`` word ranges of the ``sdm630`` block that can be non-zero."""
SCALED32_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0000, 0x0016),)
"""``[start, end)`` word ranges of the ``scaled32`` block that can be non-zero."""
EM24_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0000, 0x003A),)
"""``[start, end)`` word ranges of the ``em24`` block that can be non-zero."""

DTSU666_BLOCK = RegisterBlock(function_code=3, start=0x0000, count=0x4052)
ADL400_BLOCK = RegisterBlock(function_code=3, start=0x0000, count=0x0180)
PM5XXX_BLOCK = RegisterBlock(function_code=3, start=0x0000, count=0x0C8B)
PAC3200_BLOCK = RegisterBlock(function_code=4, start=0x0000, count=0x0340)

DTSU666_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0006, 0x0008), (0x101E, 0x102A),
                                                 (0x2000, 0x2046), (0x401E, 0x402A))
"""``[start, end)`` word ranges of the ``dtsu666`` block that can be non-zero."""
ADL400_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0000, 0x0016), (0x0061, 0x0067),
                                                (0x0077, 0x0078), (0x008D, 0x008F),
                                                (0x0164, 0x0180))
"""``[start, end)`` word ranges of the ``adl400`` block that can be non-zero."""
PM5XXX_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0A8B, 0x0A8F), (0x0BB7, 0x0BDD),
                                                (0x0BED, 0x0C0D), (0x0C25, 0x0C27),
                                                (0x0C83, 0x0C8B))
"""``[start, end)`` word ranges of the ``pm5xxx`` block that can be non-zero."""
PAC3200_SEGMENTS: tuple[tuple[int, int], ...] = ((0x0001, 0x0047), (0x0321, 0x0331))
"""``[start, end)`` word ranges of the ``pac3200`` block that can be non-zero."""


def _f32(value: float) -> tuple[int, int]:
    raw = struct.pack(">f", value)
    return int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")


def _u32_lo_hi(value: int) -> tuple[int, int]:
    value &= 0xFFFFFFFF
    return value & 0xFFFF, value >> 16


def decode_float32_hi_lo(words: list[int]) -> float:
    """Inverse of the ``sdm630`` encoding (for tests and tools)."""
    return float(struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0])


def decode_float64_hi_lo(words: list[int]) -> float:
    """Inverse of the float64 encoding of ``pac3200`` (four words, high word first)."""
    return float(struct.unpack(">d", struct.pack(">4H", *words))[0])


def decode_i64_hi_lo(words: list[int]) -> int:
    """Inverse of the INT64 encoding of ``pm5xxx`` (four words, high word first)."""
    return int(struct.unpack(">q", struct.pack(">4H", *words))[0])


def decode_u32_lo_hi(words: list[int]) -> int:
    """Inverse of the ``scaled32`` encoding of unsigned values."""
    return words[0] | (words[1] << 16)


def decode_i32_lo_hi(words: list[int]) -> int:
    """Inverse of the low-word-first encoding of signed values (``em24``, ``scaled32``)."""
    value = decode_u32_lo_hi(words)
    return value - (1 << 32) if value & 0x80000000 else value


def _phases(image: MeterImage) -> tuple[list[float], float, list[float], float]:
    """Per-phase apparent power, its sum, active power split by it, and sin(phi)."""
    shares = [v * a for v, a in zip(image.voltages_v, image.currents_a, strict=True)]
    total_va = sum(shares)
    phase_w = [image.power_w * (s / total_va) if total_va > 0 else 0.0 for s in shares]
    pf = image.power_factor
    return shares, total_va, phase_w, math.sqrt(max(0.0, 1.0 - pf * pf))


def sdm630_registers(image: MeterImage) -> list[int]:
    """The whole ``sdm630`` input-register block for ``image``."""
    values: dict[int, float] = {}
    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    shares, total_va, phase_p, sin_phi = _phases(image)
    for i in range(3):
        values[0x0000 + 2 * i] = volts[i]
        values[0x0006 + 2 * i] = amps[i]
        values[0x000C + 2 * i] = phase_p[i]
        values[0x0012 + 2 * i] = shares[i]
        values[0x0018 + 2 * i] = shares[i] * sin_phi
        values[0x001E + 2 * i] = pf
        values[0x00C8 + 2 * i] = (volts[i] + volts[(i + 1) % 3]) / 2 * math.sqrt(3.0)
    values[0x002A] = sum(volts) / 3
    values[0x002E] = sum(amps) / 3
    values[0x0030] = sum(amps)
    values[0x0034] = image.power_w
    values[0x0038] = total_va
    values[0x003C] = total_va * sin_phi
    values[0x003E] = pf
    values[0x0046] = image.frequency_hz
    energy = float(image.energy_kwh)
    values[0x0048] = energy
    values[0x004A] = 0.0
    values[0x0156] = energy
    addresses = list(values)
    words = struct.unpack(f">{2 * len(addresses)}H",
                          struct.pack(f">{len(addresses)}f", *values.values()))
    regs = [0] * SDM630_BLOCK.count
    for n, address in enumerate(addresses):
        regs[address] = words[2 * n]
        regs[address + 1] = words[2 * n + 1]
    return regs


def scaled32_registers(image: MeterImage) -> list[int]:
    """The whole ``scaled32`` holding-register block for ``image``."""
    regs = [0] * SCALED32_BLOCK.count

    def put(address: int, value: int) -> None:
        regs[address], regs[address + 1] = _u32_lo_hi(value)

    put(0x0000, image.energy_counts)
    put(0x0002, round(image.power_w * 10))
    for i in range(3):
        put(0x0004 + 2 * i, round(image.voltages_v[i] * 10))
        put(0x000A + 2 * i, round(image.currents_a[i] * 1000))
    put(0x0010, round(image.power_factor * 1000))
    put(0x0012, round(image.frequency_hz * 100))
    put(0x0014, int(image.resolution_kwh * 1_000_000))
    return regs


def em24_registers(image: MeterImage) -> list[int]:
    """The whole ``em24`` holding-register block for ``image``.

    The energy register counts 0.1 kWh whatever the meter's resolution (which is a
    whole number of tenths, checked when the scenario is loaded).
    """
    regs = [0] * EM24_BLOCK.count

    def put32(address: int, value: float) -> None:
        regs[address], regs[address + 1] = _u32_lo_hi(round(value))

    def put16(address: int, value: float) -> None:
        regs[address] = round(value) & 0xFFFF

    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    shares, total_va, phase_w, sin_phi = _phases(image)
    for i in range(3):
        put32(0x0000 + 2 * i, volts[i] * 10)
        put32(0x0006 + 2 * i, (volts[i] + volts[(i + 1) % 3]) / 2 * math.sqrt(3.0) * 10)
        put32(0x000C + 2 * i, amps[i] * 1000)
        put32(0x0012 + 2 * i, phase_w[i] * 10)
        put32(0x0018 + 2 * i, shares[i] * 10)
        put32(0x001E + 2 * i, shares[i] * sin_phi * 10)
        put16(0x002E + i, pf * 1000)
    put32(0x0024, sum(volts) / 3 * 10)
    put32(0x0026, sum(volts) / 3 * math.sqrt(3.0) * 10)
    put32(0x0028, image.power_w * 10)
    put32(0x002A, total_va * 10)
    put32(0x002C, total_va * sin_phi * 10)
    put16(0x0031, pf * 1000)
    put16(0x0033, image.frequency_hz * 10)
    regs[0x0034], regs[0x0035] = _u32_lo_hi(int(image.energy_kwh * 10))
    put32(0x0038, image.power_w * 10)
    return regs


def _words(fmt: str, value: float) -> tuple[int, ...]:
    raw = struct.pack(fmt, value)
    return struct.unpack(f">{len(raw) // 2}H", raw)


def _fill(block: RegisterBlock, values: dict[int, tuple[int, ...]]) -> list[int]:
    regs = [0] * block.count
    for address, words in values.items():
        at = address - block.start
        regs[at:at + len(words)] = words
    return regs


def _u16(value: float) -> tuple[int, ...]:
    """A 16-bit unsigned reading, saturated as a meter's display would be."""
    return (min(max(round(value), 0), 0xFFFF),)


def _i16(value: float) -> tuple[int, ...]:
    return (round(value) & 0xFFFF,)


def _line_volts(volts: tuple[float, float, float], i: int) -> float:
    return (volts[i] + volts[(i + 1) % 3]) / 2 * math.sqrt(3.0)


def dtsu666_registers(image: MeterImage) -> list[int]:
    """The whole ``dtsu666`` holding-register block for ``image`` (ratios 1)."""
    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    shares, total_va, phase_w, sin_phi = _phases(image)
    values: dict[int, float] = {}
    for i in range(3):
        values[0x2000 + 2 * i] = _line_volts(volts, i) * 10
        values[0x2006 + 2 * i] = volts[i] * 10
        values[0x200C + 2 * i] = amps[i] * 1000
        values[0x2014 + 2 * i] = phase_w[i] * 10
        values[0x201C + 2 * i] = shares[i] * sin_phi * 10
        values[0x202C + 2 * i] = pf * 1000
    values[0x2012] = image.power_w * 10
    values[0x201A] = total_va * sin_phi * 10
    values[0x202A] = pf * 1000
    values[0x2044] = image.frequency_hz * 100
    energy = float(image.energy_kwh)
    values[0x101E] = values[0x401E] = energy
    values[0x1028] = values[0x4028] = 0.0
    words = {address: _words(">f", value) for address, value in values.items()}
    words[0x0006] = (1,)
    words[0x0007] = (10,)
    return _fill(DTSU666_BLOCK, words)


def adl400_registers(image: MeterImage) -> list[int]:
    """The whole ``adl400`` holding-register block for ``image`` (PT and CT ratios 1).

    The energy registers count 0.01 kWh whatever the meter's resolution (a whole number
    of hundredths, checked when the scenario is loaded).
    """
    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    shares, total_va, phase_w, sin_phi = _phases(image)
    hundredths = int(image.energy_kwh * 100)
    words: dict[int, tuple[int, ...]] = {
        0x0000: _words(">I", hundredths),
        0x000A: _words(">I", hundredths),
        0x0077: _u16(image.frequency_hz * 100),
        0x008D: (1,),
        0x008E: (1,),
        0x016A: _words(">i", round(image.power_w)),
        0x0172: _words(">i", round(total_va * sin_phi)),
        0x017A: _words(">i", round(total_va)),
        0x017F: _i16(pf * 1000),
    }
    for i in range(3):
        words[0x0061 + i] = _u16(volts[i] * 10)
        words[0x0064 + i] = _u16(amps[i] * 100)
        words[0x0164 + 2 * i] = _words(">i", round(phase_w[i]))
        words[0x016C + 2 * i] = _words(">i", round(shares[i] * sin_phi))
        words[0x0174 + 2 * i] = _words(">i", round(shares[i]))
        words[0x017C + i] = _i16(pf * 1000)
    return _fill(ADL400_BLOCK, words)


def pm5xxx_registers(image: MeterImage) -> list[int]:
    """The whole ``pm5xxx`` holding-register block for ``image``.

    The INT64 energy register counts Wh whatever the meter's resolution (a whole number
    of Wh, checked when the scenario is loaded); the float32 kWh copy is as coarse as a
    float32 is.
    """
    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    _shares, total_va, phase_w, sin_phi = _phases(image)
    values: dict[int, float] = {
        0x0A8B: float(image.energy_kwh),
        0x0A8D: 0.0,
        0x0BC1: sum(amps) / 3,
        0x0BD1: sum(_line_volts(volts, i) for i in range(3)) / 3,
        0x0BDB: sum(volts) / 3,
        0x0BF3: image.power_w / 1000,
        0x0BFB: total_va * sin_phi / 1000,
        0x0C03: total_va / 1000,
        0x0C0B: pf,
        0x0C25: image.frequency_hz,
    }
    for i in range(3):
        values[0x0BB7 + 2 * i] = amps[i]
        values[0x0BCB + 2 * i] = _line_volts(volts, i)
        values[0x0BD3 + 2 * i] = volts[i]
        values[0x0BED + 2 * i] = phase_w[i] / 1000
        values[0x0C05 + 2 * i] = pf
    words = {address: _words(">f", value) for address, value in values.items()}
    words[0x0C83] = _words(">q", int(image.energy_kwh * 1000))
    words[0x0C87] = _words(">q", 0)
    return _fill(PM5XXX_BLOCK, words)


def pac3200_registers(image: MeterImage) -> list[int]:
    """The whole ``pac3200`` input-register block for ``image``.

    The float64 energy register holds Wh, a whole number of them (checked when the
    scenario is loaded), so the double carries it exactly.
    """
    volts, amps, pf = image.voltages_v, image.currents_a, image.power_factor
    shares, total_va, phase_w, sin_phi = _phases(image)
    values: dict[int, float] = {
        0x0037: image.frequency_hz,
        0x0039: sum(volts) / 3,
        0x003B: sum(_line_volts(volts, i) for i in range(3)) / 3,
        0x003D: sum(amps) / 3,
        0x003F: total_va,
        0x0041: image.power_w,
        0x0043: total_va * sin_phi,
        0x0045: pf,
    }
    for i in range(3):
        values[0x0001 + 2 * i] = volts[i]
        values[0x0007 + 2 * i] = _line_volts(volts, i)
        values[0x000D + 2 * i] = amps[i]
        values[0x0013 + 2 * i] = shares[i]
        values[0x0019 + 2 * i] = phase_w[i]
        values[0x001F + 2 * i] = shares[i] * sin_phi
        values[0x0025 + 2 * i] = pf
    words = {address: _words(">f", value) for address, value in values.items()}
    words[0x0321] = _words(">d", float(image.energy_kwh * 1000))
    for address in (0x0325, 0x0329, 0x032D):
        words[address] = _words(">d", 0.0)
    return _fill(PAC3200_BLOCK, words)


@dataclass(frozen=True, slots=True)
class Layout:
    """One register map: how to build its block, where it lives, what can be non-zero."""

    registers: Callable[[MeterImage], list[int]]
    block: RegisterBlock
    segments: tuple[tuple[int, int], ...]


LAYOUTS: dict[str, Layout] = {
    "sdm630": Layout(sdm630_registers, SDM630_BLOCK, SDM630_SEGMENTS),
    "scaled32": Layout(scaled32_registers, SCALED32_BLOCK, SCALED32_SEGMENTS),
    "em24": Layout(em24_registers, EM24_BLOCK, EM24_SEGMENTS),
    "dtsu666": Layout(dtsu666_registers, DTSU666_BLOCK, DTSU666_SEGMENTS),
    "adl400": Layout(adl400_registers, ADL400_BLOCK, ADL400_SEGMENTS),
    "pm5xxx": Layout(pm5xxx_registers, PM5XXX_BLOCK, PM5XXX_SEGMENTS),
    "pac3200": Layout(pac3200_registers, PAC3200_BLOCK, PAC3200_SEGMENTS),
}
"""Layout name (``MeterSpec.layout``) -> its register map."""
