"""Alarm rules: threshold with hysteresis and minimum duration, state duration, KPI limit.

All timing is by sample time, never by a clock. A condition that has held since ``t0``
is known to hold up to the time the engine has sealed (or up to the next sample that
changes it), so a minimum-duration alarm raises at exactly ``t0 + min_duration`` however
the samples happen to be spaced, and a replay gives the same events.

* Threshold: raises when the value has stayed above ``raise_above`` for
  ``min_duration_s`` (a value exactly at the limit is not above); clears when it falls
  below ``clear_below``; in between nothing changes (hysteresis). A value that drops to
  ``raise_above`` or below before the duration elapses cancels the pending raise.
* State duration: raises when the machine has stayed in ``state`` *longer* than
  ``max_duration_s``; clears when it enters another state. A stretch of unknown state
  (bad quality) neither clears nor restarts the timer: it is no evidence of a change.
* KPI limit: evaluated on each closed record of its ``window`` label for ``machine`` (a
  machine id, or a line id for the line record): raises when the field exceeds
  ``limit``, clears when a later record is at or below it; a null field changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rules.spec import (
    AlarmSpec,
    EngineSpec,
    KpiLimitAlarmSpec,
    StateDurationAlarmSpec,
    ThresholdAlarmSpec,
)
from rules.types import AlarmEvent, KpiRecord


@dataclass(slots=True)
class _AlarmState:
    raised: bool = False
    since: int | None = None  # threshold: above since; state duration: in state since

    def to_json(self) -> list[Any]:
        return [self.raised, self.since]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class AlarmBook:
    """The state of every configured alarm and the events it has produced."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.rules: tuple[AlarmSpec, ...] = spec.alarms
        self.states = [_AlarmState() for _ in self.rules]
        self.events: list[tuple[int, int, AlarmEvent]] = []
        machine_line = {m.id: m.line for m in spec.machines}
        self._where: dict[str, tuple[str | None, str | None]] = {
            m.id: (m.line, m.id) for m in spec.machines
        }
        for meter in spec.meters:
            if meter.machine is not None:
                self._where[meter.id] = (machine_line.get(meter.machine), meter.machine)
            else:
                self._where[meter.id] = (meter.line, None)
        self.threshold_keys: dict[tuple[str, str], list[int]] = {}
        self.state_rules: dict[str, list[int]] = {}
        self.timed: list[int] = []
        for idx, rule in enumerate(self.rules):
            if isinstance(rule, ThresholdAlarmSpec):
                self.threshold_keys.setdefault((rule.device, rule.signal), []).append(idx)
                self.timed.append(idx)
            elif isinstance(rule, StateDurationAlarmSpec):
                self.state_rules.setdefault(rule.machine, []).append(idx)
                self.timed.append(idx)

    def _emit(self, idx: int, ts_ms: int, state: str, value: float | None, message: str) -> None:
        rule = self.rules[idx]
        if isinstance(rule, ThresholdAlarmSpec):
            line, machine = self._where.get(rule.device, (None, None))
        elif isinstance(rule, StateDurationAlarmSpec):
            line, machine = self._where.get(rule.machine, (None, None))
        else:
            line, machine = self._where.get(rule.machine, (rule.machine, None))
        event = AlarmEvent(
            ts_ms=ts_ms,
            site=self.spec.site_id,
            line=line,
            machine=machine,
            rule=rule.name,
            state="raised" if state == "raised" else "cleared",
            severity=rule.severity,
            value=value,
            message=message,
        )
        self.events.append((ts_ms, idx, event))

    def _due(self, idx: int, until_ms: int) -> None:
        rule = self.rules[idx]
        st = self.states[idx]
        if st.raised or st.since is None:
            return
        if isinstance(rule, ThresholdAlarmSpec):
            due = st.since + round(rule.min_duration_s * 1000)
            if due <= until_ms:
                st.raised = True
                self._emit(
                    idx, due, "raised", None,
                    f"{rule.device}.{rule.signal} above {rule.raise_above:g} "
                    f"for {rule.min_duration_s:g} s",
                )
        elif isinstance(rule, StateDurationAlarmSpec):
            due = st.since + round(rule.max_duration_s * 1000)
            if due < until_ms:
                st.raised = True
                self._emit(
                    idx, due, "raised", None,
                    f"{rule.machine} in state {rule.state} longer than {rule.max_duration_s:g} s",
                )

    def advance_to(self, until_ms: int) -> None:
        """Fire the timers of conditions known to have held over all time before ``until_ms``."""
        for idx in self.timed:
            self._due(idx, until_ms)

    def on_value(self, key: tuple[str, str], ts_ms: int, value: object) -> None:
        """A good sample of a signal watched by threshold alarms, in time order."""
        number = _number(value)
        if number is None:
            return
        for idx in self.threshold_keys[key]:
            rule = self.rules[idx]
            assert isinstance(rule, ThresholdAlarmSpec)
            st = self.states[idx]
            self._due(idx, ts_ms)
            if number > rule.raise_above:
                if st.since is None:
                    st.since = ts_ms
                self._due(idx, ts_ms)
            elif st.raised:
                if number < rule.clear_below:
                    st.raised = False
                    st.since = None
                    self._emit(
                        idx, ts_ms, "cleared", number,
                        f"{rule.device}.{rule.signal} below {rule.clear_below:g}",
                    )
            else:
                st.since = None

    def on_state(self, machine: str, ts_ms: int, state: str | None) -> None:
        """A state sample of ``machine`` in time order (None = unknown)."""
        if state is None:
            return
        for idx in self.state_rules.get(machine, ()):
            rule = self.rules[idx]
            assert isinstance(rule, StateDurationAlarmSpec)
            st = self.states[idx]
            self._due(idx, ts_ms)
            if state == rule.state:
                if st.since is None:
                    st.since = ts_ms
            else:
                if st.raised:
                    self._emit(idx, ts_ms, "cleared", None, f"{machine} left state {rule.state}")
                st.raised = False
                st.since = None

    def on_record(self, record: KpiRecord) -> None:
        """A closed KPI record; checks the KPI-limit alarms that watch it."""
        for idx, rule in enumerate(self.rules):
            if not isinstance(rule, KpiLimitAlarmSpec) or rule.window != record.window:
                continue
            if record.machine is not None:
                if record.machine != rule.machine:
                    continue
            elif record.line is None or record.line != rule.machine:
                continue
            value = getattr(record, rule.field, None)
            number = _number(value)
            if number is None:
                continue
            st = self.states[idx]
            if number > rule.limit and not st.raised:
                st.raised = True
                self._emit(
                    idx, record.window_end_ms, "raised", number,
                    f"{rule.field} {number:g} above {rule.limit:g} ({record.window})",
                )
            elif number <= rule.limit and st.raised:
                st.raised = False
                self._emit(
                    idx, record.window_end_ms, "cleared", number,
                    f"{rule.field} {number:g} back within {rule.limit:g} ({record.window})",
                )

    def drain(self) -> list[AlarmEvent]:
        """Events produced since the last drain, by time then rule order."""
        self.events.sort(key=lambda item: (item[0], item[1]))
        out = [event for _, _, event in self.events]
        self.events.clear()
        return out

    def to_json(self) -> list[list[Any]]:
        """JSON-serialisable alarm states (events are drained by the engine first)."""
        return [st.to_json() for st in self.states]

    def load_json(self, data: list[list[Any]]) -> None:
        """Restore states saved by :meth:`to_json`."""
        for st, (raised, since) in zip(self.states, data, strict=True):
            st.raised = bool(raised)
            st.since = None if since is None else int(since)
