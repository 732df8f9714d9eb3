"""The seam between the Modbus collector and a Modbus client library.

:class:`ModbusLink` is all the collector needs from a link: connect, one read, close.
:class:`PymodbusLink` is the only code of the project that touches pymodbus: it builds the
client for TCP, RTU-over-TCP and serial RTU, reads, and turns pymodbus's exceptions into
ours through one table (:data:`PYMODBUS_ERRORS`). Unit tests drive the collector through
a fake link instead, so its failure handling is tested without sockets.

An exception response is an answer, not a failure of the link: a read returns it as a
:class:`Reply` with its ``exception_code``, and the caller decides what it means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import (
    ConnectionException,
    ModbusException,
    ModbusIOException,
    NotImplementedException,
    ParameterException,
)
from pymodbus.pdu import ModbusPDU

from collectors.decode import BIT_TABLES
from rules.errors import DeviceError

if TYPE_CHECKING:
    from collectors.modbus import ModbusSourceSpec

__all__ = [
    "PYMODBUS_ERRORS",
    "ModbusLink",
    "PymodbusLink",
    "Reply",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a device answered: its values, or the code of its exception response.

    ``values`` holds what the device sent, which may be fewer than were asked for; bit
    tables yield one bool per requested bit at most.
    """

    values: list[int] | list[bool]
    exception_code: int | None = None


class ModbusLink(Protocol):
    """One Modbus link (a TCP connection or a serial bus), one request at a time.

    Callers serialize requests themselves (Modbus allows one in flight per link). Every
    failure is a :class:`~rules.errors.DeviceError`.
    """

    @property
    def connected(self) -> bool:
        """True while the link is up; a read may find it gone."""
        ...

    async def connect(self) -> None:
        """Open the link once (no reconnecting behind the caller's back)."""
        ...

    async def read(self, table: str, address: int, count: int, unit: int, *,
                   timeout_s: float, retries: int) -> Reply:
        """Read ``count`` registers or bits of ``table`` (``holding``, ``input``, ``coil``
        or ``discrete``) from ``unit``, waiting ``timeout_s`` for each of ``retries + 1``
        attempts; DeviceError when no valid reply came."""
        ...

    def close(self) -> None:
        """Close the link; :meth:`connect` may open it again."""
        ...


PYMODBUS_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (ConnectionException, "link lost"),
    (ModbusIOException, "no valid reply"),
    (NotImplementedException, "not supported by the client"),
    (ParameterException, "request refused by the client"),
    (ModbusException, "client error"),
    (OSError, "link error"),
)
"""pymodbus's exceptions (first match wins) and what they mean for a read; each becomes a
:class:`~rules.errors.DeviceError` naming the request, the meaning and pymodbus's text."""


def _device_error(err: Exception, what: str) -> DeviceError:
    meaning = next(m for cls, m in PYMODBUS_ERRORS if isinstance(err, cls))
    return DeviceError(f"{what}: {meaning}: {err}")


_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class PymodbusLink:
    """A :class:`ModbusLink` over pymodbus's asyncio clients.

    ``timeout_s`` and ``retries`` are the client's own defaults, given at construction;
    a read with other limits sets them for that request only (see :meth:`_apply_limits`).
    The client's own reconnecting is off (``reconnect_delay=0``): the collector decides
    when to reconnect, with the project's backoff, and reports the link state.
    """

    def __init__(self, spec: ModbusSourceSpec, *, timeout_s: float | None = None,
                 retries: int | None = None) -> None:
        """The link of ``spec``; ``timeout_s``/``retries`` default to the spec's."""
        self.where = spec.endpoint()
        timeout_s = spec.timeout_s if timeout_s is None else timeout_s
        retries = spec.retries if retries is None else retries
        self._limits = (timeout_s, retries)
        self._client = self._build(spec, timeout_s, retries)

    @staticmethod
    def _build(ep: ModbusSourceSpec, timeout_s: float, retries: int) -> _Client:
        if ep.transport == "rtu":
            if ep.serial_port is None:
                raise DeviceError("transport 'rtu' needs serial_port")
            return AsyncModbusSerialClient(
                ep.serial_port, framer=FramerType.RTU, baudrate=ep.baudrate,
                parity=ep.parity, stopbits=ep.stopbits, bytesize=ep.bytesize,
                timeout=timeout_s, retries=retries, reconnect_delay=0, name=ep.id)
        framer = FramerType.RTU if ep.transport == "rtu-over-tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(ep.host, port=ep.port, framer=framer, timeout=timeout_s,
                                    retries=retries, reconnect_delay=0, name=ep.id)

    @property
    def connected(self) -> bool:
        """pymodbus's own view of the transport."""
        return self._client.connected

    async def connect(self) -> None:
        """One connection attempt; DeviceError naming the endpoint if it failed."""
        try:
            ok = await self._client.connect()
        except (ModbusException, OSError) as err:
            raise DeviceError(f"cannot connect to {self.where}: {err}") from err
        if not ok or not self._client.connected:
            raise DeviceError(f"cannot connect to {self.where}: connect failed")

    async def read(self, table: str, address: int, count: int, unit: int, *,
                   timeout_s: float, retries: int) -> Reply:
        """One request with pymodbus's own timeout and retries, never an outer
        ``wait_for``: a late RTU reply carries no transaction id and would be taken for
        the answer to the next request."""
        client = self._client
        calls: dict[str, Callable[..., Awaitable[ModbusPDU]]] = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }
        call = calls.get(table)
        if call is None:
            raise DeviceError(f"no Modbus table {table!r}")
        self._apply_limits(timeout_s, retries)
        try:
            rr = await call(address, count=count, device_id=unit)
        except (ModbusException, OSError) as err:
            raise _device_error(err, f"{table} {address}+{count} unit {unit}") from err
        if rr.isError():
            return Reply([], exception_code=int(getattr(rr, "exception_code", 0) or 0))
        if table in BIT_TABLES:
            return Reply([bool(b) for b in rr.bits[:count]])
        return Reply([int(r) for r in rr.registers])

    def _apply_limits(self, timeout_s: float, retries: int) -> None:
        """Give the next request its device's timeout and retries.

        pymodbus 3.16 takes both only at construction (``timeout``, ``retries``) and has
        no per-request setting, so a device that overrides them means writing the two
        fields of the transaction manager those arguments fill: ``ctx.retries`` and
        ``ctx.comm_params.timeout_connect`` (a copy of the client's ``comm_params``, also
        the connect timeout), both read afresh at every request. The alternatives do not
        work: a client per device would open a second TCP session to gateways that accept
        one and cannot share a serial port; an outer ``wait_for`` breaks RTU (see
        :meth:`read`). The fields are written only when the limits change, so a source
        whose devices keep its defaults never writes them. Callers hold the link for the
        whole request, which keeps the change private to it.
        """
        if (timeout_s, retries) == self._limits:
            return
        ctx = self._client.ctx
        ctx.comm_params.timeout_connect = timeout_s
        ctx.retries = retries
        self._limits = (timeout_s, retries)

    def close(self) -> None:
        """Close the transport; a later :meth:`connect` opens it again."""
        self._client.close()
