"""Real servers for the collector tests, started in-process on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asyncua import Server, ua
from asyncua.common.node import Node
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.base import Collector
from rules.types import Sample

CNC_NS = "urn:factory-edge:simulator:cnc"

logging.getLogger("asyncua").setLevel(logging.WARNING)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CncServer:
    """An asyncua server with the simulator's CNC layout for a few machines."""

    server: Server
    url: str
    ns: int
    nodes: dict[str, Node] = field(default_factory=dict)

    async def set(self, key: str, value: int, vtype: ua.VariantType,
                  source_ts: datetime | None = None) -> None:
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=source_ts,
                          ServerTimestamp=datetime.now(UTC))
        await self.nodes[key].write_value(dv)

    def monitored_item_count(self) -> int:
        subs = self.server.iserver.subscription_service.subscriptions
        return sum(len(s.monitored_item_srv._monitored_items) for s in subs.values())


async def start_cnc_server(port: int, machines: tuple[str, ...] = ("cnc-01",),
                           extra_namespaces: int = 0) -> CncServer:
    """Start the server; ``extra_namespaces`` shifts the CNC namespace index."""
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    for i in range(extra_namespaces):
        await server.register_namespace(f"urn:test:filler:{i}")
    ns = await server.register_namespace(CNC_NS)
    cnc = CncServer(server, url, ns)

    def ids(node: str, name: str) -> tuple[ua.NodeId, ua.QualifiedName]:
        return ua.NodeId(node, ns), ua.QualifiedName(name, ns)

    folder = await server.nodes.objects.add_folder(*ids("Machines", "Machines"))
    for mid in machines:
        machine = await folder.add_object(*ids(mid, mid))
        monitoring = await machine.add_object(*ids(f"{mid}.Monitoring", "Monitoring"))
        tool = await monitoring.add_object(*ids(f"{mid}.MachineTool", "MachineTool"))
        cnc.nodes[f"{mid}.state"] = await tool.add_variable(
            ua.NodeId(f"{mid}.MachineState", ns), ua.QualifiedName("MachineState", ns),
            ua.Variant(0, ua.VariantType.Int32))
        prod = await machine.add_object(*ids(f"{mid}.Production", "Production"))
        cnc.nodes[f"{mid}.parts"] = await prod.add_variable(
            ua.NodeId(f"{mid}.PartsProducedInLifetime", ns),
            ua.QualifiedName("PartsProducedInLifetime", ns), ua.Variant(0, ua.VariantType.UInt32))
        cnc.nodes[f"{mid}.scrap"] = await prod.add_variable(
            ua.NodeId(f"{mid}.PartsScrapInLifetime", ns),
            ua.QualifiedName("PartsScrapInLifetime", ns), ua.Variant(0, ua.VariantType.UInt32))
    await server.start()
    return cnc


@contextlib.asynccontextmanager
async def running(collector: Collector, sink: asyncio.Queue[Sample]) -> AsyncIterator[None]:
    """Run ``collector`` for the duration of the block, then cancel it."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(collector.run(sink))
        try:
            yield
        finally:
            task.cancel()


async def wait_for_sample(sink: asyncio.Queue[Sample], pred: Callable[[Sample], bool],
                          within: float = 10.0) -> Sample:
    """The first sample matching ``pred`` (others are discarded)."""
    async with asyncio.timeout(within):
        while True:
            sample = await sink.get()
            if pred(sample):
                return sample


async def wait_until(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``cond`` until true (state kept by a collector, so there is no event to wait on)."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


# -- Modbus ------------------------------------------------------------------------

FC_COILS = 1
FC_DISCRETE = 2
FC_HOLDING = 3
FC_INPUT = 4


def f32_regs(value: float, word_order: str = "big") -> list[int]:
    """Registers of an IEEE float32, high word first unless ``word_order='little'``."""
    raw = struct.pack(">f", value)
    regs = [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]
    return regs if word_order == "big" else regs[::-1]


@dataclass
class MeterGateway:
    """A pymodbus TCP server with one SDM630-like device per unit id."""

    server: ModbusTcpServer
    port: int
    dead: frozenset[int]
    release: asyncio.Event

    async def stop(self) -> None:
        self.release.set()
        await self.server.shutdown()

    async def set_input(self, unit: int, address: int, regs: list[int]) -> None:
        await self.server.async_setValues(unit, FC_INPUT, address, regs)

    async def set_holding(self, unit: int, address: int, regs: list[int]) -> None:
        await self.server.async_setValues(unit, FC_HOLDING, address, regs)

    async def set_coils(self, unit: int, address: int, bits: list[bool]) -> None:
        await self.server.async_setValues(unit, FC_COILS, address, bits)

    async def set_discrete(self, unit: int, address: int, bits: list[bool]) -> None:
        await self.server.async_setValues(unit, FC_DISCRETE, address, bits)


async def start_gateway(port: int, units: tuple[int, ...] = (1, 2, 3),
                        dead: frozenset[int] = frozenset()) -> MeterGateway:
    """Units with 100 holding and 100 input registers (addresses 0..99, all zero).

    Units in ``dead`` never answer reads (a dead meter behind a gateway): their request
    handler waits until the gateway stops. (A handler that answered late would be
    stamped with the transaction id of the newest request on the connection, a quirk
    of the pymodbus server, so it must not answer at all.) Reads beyond address 99 get
    an ILLEGAL_ADDRESS exception response.
    """
    release = asyncio.Event()

    async def action(fc: int, start: int, address: int, count: int, regs: list[int],
                     values: list[int] | list[bool] | None, *, unit: int) -> None:
        if unit in dead and values is None:
            await release.wait()

    devices = [
        SimDevice(
            id=unit,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)],
            ),
            action=functools.partial(action, unit=unit),
        )
        for unit in units
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return MeterGateway(server, port, dead, release)
