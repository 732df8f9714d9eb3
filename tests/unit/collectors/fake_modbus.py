"""A fake Modbus link and a virtual clock, to unit-test the Modbus collector.

:class:`FakeModbusLink` serves register tables from memory and fails on demand the ways a
real link does (a dead unit, an exception response, a short reply, a refused connect, a
link that drops). :class:`VirtualTimeLoop` is an event loop whose clock jumps to the next
timer instead of waiting for it, so backoff schedules of many seconds run in no time and
the times a test sees are exact.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from collectors.base import CollectorStats, DeviceHealth
from collectors.modbus import ModbusCollector
from collectors.modbus_link import Reply
from rules.errors import DeviceError
from rules.types import Sample

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    """Never waits: a wait for the next timer moves the clock there instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.now += timeout
            timeout = 0
        return super().select(timeout)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, for code that only waits on timers and itself."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


@dataclass(frozen=True, slots=True)
class Read:
    """One request the fake link saw, and when (loop time)."""

    at: float
    table: str
    address: int
    count: int
    unit: int
    timeout_s: float
    retries: int


@dataclass
class FakeModbusLink:
    """A :class:`collectors.modbus_link.ModbusLink` serving ``tables`` from memory.

    ``tables[(unit, table)][address]`` is a register (or a bit as 0/1); an address not
    set reads as 0. ``dead`` units never answer, ``exceptions`` maps a unit to the code
    of its exception response, ``short`` maps a unit to how many values its replies
    lack. ``refuse_connects`` connect attempts fail before one succeeds, and
    ``drop_after_reads`` ends the connection after that many more reads.
    """

    tables: dict[tuple[int, str], dict[int, int]] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)
    exceptions: dict[int, int] = field(default_factory=dict)
    short: dict[int, int] = field(default_factory=dict)
    refuse_connects: int = 0
    drop_after_reads: int | None = None
    reads: list[Read] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    closed: int = 0
    _up: bool = field(default=False, init=False)
    _changed: asyncio.Condition | None = field(default=None, init=False)

    def set(self, unit: int, table: str, address: int, values: list[int]) -> None:
        """Put ``values`` at ``address`` of ``unit``'s ``table``."""
        regs = self.tables.setdefault((unit, table), {})
        for i, value in enumerate(values):
            regs[address + i] = value

    def reads_of(self, unit: int) -> list[Read]:
        """The requests sent to ``unit``, in order."""
        return [r for r in self.reads if r.unit == unit]

    @property
    def connected(self) -> bool:
        return self._up

    async def connect(self) -> None:
        self.connects.append(asyncio.get_running_loop().time())
        await self._notify()
        if self.refuse_connects > 0:
            self.refuse_connects -= 1
            raise DeviceError("cannot connect to fake:502: connection refused")
        self._up = True

    async def read(self, table: str, address: int, count: int, unit: int, *,
                   timeout_s: float, retries: int) -> Reply:
        if not self._up:
            raise DeviceError(f"{table} {address}+{count} unit {unit}: link lost")
        self.reads.append(Read(asyncio.get_running_loop().time(), table, address, count,
                               unit, timeout_s, retries))
        await self._notify()
        if self.drop_after_reads is not None:
            self.drop_after_reads -= 1
            if self.drop_after_reads <= 0:
                self.drop_after_reads = None
                self._up = False
        if unit in self.dead:
            raise DeviceError(f"{table} {address}+{count} unit {unit}: no valid reply: "
                              f"No response received after {retries} retries")
        if unit in self.exceptions:
            return Reply([], exception_code=self.exceptions[unit])
        regs = self.tables.get((unit, table), {})
        values = [regs.get(address + i, 0) for i in range(count - self.short.get(unit, 0))]
        if table in ("coil", "discrete"):
            return Reply([bool(v) for v in values])
        return Reply(values)

    def close(self) -> None:
        self._up = False
        self.closed += 1

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked after every connect and read."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(condition)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()


@dataclass(frozen=True, slots=True)
class Run:
    """What a collector delivered, and its health and counters as they were when the
    condition held (stopping it marks every device disconnected)."""

    samples: list[Sample]
    health: dict[str, DeviceHealth]
    stats: CollectorStats


async def collect_until(collector: ModbusCollector, link: FakeModbusLink,
                        condition: Callable[[], bool], *, within_s: float = 3600.0) -> Run:
    """Run ``collector`` until ``condition()`` holds (virtual ``within_s`` at most), then
    stop it."""
    sink: asyncio.Queue[Sample] = asyncio.Queue(100_000)
    async with asyncio.timeout(within_s):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(collector.run(sink))
            await link.wait_until(condition)
            health, stats = collector.health, collector.stats
            task.cancel()
    samples: list[Sample] = []
    while not sink.empty():
        samples.append(sink.get_nowait())
    return Run(samples, health, stats)
