"""``edge-agent modbus-read``: one Modbus read, decoded every plausible way.

A meter's manual rarely says plainly which type, word order and address base a value
uses, and a wrong guess still yields a number. This command reads registers once and
prints them raw (hex and decimal, with the manual's 1-based number beside the 0-based
protocol address) and then the value that starts at the first register decoded as
every type and order the config can express, each row naming the signal keys that
select it. The right row is the one that matches the device's display.

Decoding is :func:`collectors.decode.decode_registers`, the collector's own, so a row
shows exactly what the agent would read with those keys. The client is pymodbus with
its own timeout and retries, as the collector uses it (an outer ``wait_for`` would
leave a late reply in the buffer).

Exit codes: 0 read and printed, 2 bad arguments, 1 no connection, no reply or an
exception response.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, TextIO

from agent.commission.table import format_table
from collectors.decode import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, decode_registers
from rules.errors import DecodeError, DeviceError

__all__ = [
    "DESCRIPTION",
    "Decoding",
    "Function",
    "Link",
    "ReadRequest",
    "add_arguments",
    "decodings",
    "format_bits",
    "format_registers",
    "read",
    "run",
]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Read Modbus registers (or coils) once and print them raw, in hex and decimal with the
manual's 1-based number beside each 0-based protocol address, then the value at the
first register decoded as every type and word/byte order, each row with the signal keys
that select it: the row matching the device's display is the configuration.

Exit codes: 0 read, 2 bad arguments, 1 no connection, no reply or an exception reply."""

Function = Literal["holding", "input", "coil", "discrete"]
Order = Literal["big", "little"]

FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_FIRST_MANUAL_NUMBER: dict[str, int] = {"coil": 1, "discrete": 10001, "input": 30001,
                                        "holding": 40001}
"""The 1-based "Modicon" number of protocol address 0 in each table (5-digit form)."""
_TABLE_NAMES = {"coil": "coils", "discrete": "discrete inputs", "holding": "holding registers",
                "input": "input registers"}

_EXCEPTIONS: dict[int, str] = {
    1: "ILLEGAL FUNCTION: the device does not serve this table (try another --function)",
    2: "ILLEGAL DATA ADDRESS: the device has no such register (check 0- vs 1-based "
       "addresses, the table, and whether --count reaches past the end of its map)",
    3: "ILLEGAL DATA VALUE: the device refuses this count (read fewer registers)",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE: the device is busy with a long operation",
    6: "SERVER DEVICE BUSY",
    10: "GATEWAY PATH UNAVAILABLE: the gateway has no route to this unit id",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND: nothing answers at this unit id behind "
        "the gateway (unit id, baud rate, wiring)",
}

_WIDTHS: tuple[tuple[str, int], ...] = (
    ("u16", 1), ("i16", 1), ("u32", 2), ("i32", 2), ("f32", 2),
    ("u64", 4), ("i64", 4), ("f64", 4),
)
_ORDERS: tuple[tuple[Order, Order], ...] = (("big", "big"), ("little", "big"),
                                            ("big", "little"), ("little", "little"))
_SCALES: tuple[Decimal, ...] = (Decimal("0.1"), Decimal("0.01"), Decimal("0.001"))
_PRINTABLE = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")


