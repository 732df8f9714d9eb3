"""Behaviour model of one CNC machine: a discrete-event state machine in integer ms.

Pure apart from its seeded random generator: time is passed in, never read, so the
same seed and the same sequence of ``advance_to`` calls give the same history. The
servers only publish what this model emits; the ledger records the same events, which
is what makes the ledger ground truth.

Work loop while scheduled: a *job* is one program and a batch size; it starts with a
setup, then cycles (one part each, scrap with a probability), then an idle gap before
the next job. Breakdowns arrive after an exponentially distributed amount of producing
time (MTBF) and take a repair time (MTTR); the interrupted cycle resumes afterwards.
Outside shifts the machine is ``off``, in breaks ``planned_down``; an activity in
progress is paused there and resumed when work resumes.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from typing import Literal

from simulators.scenario import Distribution, MachineSpec, ProgramSpec
from simulators.schedule import Calendar

__all__ = [
    "OPERATION_MODE_CODES",
    "PROGRAM_STATE_CODES",
    "PROGRAM_STATE_NAMES",
    "STATE_CODES",
    "CounterEvent",
    "Machine",
    "MachineEvent",
    "PartDone",
    "ProgramChange",
    "StateChange",
    "draw_ms",
]

State = Literal["off", "idle", "producing", "setup", "unplanned_down", "planned_down"]
Activity = Literal["setup", "cycle", "gap", "repair"]

STATE_CODES: dict[str, int] = {
    "off": 0,
    "idle": 1,
    "producing": 2,
    "setup": 3,
    "unplanned_down": 4,
    "planned_down": 5,
}
"""Int32 codes of ``Monitoring/MachineTool/MachineState`` (fixed contract)."""

OPERATION_MODE_CODES: dict[str, int] = {
    "off": 5,
    "idle": 1,
    "producing": 1,
    "setup": 2,
    "unplanned_down": 4,
    "planned_down": 1,
}
"""``Monitoring/MachineTool/OperationMode`` as the OPC 40501-1 ``MachineOperationMode``
enumeration: 0 Manual, 1 Automatic, 2 Setup, 3 AutoWithManualIntervention, 4 Service,
5 Other. The mode selector stays on Automatic through idle time and planned breaks; a
repair is Service; a machine that is off reports Other."""

PROGRAM_STATE_CODES: dict[str, int] = {"ended": 0, "running": 1, "interrupted": 2, "loading": 3}
"""``Production/ActiveProgram/State``: 0 ended/none, 1 running, 2 interrupted, 3 loading
(setup in progress)."""

PROGRAM_STATE_NAMES: dict[int, str] = {0: "Ended", 1: "Running", 2: "Interrupted",
                                       3: "Initializing"}
"""``Production/ActiveProgram/State/CurrentState``: the state names of the OPC 40501-1
``ProductionStateMachineType`` for each ``PROGRAM_STATE_CODES`` value."""

_WOBBLE_PERIOD_MS = 1_700
"""Period of the live spindle readings' wobble (see :meth:`Machine.spindle_at`)."""

_ACTIVITY_STATE: dict[Activity, State] = {
    "setup": "setup",
    "cycle": "producing",
    "gap": "idle",
    "repair": "unplanned_down",
}


@dataclass(frozen=True, slots=True)
class StateChange:
    """The machine's observable state changed at ``ts_ms``."""

    ts_ms: int
    device: str
    state: str
    program_state: int
    spindle_rpm: float
    spindle_load_pct: float
    power_on_s: int


@dataclass(frozen=True, slots=True)
class PartDone:
    """A cycle completed at ``ts_ms``; counters are the values served afterwards."""

    ts_ms: int
    device: str
    good: bool
    parts_total: int
    parts_scrap: int
    program: str
    spindle_rpm: float
    spindle_load_pct: float
    power_on_s: int


