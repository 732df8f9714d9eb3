"""The OPC UA collector's pure parts: DataValue -> Sample, clock skew, duplicate filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua

from collectors.base import CollectorStats
from collectors.opcua.clock import ClockSkew, Skew
from collectors.opcua.convert import SampleConverter, plain_value, quality, timestamp_ms
from collectors.opcua.dedup import Dedup
from collectors.opcua.spec import OpcUaTag
from rules.types import Sample

T0 = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
SPEED = OpcUaTag("cnc-01", "spindle_speed", node="ns=2;s=speed")
STATE = OpcUaTag("cnc-01", "state", node="ns=2;s=state", value_map={"1": "idle", "2": "producing"})


class Events:
    """Records what the converter asks to be logged."""

    def __init__(self) -> None:
        self.said: list[tuple[str, object]] = []

    def clock_skewed(self, device: str, offset_ms: int) -> None:
        self.said.append(("skewed", (device, offset_ms)))

    def clock_ok(self, device: str) -> None:
        self.said.append(("ok", device))

    def unmapped(self, tag: OpcUaTag, value: object) -> None:
        self.said.append(("unmapped", (tag.signal, value)))


def _dv(value: object, source: datetime | None = T0, server: datetime | None = None,
        status: int = 0, vtype: ua.VariantType = ua.VariantType.Double) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status),
                        SourceTimestamp=source, ServerTimestamp=server)


def _converter(skew_s: float = 0, action: str = "flag") -> tuple[SampleConverter, CollectorStats,
                                                                   Events]:
    stats, events = CollectorStats(name="plc"), Events()
    clock = ClockSkew(skew_s, "receive" if action == "receive" else "flag")
    return SampleConverter(stats, clock, events), stats, events


def test_timestamps_come_from_source_then_server_then_receive() -> None:
    conv, _, _ = _converter()
    assert conv.to_sample(SPEED, _dv(1.5), T0_MS + 20) == Sample(
        T0_MS, "cnc-01", "spindle_speed", 1.5, "good", "source")
    later = T0 + timedelta(seconds=1)
    assert conv.to_sample(SPEED, _dv(1.5, None, later), T0_MS).ts_source == "server"
    got = conv.to_sample(SPEED, _dv(1.5, None, None), T0_MS + 7)
    assert (got.ts_ms, got.ts_source) == (T0_MS + 7, "receive")
    # MinDateTime is the protocol's "not set"; a naive datetime is UTC.
    unset = datetime(1601, 1, 1, tzinfo=UTC)
    assert conv.to_sample(SPEED, _dv(1.5, unset, None), T0_MS).ts_source == "receive"
    naive = conv.to_sample(SPEED, _dv(1.5, T0.replace(tzinfo=None)), T0_MS)
    assert (naive.ts_ms, naive.ts_source) == (T0_MS, "source")


def test_status_becomes_quality_and_values_become_plain() -> None:
    conv, _, _ = _converter()
    assert conv.to_sample(SPEED, _dv(1.0, status=0x40000000), T0_MS).quality == "uncertain"
    assert conv.to_sample(SPEED, _dv(1.0, status=0x80000000), T0_MS).quality == "bad"
    assert conv.to_sample(SPEED, _dv(True, vtype=ua.VariantType.Boolean), T0_MS).value == 1
    assert quality(None) == "good" and timestamp_ms(None) is None
    assert plain_value(ua.LocalizedText("Auto")) == "Auto"
    assert plain_value(ua.MessageSecurityMode.Sign) == 2
    assert plain_value(b"\x01") == "b'\\x01'"


def test_value_map_and_scale() -> None:
    conv, stats, events = _converter()
    assert conv.to_sample(STATE, _dv(2, vtype=ua.VariantType.Int32), T0_MS).value == "producing"
    for _ in range(2):
        bad = conv.to_sample(STATE, _dv(9, vtype=ua.VariantType.Int32), T0_MS)
        assert (bad.value, bad.quality) == ("9", "bad")
    assert events.said == [("unmapped", ("state", 9))]  # once per episode
    assert stats.devices["cnc-01"].errors == 2
    conv.to_sample(STATE, _dv(1, vtype=ua.VariantType.Int32), T0_MS)
    conv.to_sample(STATE, _dv(9, vtype=ua.VariantType.Int32), T0_MS)
    assert len(events.said) == 2  # a new episode after a mapped value
    kw = OpcUaTag("cnc-01", "power_kw", node="ns=2;s=p", scale=0.001, offset=1.0)
    assert conv.to_sample(kw, _dv(2000.0), T0_MS).value == pytest.approx(3.0)


def test_clock_skew_is_counted_per_sample_and_reported_per_episode() -> None:
    conv, stats, events = _converter(skew_s=5)
    ahead = T0 + timedelta(seconds=60)
    first = conv.to_sample(SPEED, _dv(1.0, ahead), T0_MS)
    conv.to_sample(SPEED, _dv(2.0, ahead), T0_MS, live=True)
    assert (first.ts_ms, first.ts_source, first.quality) == (T0_MS + 60_000, "source", "good")
    assert stats.clock_skew == 2 and stats.devices["cnc-01"].clock_skew == 2
    assert events.said == [("skewed", ("cnc-01", 60_000))]
    # Within the threshold again (a live notification): the episode ends.
    conv.to_sample(SPEED, _dv(3.0, T0), T0_MS + 100, live=True)
    assert events.said[-1] == ("ok", "cnc-01")
    assert stats.devices["cnc-01"].clock_offset_ms == -100


def test_an_old_first_value_is_not_a_skew_but_an_old_live_one_is() -> None:
    conv, stats, _ = _converter(skew_s=5)
    old = T0 - timedelta(hours=3)
    conv.to_sample(SPEED, _dv(1.0, old), T0_MS)
    assert stats.clock_skew == 0
    conv.to_sample(SPEED, _dv(1.0, old), T0_MS, live=True)
    assert stats.clock_skew == 1


def test_receive_action_restamps_skewed_samples() -> None:
    conv, _, _ = _converter(skew_s=5, action="receive")
    got = conv.to_sample(SPEED, _dv(1.0, T0 + timedelta(minutes=5)), T0_MS)
    assert (got.ts_ms, got.ts_source) == (T0_MS, "receive")


def test_clock_skew_verdicts() -> None:
    clock = ClockSkew(1.0)
    assert clock.judge("a", 500, live=True) is Skew.FINE
    assert clock.judge("a", 1500, live=False) is Skew.STARTED
    assert clock.judge("a", 1500, live=False) is Skew.ONGOING
    assert clock.judge("b", -1500, live=False) is Skew.FINE  # a repeated old value
    assert clock.judge("a", -100, live=False) is Skew.FINE  # not live, not ahead: still off
    assert clock.judge("a", 100, live=False) is Skew.CLEARED
    assert ClockSkew(0).judge("a", 10**9, live=True) is Skew.FINE  # 0 turns it off


def test_dedup_drops_repeats_and_stale_samples() -> None:
    stats = CollectorStats(name="plc")
    dedup = Dedup(stats)

    def sample(ts: int, value: float) -> Sample:
        return Sample(ts, "cnc-01", "spindle_speed", value, "good", "source")

    assert dedup.accept(sample(10, 1.0))
    assert not dedup.accept(sample(10, 1.0))  # the same value seen twice
    assert dedup.accept(sample(10, 2.0))  # same time, another value
    assert not dedup.accept(sample(9, 3.0))  # older than delivered
    assert dedup.accept(sample(11, 3.0))
    assert stats.stale_dropped == 1
    health = stats.devices["cnc-01"]
    assert (health.samples, health.last_sample_ms) == (3, 11)
    assert dedup.seen_of("cnc-01", "spindle_speed") is dedup.seen_of("cnc-01", "spindle_speed")
