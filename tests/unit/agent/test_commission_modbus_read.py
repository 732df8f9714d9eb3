"""``edge-agent modbus-read`` without a device: the decoding table and argument checks."""

from __future__ import annotations

import argparse
import io
import struct
import tomllib

import pytest

from agent.cli import _parser
from agent.commission.modbus_read import (
    Function,
    ReadRequest,
    decodings,
    format_bits,
    format_registers,
    run,
)
from agent.config.model import SignalSection
from collectors.decode import decode_registers
from rules.errors import DecodeError


def _regs(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def _by_keys(regs: list[int]) -> dict[str, object]:
    return {d.keys: d.value for d in decodings(regs)}


def _arrange(raw: bytes, word_order: str, byte_order: str) -> list[int]:
    """Lay big-endian bytes over registers the way a device with these orders does."""
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return _regs(b"".join(words))


@pytest.mark.parametrize(("word_order", "byte_order", "label"), [
    ("big", "big", "ABCD"), ("little", "big", "CDAB"), ("big", "little", "BADC"),
    ("little", "little", "DCBA"),
])
def test_a_float32_is_found_in_the_row_of_its_order(word_order: str, byte_order: str,
                                                    label: str) -> None:
    regs = _arrange(struct.pack(">f", 4821.62), word_order, byte_order)
    rows = [d for d in decodings(regs) if d.dtype == "f32"]
    (match,) = [d for d in rows if d.order == label]
    assert match.value == pytest.approx(4821.62, rel=1e-6)
    assert match.note == ""
    others = [d for d in rows if d.order != label]
    assert all(d.value is None or d.value != pytest.approx(4821.62, rel=1e-3) for d in others)


def test_every_row_is_what_the_collector_decodes_with_its_keys() -> None:
    regs = _regs(struct.pack(">d", -1234.5678))
    for row in decodings(regs):
        keys = tomllib.loads(f"k = {{ {row.keys} }}")["k"]
        signal = SignalSection.model_validate(
            {"source": "m", "unit": 1, "table": "holding", "address": 0, **keys})
        width = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}.get(signal.type, 4)
        used = regs if signal.type == "string" else regs[:width]
        try:
            want = decode_registers(used, signal.type, signal.word_order, signal.byte_order)
        except DecodeError:
            assert row.value is None
            continue
        assert row.value == want, row


def test_sixty_four_bit_types_need_four_registers() -> None:
    two = {d.dtype for d in decodings([0x0001, 0x0002])}
    assert two == {"u16", "i16", "u32", "i32", "f32"}
    four = _by_keys(_regs(struct.pack(">q", -5)))
    assert four['type = "i64"'] == -5
    assert four['type = "u64"'] == 2**64 - 5
    assert "64-bit types need --count 4" in "\n".join(
        format_registers(ReadRequest(1, 0, 2), [1, 2]))


def test_signed_sixteen_bit_and_low_word_first_integers() -> None:
    rows = _by_keys([0xFF38])
    assert rows['type = "i16"'] == -200 and rows['type = "u16"'] == 0xFF38
    rows = _by_keys([0x5678, 0x1234])  # 0x12345678, low word first
    assert rows['type = "u32", word_order = "little"'] == 0x12345678


def test_not_a_number_and_implausible_floats_are_marked() -> None:
    nan = [d for d in decodings([0x7FC0, 0x0000]) if d.dtype == "f32" and d.order == "ABCD"]
    assert nan[0].value is None and nan[0].note == "not a finite number"
    tiny = [d for d in decodings([0x0000, 0x0001]) if d.dtype == "f32" and d.order == "ABCD"]
    assert tiny[0].value is not None and tiny[0].note == "implausible magnitude"


def test_text_is_offered_only_when_the_registers_look_like_text() -> None:
    text = [d for d in decodings(_regs(b"SDM630\x00\x00")) if d.dtype == "string"]
    assert [(d.order, d.value) for d in text] == [("AB", "SDM630"), ("BA", "DS6M03")]
    assert text[0].keys == 'type = "string", length = 4'
    assert text[1].keys == 'type = "string", length = 4, byte_order = "little"'
    assert not [d for d in decodings([0x0048, 0x0001]) if d.dtype == "string"]


def test_table_shows_hex_decimal_manual_numbers_and_exact_scaled_hints() -> None:
    lines = format_registers(ReadRequest(1, 72, 2, "input"), [0x0001, 0xE240])
    text = "\n".join(lines)
    assert "0x0048" in text and "30073" in text and "0xE240" in text and "57920" in text
    (u32,) = [ln for ln in lines if ln.startswith("u32   ABCD")]
    assert "123456" in u32 and "12345.6" in u32 and "1234.56" in u32 and "123.456" in u32
    # Exact decimal scaling, also for 64-bit counts a float would round.
    big = format_registers(ReadRequest(1, 0, 4), _regs(struct.pack(">Q", 2**63 + 1)))
    assert any("922337203685477580.9" in ln for ln in big)


@pytest.mark.parametrize(("function", "address", "number"), [
    ("input", 72, "30073"), ("holding", 0, "40001"), ("coil", 0, "00001"),
    ("discrete", 5, "10006"), ("input", 10000, "310001"), ("holding", 9998, "49999"),
])
def test_manual_numbers(function: Function, address: int, number: str) -> None:
    lines = format_bits(ReadRequest(1, address, 1, function), [True]) \
        if function in ("coil", "discrete") \
        else format_registers(ReadRequest(1, address, 1, function), [7])
    assert number in lines[1].split()


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["modbus-read", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (["--host", "h", "--unit", "256", "--address", "0"], "--unit: 256 is outside 0..255"),
    (["--host", "h", "--unit", "1", "--address", "70000"], "--address: 70000 is outside"),
    (["--host", "h", "--unit", "1", "--address", "0", "--count", "126"],
     "--count: 126 is outside 1..125"),
    (["--host", "h", "--unit", "1", "--address", "0", "--count", "2001", "--function", "coil"],
     "--count: 2001 is outside 1..2000"),
    (["--host", "h", "--unit", "1", "--address", "0xFFFF", "--count", "2"],
     "runs past 65535"),
    (["--serial", "/dev/null", "--rtu-over-tcp", "--unit", "1", "--address", "0"],
     "--rtu-over-tcp: goes with --host"),
    (["--host", "h", "--unit", "1", "--address", "0", "--timeout", "0"], "--timeout"),
])
def test_bad_arguments_exit_2_naming_the_option(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(_args(*argv), out, err) == 2
    assert message in err.getvalue() and out.getvalue() == ""


def test_hex_addresses_are_accepted() -> None:
    assert _args("--host", "h", "--unit", "1", "--address", "0x0048").address == 72
    with pytest.raises(SystemExit) as exc:
        _args("--host", "h", "--unit", "1", "--address", "forty")
    assert exc.value.code == 2


def test_float_rows_show_float32_precision_only() -> None:
    lines = format_registers(ReadRequest(1, 0, 2), _regs(struct.pack(">f", 0.1)))
    (row,) = [ln for ln in lines if ln.startswith("f32   ABCD")]
    assert " 0.1 " in f" {row} "  # not 0.10000000149011612
