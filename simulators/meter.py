"""Behaviour model of one energy meter coupled to one machine.

Power is piecewise constant: it changes when the coupled machine changes state (at
that exact instant) and, with a little jitter, at every meter update step. Energy is
the exact integral of that power in integer microjoules; the served energy register
moves only in whole steps of the meter's resolution, at update-step instants, and rolls
over at the modulus. Each register move is one ledger entry, so the ledger's ``kwh``
values sum exactly to the register's movement.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from simulators.scenario import MeterSpec, PowerSpec

__all__ = [
    "UJ_PER_KWH",
    "EnergyStep",
    "Meter",
    "MeterCounterEvent",
    "MeterEvent",
    "MeterImage",
]

UJ_PER_KWH = 3_600_000_000_000
"""Microjoules in one kWh: the integration unit (1 mW for 1 ms is 1 uJ)."""


@dataclass(frozen=True, slots=True)
class EnergyStep:
    """The energy register moved by ``counts`` resolution steps at ``ts_end_ms``.

    ``ts_start_ms`` is the end of the previous step, so steps tile time without gaps.
    """

    ts_start_ms: int
    ts_end_ms: int
    device: str
    counts: int
    register_counts: int
    resolution_kwh: Decimal

    @property
    def kwh(self) -> Decimal:
        """The energy of this step, exact."""
        return self.counts * self.resolution_kwh

    @property
    def register_kwh(self) -> Decimal:
        """The energy register served after this step, exact."""
        return self.register_counts * self.resolution_kwh


@dataclass(frozen=True, slots=True)
class MeterCounterEvent:
    """The energy register was reset (``counter_reset``) or rolled over (``rollover``)."""

    ts_ms: int
    device: str
    kind: Literal["counter_reset", "rollover"]
    before_counts: int
    after_counts: int
    resolution_kwh: Decimal


MeterEvent = EnergyStep | MeterCounterEvent


@dataclass(frozen=True, slots=True)
class MeterImage:
    """Everything a register map needs: the instantaneous readings of the meter."""

    power_w: float
    voltages_v: tuple[float, float, float]
    currents_a: tuple[float, float, float]
    power_factor: float
    frequency_hz: float
    energy_counts: int
    resolution_kwh: Decimal

    @property
    def energy_kwh(self) -> Decimal:
        """The served energy register value in kWh, exact."""
        return self.energy_counts * self.resolution_kwh


class Meter:
    """One simulated three-phase meter; see the module docstring."""

    def __init__(
        self,
        spec: MeterSpec,
        power: PowerSpec,
        rng: random.Random,
        start_ms: int,
        machine_state: str,
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self._power = power
        self._rng = rng
        self._interval_ms = max(1, round(spec.update_interval_s * 1000))
        self.resolution_kwh = spec.resolution_kwh
        self._unit_uj = int(spec.resolution_kwh * UJ_PER_KWH)
        self.modulus_counts = int(spec.effective_modulus_kwh / spec.resolution_kwh)
        self.counts = int(spec.initial_kwh / spec.resolution_kwh)
        self._acc_uj = 0
        self.now_ms = start_ms
        self._entry_start_ms = start_ms
        self._machine_state = machine_state
        self._power_mw = 0
        self._volts: tuple[float, float, float] = (spec.voltage_v,) * 3
        self._freq = spec.frequency_hz
        self._draw(machine_state)

    # ----------------------------------------------------------------- queries
    def next_event_ms(self) -> int:
        """The next update step (aligned to the epoch so all meters tick together)."""
        return (self.now_ms // self._interval_ms + 1) * self._interval_ms

    @property
    def power_w(self) -> float:
        """Current active power in W."""
        return self._power_mw / 1000.0

    def image(self) -> MeterImage:
        """The instantaneous readings to serve."""
        state = self._machine_state
        pf = (self._power.power_factor_producing if state == "producing"
              else self._power.power_factor_other)
        if self._power_mw == 0:
            pf = 1.0
        power_w = self.power_w
        shares = (0.34, 0.33, 0.33)
        currents = tuple(
            round(power_w * share / (volts * pf), 3) if volts > 0 else 0.0
            for share, volts in zip(shares, self._volts, strict=True)
        )
        return MeterImage(
            power_w=power_w,
            voltages_v=self._volts,
            currents_a=(currents[0], currents[1], currents[2]),
            power_factor=pf,
            frequency_hz=self._freq,
            energy_counts=self.counts,
            resolution_kwh=self.resolution_kwh,
        )

    # ----------------------------------------------------------------- driving
    def advance_to(self, ts_ms: int, machine_state: str) -> list[MeterEvent]:
        """Integrate up to ``ts_ms``, step the register at step instants, follow the machine.

        ``machine_state`` is the coupled machine's state from ``ts_ms`` on; the plant
        calls this at every instant where any machine or meter does something, so the
        power before ``ts_ms`` is still the old one.
        """
        events: list[MeterEvent] = []
        if ts_ms < self.now_ms:
            return events
        stepped = False
        while self.next_event_ms() <= ts_ms:
            step_at = self.next_event_ms()
            self._integrate(step_at)
            events += self._step()
            stepped = True
            if step_at < ts_ms:
                self._draw(self._machine_state)
        self._integrate(ts_ms)
        if stepped or machine_state != self._machine_state:
            self._machine_state = machine_state
            self._draw(machine_state)
        return events

    def reset(self, ts_ms: int, machine_state: str) -> list[MeterEvent]:
        """Fault: the energy register drops to 0 at ``ts_ms`` (meter replaced or cleared)."""
        events = self.advance_to(ts_ms, machine_state)
        events.append(MeterCounterEvent(ts_ms, self.id, "counter_reset", self.counts, 0,
                                        self.resolution_kwh))
        self.counts = 0
        self._acc_uj = 0
        self._entry_start_ms = ts_ms
        return events

    # ----------------------------------------------------------------- internals
    def _integrate(self, ts_ms: int) -> None:
        delta = ts_ms - self.now_ms
        if delta > 0:
            self._acc_uj += self._power_mw * delta
            self.now_ms = ts_ms

    def _step(self) -> list[MeterEvent]:
        whole, self._acc_uj = divmod(self._acc_uj, self._unit_uj)
        if whole == 0:
            return []
        events: list[MeterEvent] = []
        before = self.counts
        self.counts = (before + whole) % self.modulus_counts
        events.append(EnergyStep(self._entry_start_ms, self.now_ms, self.id, whole,
                                 self.counts, self.resolution_kwh))
        if before + whole >= self.modulus_counts:
            events.append(MeterCounterEvent(self.now_ms, self.id, "rollover", before,
                                            self.counts, self.resolution_kwh))
        self._entry_start_ms = self.now_ms
        return events

    def _draw(self, state: str) -> None:
        rng = self._rng
        nominal_kw = self._power.kw(state)
        jitter = self._power.jitter
        factor = 1.0 + (rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)
        self._power_mw = max(0, round(nominal_kw * factor * 1_000_000))
        base_v = self.spec.voltage_v
        self._volts = (
            round(base_v * rng.uniform(0.995, 1.005), 2),
            round(base_v * rng.uniform(0.995, 1.005), 2),
            round(base_v * rng.uniform(0.995, 1.005), 2),
        )
        self._freq = round(self.spec.frequency_hz + rng.uniform(-0.02, 0.02), 3)


def line_to_line(volts: float) -> float:
    """Line-to-line voltage of a balanced system from a line-to-neutral voltage."""
    return volts * math.sqrt(3.0)
