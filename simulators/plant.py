"""The simulated plant: machine and meter models on one clock, served over real sockets.

One task owns the model clock. It sleeps until the next scheduled instant of any
machine or meter, processes everything due in time order, and publishes each change
to the servers and the ledger with the instant it was scheduled for (not the instant
the task woke up), so the timestamps a client sees are exact.

Faults can be injected from tests (methods below) or scheduled by the scenario's
``[[faults]]`` table; each one is recorded in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from rules.types import ms_to_rfc3339
from simulators.ledger import Ledger, event_to_entry
from simulators.machine import (
    OPERATION_MODE_CODES,
    STATE_CODES,
    CounterEvent,
    Machine,
    MachineEvent,
    PartDone,
    ProgramChange,
    StateChange,
)
from simulators.meter import Meter, MeterEvent
from simulators.modbus_server import FaultMode, ModbusMeterServer
from simulators.opcua_server import NAMESPACE_URI, OpcUaMachineServer
from simulators.scenario import FaultSpec, MeterSpec, Scenario
from simulators.schedule import Calendar

__all__ = ["NAMESPACE_URI", "Plant", "SimClock"]

_log = logging.getLogger(__name__)


class SimClock:
    """The simulator's wall clock: ``time.time()`` plus a skew (fault injection)."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_ms = round(skew_s * 1000)

    def now_ms(self) -> int:
        """Now, in epoch milliseconds, as the simulated devices see it."""
        return time.time_ns() // 1_000_000 + self.skew_ms


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Plant:
    """Both servers, the models and the ledger, started and stopped together.

    ``async with Plant(scenario, ledger_dir=tmp) as plant:`` starts everything on free
    loopback ports (unless ports are given); ``plant.opcua_endpoint`` and
    ``plant.modbus_port`` say where. ``seed`` overrides the scenario's seed. With
    ``rtu_port`` (a serial device such as one end of a socat pty pair) the same meters
    are also served over Modbus RTU.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        opcua_port: int = 0,
        modbus_port: int = 0,
        ledger_dir: Path | None = None,
        seed: int | None = None,
        rtu_port: str | None = None,
        rtu_baudrate: int = 19200,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.seed = scenario.seed if seed is None else seed
        self.clock = SimClock(scenario.clock_skew_s)
        self.ledger_dir = ledger_dir
        self._meter_specs: list[MeterSpec] = scenario.effective_meters
        self.machines: list[str] = [m.id for m in scenario.machines]
        """Machine ids, in scenario order."""
        self.meters: list[tuple[str, int]] = [
            (spec.id, unit)
            for spec, unit in zip(self._meter_specs, scenario.unit_ids(), strict=True)
        ]
        """``(meter_id, unit_id)`` pairs, in scenario order."""
        self._opcua = OpcUaMachineServer(list(scenario.machines), host, opcua_port,
                                         self.clock.now_ms)
        pairs = list(zip(self._meter_specs, [u for _, u in self.meters], strict=True))
        self._modbus = ModbusMeterServer(pairs, transport="tcp", host=host, port=modbus_port)
        self._modbus_servers = [self._modbus]
        if rtu_port is not None:
            self._modbus_servers.append(
                ModbusMeterServer(pairs, transport="rtu", serial_port=rtu_port,
                                  baudrate=rtu_baudrate)
            )
        self._machines: dict[str, Machine] = {}
        self._meter_models: dict[str, Meter] = {}
        self._coupling: dict[str, str] = {s.id: s.machine for s in self._meter_specs}
        self._ledgers: dict[str, Ledger] = {}
        self._lock = asyncio.Lock()
        self._frozen = False
        self._model_ms = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._started = False

    # ------------------------------------------------------------------ facts
    @property
    def opcua_endpoint(self) -> str:
        """``opc.tcp://host:port`` of the OPC UA server (after start)."""
        return self._opcua.endpoint

    @property
    def modbus_port(self) -> int:
        """TCP port of the Modbus gateway (after start)."""
        return self._modbus.port

    @property
    def namespace_uri(self) -> str:
        """The namespace of every simulator browse name."""
        return NAMESPACE_URI

    @property
    def model_time_ms(self) -> int:
        """The instant up to which the models have run (monotonic)."""
        return self._model_ms

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the model task, if any."""
        return self._error

    def ledger_paths(self) -> dict[str, Path]:
        """``{"opcua": machines' ledger, "modbus": meters' ledger}``; empty without a dir."""
        if self.ledger_dir is None:
            return {}
        return {"opcua": self.ledger_dir / "opcua.jsonl",
                "modbus": self.ledger_dir / "modbus.jsonl"}

    def machine_model(self, machine_id: str) -> Machine:
        """The live model of one machine (read-only use: counters, state)."""
        return self._machines[machine_id]

    def meter_model(self, meter_id: str) -> Meter:
        """The live model of one meter (read-only use: register counts)."""
        return self._meter_models[meter_id]

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Plant:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self._error is not None and exc_type is None:
            raise RuntimeError("the simulated plant's clock task failed") from self._error

    async def start(self) -> None:
        """Build the models at the current instant, start the servers and the clock task."""
        if self._started:
            return
        self._started = True
        paths = self.ledger_paths()
        self._ledgers = {"opcua": Ledger(paths.get("opcua")), "modbus": Ledger(paths.get("modbus"))}
        start_ms = self.clock.now_ms()
        self._model_ms = start_ms
        calendar = Calendar(self.scenario.calendar)
        for spec in self.scenario.machines:
            rng = random.Random(f"{self.seed}:machine:{spec.id}")
            self._machines[spec.id] = Machine(spec, calendar, rng, start_ms)
        specs_by_id = {m.id: m for m in self.scenario.machines}
        for meter_spec in self._meter_specs:
            machine = self._machines[meter_spec.machine]
            rng = random.Random(f"{self.seed}:meter:{meter_spec.id}")
            self._meter_models[meter_spec.id] = Meter(
                meter_spec, specs_by_id[meter_spec.machine].power, rng, start_ms, machine.state
            )
        try:
            if self._opcua.port == 0:
                self._opcua.port = _free_port(self.host)
            await self._write_initial(start_ms)
            await self._opcua.start()
            for server in self._modbus_servers:
                await server.start()
            for meter in self._meter_models.values():
                await self._push_meter(meter)
        except BaseException:
            await self._stop_servers()
            raise
        self._tasks.append(asyncio.create_task(self._run(), name="plant-clock"))
        for i, fault in enumerate(self.scenario.faults):
            self._tasks.append(asyncio.create_task(self._scheduled_fault(fault),
                                                   name=f"plant-fault-{i}"))

    async def stop(self) -> None:
        """Stop the clock task, the servers, and close the ledgers."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_servers()
        for ledger in self._ledgers.values():
            ledger.close()

    async def _stop_servers(self) -> None:
        for server in self._modbus_servers:
            with contextlib.suppress(Exception):
                await server.stop()
        with contextlib.suppress(Exception):
            await self._opcua.stop()

    # ------------------------------------------------------------------ test hooks
    @contextlib.asynccontextmanager
    async def frozen(self) -> AsyncIterator[None]:
        """Hold the model still: servers keep answering with unchanging values.

        Lets a test read both servers and the ledger at one consistent instant; on exit
        the model catches up, each event still stamped with its scheduled instant.
        """
        async with self._lock:
            self._frozen = True
            self._flush()
        try:
            yield
        finally:
            self._frozen = False

    async def advance(self) -> None:
        """Process everything due up to now (normally the clock task does this)."""
        async with self._lock:
            if not self._frozen:
                await self._advance(self.clock.now_ms())
            self._flush()

    def set_clock_skew(self, seconds: float) -> None:
        """Shift the simulator clock; time never runs backwards for the model.

        A forward jump processes the skipped interval at once; a backward jump holds
        the model until the skewed clock passes the last processed instant.
        """
        self.clock.skew_ms = round(seconds * 1000)
        ts = max(self._model_ms, self.clock.now_ms())
        self._fault_entry(("opcua", "modbus"), "clock_skew", None, ts, skew_s=seconds)

    async def stop_opcua(self) -> None:
        """Fault: the OPC UA server goes away (every session is lost)."""
        async with self._lock:
            ts = await self._injection_instant()
            await self._opcua.stop()
            self._fault_entry(("opcua",), "opcua_stop", None, ts)

    async def start_opcua(self) -> None:
        """End of :meth:`stop_opcua`: a fresh server on the same port, current values."""
        async with self._lock:
            ts = await self._injection_instant()
            await self._opcua.start()
            self._fault_entry(("opcua",), "opcua_start", None, ts)

    async def restart_opcua(self, downtime_s: float = 1.0) -> None:
        """Stop the OPC UA server, wait ``downtime_s``, start it again."""
        await self.stop_opcua()
        await asyncio.sleep(downtime_s)
        await self.start_opcua()

    async def set_opcua_status(self, machine_id: str,
                               status: str | None = "BadCommunicationError") -> None:
        """Fault: serve every variable of a machine with a bad status; ``None`` clears."""
        async with self._lock:
            ts = await self._injection_instant()
            await self._opcua.set_status(machine_id, status, ts)
            kind = "opcua_bad_status" if status else "opcua_status_cleared"
            self._fault_entry(("opcua",), kind, machine_id, ts, status=status)

    def set_modbus_fault(self, meter_id: str, mode: FaultMode | None, code: int = 0x04) -> None:
        """Fault: a unit answers with exception ``code`` (``"exception"``) or not at all
        (``"silent"``, the client times out); ``None`` clears it."""
        for server in self._modbus_servers:
            server.set_fault(meter_id, mode, code)
        ts = max(self._model_ms, self.clock.now_ms())
        kind = {"exception": "modbus_exception", "silent": "modbus_silent", None: "modbus_cleared"}
        extra: dict[str, Any] = {"code": code} if mode == "exception" else {}
        self._fault_entry(("modbus",), kind[mode], meter_id, ts, **extra)

    async def reset_part_counters(self, machine_id: str) -> None:
        """Fault: both part counters of a machine drop to 0 now."""
        async with self._lock:
            ts = await self._injection_instant()
            events = self._machines[machine_id].reset_counters(ts)
            await self._publish(events, [])
            self._flush()

    async def reset_meter(self, meter_id: str) -> None:
        """Fault: a meter's energy register drops to 0 now."""
        async with self._lock:
            ts = await self._injection_instant()
            meter = self._meter_models[meter_id]
            machine = self._machines[self._coupling[meter_id]]
            events = meter.reset(ts, machine.state)
            await self._publish([], events)
            await self._push_meter(meter)
            self._flush()

    # ------------------------------------------------------------------ model clock
    async def _run(self) -> None:
        try:
            while True:
                if not self._frozen:
                    async with self._lock:
                        if not self._frozen:
                            await self._advance(self.clock.now_ms())
                            self._flush()
                nxt = self._next_event_ms()
                delay = 0.25 if nxt is None else (nxt - self.clock.now_ms()) / 1000
                await asyncio.sleep(min(max(delay, 0.0), 0.25))
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self._error = err
            _log.exception("simulated plant stopped")
            raise

    def _next_event_ms(self) -> int | None:
        candidates = [m.next_event_ms() for m in self._machines.values()]
        times = [t for t in candidates if t is not None]
        times += [m.next_event_ms() for m in self._meter_models.values()]
        return min(times) if times else None

    async def _advance(self, until_ms: int) -> None:
        while True:
            nxt = self._next_event_ms()
            if nxt is None or nxt > until_ms:
                break
            await self._step(nxt)
        self._model_ms = max(self._model_ms, until_ms)

    async def _step(self, ts_ms: int) -> None:
        machine_events: list[MachineEvent] = []
        changed: set[str] = set()
        for machine in self._machines.values():
            events = machine.advance_to(ts_ms)
            if events:
                machine_events += events
                changed.add(machine.id)
        meter_events: list[MeterEvent] = []
        to_push: list[Meter] = []
        for meter in self._meter_models.values():
            machine = self._machines[self._coupling[meter.id]]
            due = meter.next_event_ms() <= ts_ms or machine.id in changed
            meter_events += meter.advance_to(ts_ms, machine.state)
            if due:
                to_push.append(meter)
        self._model_ms = max(self._model_ms, ts_ms)
        await self._publish(machine_events, meter_events)
        for meter in to_push:
            await self._push_meter(meter)

    async def _injection_instant(self) -> int:
        if not self._frozen:
            await self._advance(self.clock.now_ms())
        return self._model_ms

    # ------------------------------------------------------------------ publishing
    async def _write_initial(self, ts_ms: int) -> None:
        ledger = self._ledgers["opcua"]
        for machine in self._machines.values():
            ledger.write({"kind": "init", "device": machine.id, "ts": ms_to_rfc3339(ts_ms),
                          "state": machine.state, "parts_total": machine.parts_total,
                          "parts_scrap": machine.parts_scrap, "program": machine.program.name})
            spec = machine.spec
            await self._opcua.write(machine.id, "manufacturer", spec.manufacturer, ts_ms)
            await self._opcua.write(machine.id, "model", spec.model, ts_ms)
            await self._opcua.write(machine.id, "serial_number",
                                    spec.serial_number or f"{spec.id}-0001", ts_ms)
            await self._opcua.write(machine.id, "program_name", machine.program.name, ts_ms)
            await self._opcua.write(machine.id, "parts_total", machine.parts_total, ts_ms)
            await self._opcua.write(machine.id, "parts_scrap", machine.parts_scrap, ts_ms)
            await self._publish([machine.initial_event()], [])
        mledger = self._ledgers["modbus"]
        for (meter_id, unit), mspec in zip(self.meters, self._meter_specs, strict=True):
            meter = self._meter_models[meter_id]
            mledger.write({"kind": "init", "device": meter_id, "ts": ms_to_rfc3339(ts_ms),
                           "register_kwh": str(meter.image().energy_kwh),
                           "resolution_kwh": str(mspec.resolution_kwh),
                           "modulus_kwh": str(mspec.effective_modulus_kwh),
                           "machine": mspec.machine, "unit_id": unit, "layout": mspec.layout})
        self._flush()

    async def _publish(self, machine_events: list[MachineEvent],
                       meter_events: list[MeterEvent]) -> None:
        ledger = self._ledgers["opcua"]
        opcua = self._opcua
        for event in machine_events:
            entry = event_to_entry(event)
            if entry is not None:
                ledger.write(entry)
            dev, ts = event.device, event.ts_ms
            if isinstance(event, StateChange):
                await opcua.write(dev, "state", STATE_CODES[event.state], ts)
                await opcua.write(dev, "operation_mode", OPERATION_MODE_CODES[event.state], ts)
                await opcua.write(dev, "program_state", event.program_state, ts)
                await opcua.write(dev, "spindle_speed", event.spindle_rpm, ts)
                await opcua.write(dev, "spindle_load", event.spindle_load_pct, ts)
                await opcua.write(dev, "power_on_s", event.power_on_s, ts)
            elif isinstance(event, PartDone):
                if not event.good:
                    await opcua.write(dev, "parts_scrap", event.parts_scrap, ts)
                await opcua.write(dev, "parts_total", event.parts_total, ts)
                await opcua.write(dev, "spindle_speed", event.spindle_rpm, ts)
                await opcua.write(dev, "spindle_load", event.spindle_load_pct, ts)
                await opcua.write(dev, "power_on_s", event.power_on_s, ts)
            elif isinstance(event, ProgramChange):
                await opcua.write(dev, "program_name", event.program, ts)
            elif isinstance(event, CounterEvent) and event.kind == "counter_reset":
                await opcua.write(dev, event.signal, event.after, ts)
        mledger = self._ledgers["modbus"]
        for mevent in meter_events:
            entry = event_to_entry(mevent)
            if entry is not None:
                mledger.write(entry)

    async def _push_meter(self, meter: Meter) -> None:
        image = meter.image()
        for server in self._modbus_servers:
            await server.update(meter.id, image)

    def _fault_entry(self, ledgers: tuple[str, ...], fault: str, device: str | None,
                     ts_ms: int, **extra: Any) -> None:
        entry: dict[str, Any] = {"kind": "fault", "fault": fault, "ts": ms_to_rfc3339(ts_ms)}
        if device is not None:
            entry["device"] = device
        entry.update(extra)
        for name in ledgers:
            ledger = self._ledgers.get(name)
            if ledger is not None:
                ledger.write(entry)
                ledger.flush()

    def _flush(self) -> None:
        for ledger in self._ledgers.values():
            ledger.flush()

    # ------------------------------------------------------------------ scenario faults
    async def _scheduled_fault(self, fault: FaultSpec) -> None:
        await asyncio.sleep(fault.at_s)
        target = fault.target or ""
        if fault.kind == "opcua_restart":
            await self.restart_opcua(fault.duration_s or 2.0)
        elif fault.kind == "opcua_bad_status":
            await self.set_opcua_status(target, fault.status or "BadCommunicationError")
            if fault.duration_s:
                await asyncio.sleep(fault.duration_s)
                await self.set_opcua_status(target, None)
        elif fault.kind in ("modbus_exception", "modbus_silent"):
            mode: FaultMode = "exception" if fault.kind == "modbus_exception" else "silent"
            self.set_modbus_fault(target, mode, fault.code or 0x04)
            if fault.duration_s:
                await asyncio.sleep(fault.duration_s)
                self.set_modbus_fault(target, None)
        elif fault.kind == "counter_reset":
            await self.reset_part_counters(target)
        elif fault.kind == "meter_reset":
            await self.reset_meter(target)
        elif fault.kind == "clock_skew":
            previous = self.clock.skew_ms / 1000
            self.set_clock_skew(fault.value or 0.0)
            if fault.duration_s:
                await asyncio.sleep(fault.duration_s)
                self.set_clock_skew(previous)
