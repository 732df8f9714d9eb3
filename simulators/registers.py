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
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from simulators.meter import MeterImage

__all__ = [
    "EM24_BLOCK",
    "EM24_SEGMENTS",
    "LAYOUTS",
    "SCALED32_BLOCK",
    "SCALED32_SEGMENTS",
    "SDM630_BLOCK",
    "SDM630_SEGMENTS",
    "Layout",
    "RegisterBlock",
    "decode_float32_hi_lo",
    "decode_i32_lo_hi",
    "decode_u32_lo_hi",
    "em24_registers",
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


def _f32(value: float) -> tuple[int, int]:
    raw = struct.pack(">f", value)
    return int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")


def _u32_lo_hi(value: int) -> tuple[int, int]:
    value &= 0xFFFFFFFF
    return value & 0xFFFF, value >> 16


def decode_float32_hi_lo(words: list[int]) -> float:
    """Inverse of the ``sdm630`` encoding (for tests and tools)."""
    return float(struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0])


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
}
"""Layout name (``MeterSpec.layout``) -> its register map."""
