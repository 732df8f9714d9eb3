"""The simulated energy meters as one Modbus server (pymodbus 3.16 ``SimDevice`` API).

One server stands for a gateway (Modbus TCP) or a serial bus (RTU): meter *i* answers
as unit id ``unit_ids[i]``. Register maps are in :mod:`simulators.registers`.

pymodbus 3.16 notes that shaped this module:

- The datastore is ``SimDevice``/``SimData`` (the old contexts are deprecated and
  ``ModbusSequentialDataBlock(0, ...)`` is rejected). Values are pushed with
  ``server.async_setValues``; a device ``action`` runs on every access, which is where
  injected faults answer.
- A device id not configured falls back to id 0; without one the server replies with
  a generic device failure. Id 0 is therefore a catch-all that answers
  ``GATEWAY_PATH_UNAVAILABLE`` (0x0A) on TCP, like a real gateway, and stays silent on RTU.
- Raising ``NoSuchIdException`` from an action while ``ignore_missing_devices`` is set
  sends no reply at all: that is how a unit "stops answering".
- Registers are writable by clients unless marked read-only, and read-only also blocks
  ``async_setValues``; client writes are refused in the action instead.
- A connection's request handler keeps only the *last* decoded request
  (``last_pdu``) and reads it again after the datastore call to tag the reply. An
  action that sleeps would therefore tag a late reply with the transaction id of
  whatever request arrived meanwhile. A slow unit is delayed before the datastore is
  touched instead: the handler (:class:`_DelayingHandler`) keeps its own copy of the
  request, sleeps, and puts the copy back right before the unchanged pymodbus code
  runs, which reads it without yielding in between. A late reply thus always carries
  its own request's transaction id (a TCP client discards it as stale; on RTU, which
  has no transaction id, a reply after the master's timeout is exactly the hazard a
  real slow slave creates). Other units on the same gateway answer without delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.meter import MeterImage
from simulators.registers import LAYOUTS
from simulators.scenario import MeterSpec

__all__ = ["FaultMode", "ModbusMeterServer", "ModbusTransport"]

FaultMode = Literal["exception", "silent", "slow"]
ModbusTransport = Literal["tcp", "rtu"]


@dataclass(frozen=True, slots=True)
class _Fault:
    mode: FaultMode
    code: int
    delay_s: float = 0.0


class _DelayingHandler(ServerRequestHandler):  # type: ignore[misc]
    """A request handler that answers late for units marked slow (see module notes)."""

    delay_for: Callable[[int], float] = staticmethod(lambda _unit: 0.0)

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        delay = self.delay_for(int(pdu.dev_id))
        if delay > 0:
            await asyncio.sleep(delay)
            if not self.transport:
                return  # the client went away meanwhile
            self.last_pdu, self.last_addr = pdu, addr
        await super().handle_request()  # type: ignore[no-untyped-call]


def _handler_factory(server: Any, delay_for: Callable[[int], float]) -> Callable[[], Any]:
    def new_connection() -> Any:
        handler = _DelayingHandler(  # type: ignore[no-untyped-call]
            server, server.trace_packet, server.trace_pdu, server.trace_connect)
        handler.delay_for = delay_for
        return handler

    return new_connection


def _bits() -> list[SimData]:
    return [SimData(0, count=16, values=False, datatype=DataType.BITS)]


class ModbusMeterServer:
    """A Modbus TCP gateway or RTU bus serving the meters' register images."""

    def __init__(
        self,
        meters: list[tuple[MeterSpec, int]],
        *,
        transport: ModbusTransport = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str = "",
        baudrate: int = 19200,
    ) -> None:
        self._meters = {spec.id: (spec, unit) for spec, unit in meters}
        self.transport: ModbusTransport = transport
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self._faults: dict[int, _Fault] = {}
        self._internal_write = False
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._served: dict[int, list[int]] = {}

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    async def start(self) -> None:
        """Create the devices and start listening (TCP: on ``host:port``, 0 = any free)."""
        self._served.clear()
        devices = [self._device(spec, unit) for spec, unit in self._meters.values()]
        devices.append(SimDevice(0, simdata=[SimData(0, count=65536, datatype=DataType.REGISTERS)],
                                 action=self._unknown_unit))
        server: ModbusTcpServer | ModbusSerialServer
        if self.transport == "tcp":
            server = ModbusTcpServer(devices, address=(self.host, self.port),
                                     ignore_missing_devices=True)
        else:
            server = ModbusSerialServer(devices, framer=FramerType.RTU, port=self.serial_port,
                                        baudrate=self.baudrate, ignore_missing_devices=True)
        # Instance attribute: pymodbus asks the listener for a handler per connection.
        server.callback_new_connection = _handler_factory(server, self._delay_for)  # type: ignore[method-assign]
        await server.serve_forever(background=True)
        if self.transport == "tcp":
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def update(self, meter_id: str, image: MeterImage) -> None:
        """Serve a new register image for one meter."""
        server = self._server
        if server is None:
            return
        spec, unit = self._meters[meter_id]
        layout = LAYOUTS[spec.layout]
        regs, block, segments = layout.registers(image), layout.block, layout.segments
        # Only the ranges that can hold values, and only those that changed: the
        # datastore checks every written word, which dominates a fast-running plant.
        last = self._served.get(unit)
        self._internal_write = True
        try:
            for lo, hi in segments:
                if last is None or last[lo:hi] != regs[lo:hi]:
                    await server.async_setValues(unit, block.function_code, block.start + lo,
                                                 regs[lo:hi])
        finally:
            self._internal_write = False
        self._served[unit] = regs

    def set_fault(self, meter_id: str, mode: FaultMode | None, code: int = 0x04,
                  delay_s: float = 0.0) -> None:
        """Make a unit answer with exception ``code``, not at all, or ``delay_s`` late
        (``"slow"``); ``None`` clears it."""
        _spec, unit = self._meters[meter_id]
        if mode is None:
            self._faults.pop(unit, None)
        else:
            self._faults[unit] = _Fault(mode, code, delay_s)

    def _delay_for(self, unit: int) -> float:
        fault = self._faults.get(unit)
        return fault.delay_s if fault is not None and fault.mode == "slow" else 0.0

    def _device(self, spec: MeterSpec, unit: int) -> SimDevice:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if self._internal_write:
                return None
            fault = self._faults.get(unit)
            if fault is not None and fault.mode != "slow":
                if fault.mode == "silent":
                    raise NoSuchIdException(f"unit {unit} does not answer (injected)")
                return ExcCodes(fault.code)
            if set_values is not None:
                return ExcCodes.ILLEGAL_ADDRESS
            return None

        block = LAYOUTS[spec.layout].block
        served = [SimData(block.start, count=block.count, datatype=DataType.REGISTERS)]
        unused = [SimData(0, count=1, datatype=DataType.REGISTERS)]
        holding, inputs = (served, unused) if block.function_code == 3 else (unused, served)
        return SimDevice(unit, simdata=(_bits(), _bits(), holding, inputs), action=action)

    async def _unknown_unit(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self._internal_write:
            return None
        if self.transport == "rtu":
            raise NoSuchIdException("no such unit on this bus")
        return ExcCodes.GATEWAY_PATH_UNAVIABLE