@dataclass(frozen=True, slots=True)
class Link:
    """Where the device is: a TCP host (Modbus TCP, or RTU framing through a transparent
    gateway) or a serial port."""

    host: str | None = None
    port: int = 502
    rtu_over_tcp: bool = False
    serial: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    def describe(self) -> str:
        """``host:port`` or ``/dev/ttyX (9600 8N1)``, as errors and headers name it."""
        if self.serial is not None:
            return f"{self.serial} ({self.baudrate} 8{self.parity}{self.stopbits})"
        framing = ", RTU framing" if self.rtu_over_tcp else ""
        return f"{self.host}:{self.port}{framing}"


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``function`` from protocol ``address``."""

    unit: int
    address: int
    count: int
    function: Function = "holding"
    timeout_s: float = 1.0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Decoding:
    """The first register's value read as one type and order.

    ``value`` is None where the registers are not a number of that type (``note`` says
    why); ``keys`` are the signal keys that make the agent decode it this way.
    """

    dtype: str
    order: str
    value: int | float | str | None
    keys: str
    note: str = ""


def _order_label(width: int, word_order: Order, byte_order: Order) -> str:
    letters = "ABCDEFGH"[: 2 * width]
    words = [letters[i:i + 2] for i in range(0, len(letters), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return "".join(words)


def _keys(dtype: str, word_order: Order, byte_order: Order, width: int) -> str:
    keys = [f'type = "{dtype}"']
    if width > 1 and word_order != "big":
        keys.append(f'word_order = "{word_order}"')
    if byte_order != "big":
        keys.append(f'byte_order = "{byte_order}"')
    return ", ".join(keys)


def _float_note(value: float) -> str:
    magnitude = abs(value)
    if value != 0 and (magnitude < 1e-6 or magnitude >= 1e12):
        return "implausible magnitude"
    return ""


def decodings(regs: Sequence[int]) -> list[Decoding]:
    """Every type and order the registers starting at ``regs[0]`` can be read as.

    16-bit types need one register, 32-bit two, 64-bit four; each comes in the four
    word/byte orders (16-bit ones in both byte orders). The whole read as text is added
    when every character is printable.
    """
    out: list[Decoding] = []
    for dtype, width in _WIDTHS:
        if len(regs) < width:
            continue
        orders = _ORDERS if width > 1 else (("big", "big"), ("big", "little"))
        for word_order, byte_order in orders:
            keys = _keys(dtype, word_order, byte_order, width)
            label = _order_label(width, word_order, byte_order)
            try:
                value = decode_registers(regs[:width], dtype, word_order, byte_order)
            except DecodeError:
                out.append(Decoding(dtype, label, None, keys, "not a finite number"))
                continue
            note = _float_note(value) if isinstance(value, float) else ""
            out.append(Decoding(dtype, label, value, keys, note))
    for byte_order in ("big", "little"):
        text = _text(regs, byte_order)
        if text:
            out.append(Decoding("string", "AB" if byte_order == "big" else "BA", text,
                                f'type = "string", length = {len(regs)}'
                                + (', byte_order = "little"' if byte_order == "little" else "")))
    return out


def _text(regs: Sequence[int], byte_order: Order) -> str | None:
    """The registers as text when they look like text: printable ASCII, padded at the
    end only (a NUL inside means numbers that happen to contain letters)."""
    raw = b"".join(r.to_bytes(2, "big" if byte_order == "big" else "little") for r in regs)
    body = raw.rstrip(b"\x00 ")
    if len(body) < 2 or not all(chr(b) in _PRINTABLE for b in body):
        return None
    try:
        value = decode_registers(regs, "string", byte_order=byte_order)
    except DecodeError:
        return None
    return value if isinstance(value, str) else None


def _number(value: int | float | str | None, dtype: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        # float32 carries about 7 significant digits: more would be noise, not precision.
        return f"{value:.7g}" if dtype == "f32" else f"{value:.15g}"
    return str(value)


def _scaled(value: int | float | str | None, scale: Decimal) -> str:
    """An integer times a decimal scale, exactly (a float would blur 64-bit counts)."""
    if not isinstance(value, int):
        return ""
    return str(Decimal(value) * scale)


def _manual_number(function: str, address: int) -> str:
    first = _FIRST_MANUAL_NUMBER[function]
    if address <= 9998:
        return f"{first + address:05d}"
    # Past the 5-digit range manuals use the 6-digit form: 000001, 100001, 300001, 400001.
    return f"{first // 10000 * 100000 + 1 + address:06d}"


def format_registers(request: ReadRequest, regs: Sequence[int]) -> list[str]:
    """The raw registers, then the decodings of the value at the first one."""
    raw_rows = [
        [f"0x{request.address + i:04X}", str(request.address + i),
         _manual_number(request.function, request.address + i), f"0x{reg:04X}", str(reg),
         str(reg - 0x10000 if reg & 0x8000 else reg)]
        for i, reg in enumerate(regs)
    ]
    lines = format_table(["address", "dec", "1-based", "hex", "u16", "i16"], raw_rows,
                         right=frozenset({1, 2, 4, 5}))
    lines.append("")
    lines.append(f"value at 0x{request.address:04X} ({request.address}) decoded as each "
                 "type and order (A = high byte of the first register):")
    rows = [
        [d.dtype, d.order, _number(d.value, d.dtype),
         *(_scaled(d.value, s) for s in _SCALES), d.keys, d.note]
        for d in decodings(regs)
    ]
    lines += format_table(["type", "order", "value", "x0.1", "x0.01", "x0.001",
                           "signal keys", "note"], rows, right=frozenset({2, 3, 4, 5}))
    if len(regs) < 4:
        lines.append(f"(64-bit types need --count 4; read {len(regs)} register"
                     f"{'s' if len(regs) != 1 else ''})")
    return lines


def format_bits(request: ReadRequest, bits: Sequence[bool]) -> list[str]:
    """One row per coil or discrete input."""
    rows = [[f"0x{request.address + i:04X}", str(request.address + i),
             _manual_number(request.function, request.address + i), str(int(bit))]
            for i, bit in enumerate(bits)]
    return format_table(["address", "dec", "1-based", "value"], rows,
                        right=frozenset({1, 2, 3}))


def _hint(request: ReadRequest) -> str | None:
    """A note when the address looks like a manual's 1-based number, not a protocol one."""
    for function, first in (("input", 30001), ("holding", 40001)):
        if first <= request.address <= first + 9998:
            protocol = request.address - first
            return (f"{request.address} looks like a 1-based manual number: the protocol "
                    f"address of {_TABLE_NAMES[function][:-1]} {request.address} is {protocol} "
                    f"(--function {function} --address {protocol})")
    return None


