"""The pymodbus link without a peer: client construction, the error table, the limits
written only when a device needs its own, and pymodbus kept out of the agent's log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.logging import Log

from agent.logs import install_redaction, setup_logging
from collectors.modbus import ModbusSourceSpec
from collectors.modbus_link import PYMODBUS_ERRORS, PymodbusLink
from rules.errors import DeviceError


def _link(**kw: object) -> PymodbusLink:
    spec = ModbusSourceSpec("gw", **kw)  # type: ignore[arg-type]
    return PymodbusLink(spec, timeout_s=0.5, retries=1)


def test_every_error_class_of_the_table_can_match() -> None:
    """First match wins, so no entry may come after one of its base classes."""
    classes = [cls for cls, _ in PYMODBUS_ERRORS]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    assert ModbusException in classes and OSError in classes


@pytest.mark.parametrize(("err", "meaning"), [
    (ConnectionException("gone"), "link lost"),
    (ModbusIOException("No response received after 1 retries"), "no valid reply"),
    (ModbusException("odd"), "client error"),
    (ConnectionResetError(104, "reset"), "link error"),
])
async def test_pymodbus_errors_become_device_errors_naming_the_request(
    err: Exception, meaning: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = _link()

    def fail(*args: object, **kwargs: object) -> None:
        raise err

    monkeypatch.setattr(link._client, "read_input_registers", fail)
    with pytest.raises(DeviceError) as info:
        await link.read("input", 72, 2, 3, timeout_s=0.5, retries=1)
    assert str(info.value).startswith(f"input 72+2 unit 3: {meaning}: ")
    assert info.value.__cause__ is err


async def test_a_read_before_connecting_is_a_lost_link_not_a_crash() -> None:
    link = _link()
    assert not link.connected
    with pytest.raises(DeviceError, match=r"^holding 0\+1 unit 1: link lost: "):
        await link.read("holding", 0, 1, 1, timeout_s=0.5, retries=1)


async def test_an_unknown_table_is_refused() -> None:
    with pytest.raises(DeviceError, match="no Modbus table 'register'"):
        await _link().read("register", 0, 1, 1, timeout_s=0.5, retries=1)


async def test_clients_are_built_for_each_transport_without_opening_anything() -> None:
    assert _link(transport="tcp", host="10.0.0.9", port=1502).where == "10.0.0.9:1502"
    assert not _link(transport="rtu-over-tcp").connected
    serial = _link(transport="rtu", serial_port="/dev/ttyUSB9", baudrate=19200, parity="E")
    assert serial.where == "/dev/ttyUSB9" and not serial.connected
    with pytest.raises(DeviceError, match="serial_port"):
        _link(transport="rtu")


async def test_limits_are_written_only_for_a_device_that_overrides_them() -> None:
    link = _link()
    ctx = link._client.ctx
    assert (ctx.comm_params.timeout_connect, ctx.retries) == (0.5, 1)
    ctx.retries = 7  # a write of ours would overwrite this
    link._apply_limits(0.5, 1)
    assert ctx.retries == 7
    link._apply_limits(2.0, 0)
    assert (ctx.comm_params.timeout_connect, ctx.retries) == (2.0, 0)
    link._apply_limits(0.5, 1)
    assert (ctx.comm_params.timeout_connect, ctx.retries) == (0.5, 1)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The agent's log set up for real, written to a buffer; logging restored after."""
    root = logging.getLogger()
    pymodbus = logging.getLogger("pymodbus")
    saved = root.handlers[:], root.level, pymodbus.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        install_redaction(())
        root.handlers[:], root.level = saved[0], saved[1]
        pymodbus.setLevel(saved[2])


def _log_like_an_unanswered_request(stream: io.StringIO, level: str) -> str:
    setup_logging(level, "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    Log.transport_dump(  # type: ignore[no-untyped-call]
        Log.SEND_DATA, b"\x00\x01\x00\x00\x00\x06\x03\x04\x00\x48\x00\x02", b"")
    Log.error(  # type: ignore[no-untyped-call]
        "No response received after {} retries, continue with next request", 1)
    logging.getLogger("collectors.modbus").warning("modbus gw: device m (unit 3) failing")
    return stream.getvalue()


def test_pymodbus_frame_dumps_stay_out_of_the_log(log_stream: io.StringIO) -> None:
    out = _log_like_an_unanswered_request(log_stream, "info")
    assert "No response received" not in out and "0x" not in out
    assert "pymodbus" not in out
    assert "device m (unit 3) failing" in out


def test_with_debug_on_pymodbus_says_what_it_saw(log_stream: io.StringIO) -> None:
    out = _log_like_an_unanswered_request(log_stream, "debug")
    assert "ERROR   pymodbus.logging: No response received after 1 retries" in out
    assert "send: 0x0 0x1 0x0 0x0 0x0 0x6 0x3 0x4 0x0 0x48 0x0 0x2" in out
