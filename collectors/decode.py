"""Register decoding and read planning: pure functions, no I/O, tested on their own.

Devices disagree about how a 32- or 64-bit value is laid over 16-bit registers: the
order of the registers (``word_order``) and the order of the two bytes inside each
register (``byte_order``) are both configurable, because both vary in the field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from rules.errors import DecodeError

__all__ = [
    "BIT_TABLES",
    "DTYPES",
    "LAST_ADDRESS",
    "MAX_BITS_PER_READ",
    "MAX_REGISTERS_PER_READ",
    "TABLES",
    "ReadBlock",
    "decode_registers",
    "plan_reads",
    "point_problem",
    "point_width",
    "register_count",
]

Order = Literal["big", "little"]

MAX_REGISTERS_PER_READ = 125
"""Modbus limit for function codes 3 and 4 (a 256-byte ADU)."""

MAX_BITS_PER_READ = 2000
"""Modbus limit for function codes 1 and 2."""

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
TABLES: frozenset[str] = frozenset({"holding", "input", *BIT_TABLES})
LAST_ADDRESS = 0xFFFF
"""Highest 0-based protocol address of every table."""

_FORMATS: dict[str, tuple[int, str]] = {
    "u16": (1, ">H"),
    "i16": (1, ">h"),
    "u32": (2, ">I"),
    "i32": (2, ">i"),
    "u64": (4, ">Q"),
    "i64": (4, ">q"),
    "f32": (2, ">f"),
    "f64": (4, ">d"),
}

DTYPES: frozenset[str] = frozenset({*_FORMATS, "string"})
"""Every data type a register point may have."""


def register_count(dtype: str, length: int | None = None) -> int:
    """How many 16-bit registers a value of ``dtype`` occupies (``length`` for strings)."""
    if dtype == "string":
        if length is None or length <= 0:
            raise ValueError("dtype 'string' needs a positive length in registers")
        return length
    try:
        return _FORMATS[dtype][0]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None


def point_problem(table: str, address: int, dtype: str, length: int | None = None) -> str | None:
    """Why a point cannot be read as configured, or None when it can.

    The one check of a point's shape, shared by the config schema (so ``check-config``
    refuses what the collector would) and the Modbus collector's own validation: known
    table and type, ``length`` given for a string and only for a string, and every
    register of the value inside the table (a u32 at 65535 would need 65535..65536).
    """
    if table not in TABLES:
        return f"unknown table {table!r}; expected one of {sorted(TABLES)}"
    if table in BIT_TABLES:
        if dtype == "string" or length is not None:
            return (f"a {table} is one bit: type 'string' and length need holding or input "
                    "registers")
        width = 1
    else:
        if dtype not in DTYPES:
            return f"unknown type {dtype!r}; expected one of {sorted(DTYPES)}"
        if dtype == "string":
            if length is None:
                return "type 'string' needs length, its size in registers (2 characters each)"
            if not 1 <= length <= MAX_REGISTERS_PER_READ:
                return (f"length {length} is outside 1..{MAX_REGISTERS_PER_READ} (registers "
                        "one request can read)")
        elif length is not None:
            return (f"length applies to type 'string' only; a {dtype} always occupies "
                    f"{_FORMATS[dtype][0]} register(s)")
        width = register_count(dtype, length)
    if not 0 <= address <= LAST_ADDRESS:
        return f"address {address} is outside 0..{LAST_ADDRESS}"
    if address + width - 1 > LAST_ADDRESS:
        what = f"string of {width} registers" if dtype == "string" else dtype
        return (f"a {what} at address {address} needs registers {address}.."
                f"{address + width - 1}, past the last register {LAST_ADDRESS}")
    return None


def decode_registers(
    regs: Sequence[int],
    dtype: str,
    word_order: Order = "big",
    byte_order: Order = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> int | float | str:
    """Turn raw registers into an engineering value: ``raw * scale + offset``.

    ``word_order="big"`` means the first register holds the most significant word
    (Modbus convention, "ABCD"); ``"little"`` swaps the words ("CDAB"). ``byte_order``
    swaps the bytes inside every register ("BADC"/"DCBA"). Integers stay ``int`` when
    scale is 1 and offset 0, so counters keep exact values; otherwise the result is a
    float. Strings ignore word order, scale and offset; NULs and trailing spaces are
    stripped. Non-finite floats (meters send NaN for "not available") and wrong
    register counts raise :class:`DecodeError`.
    """
    if dtype == "string":
        if not regs:
            raise DecodeError("string needs at least one register")
        raw = _to_bytes(regs, byte_order)
        try:
            return raw.split(b"\x00", 1)[0].decode("utf-8").rstrip()
        except UnicodeDecodeError as err:
            raise DecodeError(f"string registers are not UTF-8: {raw!r}") from err
    try:
        width, fmt = _FORMATS[dtype]
    except KeyError:
        raise DecodeError(f"unknown dtype {dtype!r}") from None
    if len(regs) != width:
        raise DecodeError(f"{dtype} needs {width} registers, got {len(regs)}")
    ordered = list(regs) if word_order == "big" else list(reversed(regs))
    (value,) = struct.unpack(fmt, _to_bytes(ordered, byte_order))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DecodeError(f"{dtype} value is {value} (registers {list(regs)})")
        return value * scale + offset
    if scale == 1.0 and offset == 0.0:
        return int(value)
    return int(value) * scale + offset


def _to_bytes(regs: Sequence[int], byte_order: Order) -> bytes:
    out = bytearray()
    for reg in regs:
        if not 0 <= reg <= 0xFFFF:
            raise DecodeError(f"register value {reg} is not a 16-bit word")
        hi, lo = reg >> 8, reg & 0xFF
        out += bytes((hi, lo) if byte_order == "big" else (lo, hi))
    return bytes(out)


class RegisterRef(Protocol):
    """What :func:`plan_reads` needs to know about a point (``RegisterPoint`` has it)."""

    @property
    def table(self) -> str: ...
    @property
    def address(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def length(self) -> int | None: ...


P = TypeVar("P", bound=RegisterRef)


def point_width(point: RegisterRef) -> int:
    """Registers (or bits, for coil and discrete tables) a point occupies."""
    if point.table in BIT_TABLES:
        return 1
    return register_count(point.dtype, point.length)


@dataclass(frozen=True, slots=True)
class ReadBlock(Generic[P]):
    """One request: ``count`` registers (or bits) of ``table`` from ``address``.

    ``points`` are the points it serves, each with its offset inside the reply.
    """

    table: str
    address: int
    count: int
    points: tuple[tuple[P, int], ...]


def plan_reads(
    points: Iterable[P], max_gap: int, max_count: int = MAX_REGISTERS_PER_READ
) -> list[ReadBlock[P]]:
    """Merge points into as few requests as possible, because each request costs a round trip.

    Points of the same table merge while the hole between them is at most ``max_gap``
    registers (reading a few unused registers is cheaper than another request; some
    devices reject reads of unmapped registers, hence the limit) and the request stays
    within ``max_count`` registers (at most 125) or 2000 bits. Overlapping points share
    registers. Blocks come out ordered by table, then address. A point wider than a
    request, a negative address or a bad dtype raises ``ValueError``.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_count <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_count must be in 1..{MAX_REGISTERS_PER_READ}, got {max_count}")
    by_table: dict[str, list[tuple[int, int, P]]] = {}
    for point in points:
        width = point_width(point)
        if point.address < 0 or point.address + width > LAST_ADDRESS + 1:
            raise ValueError(f"address {point.address} (+{width}) is outside 0..{LAST_ADDRESS}")
        by_table.setdefault(point.table, []).append((point.address, width, point))
    blocks: list[ReadBlock[P]] = []
    for table in sorted(by_table):
        limit = MAX_BITS_PER_READ if table in BIT_TABLES else max_count
        entries = sorted(by_table[table], key=lambda e: (e[0], e[1]))
        start = end = -1
        members: list[tuple[P, int]] = []
        for address, width, point in entries:
            if width > limit:
                raise ValueError(f"point at {address} needs {width} registers, more than {limit}")
            new_end = max(end, address + width)
            if members and address - end <= max_gap and new_end - start <= limit:
                end = new_end
                members.append((point, address - start))
                continue
            if members:
                blocks.append(ReadBlock(table, start, end - start, tuple(members)))
            start, end, members = address, address + width, [(point, 0)]
        if members:
            blocks.append(ReadBlock(table, start, end - start, tuple(members)))
    return blocks