async def read(link: Link, request: ReadRequest) -> list[int] | list[bool]:
    """Read once; DeviceError (naming the link, the unit and what to check) on failure.

    The link is the collector's own (:class:`~collectors.modbus_link.PymodbusLink`), so
    this command reads exactly as ``run`` would with the same keys.
    """
    from collectors.modbus import ModbusSourceSpec
    from collectors.modbus_link import PymodbusLink

    if link.serial is not None:
        spec = ModbusSourceSpec(id="modbus-read", transport="rtu", serial_port=link.serial,
                                baudrate=link.baudrate, parity=link.parity,
                                stopbits=link.stopbits)
    else:
        assert link.host is not None
        spec = ModbusSourceSpec(id="modbus-read",
                                transport="rtu-over-tcp" if link.rtu_over_tcp else "tcp",
                                host=link.host, port=link.port)
    client = PymodbusLink(spec, timeout_s=request.timeout_s, retries=request.retries)
    where = link.describe()
    what = (f"{_TABLE_NAMES[request.function]} {request.address}+{request.count} of unit "
            f"{request.unit} at {where}")
    try:
        try:
            await client.connect()
        except DeviceError as err:
            raise DeviceError(f"cannot connect to {where} (refused, unreachable or no such "
                              "serial port)") from err
        try:
            reply = await client.read(request.function, request.address, request.count,
                                      request.unit, timeout_s=request.timeout_s,
                                      retries=request.retries)
        except DeviceError as err:
            raise DeviceError(
                f"{what}: no reply within {request.timeout_s:g} s ({request.retries} "
                f"retries): {err}; check the unit id, the baud rate and parity, the wiring"
            ) from err
    finally:
        client.close()
    if reply.exception_code is not None:
        code = reply.exception_code
        reason = _EXCEPTIONS.get(code, "unknown exception code")
        raise DeviceError(f"{what}: exception response {code} {reason}")
    unit = "bits" if request.function in ("coil", "discrete") else "registers"
    if len(reply.values) < request.count:
        raise DeviceError(f"{what}: short reply ({len(reply.values)} {unit})")
    return reply.values[: request.count]  # type: ignore[return-value]


