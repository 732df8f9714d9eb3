"""The simulated plant: machine and meter models on one clock, served over real sockets.

One task owns the model clock. It sleeps until the next scheduled instant of any
machine or meter, processes everything due in time order, and publishes each change
to the servers and the ledger with the instant it was scheduled for (not the instant
the task woke up), so the timestamps a client sees are exact.

The clock (:class:`SimClock`) runs in real time by default. It can also run faster
(``SimClock(time_scale=60)``: an 8-hour shift in 8 minutes) or be stepped by hand
(``SimClock(manual=True, start_ms=...)`` with :meth:`Plant.run_until`), which lets a
test take a plant through a whole shift in seconds while both servers keep answering.

Faults can be injected from tests (methods below) or scheduled by the scenario's
``[[faults]]`` table (what each kind does, and what ends it: :data:`FAULTS`); scheduled
faults fire at model instants (``at_s`` after the plant's start, on the unskewed clock)
inside the model loop, so they are exact in every clock mode. Each one is recorded in
the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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

__all__ = ["FAULTS", "NAMESPACE_URI", "FaultAction", "Plant", "ScheduledFault", "SimClock"]

_log = logging.getLogger(__name__)

_LAG_WARNING_MS = 1_000
"""A model clock task this late logs a warning (at most once a minute)."""


class SimClock:
    """The simulator's clock, in epoch milliseconds as the simulated devices see it.

    - real time (default): ``time.time()`` plus ``skew``;
    - accelerated: ``time_scale`` model seconds per wall-clock second, starting at
      ``start_ms`` (default: now) when the clock is created (``time_scale=0`` stands
      still);
    - manual: stands at ``start_ms`` until :meth:`set_ms` moves it (tests step it).

    The skew (fault injection: a device clock that is wrong) is added in every mode.
    """

    def __init__(self, skew_s: float = 0.0, *, time_scale: float = 1.0,
                 start_ms: int | None = None, manual: bool = False) -> None:
        if not math.isfinite(time_scale) or time_scale < 0:
            raise ValueError("time_scale must be a finite number >= 0")
        self.skew_ms = round(skew_s * 1000)
        self.time_scale = time_scale
        self.manual = manual
        self._wall = not manual and time_scale == 1.0 and start_ms is None
        self._origin_ms = time.time_ns() // 1_000_000 if start_ms is None else start_ms
        self._mono0_ns = time.monotonic_ns()
        self._manual_ms = self._origin_ms

    def anchor(self) -> None:
        """Accelerated clock: count from ``start_ms`` as of now (the plant calls this
        when it starts, so the model starts exactly at ``start_ms``)."""
        self._mono0_ns = time.monotonic_ns()

    @property
    def realtime(self) -> bool:
        """True for the default mode: the wall clock (plus skew)."""
        return self._wall

    def base_ms(self) -> int:
        """Now without the skew."""
        if self.manual:
            return self._manual_ms
        if self._wall:
            return time.time_ns() // 1_000_000
        elapsed_ms = (time.monotonic_ns() - self._mono0_ns) / 1e6
        return self._origin_ms + math.floor(elapsed_ms * self.time_scale)

    def now_ms(self) -> int:
        """Now, in epoch milliseconds, as the simulated devices see it."""
        return self.base_ms() + self.skew_ms

    def set_ms(self, ts_ms: int) -> None:
        """Manual clock: move to device instant ``ts_ms`` (never backwards)."""
        if not self.manual:
            raise RuntimeError("only a manual clock can be set")
        self._manual_ms = max(self._manual_ms, ts_ms - self.skew_ms)

    def wall_seconds_until(self, ts_ms: int) -> float:
        """Wall-clock seconds until the clock shows ``ts_ms`` (inf if it never moves)."""
        ahead = ts_ms - self.now_ms()
        if ahead <= 0:
            return 0.0
        if self.manual or self.time_scale == 0:
            return math.inf
        return ahead / 1000 / self.time_scale


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
    are also served over Modbus RTU. ``clock`` picks real time (default), an accelerated
    or a manual clock (see :class:`SimClock`); the scenario's ``clock_skew_s`` is added
    to its skew.
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
        clock: SimClock | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.seed = scenario.seed if seed is None else seed
        self.clock = clock if clock is not None else SimClock()
        self.clock.skew_ms += round(scenario.clock_skew_s * 1000)
        self.rtu_port = rtu_port
        self.rtu_baudrate = rtu_baudrate
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
        self._start_ms = 0
        self._next_machine: dict[str, int | None] = {}
        self._next_meter: dict[str, int] = {}
        self._fault_queue: list[tuple[int, int, Callable[[int], Awaitable[None]]]] = []
        self._fault_seq = 0
        hz = scenario.telemetry_hz
        self._telemetry_every_ms = max(1, round(1000 / hz)) if hz > 0 else 0
        self._next_telemetry: int | None = None
        self._lag_ms = 0
        self._max_lag_ms = 0
        self._lag_warned_at: float | None = None

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
    def start_ms(self) -> int:
        """The device-clock instant at which the models started."""
        return self._start_ms

    @property
    def lag_s(self) -> float:
        """How far behind its schedule the model clock task ran when it last woke up:
        the age of the oldest instant that was due then (0 when nothing was overdue).

        Every event is still stamped with its scheduled instant; a lag means clients
        see the changes that much later than their timestamps say.
        """
        return self._lag_ms / 1000

    @property
    def max_lag_s(self) -> float:
        """The largest :attr:`lag_s` since the start (or since :meth:`reset_max_lag`)."""
        return self._max_lag_ms / 1000

    def reset_max_lag(self) -> None:
        """Start a new maximum of :attr:`lag_s` (e.g. after a warm-up)."""
        self._max_lag_ms = self._lag_ms

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
        """Start the servers, then build the models at the current instant and start the
        clock task.

        The servers come first: building a large address space takes seconds, and a
        model started before would begin its life that far behind its schedule.
        """
        if self._started:
            return
        self._started = True
        paths = self.ledger_paths()
        self._ledgers = {"opcua": Ledger(paths.get("opcua")), "modbus": Ledger(paths.get("modbus"))}
        try:
            if self._opcua.port == 0:
                self._opcua.port = _free_port(self.host)
            await self._opcua.start()
            for server in self._modbus_servers:
                await server.start()
            start_ms = self._build_models()
            await self._write_initial(start_ms)
            for meter in self._meter_models.values():
                await self._push_meter(meter)
        except BaseException:
            await self._stop_servers()
            raise
        self._refresh_all()
        if self._telemetry_every_ms:
            self._next_telemetry = (start_ms // self._telemetry_every_ms + 1) \
                * self._telemetry_every_ms
        base = self.clock.base_ms()
        for fault in self.scenario.faults:
            self._schedule_fault(base, fault)
        if not self.clock.manual:
            self._tasks.append(asyncio.create_task(self._run(), name="plant-clock"))

    def _build_models(self) -> int:
        """The machine and meter models, starting now; returns that instant."""
        self.clock.anchor()
        start_ms = self.clock.now_ms()
        self._model_ms = start_ms
        self._start_ms = start_ms
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
        return start_ms

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

    async def run_until(self, ts_ms: int) -> None:
        """Manual clock: move it to device instant ``ts_ms`` and process everything due.

        Both servers keep answering while this runs; when it returns, they serve the
        state at ``ts_ms`` and the ledger holds every event up to it.
        """
        if not self.clock.manual:
            raise RuntimeError("run_until needs a manual clock (SimClock(manual=True))")
        async with self._lock:
            self.clock.set_ms(ts_ms)
            await self._advance(self.clock.now_ms())
            self._flush()

    async def step(self, seconds: float) -> None:
        """Manual clock: move it ``seconds`` ahead and process everything due."""
        await self.run_until(self.clock.now_ms() + round(seconds * 1000))

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
            await self._do_opcua_stop(await self._injection_instant())

    async def start_opcua(self) -> None:
        """End of :meth:`stop_opcua`: a fresh server on the same port, current values."""
        async with self._lock:
            await self._do_opcua_start(await self._injection_instant())

    async def restart_opcua(self, downtime_s: float = 1.0) -> None:
        """Stop the OPC UA server, wait ``downtime_s``, start it again."""
        await self.stop_opcua()
        await asyncio.sleep(downtime_s)
        await self.start_opcua()

    async def set_opcua_status(self, machine_id: str,
                               status: str | None = "BadCommunicationError") -> None:
        """Fault: serve every variable of a machine with a bad status; ``None`` clears."""
        async with self._lock:
            await self._do_opcua_status(await self._injection_instant(), machine_id, status)

    async def hide_opcua_node(self, machine_id: str, path: str | None = None) -> None:
        """Fault: a variable (``path`` under the machine, e.g.
        ``Production/PartsProducedInLifetime``) or the machine's whole subtree disappears
        from the address space; reads fail with ``BadNodeIdUnknown``."""
        async with self._lock:
            await self._do_opcua_hide(await self._injection_instant(), machine_id, path)

    async def restore_opcua_node(self, machine_id: str, path: str | None = None) -> None:
        """End of :meth:`hide_opcua_node`: same NodeIds, current values."""
        async with self._lock:
            await self._do_opcua_restore(await self._injection_instant(), machine_id, path)

    def set_modbus_fault(self, meter_id: str, mode: FaultMode | None, code: int = 0x04,
                         delay_s: float = 0.0) -> None:
        """Fault: a unit answers with exception ``code`` (``"exception"``), not at all
        (``"silent"``, the client times out) or ``delay_s`` late (``"slow"``); ``None``
        clears it. Other units on the same gateway or bus are not affected."""
        if mode == "slow" and delay_s <= 0:
            raise ValueError("a slow unit needs delay_s > 0")
        self._do_modbus_fault(max(self._model_ms, self.clock.now_ms()), meter_id, mode, code,
                              delay_s)

    async def reset_part_counters(self, machine_id: str) -> None:
        """Fault: both part counters of a machine drop to 0 now."""
        async with self._lock:
            await self._do_counter_reset(await self._injection_instant(), machine_id)
            self._flush()

    async def reset_meter(self, meter_id: str) -> None:
        """Fault: a meter's energy register drops to 0 now (reset or replacement)."""
        async with self._lock:
            await self._do_meter_reset(await self._injection_instant(), meter_id)
            self._flush()

    # ------------------------------------------------------------------ fault actions
    # Lock-free; ``ts`` is the model instant. Called by the public methods above (which
    # hold the lock) and by the model loop for faults the scenario schedules.
    async def _do_opcua_stop(self, ts: int) -> None:
        await self._opcua.stop()
        self._fault_entry(("opcua",), "opcua_stop", None, ts)

    async def _do_opcua_start(self, ts: int) -> None:
        await self._opcua.start()
        self._fault_entry(("opcua",), "opcua_start", None, ts)

    async def _do_opcua_status(self, ts: int, machine_id: str, status: str | None) -> None:
        await self._opcua.set_status(machine_id, status, ts)
        kind = "opcua_bad_status" if status else "opcua_status_cleared"
        self._fault_entry(("opcua",), kind, machine_id, ts, status=status)

    async def _do_opcua_hide(self, ts: int, machine_id: str, path: str | None) -> None:
        await self._opcua.hide(machine_id, path)
        self._fault_entry(("opcua",), "opcua_node_missing", machine_id, ts, node=path)

    async def _do_opcua_restore(self, ts: int, machine_id: str, path: str | None) -> None:
        await self._opcua.restore(machine_id, path)
        self._fault_entry(("opcua",), "opcua_node_restored", machine_id, ts, node=path)

    def _do_modbus_fault(self, ts: int, meter_id: str, mode: FaultMode | None, code: int,
                         delay_s: float) -> None:
        for server in self._modbus_servers:
            server.set_fault(meter_id, mode, code, delay_s)
        kind = {"exception": "modbus_exception", "silent": "modbus_silent",
                "slow": "modbus_slow", None: "modbus_cleared"}
        extra: dict[str, Any] = {}
        if mode == "exception":
            extra["code"] = code
        elif mode == "slow":
            extra["delay_s"] = delay_s
        self._fault_entry(("modbus",), kind[mode], meter_id, ts, **extra)

    async def _do_counter_reset(self, ts: int, machine_id: str) -> None:
        machine = self._machines[machine_id]
        before = machine.state
        events = machine.reset_counters(ts)
        await self._publish(events, [])
        self._next_machine[machine_id] = machine.next_event_ms()
        if machine.state != before:  # events due up to ts were processed on the way
            self._refresh_all()

    async def _do_meter_reset(self, ts: int, meter_id: str) -> None:
        meter = self._meter_models[meter_id]
        machine = self._machines[self._coupling[meter_id]]
        events = meter.reset(ts, machine.state)
        await self._publish([], events)
        await self._push_meter(meter)
        self._next_meter[meter_id] = meter.next_event_ms()

    async def _do_clock_skew(self, ts: int, seconds: float) -> None:
        self.clock.skew_ms = round(seconds * 1000)
        self._fault_entry(("opcua", "modbus"), "clock_skew", None, ts, skew_s=seconds)

    # ------------------------------------------------------------------ model clock
    async def _run(self) -> None:
        try:
            while True:
                if not self._frozen:
                    async with self._lock:
                        if not self._frozen:
                            now = self.clock.now_ms()
                            self._note_lag(now)
                            await self._advance(now)
                            self._flush()
                nxt = self._next_instant_ms()
                delay = 0.25 if nxt is None else self.clock.wall_seconds_until(nxt)
                await asyncio.sleep(min(delay, 0.25))
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self._error = err
            _log.exception("simulated plant stopped")
            raise

    def _note_lag(self, now_ms: int) -> None:
        due = self._next_instant_ms()
        self._lag_ms = 0 if due is None else max(0, now_ms - due)
        self._max_lag_ms = max(self._max_lag_ms, self._lag_ms)
        if self._lag_ms >= _LAG_WARNING_MS:
            mono = time.monotonic()
            if self._lag_warned_at is None or mono - self._lag_warned_at >= 60:
                self._lag_warned_at = mono
                _log.warning("the simulated plant runs %.1f s behind its schedule (CPU "
                             "too slow for %d machines?)", self._lag_ms / 1000,
                             len(self._machines))

    def _refresh_all(self) -> None:
        self._next_machine = {mid: m.next_event_ms() for mid, m in self._machines.items()}
        self._next_meter = {mid: m.next_event_ms() for mid, m in self._meter_models.items()}

    def _next_event_ms(self) -> int | None:
        """The next instant any model is due (cached per model, refreshed when it runs)."""
        times = [t for t in self._next_machine.values() if t is not None]
        times += self._next_meter.values()
        if self._next_telemetry is not None:
            times.append(self._next_telemetry)
        return min(times) if times else None

    def _next_fault_ms(self) -> int | None:
        if not self._fault_queue:
            return None
        return max(self._model_ms, self._fault_queue[0][0] + self.clock.skew_ms)

    def _next_instant_ms(self) -> int | None:
        times = [t for t in (self._next_event_ms(), self._next_fault_ms()) if t is not None]
        return min(times) if times else None

    async def _advance(self, until_ms: int) -> None:
        while True:
            nxt = self._next_event_ms()
            fault_at = self._next_fault_ms()
            if fault_at is not None and fault_at <= until_ms and (nxt is None or fault_at < nxt):
                _, _, action = heapq.heappop(self._fault_queue)
                self._model_ms = max(self._model_ms, fault_at)
                await action(fault_at)
                continue
            if nxt is None or nxt > until_ms:
                break
            await self._step(nxt)
        self._model_ms = max(self._model_ms, until_ms)

    async def _step(self, ts_ms: int) -> None:
        machine_events: list[MachineEvent] = []
        state_changed: set[str] = set()
        for machine_id, due_ms in self._next_machine.items():
            if due_ms is None or due_ms > ts_ms:
                continue
            machine = self._machines[machine_id]
            before = machine.state
            machine_events += machine.advance_to(ts_ms)
            self._next_machine[machine_id] = machine.next_event_ms()
            if machine.state != before:
                state_changed.add(machine_id)
        meter_events: list[MeterEvent] = []
        to_push: list[Meter] = []
        for meter_id, due_ms in self._next_meter.items():
            machine_id = self._coupling[meter_id]
            if due_ms > ts_ms and machine_id not in state_changed:
                continue
            meter = self._meter_models[meter_id]
            meter_events += meter.advance_to(ts_ms, self._machines[machine_id].state)
            self._next_meter[meter_id] = meter.next_event_ms()
            to_push.append(meter)
        self._model_ms = max(self._model_ms, ts_ms)
        await self._publish(machine_events, meter_events)
        for meter in to_push:
            await self._push_meter(meter)
        if self._next_telemetry is not None and self._next_telemetry <= ts_ms:
            every = self._telemetry_every_ms
            self._next_telemetry = (ts_ms // every + 1) * every
            await self._publish_telemetry(ts_ms)

    async def _publish_telemetry(self, ts_ms: int) -> None:
        """The live spindle readings of every cutting machine (state changes and parts
        write them too, so a machine that stops cutting is served 0 already)."""
        opcua = self._opcua
        for machine in self._machines.values():
            if machine.state != "producing":
                continue
            rpm, load = machine.spindle_at(ts_ms)
            # IsRotating stays true while cutting: the state change wrote it.
            await opcua.write_many(machine.id, (("spindle_speed", rpm),
                                                ("spindle_load", load)), ts_ms, derived=False)

    async def _injection_instant(self) -> int:
        if not self._frozen and not self.clock.manual:
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
                await opcua.write_many(dev, (
                    ("state", STATE_CODES[event.state]),
                    ("operation_mode", OPERATION_MODE_CODES[event.state]),
                    ("program_state", event.program_state),
                    ("spindle_speed", event.spindle_rpm),
                    ("spindle_load", event.spindle_load_pct),
                    ("power_on_s", event.power_on_s)), ts)
            elif isinstance(event, PartDone):
                values: list[tuple[str, Any]] = [] if event.good else [
                    ("parts_scrap", event.parts_scrap)]
                values += [("parts_total", event.parts_total),
                           ("spindle_speed", event.spindle_rpm),
                           ("spindle_load", event.spindle_load_pct),
                           ("power_on_s", event.power_on_s)]
                await opcua.write_many(dev, values, ts)
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
    def _at(self, base_ms: int, seconds: float, action: Callable[[int], Awaitable[None]]) -> None:
        self._fault_seq += 1
        heapq.heappush(self._fault_queue,
                       (base_ms + round(seconds * 1000), self._fault_seq, action))

    def _schedule_fault(self, base_ms: int, fault: FaultSpec) -> None:
        """Queue a scenario fault (and its end, with ``duration_s``) at model instants,
        as :data:`FAULTS` says for its kind."""
        action = FAULTS[fault.kind]
        scheduled = ScheduledFault(fault, self.clock.skew_ms / 1000)
        start, end = action.start, action.end
        self._at(base_ms, fault.at_s, lambda ts: start(self, scheduled, ts))
        duration = fault.duration_s or action.ends_after_s
        if end is not None and duration:
            self._at(base_ms, fault.at_s + duration, lambda ts: end(self, scheduled, ts))


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A scenario fault as it was queued, with what its end restores."""

    spec: FaultSpec
    skew_before_s: float
    """The clock skew when the fault was queued: what the end of a ``clock_skew`` sets."""

    @property
    def target(self) -> str:
        """The machine or meter id (empty for the faults of the whole plant)."""
        return self.spec.target or ""


FaultStep = Callable[[Plant, ScheduledFault, int], Awaitable[None]]
"""One step of a fault: (plant, fault, model instant in ms)."""


@dataclass(frozen=True, slots=True)
class FaultAction:
    """What one kind of scenario fault does at ``at_s``, and at its end."""

    start: FaultStep
    end: FaultStep | None = None
    """Undoes ``start`` after ``duration_s``; None for a fault that is one event."""
    ends_after_s: float | None = None
    """When the end comes without a ``duration_s`` (None: then it never ends)."""


def _modbus(mode: FaultMode | None) -> FaultStep:
    async def step(plant: Plant, fault: ScheduledFault, ts: int) -> None:
        plant._do_modbus_fault(ts, fault.target, mode, fault.spec.code or 0x04,
                               fault.spec.value or 0.0)
    return step


FAULTS: dict[str, FaultAction] = {
    "opcua_restart": FaultAction(
        start=lambda plant, f, ts: plant._do_opcua_stop(ts),
        end=lambda plant, f, ts: plant._do_opcua_start(ts),
        ends_after_s=2.0),
    "opcua_bad_status": FaultAction(
        start=lambda plant, f, ts: plant._do_opcua_status(
            ts, f.target, f.spec.status or "BadCommunicationError"),
        end=lambda plant, f, ts: plant._do_opcua_status(ts, f.target, None)),
    "opcua_node_missing": FaultAction(
        start=lambda plant, f, ts: plant._do_opcua_hide(ts, f.target, f.spec.node),
        end=lambda plant, f, ts: plant._do_opcua_restore(ts, f.target, f.spec.node)),
    "modbus_exception": FaultAction(start=_modbus("exception"), end=_modbus(None)),
    "modbus_silent": FaultAction(start=_modbus("silent"), end=_modbus(None)),
    "modbus_slow": FaultAction(start=_modbus("slow"), end=_modbus(None)),
    "counter_reset": FaultAction(
        start=lambda plant, f, ts: plant._do_counter_reset(ts, f.target)),
    "meter_reset": FaultAction(
        start=lambda plant, f, ts: plant._do_meter_reset(ts, f.target)),
    "clock_skew": FaultAction(
        start=lambda plant, f, ts: plant._do_clock_skew(ts, f.spec.value or 0.0),
        end=lambda plant, f, ts: plant._do_clock_skew(ts, f.skew_before_s)),
}
"""Every scenario fault kind (:data:`simulators.scenario.FaultKind`): what it does."""
