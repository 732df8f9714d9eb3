"""A machine's state, and optionally its part count, from its electrical power alone.

For a machine without a controller to read (an old press, a saw, a lathe without a
network port) a meter on its supply is often the only signal. Its active power falls
into levels: near zero when the machine is off, a base load when it is on and waiting,
a cutting load when it works. This module turns a machine's ``power_kw`` readings into
the states ``off``, ``idle`` and ``producing`` (it cannot tell setup, breakdowns or
planned stops from idling: those are ``idle``), with:

* **Thresholds per machine**: below ``off_below_kw`` the machine is off, at or above
  ``producing_above_kw`` it produces, in between it idles.
* **Hysteresis** ``hysteresis_kw``: to leave a state the power must pass the threshold
  it came through by that much: ``off`` ends at ``off_below_kw + hysteresis_kw``,
  ``producing`` ends below ``producing_above_kw - hysteresis_kw``. A power hovering
  around a threshold does not toggle the state.
* **Minimum dwell** ``min_dwell_s``: a new level must be read continuously for that long
  (from the first reading at it to a reading at least ``min_dwell_s`` later, with no
  reading of another level in between) before the state changes; the change is dated
  at the reading that confirms it. Every change is therefore late by the dwell plus at
  most one reading interval, so a state's duration is kept (both of its ends are late
  by about as much) while its time moves by that much; a stretch shorter than the dwell
  is not seen at all. With a dwell of 0 every reading decides.

The state is unknown before the first good reading, after a reading of quality ``bad``
or a value that is not a number (flag ``invalid_value``) until the next good one, and
after an observation restart. Coming from unknown, the first good reading sets the
state at once (there is no earlier level to hold against).

**Cycle detection** (optional, ``cycles``): a part is counted each time the power rises
to ``above_kw`` or more and falls back below ``above_kw - hysteresis_kw`` after a time
within ``[min_s, max_s]`` (measured between the first reading at or above and the
first reading below, so within one reading interval of the truth). A rise shorter than
``min_s`` (a spindle test, a jog) or longer than ``max_s`` (a batch run without a pause
between parts, a warm-up) counts nothing: the method fits machines whose power drops
between parts (load and unload, a press stroke) and is wrong for machines that cut
continuously. The part is counted at the falling reading. A bad or invalid reading, or
an observation restart, abandons a rise in progress.

Power readings must come regularly (a polled meter does; an OPC UA subscription should
have no deadband), since the dwell and the cycle lengths are measured between readings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.derived_state import BAD, INVALID, input_number
from rules.types import Sample

__all__ = ["IDLE", "OFF", "POWER_SOURCE", "PRODUCING", "CycleSpec", "PowerDeriver",
           "PowerStateSpec", "classify"]

OFF, IDLE, PRODUCING = "off", "idle", "producing"
POWER_SOURCE = "power"
"""The ``state_source`` of the records of a machine whose state comes from power."""


@dataclass(frozen=True, slots=True)
class CycleSpec:
    """A part is a rise of the power to ``above_kw`` lasting ``min_s`` to ``max_s``."""

    above_kw: float
    min_s: float
    max_s: float


@dataclass(frozen=True, slots=True)
class PowerStateSpec:
    """How a machine's state is read from the ``signal`` of ``device`` (the machine
    itself or the meter on its supply)."""

    device: str
    off_below_kw: float
    producing_above_kw: float
    hysteresis_kw: float = 0.0
    min_dwell_s: float = 0.0
    cycles: CycleSpec | None = None
    signal: str = "power_kw"

    def problems(self) -> list[tuple[str, str]]:
        """``(place, message)`` for every inconsistent value, places relative to the
        machine (``power_state.hysteresis_kw``)."""
        out: list[tuple[str, str]] = []
        where = "power_state"
        values = (self.off_below_kw, self.producing_above_kw, self.hysteresis_kw,
                  self.min_dwell_s)
        if not all(math.isfinite(v) for v in values):
            return [(where, "every threshold must be a finite number")]
        if self.off_below_kw < 0 or self.hysteresis_kw < 0 or self.min_dwell_s < 0:
            out.append((where, "off_below_kw, hysteresis_kw and min_dwell_s must not be "
                               "negative"))
        if self.producing_above_kw <= self.off_below_kw:
            out.append((f"{where}.producing_above_kw",
                        f"{self.producing_above_kw:g} kW must be above off_below_kw "
                        f"({self.off_below_kw:g} kW)"))
        elif self.hysteresis_kw >= self.producing_above_kw - self.off_below_kw:
            out.append((f"{where}.hysteresis_kw",
                        f"{self.hysteresis_kw:g} kW must be smaller than the idle band "
                        f"({self.producing_above_kw - self.off_below_kw:g} kW from "
                        "off_below_kw to producing_above_kw)"))
        c = self.cycles
        if c is not None:
            if not (c.min_s > 0 and c.max_s >= c.min_s):
                out.append((f"{where}.cycles", f"min_s ({c.min_s:g}) must be above 0 and "
                            f"at most max_s ({c.max_s:g})"))
            if not c.above_kw > self.hysteresis_kw:
                out.append((f"{where}.cycles.above_kw",
                            f"{c.above_kw:g} kW must be above hysteresis_kw "
                            f"({self.hysteresis_kw:g} kW)"))
        return out


def classify(spec: PowerStateSpec, power_kw: float, current: str | None) -> str:
    """The level ``power_kw`` reads as, seen from the state ``current`` (hysteresis)."""
    off_until = spec.off_below_kw + (spec.hysteresis_kw if current == OFF else 0.0)
    producing_from = spec.producing_above_kw - (
        spec.hysteresis_kw if current == PRODUCING else 0.0)
    if power_kw >= producing_from:
        return PRODUCING
    if power_kw < off_until:
        return OFF
    return IDLE


class PowerDeriver:
    """The power model applied to one machine's readings, in time order; see the module
    doc. :meth:`update` returns what :class:`rules.derived_state.RuleDeriver` returns,
    with the parts completed by the reading."""

    __slots__ = ("candidate", "cycle_from", "dwell_ms", "max_ms", "min_ms", "since",
                 "spec", "state_now")

    def __init__(self, spec: PowerStateSpec) -> None:
        self.spec = spec
        self.dwell_ms = round(spec.min_dwell_s * 1000)
        cyc = spec.cycles
        self.min_ms = 0 if cyc is None else round(cyc.min_s * 1000)
        self.max_ms = 0 if cyc is None else round(cyc.max_s * 1000)
        self.state_now: str | None = None
        self.candidate: str | None = None
        self.since: int | None = None
        self.cycle_from: int | None = None

    def state(self) -> str | None:
        """The confirmed state (None: unknown)."""
        return self.state_now

    def update(self, sample: Sample) -> tuple[str | None, str | None, int]:
        """Apply one reading: ``(state from now on, problem, parts completed)``."""
        if sample.signal != self.spec.signal:
            return self.state_now, None, 0
        if sample.quality == "bad":
            self.reset()
            return None, BAD, 0
        power = input_number(sample.value)
        if power is None:
            self.reset()
            return None, INVALID, 0
        ts = sample.ts_ms
        level = classify(self.spec, power, self.state_now)
        if self.state_now is None or level == self.state_now:
            self.state_now = level
            self.candidate = self.since = None
        else:
            if level != self.candidate or self.since is None:
                self.candidate, self.since = level, ts
            if ts - self.since >= self.dwell_ms:
                self.state_now = level
                self.candidate = self.since = None
        return self.state_now, None, self._cycle(power, ts)

    def _cycle(self, power: float, ts: int) -> int:
        cyc = self.spec.cycles
        if cyc is None:
            return 0
        if power >= cyc.above_kw:
            if self.cycle_from is None:
                self.cycle_from = ts
            return 0
        if power < cyc.above_kw - self.spec.hysteresis_kw and self.cycle_from is not None:
            length = ts - self.cycle_from
            self.cycle_from = None
            return 1 if self.min_ms <= length <= self.max_ms else 0
        return 0

    def reset(self) -> None:
        """Unknown from now on (a bad reading, an observation restart)."""
        self.state_now = self.candidate = None
        self.since = self.cycle_from = None

    def to_json(self) -> dict[str, Any]:
        """The model's state, for a checkpoint."""
        return {"state": self.state_now, "candidate": self.candidate, "since": self.since,
                "cycle_from": self.cycle_from}

    def load_json(self, data: Mapping[str, Any] | None) -> None:
        """Continue from :meth:`to_json` output (anything unreadable: unknown)."""
        self.reset()
        if not isinstance(data, Mapping):
            return
        levels = (OFF, IDLE, PRODUCING)
        state, candidate = data.get("state"), data.get("candidate")
        since, cycle_from = data.get("since"), data.get("cycle_from")
        self.state_now = state if state in levels else None
        if candidate in levels and isinstance(since, int):
            self.candidate, self.since = candidate, since
        self.cycle_from = cycle_from if isinstance(cycle_from, int) else None