def _address(text: str) -> int:
    """``72``, ``0x48`` or ``0x0048``: a manual's hex addresses are pasted as they are."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (decimal or 0x hex)") \
            from None
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``modbus-read`` subcommand's options (for ``agent/cli.py``)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP device or gateway")
    where.add_argument("--serial", metavar="DEVICE", help="RS-485 adapter, e.g. /dev/ttyUSB0")
    parser.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    parser.add_argument("--rtu-over-tcp", action="store_true",
                        help="RTU framing over TCP (a serial gateway in transparent mode)")
    parser.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N",
                        help="serial parity (default N)")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--unit", type=int, required=True, help="unit (slave) id, 0..255")
    parser.add_argument("--address", type=_address, required=True,
                        help="0-based protocol address, decimal or 0x hex")
    parser.add_argument("--count", type=int, default=None,
                        help="registers (default 2) or bits (default 1) to read")
    parser.add_argument("--function", choices=list(FUNCTION_CODES), default="holding",
                        help="table: holding (03, default), input (04), coil (01), "
                             "discrete (02)")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for the reply (default 1)")
    parser.add_argument("--retries", type=int, default=0, help="retries (default 0)")


def _check(args: argparse.Namespace) -> tuple[Link, ReadRequest]:
    """The link and request from the arguments; ValueError naming the bad option."""
    function: Function = args.function
    bits = function in ("coil", "discrete")
    count = args.count if args.count is not None else (1 if bits else 2)
    limit = MAX_BITS_PER_READ if bits else MAX_REGISTERS_PER_READ
    if not 0 <= args.unit <= 255:
        raise ValueError(f"--unit: {args.unit} is outside 0..255")
    if not 0 <= args.address <= 0xFFFF:
        raise ValueError(f"--address: {args.address} is outside 0..65535 (protocol addresses "
                         "are 0-based; a manual's 300001/400001-style number minus its "
                         "first number is the address)")
    if not 1 <= count <= limit:
        raise ValueError(f"--count: {count} is outside 1..{limit} (one request's limit)")
    if args.address + count - 1 > 0xFFFF:
        raise ValueError(f"--count: {count} from address {args.address} runs past 65535")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: {args.port} is outside 1..65535")
    if args.baud <= 0:
        raise ValueError(f"--baud: {args.baud} is not a baud rate")
    if not 0 < args.timeout <= 60:
        raise ValueError("--timeout: give 0 < seconds <= 60")
    if not 0 <= args.retries <= 5:
        raise ValueError("--retries: give 0..5")
    if args.serial is not None and args.rtu_over_tcp:
        raise ValueError("--rtu-over-tcp: goes with --host, not --serial")
    link = Link(host=args.host, port=args.port, rtu_over_tcp=args.rtu_over_tcp,
                serial=args.serial, baudrate=args.baud, parity=args.parity,
                stopbits=args.stopbits)
    return link, ReadRequest(args.unit, args.address, count, function, args.timeout,
                             args.retries)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run with the namespace parsed by :func:`add_arguments`."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    try:
        link, request = _check(args)
    except ValueError as exc:
        print(f"edge-agent modbus-read: {exc}", file=stderr)
        return EXIT_USAGE
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # The error below says what failed; pymodbus's own warnings would only repeat it.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        values = asyncio.run(read(link, request))
    except DeviceError as exc:
        hint = _hint(request)
        print(f"edge-agent modbus-read: {exc}" + (f"; {hint}" if hint else ""), file=stderr)
        return EXIT_RUNTIME
    last = request.address + request.count - 1
    print(f"{_TABLE_NAMES[request.function]} {request.address}..{last} (0x{request.address:04X}"
          f"..0x{last:04X}), function {FUNCTION_CODES[request.function]:02d}, unit "
          f"{request.unit}, {link.describe()}", file=stdout)
    if request.function in ("coil", "discrete"):
        lines = format_bits(request, [bool(v) for v in values])
    else:
        lines = format_registers(request, [int(v) for v in values])
    hint = _hint(request)
    for line in [*lines, *([f"note: {hint}"] if hint else [])]:
        print(line, file=stdout)
    return EXIT_OK