@dataclass(frozen=True, slots=True)
class ProgramChange:
    """A new job started with another program (before its setup)."""

    ts_ms: int
    device: str
    program: str


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A part counter was reset (``counter_reset``) or wrapped (``rollover``)."""

    ts_ms: int
    device: str
    kind: Literal["counter_reset", "rollover"]
    signal: Literal["parts_total", "parts_scrap"]
    before: int
    after: int


MachineEvent = StateChange | PartDone | ProgramChange | CounterEvent


def draw_ms(dist: Distribution, rng: random.Random) -> int:
    """One duration from ``dist`` in whole milliseconds (never negative)."""
    if dist.kind == "exponential":
        value = rng.expovariate(1.0 / dist.mean) if dist.mean > 0 else 0.0
    elif dist.kind == "uniform":
        assert dist.min is not None and dist.max is not None
        value = rng.uniform(dist.min, dist.max)
    else:
        value = rng.gauss(dist.mean, dist.sd) if dist.sd > 0 else dist.mean
    if dist.min is not None:
        value = max(value, dist.min)
    if dist.max is not None:
        value = min(value, dist.max)
    return max(0, round(value * 1000))


class Machine:
    """One simulated machine; see the module docstring for the behaviour."""

    def __init__(
        self, spec: MachineSpec, calendar: Calendar, rng: random.Random, start_ms: int
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self._wobble_phase = zlib.crc32(spec.id.encode()) % 6283 / 1000
        self._calendar = calendar
        self._rng = rng
        self.now_ms = start_ms
        self.parts_total = spec.initial_parts_total
        self.parts_scrap = spec.initial_parts_scrap
        self._power_on_ms = spec.power_on_s * 1000
        self._ttf_ms: int | None = self._draw_ttf()
        self._resume_cycle_ms: int | None = None
        # Start in the middle of a job so the first minutes look like any other.
        self.program: ProgramSpec = self._choose_program()
        low, high = self.program.batch_size
        self._batch_left = rng.randint(low, high)
        self._activity: Activity = "cycle"
        self._remaining_ms = max(1, round(draw_ms(self.program.cycle_time_s, rng) * rng.random()))
        self._new_cycle_draws()
        self._finished_program = self.program.name
        self.state: State = self._observable()

    # ----------------------------------------------------------------- queries
    @property
    def power_on_s(self) -> int:
        """Seconds the machine has been powered (not ``off``), lifetime."""
        return self._power_on_ms // 1000

    def initial_event(self) -> StateChange:
        """The state at the start, for the ledger and the first server write."""
        return self._state_event()

    def spindle_at(self, ts_ms: int) -> tuple[float, float]:
        """Live spindle speed (rpm) and load (%) at ``ts_ms``: 0 unless cutting, else the
        cycle's values with a slow wobble (load +-5 %, speed +-0.2 %).

        A pure function of the instant and the machine id, drawing nothing from the
        random generator: serving live readings, at any rate, leaves the history of
        states and parts exactly as without them.
        """
        if self.state != "producing":
            return 0.0, 0.0
        phase = self._wobble_phase + 2 * math.pi * ts_ms / _WOBBLE_PERIOD_MS
        wobble = math.sin(phase)
        return (round(self._spindle_rpm * (1 + 0.002 * wobble), 1),
                round(min(200.0, self._spindle_load * (1 + 0.05 * wobble)), 1))

    def next_event_ms(self) -> int | None:
        """The next instant at which this machine changes something, if any."""
        candidates: list[int] = []
        edge = self._calendar.next_edge(self.now_ms)
        if edge is not None:
            candidates.append(edge)
        if self._calendar.state_at(self.now_ms) == "scheduled":
            candidates.append(self.now_ms + self._remaining_ms)
            if self._activity == "cycle" and self._ttf_ms is not None:
                candidates.append(self.now_ms + self._ttf_ms)
        return min(candidates) if candidates else None

    # ----------------------------------------------------------------- driving
    def advance_to(self, ts_ms: int) -> list[MachineEvent]:
        """Run the model up to ``ts_ms`` (inclusive) and return what happened, in order."""
        if ts_ms < self.now_ms:
            return []
        events: list[MachineEvent] = []
        guard = 0
        while True:
            nxt = self.next_event_ms()
            if nxt is None or nxt > ts_ms:
                break
            self._elapse(nxt)
            events += self._fire()
            guard += 1
            if guard > 1_000_000:
                raise RuntimeError(f"{self.id}: model does not progress at {self.now_ms}")
        self._elapse(ts_ms)
        return events

    def reset_counters(self, ts_ms: int) -> list[MachineEvent]:
        """Fault: both part counters drop to 0 at ``ts_ms`` (as after a control reboot)."""
        events = self.advance_to(ts_ms)
        events.append(CounterEvent(ts_ms, self.id, "counter_reset", "parts_total",
                                   self.parts_total, 0))
        events.append(CounterEvent(ts_ms, self.id, "counter_reset", "parts_scrap",
                                   self.parts_scrap, 0))
        self.parts_total = 0
        self.parts_scrap = 0
        return events

    # ----------------------------------------------------------------- internals
    def _draw_ttf(self) -> int | None:
        if self.spec.mtbf_s is None:
            return None
        return max(1, round(self._rng.expovariate(1.0 / self.spec.mtbf_s) * 1000))

    def _choose_program(self) -> ProgramSpec:
        programs = self.spec.programs
        return self._rng.choices(programs, weights=[p.weight for p in programs], k=1)[0]

    def _new_cycle_draws(self) -> None:
        rng = self._rng
        self._spindle_rpm = round(self.spec.spindle_speed_rpm * rng.uniform(0.9, 1.1), 1)
        load = self.spec.spindle_load_pct * rng.uniform(0.8, 1.2)
        self._spindle_load = round(min(200.0, load), 1)

    def _observable(self) -> State:
        cal = self._calendar.state_at(self.now_ms)
        if cal == "off":
            return "off"
        if cal == "break":
            return "planned_down"
        return _ACTIVITY_STATE[self._activity]

    def _program_state(self) -> int:
        if self.state == "producing":
            return PROGRAM_STATE_CODES["running"]
        if self.state == "setup":
            return PROGRAM_STATE_CODES["loading"]
        if self._activity in ("cycle", "repair"):
            return PROGRAM_STATE_CODES["interrupted"]
        return PROGRAM_STATE_CODES["ended"]

    def _spindle(self) -> tuple[float, float]:
        if self.state == "producing":
            return self._spindle_rpm, self._spindle_load
        return 0.0, 0.0

    def _state_event(self) -> StateChange:
        rpm, load = self._spindle()
        return StateChange(self.now_ms, self.id, self.state, self._program_state(), rpm, load,
                           self.power_on_s)

    def _elapse(self, ts_ms: int) -> None:
        delta = ts_ms - self.now_ms
        if delta <= 0:
            return
        if self.state != "off":
            self._power_on_ms += delta
        if self._calendar.state_at(self.now_ms) == "scheduled":
            self._remaining_ms -= delta
            if self._activity == "cycle" and self._ttf_ms is not None:
                self._ttf_ms -= delta
        self.now_ms = ts_ms

    def _fire(self) -> list[MachineEvent]:
        events: list[MachineEvent] = []
        if self._calendar.state_at(self.now_ms) == "scheduled":
            if self._remaining_ms <= 0:
                events += self._complete_activity()
            elif self._activity == "cycle" and self._ttf_ms is not None and self._ttf_ms <= 0:
                self._resume_cycle_ms = self._remaining_ms
                self._activity = "repair"
                self._remaining_ms = max(1, draw_ms(self.spec.mttr_s, self._rng))
                self._ttf_ms = None
        new_state = self._observable()
        if new_state != self.state:
            self.state = new_state
            events.append(self._state_event())
        return events

    def _complete_activity(self) -> list[MachineEvent]:
        events: list[MachineEvent] = []
        if self._activity == "cycle":
            counters, good = self._count_part()
            events += counters
            self._batch_left -= 1
            after: list[MachineEvent] = []
            if self._batch_left > 0:
                self._start_cycle()
            else:
                self._start_gap(after)
            # Spindle values describe the work that follows the part (0 unless cutting).
            cutting = self._activity == "cycle"
            rpm = self._spindle_rpm if cutting else 0.0
            load = self._spindle_load if cutting else 0.0
            events.append(PartDone(self.now_ms, self.id, good, self.parts_total,
                                   self.parts_scrap, self._finished_program, rpm, load,
                                   self.power_on_s))
            events += after
        elif self._activity == "setup":
            self._start_cycle()
        elif self._activity == "gap":
            self._start_job(events)
        else:  # repair finished: resume the interrupted cycle
            self._ttf_ms = self._draw_ttf()
            if self._resume_cycle_ms is not None:
                self._activity = "cycle"
                self._remaining_ms = max(1, self._resume_cycle_ms)
                self._resume_cycle_ms = None
            else:
                self._start_cycle()
        return events

    def _start_cycle(self) -> None:
        self._activity = "cycle"
        self._remaining_ms = max(1, draw_ms(self.program.cycle_time_s, self._rng))
        self._new_cycle_draws()

    def _start_gap(self, events: list[MachineEvent]) -> None:
        gap = draw_ms(self.spec.idle_time_s, self._rng)
        if gap <= 0:
            self._start_job(events)
            return
        self._activity = "gap"
        self._remaining_ms = gap

    def _start_job(self, events: list[MachineEvent]) -> None:
        previous = self.program.name
        self.program = self._choose_program()
        low, high = self.program.batch_size
        self._batch_left = self._rng.randint(low, high)
        if self.program.name != previous:
            events.append(ProgramChange(self.now_ms, self.id, self.program.name))
        setup = draw_ms(self.spec.setup_time_s, self._rng)
        if setup <= 0:
            self._start_cycle()
            return
        self._activity = "setup"
        self._remaining_ms = setup

    def _count_part(self) -> tuple[list[MachineEvent], bool]:
        events: list[MachineEvent] = []
        self._finished_program = self.program.name
        p_scrap = self.program.scrap_probability
        if p_scrap is None:
            p_scrap = self.spec.scrap_probability
        good = self._rng.random() >= p_scrap
        modulus = self.spec.counter_modulus
        before = self.parts_total
        self.parts_total = (before + 1) % modulus
        if self.parts_total < before:
            events.append(CounterEvent(self.now_ms, self.id, "rollover", "parts_total",
                                       before, self.parts_total))
        if not good:
            before_scrap = self.parts_scrap
            self.parts_scrap = (before_scrap + 1) % modulus
            if self.parts_scrap < before_scrap:
                events.append(CounterEvent(self.now_ms, self.id, "rollover", "parts_scrap",
                                           before_scrap, self.parts_scrap))
        return events, good
