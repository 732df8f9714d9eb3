"""The OPC UA collector's per-notification path, fed real asyncua events without a server.

The pump is where every notification passes: item look-up, timestamp choice, duplicate
and stale filtering, clock-skew counting, the direct hand-off to a non-blocking sink and
the bounded-queue fallback. Integration tests cover it against servers; these pin its
rules one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.subscription import (
    DataChangeEvent,
    DataChangeNotif,
    StatusChangeEvent,
    SubscriptionItemData,
)

from collectors.opcua import (
    OpcUaCollector,
    OpcUaSourceSpec,
    OpcUaTag,
    _ConnectionLost,
    _SampleQueue,
    _Session,
)
from rules.types import Sample

NOW = datetime.now(UTC).replace(microsecond=0)


class _Node:
    def __init__(self, nodeid: ua.NodeId) -> None:
        self.nodeid = nodeid


def _item(name: str, handle: int) -> SubscriptionItemData:
    data = SubscriptionItemData()
    data.node = _Node(ua.NodeId(name, 2))  # type: ignore[assignment]
    data.client_handle = handle
    return data


def _event(item: SubscriptionItemData, value: float, ts: datetime | None = NOW,
           status: int = 0, vtype: ua.VariantType = ua.VariantType.Double) -> DataChangeEvent:
    dv = ua.DataValue(ua.Variant(value, vtype),
                      StatusCode=ua.StatusCode(status), SourceTimestamp=ts, ServerTimestamp=ts)
    note = ua.MonitoredItemNotification(ClientHandle=item.client_handle, Value=dv)
    assert item.node is not None
    return DataChangeEvent(node=item.node, value=value, data=DataChangeNotif(item, note))


class _Sub:
    """Yields the given events (or runs the given generator), then ends (as a closed
    subscription does)."""

    def __init__(self, events: Iterable[Any] | Callable[[], AsyncIterator[Any]]) -> None:
        self.events = events

    async def _gen(self) -> AsyncIterator[Any]:
        assert not callable(self.events)
        for event in self.events:
            yield event

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.events() if callable(self.events) else self._gen()


def _collector(*tags: OpcUaTag, skew_s: float = 0) -> OpcUaCollector:
    spec = OpcUaSourceSpec(id="plc", url="opc.tcp://127.0.0.1:1", tags=tags,
                           max_clock_skew_s=skew_s)
    return OpcUaCollector(spec)


def _session(col: OpcUaCollector, events: Iterable[Any]) -> _Session:
    session = _Session(client=None, sub=_Sub(events))  # type: ignore[arg-type]
    for tag in col.spec.tags:
        name = tag.node.rsplit("=", 1)[-1] if tag.node else ""
        session.by_node.setdefault(ua.NodeId(name, 2), []).append(tag)
    return session


async def _pump(col: OpcUaCollector, session: _Session, sink: Any,
                queue: _SampleQueue | None = None) -> _SampleQueue:
    queue = queue or _SampleQueue(100)
    with pytest.raises(_ConnectionLost, match="subscription closed"):
        await col._pump(session, queue, asyncio.Event(), sink)
    return queue


def _drain(q: asyncio.Queue[Sample]) -> list[Sample]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


SPEED = OpcUaTag("cnc-01", "spindle_speed", node="ns=2;s=speed")
COUNT = OpcUaTag("cnc-01", "part_count", node="ns=2;s=count")


async def test_notifications_become_samples_in_order_with_source_timestamps() -> None:
    col = _collector(SPEED, COUNT)
    speed, count = _item("speed", 1), _item("count", 2)
    events = [_event(speed, 100.0), _event(count, 7.0, NOW + timedelta(milliseconds=5)),
              _event(speed, 110.0, NOW + timedelta(seconds=1))]
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, _session(col, events), sink)
    base = int(NOW.timestamp() * 1000)
    assert _drain(sink) == [
        Sample(base, "cnc-01", "spindle_speed", 100.0, "good", "source"),
        Sample(base + 5, "cnc-01", "part_count", 7.0, "good", "source"),
        Sample(base + 1000, "cnc-01", "spindle_speed", 110.0, "good", "source"),
    ]
    health = col.health["cnc-01"]
    assert health.samples == 3 and health.last_sample_ms == base + 1000


async def test_repeats_are_dropped_and_older_values_counted_as_stale() -> None:
    col = _collector(SPEED)
    speed = _item("speed", 1)
    later = NOW + timedelta(seconds=2)
    events = [_event(speed, 1.0, later), _event(speed, 1.0, later),  # repeat: dropped
              _event(speed, 2.0, later),  # same time, new value: kept
              _event(speed, 3.0, NOW)]  # older than delivered: stale
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, _session(col, events), sink)
    assert [s.value for s in _drain(sink)] == [1.0, 2.0]
    assert col.stats.stale_dropped == 1


async def test_an_item_not_yet_recorded_is_skipped_but_not_forgotten() -> None:
    col = _collector(SPEED)
    speed = _item("speed", 1)
    session = _session(col, [])
    tags = session.by_node.pop(ua.NodeId("speed", 2))

    async def events() -> AsyncIterator[Any]:
        yield _event(speed, 1.0)
        # Recorded now (its CreateMonitoredItems answer was being handled).
        session.by_node[ua.NodeId("speed", 2)] = tags
        yield _event(speed, 2.0, NOW + timedelta(seconds=1))

    session.sub = _Sub(events)  # type: ignore[assignment]
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, session, sink)
    assert [s.value for s in _drain(sink)] == [2.0]


async def test_one_node_feeding_two_tags_gives_a_sample_to_each() -> None:
    a = OpcUaTag("cnc-01", "spindle_speed", node="ns=2;s=speed")
    b = OpcUaTag("cnc-02", "spindle_speed", node="ns=2;s=speed")
    col = _collector(a, b)
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, _session(col, [_event(_item("speed", 1), 5.0)]), sink)
    assert [(s.device, s.value) for s in _drain(sink)] == [("cnc-01", 5.0), ("cnc-02", 5.0)]


async def test_status_codes_map_to_quality_and_missing_timestamps_fall_back() -> None:
    col = _collector(SPEED)
    speed = _item("speed", 1)
    past = NOW - timedelta(seconds=10)
    events = [_event(speed, 1.0, past, status=0x40000000),  # Uncertain
              _event(speed, 2.0, past + timedelta(seconds=1), status=0x80000000),  # Bad
              _event(speed, 3.0, None)]  # no source or server timestamp: receive time
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    before = int(datetime.now(UTC).timestamp() * 1000)
    await _pump(col, _session(col, events), sink)
    got = _drain(sink)
    assert [(s.quality, s.ts_source) for s in got] == [
        ("uncertain", "source"), ("bad", "source"), ("good", "receive")]
    assert got[2].ts_ms >= before


async def test_clock_skew_counts_live_notifications_only() -> None:
    col = _collector(SPEED, skew_s=5)
    speed = _item("speed", 1)
    old = NOW - timedelta(minutes=10)
    # The first notification repeats an old value: not skew. A live one that old is.
    events = [_event(speed, 1.0, old), _event(speed, 2.0, old + timedelta(seconds=1))]
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, _session(col, events), sink)
    assert len(_drain(sink)) == 2
    assert col.stats.clock_skew == 1
    assert col.health["cnc-01"].clock_skew == 1


async def test_a_full_sink_sends_samples_through_the_bounded_queue_and_counts_overflow(
) -> None:
    col = _collector(SPEED)
    speed = _item("speed", 1)
    events = [_event(speed, float(i), NOW + timedelta(seconds=i)) for i in range(5)]
    sink: asyncio.Queue[Sample] = asyncio.Queue(maxsize=1)
    queue = _SampleQueue(2)
    resync = asyncio.Event()
    with pytest.raises(_ConnectionLost):
        await col._pump(_session(col, events), queue, resync, sink)
    # One went straight to the sink, two wait in the bounded queue, two were dropped
    # and counted; the forwarder will re-read every node once the queue has drained.
    assert [s.value for s in _drain(sink)] == [0.0]
    assert [queue.get_nowait().value for _ in range(2)] == [1.0, 2.0]
    assert col.stats.overflows == 2 and col.health["cnc-01"].overflows == 2
    assert resync.is_set()


async def test_a_sink_without_put_nowait_gets_everything_through_the_queue() -> None:
    class Blocking:
        def __init__(self) -> None:
            self.got: list[Sample] = []

        async def put(self, sample: Sample, /) -> None:
            self.got.append(sample)

    col = _collector(SPEED)
    speed = _item("speed", 1)
    events = [_event(speed, float(i), NOW + timedelta(seconds=i)) for i in range(3)]
    sink = Blocking()
    queue = await _pump(col, _session(col, events), sink)
    assert sink.got == [] and len(queue.items) == 3
    # The forwarder applies the same filter on the way out.
    for sample in list(queue.items):
        await col._emit(sink, sample)
    await col._emit(sink, sink.got[-1])  # a repeat
    assert [s.value for s in sink.got] == [0.0, 1.0, 2.0]


async def test_a_bad_subscription_status_ends_the_session() -> None:
    col = _collector(SPEED)
    bad = StatusChangeEvent(notification=ua.StatusChangeNotification(
        Status=ua.StatusCode(ua.StatusCodes.BadTimeout)))
    session = _session(col, [bad])
    with pytest.raises(_ConnectionLost, match="BadTimeout"):
        await col._pump(session, _SampleQueue(10), asyncio.Event(), asyncio.Queue())


async def test_a_raw_state_missing_from_the_map_is_a_bad_sample_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = OpcUaTag("cnc-01", "state", node="ns=2;s=state",
                     value_map={"1": "idle", "2": "producing"})
    col = _collector(state)
    item = _item("state", 1)
    events = [_event(item, v, NOW + timedelta(seconds=i), vtype=ua.VariantType.Int32)
              for i, v in enumerate([2, 9, 9, 1])]
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    with caplog.at_level("WARNING", logger="collectors.opcua"):
        await _pump(col, _session(col, events), sink)
    got = [(s.value, s.quality) for s in _drain(sink)]
    assert got == [("producing", "good"), ("9", "bad"), ("9", "bad"), ("idle", "good")]
    assert col.health["cnc-01"].errors == 2
    assert "not in value_map" in (col.health["cnc-01"].last_error or "")
    assert sum("not in value_map" in r.getMessage() for r in caplog.records) == 1


def test_silence_is_measured_from_real_publish_responses_not_from_recreates() -> None:
    from asyncua.observer import SubscriptionEvent

    from collectors.opcua import _Heard

    class Sub:
        last_publish_at: float | None = None

    heard, sub = _Heard(), Sub()
    heard.last -= 30  # no notification for 30 s
    assert heard.since(sub) >= 30  # type: ignore[arg-type]
    # A keep-alive the notification hook skipped still shows in last_publish_at.
    sub.last_publish_at = time.monotonic() - 2
    assert 2 <= heard.since(sub) < 3  # type: ignore[arg-type]
    # The library sets last_publish_at when it recreates a stale subscription: that is
    # not the server speaking.
    sub.last_publish_at = time.monotonic()
    heard.on_subscription_event(7, SubscriptionEvent.RECREATED)
    assert heard.since(sub) >= 30  # type: ignore[arg-type]
    heard.on_notification(7, 0)
    assert heard.since(sub) < 1  # type: ignore[arg-type]


async def test_scale_and_offset_turn_a_node_into_the_role_unit() -> None:
    power = OpcUaTag("cnc-01", "power_kw", node="ns=2;s=power", scale=0.001)
    temp = OpcUaTag("cnc-02", "power_kw", node="ns=2;s=power", offset=-1.5)
    col = _collector(power, temp)
    sink: asyncio.Queue[Sample] = asyncio.Queue()
    await _pump(col, _session(col, [_event(_item("power", 1), 12_345.0)]), sink)
    got = {s.device: s.value for s in _drain(sink)}
    assert got["cnc-01"] == pytest.approx(12.345) and got["cnc-02"] == 12_343.5
    assert power.plain is False and SPEED.plain is True
