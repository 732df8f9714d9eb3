"""decode_registers, point_problem and plan_reads: table-driven."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import pytest

from collectors.decode import (
    MAX_REGISTERS_PER_READ,
    decode_registers,
    plan_reads,
    point_problem,
    register_count,
)
from collectors.modbus import (
    ModbusCollector,
    ModbusDeviceSpec,
    ModbusSourceSpec,
    RegisterPoint,
    validate_source,
)
from collectors.presets import PRESETS, preset_points
from rules.errors import ConfigError, DecodeError


def regs_of(fmt: str, value: float | int) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def swap_bytes(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


# (dtype, struct format, value)
VALUES = [
    ("u16", ">H", 0), ("u16", ">H", 0xFFFF), ("u16", ">H", 0x1234),
    ("i16", ">h", -1), ("i16", ">h", -32768), ("i16", ">h", 32767),
    ("u32", ">I", 0xDEADBEEF), ("u32", ">I", 70000),
    ("i32", ">i", -2), ("i32", ">i", -2_000_000_000),
    ("u64", ">Q", 2**64 - 1), ("u64", ">Q", 123456789012345),
    ("i64", ">q", -(2**63)), ("i64", ">q", -5),
    ("f32", ">f", 15023.75), ("f32", ">f", -0.5),
    ("f64", ">d", 1e300), ("f64", ">d", -123.456789),
]


@pytest.mark.parametrize(("dtype", "fmt", "value"), VALUES)
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_every_dtype_in_every_order(dtype: str, fmt: str, value: float, word_order: str,
                                    byte_order: str) -> None:
    regs = regs_of(fmt, value)
    if word_order == "little":
        regs = regs[::-1]
    if byte_order == "little":
        regs = swap_bytes(regs)
    got = decode_registers(regs, dtype, word_order, byte_order)  # type: ignore[arg-type]
    assert got == pytest.approx(value) if dtype.startswith("f") else got == value
    if not dtype.startswith("f"):
        assert isinstance(got, int)


@pytest.mark.parametrize(("regs", "dtype", "word", "byte", "expected"), [
    ([0x4142, 0x4344], "f32", "big", "big", struct.unpack(">f", b"ABCD")[0]),   # ABCD
    ([0x4344, 0x4142], "f32", "little", "big", struct.unpack(">f", b"ABCD")[0]),  # CDAB
    ([0x4241, 0x4443], "f32", "big", "little", struct.unpack(">f", b"ABCD")[0]),  # BADC
    ([0x4443, 0x4241], "f32", "little", "little", struct.unpack(">f", b"ABCD")[0]),  # DCBA
    ([0x0001, 0x0000], "u32", "little", "big", 1),
    ([0x0000, 0x0001], "u32", "big", "big", 1),
])
def test_named_byte_layouts(regs: list[int], dtype: str, word: str, byte: str,
                            expected: float) -> None:
    assert decode_registers(regs, dtype, word, byte) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(("regs", "dtype", "scale", "offset", "expected"), [
    ([1234], "u16", 0.1, 0.0, 123.4),
    ([0xFFFF], "i16", 0.5, 10.0, 9.5),
    ([0, 12345], "u32", 0.001, 0.0, 12.345),
    (regs_of(">f", 12345.0), "f32", 0.001, 0.0, 12.345),
    ([100], "u16", 1.0, -273.15, -173.15),
])
def test_scale_and_offset(regs: list[int], dtype: str, scale: float, offset: float,
                          expected: float) -> None:
    got = decode_registers(regs, dtype, scale=scale, offset=offset)
    assert isinstance(got, float)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(("regs", "byte_order", "expected"), [
    ([0x4142, 0x4344], "big", "ABCD"),
    ([0x4241, 0x4443], "little", "ABCD"),
    ([0x4142, 0x4300, 0x0000], "big", "AB" "C"),
    ([0x4142, 0x2020], "big", "AB"),
])
def test_strings(regs: list[int], byte_order: str, expected: str) -> None:
    assert decode_registers(regs, "string", byte_order=byte_order) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("regs", "dtype"), [
    ([1], "u32"),               # too few
    ([1, 2, 3], "f32"),         # too many
    ([0x7FC0, 0x0000], "f32"),  # NaN
    ([0x7F80, 0x0000], "f32"),  # +inf
    (regs_of(">d", math.inf), "f64"),
    ([0x10000], "u16"),         # not a word
    ([-1], "u16"),
    ([1], "u128"),              # unknown dtype
    ([], "string"),
    ([0xFFFE], "string"),       # not UTF-8
])
def test_decode_errors(regs: list[int], dtype: str) -> None:
    with pytest.raises(DecodeError):
        decode_registers(regs, dtype)


def test_register_count() -> None:
    assert [register_count(d) for d in ("u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64")] \
        == [1, 1, 2, 2, 2, 4, 4, 4]
    assert register_count("string", 8) == 8
    with pytest.raises(ValueError):
        register_count("string")
    with pytest.raises(ValueError):
        register_count("x")


@dataclass(frozen=True)
class P:
    table: str
    address: int
    dtype: str = "u16"
    length: int | None = None


def spans(points: list[P], max_gap: int, max_count: int = 125) -> list[tuple[str, int, int]]:
    return [(b.table, b.address, b.count) for b in plan_reads(points, max_gap, max_count)]


@pytest.mark.parametrize(("points", "max_gap", "max_count", "expected"), [
    ([], 8, 125, []),
    ([P("holding", 0)], 8, 125, [("holding", 0, 1)]),
    # adjacent and gap within limit merge
    ([P("input", 0, "f32"), P("input", 2, "f32"), P("input", 10, "f32")], 8, 125,
     [("input", 0, 12)]),
    # gap exactly max_gap merges, one more splits
    ([P("input", 0), P("input", 9)], 8, 125, [("input", 0, 10)]),
    ([P("input", 0), P("input", 10)], 8, 125, [("input", 0, 1), ("input", 10, 1)]),
    # max_gap 0: only contiguous
    ([P("holding", 0, "u32"), P("holding", 2), P("holding", 4)], 0, 125,
     [("holding", 0, 3), ("holding", 4, 1)]),
    # overlapping points share registers
    ([P("holding", 0, "u32"), P("holding", 1)], 0, 125, [("holding", 0, 2)]),
    # tables never merge; order is table then address
    ([P("input", 5), P("holding", 5), P("coil", 3), P("coil", 0)], 8, 125,
     [("coil", 0, 4), ("holding", 5, 1), ("input", 5, 1)]),
    # unsorted input
    ([P("holding", 20), P("holding", 0), P("holding", 10)], 10, 125, [("holding", 0, 21)]),
    # the 125-register limit
    ([P("holding", 0), P("holding", 124)], 200, 125, [("holding", 0, 125)]),
    ([P("holding", 0), P("holding", 125)], 200, 125, [("holding", 0, 1), ("holding", 125, 1)]),
    ([P("holding", 0, "f64"), P("holding", 122, "f32"), P("holding", 123, "f32")], 200, 125,
     [("holding", 0, 125)]),
    ([P("holding", 0, "f64"), P("holding", 122, "f32"), P("holding", 124, "f32")], 200, 125,
     [("holding", 0, 124), ("holding", 124, 2)]),
    # a smaller limit for devices that cannot serve 125
    ([P("input", i * 2, "f32") for i in range(10)], 0, 8,
     [("input", 0, 8), ("input", 8, 8), ("input", 16, 4)]),
    # strings use their length
    ([P("holding", 0, "string", 10), P("holding", 10)], 0, 125, [("holding", 0, 11)]),
    # bits: up to 2000 per request
    ([P("discrete", 0), P("discrete", 1999)], 5000, 125, [("discrete", 0, 2000)]),
])
def test_plan_reads(points: list[P], max_gap: int, max_count: int,
                    expected: list[tuple[str, int, int]]) -> None:
    assert spans(points, max_gap, max_count) == expected


def test_plan_offsets_point_into_the_reply() -> None:
    a, b, c = P("input", 0x34, "f32"), P("input", 0x48, "f32"), P("input", 0x30, "f32")
    (block,) = plan_reads([a, b, c], max_gap=20)
    assert block.address == 0x30 and block.count == 0x48 + 2 - 0x30
    assert dict((p, off) for p, off in block.points) == {c: 0, a: 4, b: 0x18}


@pytest.mark.parametrize(("points", "max_gap", "max_count"), [
    ([P("holding", 0, "string", 126)], 0, 125),
    ([P("holding", -1)], 0, 125),
    ([P("holding", 65535, "u32")], 0, 125),
    ([P("holding", 0, "nope")], 0, 125),
    ([P("holding", 0)], -1, 125),
    ([P("holding", 0)], 0, MAX_REGISTERS_PER_READ + 1),
])
def test_plan_rejects(points: list[P], max_gap: int, max_count: int) -> None:
    with pytest.raises(ValueError):
        plan_reads(points, max_gap, max_count)


@pytest.mark.parametrize(("table", "address", "dtype", "length", "problem"), [
    ("holding", 0, "u16", None, None),
    ("holding", 65535, "u16", None, None),
    ("input", 65534, "u32", None, None),
    ("holding", 65532, "f64", None, None),
    ("holding", 65535, "u32", None, "a u32 at address 65535 needs registers 65535..65536"),
    ("holding", 65533, "u64", None, "needs registers 65533..65536, past the last register"),
    ("holding", 0, "string", 8, None),
    ("holding", 65530, "string", 6, None),
    ("holding", 65530, "string", 7, "a string of 7 registers at address 65530 needs "
                                    "registers 65530..65536"),
    ("holding", 0, "string", None, "type 'string' needs length"),
    ("holding", 0, "string", 0, "length 0 is outside 1..125"),
    ("holding", 0, "string", 126, "length 126 is outside 1..125"),
    ("holding", 0, "u32", 2, "length applies to type 'string' only; a u32 always "
                             "occupies 2 register(s)"),
    ("coil", 65535, "u16", None, None),
    ("coil", 0, "string", 4, "a coil is one bit"),
    ("discrete", 0, "u16", 1, "a discrete is one bit"),
    ("holding", 65536, "u16", None, "address 65536 is outside 0..65535"),
    ("holding", -1, "u16", None, "address -1 is outside 0..65535"),
    ("register", 0, "u16", None, "unknown table 'register'"),
    ("holding", 0, "u128", None, "unknown type 'u128'"),
])
def test_point_problem(table: str, address: int, dtype: str, length: int | None,
                       problem: str | None) -> None:
    found = point_problem(table, address, dtype, length)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_collector_refuses_what_point_problem_refuses() -> None:
    bad = RegisterPoint("m1", "energy_kwh", "holding", 65535, "u32")
    spec = ModbusSourceSpec(id="gw", devices=(ModbusDeviceSpec("m1", 1, (bad,)),))
    (problem,) = validate_source(spec)
    assert problem == ("modbus source 'gw' devices[0] 'm1' points[0] energy_kwh",
                       point_problem("holding", 65535, "u32"))
    with pytest.raises(ConfigError):
        ModbusCollector(spec)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_point_is_readable(preset: str) -> None:
    for pt in preset_points(preset, "m1"):
        assert point_problem(pt.table, pt.address, pt.dtype, pt.length) is None, pt
