"""An OPC UA DataValue as a :class:`Sample` (pure: no connection, no clock, no logging).

The sample is stamped with the value's SourceTimestamp, else the server's, else the
receive time (``ts_source`` says which); the status code becomes the quality; a
``value_map`` turns raw codes into names (an unmapped code is a ``bad`` sample) and
``scale``/``offset`` turn numbers into the role's unit. A skewed device clock (see
:mod:`collectors.opcua.clock`) is counted and, with ``clock_skew_action="receive"``,
the sample is stamped with the receive time.

What is counted goes into the collector's stats here (a signal whose values are bad is
``failing`` there until a good one comes); what is to be logged (once per episode) is
told to a :class:`ConversionLog`, so the rules are tested without a logger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, Protocol, cast

from asyncua import ua

from collectors.base import SIGNAL_OK, CollectorStats, RawTap, SignalStatus, count_problem
from collectors.opcua.clock import ClockSkew, Skew
from collectors.opcua.spec import OpcUaTag
from rules.types import Sample

__all__ = ["ConversionLog", "SampleConverter", "plain_value", "quality", "timestamp_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH

_SIMPLE = frozenset({float, int, str})
"""Value types a Sample carries as they are (bool is not one: it becomes 0/1)."""


def quality(status: ua.StatusCode | None) -> Literal["good", "uncertain", "bad"]:
    """A status code's severity as a sample quality (no status: good)."""
    if status is None or status.is_good():
        return "good"
    if status.is_uncertain():
        return "uncertain"
    return "bad"


def timestamp_ms(dt: datetime | None) -> int | None:
    """Epoch milliseconds of an OPC UA timestamp; None when it is not set.

    asyncua gives naive datetimes in UTC for some encodings; MinDateTime (1601) is the
    protocol's "not set".
    """
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt <= _EPOCH:
        return None
    return (dt - _EPOCH) // _MS


def plain_value(raw: Any) -> str | int | float | None:
    """Reduce an OPC UA variant value to what a Sample carries."""
    if raw is None or isinstance(raw, str | float):
        return raw
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, Enum):
        return plain_value(raw.value)
    if isinstance(raw, int):
        return int(raw)
    if isinstance(raw, ua.LocalizedText):
        return raw.Text
    return str(raw)


class ConversionLog(Protocol):
    """What the converter reports once per episode, for the collector to log."""

    def clock_skewed(self, device: str, offset_ms: int) -> None:
        """``device``'s clock went off (``offset_ms``: source minus receive time)."""
        ...

    def clock_ok(self, device: str) -> None:
        """``device``'s clock is within the threshold again."""
        ...

    def unmapped(self, tag: OpcUaTag, value: object) -> None:
        """``tag`` got a raw value its ``value_map`` lacks (first time of an episode)."""
        ...


class SampleConverter:
    """Turns the DataValues of one source into samples, counting into its stats."""

    __slots__ = ("_clock", "_log", "_stats", "_unmapped", "bad", "tap")

    def __init__(self, stats: CollectorStats, clock: ClockSkew, log: ConversionLog) -> None:
        self._stats = stats
        self._clock = clock
        self._log = log
        self._unmapped: set[tuple[str, str]] = set()
        self.bad: set[tuple[str, str]] = set()
        """Signals whose latest value was bad (``failing`` in the stats)."""
        self.tap: RawTap | None = None
        """Sees each value before scale, offset and map (``edge-agent test``)."""

    def to_sample(self, tag: OpcUaTag, dv: ua.DataValue, received_ms: int,
                  live: bool = False) -> Sample:
        """The sample of ``dv`` for ``tag``; ``live`` for a notification after the first
        of its monitored item (only those can show an old timestamp as a skew)."""
        status = dv.StatusCode
        variant = dv.Value
        source = cast(datetime | None, dv.SourceTimestamp)
        clock = self._clock
        if (tag.plain and variant is not None and source is not None
                and source.tzinfo is UTC and (status is None or status.value == 0)):
            # Fast path, the common case: good status, aware source timestamp, unmapped.
            src_ms: int = (source - _EPOCH) // _MS
            if src_ms > 0:
                offset = src_ms - received_ms
                limit = clock.threshold_ms
                if not limit or (-limit <= offset <= limit and not clock.skewed):
                    raw = variant.Value
                    value = raw if type(raw) in _SIMPLE else plain_value(raw)
                    if self.tap is not None:
                        self.tap(tag.device, tag.signal, value)
                    if self.bad:
                        self._good(tag)
                    return Sample(src_ms, tag.device, tag.signal, value, "good", "source")
        ts_source: Literal["source", "server", "receive"] = "source"
        ts = timestamp_ms(dv.SourceTimestamp)
        if ts is None:
            ts, ts_source = timestamp_ms(dv.ServerTimestamp), "server"
        if ts is None:
            ts, ts_source = received_ms, "receive"
        elif clock.threshold_ms:
            offset = ts - received_ms
            verdict = clock.judge(tag.device, offset, live)
            if verdict is Skew.STARTED or verdict is Skew.ONGOING:
                self._count_skew(tag.device, offset, verdict is Skew.STARTED)
                if clock.restamp:
                    ts, ts_source = received_ms, "receive"
            elif verdict is Skew.CLEARED:
                self._stats.device(tag.device).clock_offset_ms = offset
                self._log.clock_ok(tag.device)
        value = plain_value(dv.Value.Value if dv.Value is not None else None)
        if self.tap is not None:
            self.tap(tag.device, tag.signal, value)
        if tag.value_map is not None and value is not None:
            mapped = tag.value_map.get(str(value))
            if mapped is None:
                detail = f"raw value {value!r} is not in value_map"
                if count_problem(self._stats.device(tag.device), self._unmapped, tag.device,
                                 tag.signal, detail):
                    self._log.unmapped(tag, value)
                self._failing(tag, detail)
                return Sample(ts, tag.device, tag.signal, str(value), "bad", ts_source)
            self._unmapped.discard((tag.device, tag.signal))
            value = mapped
        elif not tag.plain and isinstance(value, int | float):
            value = value * tag.scale + tag.offset
        grade = quality(status)
        if grade == "bad":
            self._failing(tag, f"status {status.name}" if status is not None else "bad")
        elif self.bad:
            self._good(tag)
        return Sample(ts, tag.device, tag.signal, value, grade, ts_source)

    def _failing(self, tag: OpcUaTag, detail: str) -> None:
        self.bad.add((tag.device, tag.signal))
        self._stats.set_signal(tag.device, tag.signal, SignalStatus("failing", detail))

    def _good(self, tag: OpcUaTag) -> None:
        key = (tag.device, tag.signal)
        if key in self.bad:
            self.bad.discard(key)
            self._stats.signals[key] = SIGNAL_OK

    def _count_skew(self, device: str, offset_ms: int, first: bool) -> None:
        self._stats.clock_skew += 1
        health = self._stats.device(device)
        health.clock_skew += 1
        health.clock_offset_ms = offset_ms
        if first:
            self._log.clock_skewed(device, offset_ms)
