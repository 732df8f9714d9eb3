"""OPC UA collector against a real asyncua server on loopback."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from opcua_modbus_servers import (
    CNC_NS,
    free_port,
    running,
    start_cnc_server,
    wait_for_sample,
    wait_until,
)

from collectors.opcua import OpcUaCollector, OpcUaSourceSpec, OpcUaTag
from rules.types import Sample

pytestmark = pytest.mark.integration

PARTS = f"nsu={CNC_NS};s=cnc-01.PartsProducedInLifetime"
MACHINE = "Objects/cnc:Machines/cnc:cnc-01"
STATE_MAP = {"0": "off", "1": "idle", "2": "producing", "3": "setup",
             "4": "unplanned_down", "5": "planned_down"}


def _spec(url: str, tags: tuple[OpcUaTag, ...], **kw: object) -> OpcUaSourceSpec:
    return OpcUaSourceSpec(
        id="cnc-server", url=url, tags=tags, namespaces={"cnc": CNC_NS},
        publishing_interval_ms=50, timeout_s=2.0, watchdog_s=1.0,
        reconnect_min_s=0.2, reconnect_max_s=0.5, **kw)  # type: ignore[arg-type]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


async def test_initial_read_then_changes_with_source_timestamps() -> None:
    srv = await start_cnc_server(free_port())
    try:
        # Later than the server's start-up values (stamped 'now'), or the collector would
        # rightly drop the changes below as older than what it already delivered.
        t0 = datetime.now(UTC).replace(microsecond=123000) + timedelta(seconds=2)
        await srv.set("cnc-01.parts", 41, ua.VariantType.UInt32, t0)
        tags = (
            OpcUaTag("cnc-01", "parts_total", node=PARTS),
            OpcUaTag("cnc-01", "state", node=f"ns={srv.ns};s=cnc-01.MachineState",
                     value_map=STATE_MAP),
        )
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        collector = OpcUaCollector(_spec(srv.url, tags))
        async with running(collector, sink):
            first = await wait_for_sample(sink, lambda s: s.signal == "parts_total")
            assert (first.value, first.ts_ms, first.ts_source, first.quality) == (
                41, _ms(t0), "source", "good")
            state = await wait_for_sample(sink, lambda s: s.signal == "state")
            assert state.value == "off"
            await asyncio.sleep(0.3)  # the first notification repeats the read: not re-emitted
            assert sink.empty()
            for n in range(42, 47):
                await srv.set("cnc-01.parts", n, ua.VariantType.UInt32, t0 + timedelta(seconds=n))
                got = await wait_for_sample(sink, lambda s: s.signal == "parts_total")
                assert got.value == n
                assert got.ts_ms == _ms(t0 + timedelta(seconds=n))
            await srv.set("cnc-01.state", 2, ua.VariantType.Int32, t0 + timedelta(seconds=60))
            assert (await wait_for_sample(sink, lambda s: s.signal == "state")).value == "producing"
            # Unmapped raw value: bad sample, counted.
            await srv.set("cnc-01.state", 9, ua.VariantType.Int32, t0 + timedelta(seconds=61))
            bad = await wait_for_sample(sink, lambda s: s.signal == "state")
            assert (bad.quality, bad.value) == ("bad", "9")
            assert collector.health["cnc-01"].errors >= 1
            assert srv.monitored_item_count() == 2
            assert collector.stats.connected
    finally:
        await srv.server.stop()


async def test_server_timestamp_fallback_and_status_quality() -> None:
    srv = await start_cnc_server(free_port())
    try:
        node = f"ns={srv.ns};s=cnc-01.PartsProducedInLifetime"
        tags = (OpcUaTag("cnc-01", "parts_total", node=node),)
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        async with running(OpcUaCollector(_spec(srv.url, tags)), sink):
            await wait_for_sample(sink, lambda s: True)
            dv = ua.DataValue(ua.Variant(7, ua.VariantType.UInt32),
                              StatusCode=ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue),
                              ServerTimestamp=datetime.now(UTC))
            await srv.nodes["cnc-01.parts"].write_value(dv)
            got = await wait_for_sample(sink, lambda s: s.value == 7)
            assert got.quality == "uncertain"
            assert got.ts_source in ("server", "source")  # the server may stamp a source time
    finally:
        await srv.server.stop()


async def test_browse_path_and_nsu_resolution_with_shifted_namespace_index() -> None:
    srv = await start_cnc_server(free_port(), machines=("cnc-01", "cnc-02"), extra_namespaces=3)
    try:
        assert srv.ns > 3
        tags = (
            OpcUaTag("cnc-02", "parts_total",
                     browse_path="Objects/cnc:Machines/cnc:cnc-02/cnc:Production/cnc:PartsProducedInLifetime"),
            OpcUaTag("cnc-02", "state",
                     browse_path="Objects/cnc:Machines/cnc:cnc-02/cnc:Monitoring/cnc:MachineTool/cnc:MachineState",
                     value_map=STATE_MAP),
            OpcUaTag("cnc-01", "parts_bad", node=f"nsu={CNC_NS};s=cnc-01.PartsScrapInLifetime"),
        )
        await srv.set("cnc-02.parts", 1000, ua.VariantType.UInt32, datetime.now(UTC))
        await srv.set("cnc-01.scrap", 3, ua.VariantType.UInt32, datetime.now(UTC))
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        async with running(OpcUaCollector(_spec(srv.url, tags)), sink):
            got: dict[tuple[str, str], Sample] = {}
            while len(got) < 3:
                s = await wait_for_sample(sink, lambda s: True)
                got[(s.device, s.signal)] = s
            assert got[("cnc-02", "parts_total")].value == 1000
            assert got[("cnc-02", "state")].value == "off"
            assert got[("cnc-01", "parts_bad")].value == 3
            await srv.set("cnc-02.state", 3, ua.VariantType.Int32, datetime.now(UTC))
            assert (await wait_for_sample(sink, lambda s: s.signal == "state")).value == "setup"
    finally:
        await srv.server.stop()


async def test_unknown_node_reported_once_and_picked_up_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv = await start_cnc_server(free_port())
    try:
        tags = (
            OpcUaTag("cnc-01", "parts_total", node=f"ns={srv.ns};s=cnc-01.PartsProducedInLifetime"),
            OpcUaTag("cnc-01", "parts_bad", node=f"ns={srv.ns};s=cnc-01.NotYet"),
            OpcUaTag("cnc-03", "parts_total",
                     browse_path="Objects/cnc:Machines/cnc:cnc-03/cnc:Production/cnc:PartsProducedInLifetime"),
        )
        sink: asyncio.Queue[Sample] = asyncio.Queue(100)
        collector = OpcUaCollector(_spec(srv.url, tags))
        async with running(collector, sink):
            await wait_for_sample(sink, lambda s: s.signal == "parts_total")
            await asyncio.sleep(1.5)  # several retries
            missing_logs = [r for r in caplog.records if "unavailable" in r.getMessage()
                            and "NotYet" in r.getMessage()]
            assert len(missing_logs) == 1
            assert collector.stats.connected  # an unknown node is not fatal
            assert srv.monitored_item_count() == 1
            # The node appears later: subscribed without a reconnect.
            prod = await srv.server.nodes.objects.get_child(
                [f"{srv.ns}:Machines", f"{srv.ns}:cnc-01", f"{srv.ns}:Production"])
            var = await prod.add_variable(ua.NodeId("cnc-01.NotYet", srv.ns),
                                          ua.QualifiedName("NotYet", srv.ns),
                                          ua.Variant(5, ua.VariantType.UInt32))
            got = await wait_for_sample(sink, lambda s: s.signal == "parts_bad")
            assert got.value == 5
            await var.write_value(ua.DataValue(ua.Variant(6, ua.VariantType.UInt32),
                                               SourceTimestamp=datetime.now(UTC)))
            assert (await wait_for_sample(sink, lambda s: s.signal == "parts_bad")).value == 6
            assert srv.monitored_item_count() == 2
            assert collector.stats.reconnects == 0
    finally:
        await srv.server.stop()


async def test_server_restart_resumes_without_duplicate_monitored_items(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Also: a routine restart leaves one line down and one up in the INFO log, without
    asyncua's "Publish iteration crashed" traceback or its lines on the dead session."""
    caplog.set_level(logging.INFO)
    port = free_port()
    srv = await start_cnc_server(port)
    tags = (
        OpcUaTag("cnc-01", "parts_total", node=PARTS),
        OpcUaTag("cnc-01", "state",
                 browse_path=f"{MACHINE}/cnc:Monitoring/cnc:MachineTool/cnc:MachineState",
                 value_map=STATE_MAP),
    )
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(_spec(srv.url, tags))
    try:
        async with running(collector, sink):
            await wait_for_sample(sink, lambda s: s.signal == "parts_total")
            await srv.set("cnc-01.parts", 10, ua.VariantType.UInt32, datetime.now(UTC))
            await wait_for_sample(sink, lambda s: s.value == 10)
            await srv.server.stop()
            await wait_until(lambda: not collector.stats.connected, within=15)
            assert not collector.health["cnc-01"].connected
            assert collector.health["cnc-01"].failing_since_ms is not None
            await asyncio.sleep(1.0)  # a few failed reconnects
            # Restarted server numbers its namespaces differently: nsu and browse paths
            # must be resolved again.
            srv = await start_cnc_server(port, extra_namespaces=2)
            await srv.set("cnc-01.parts", 11, ua.VariantType.UInt32, datetime.now(UTC))
            got = await wait_for_sample(sink, lambda s: s.value == 11, within=15)
            assert got.signal == "parts_total"
            await wait_until(lambda: collector.stats.connected)
            await srv.set("cnc-01.state", 2, ua.VariantType.Int32, datetime.now(UTC))
            await wait_for_sample(sink, lambda s: s.signal == "state" and s.value == "producing")
            for n in range(12, 15):
                await srv.set("cnc-01.parts", n, ua.VariantType.UInt32, datetime.now(UTC))
            values = []
            while len(values) < 3:
                s = await wait_for_sample(sink, lambda s: s.signal == "parts_total")
                values.append(s.value)
            assert values == [12, 13, 14]
            await asyncio.sleep(0.3)
            assert sink.empty()  # no duplicate deliveries
            assert srv.monitored_item_count() == 2
            assert collector.stats.reconnects == 1
            assert collector.health["cnc-01"].failing_since_ms is None
            down = [r for r in caplog.records if "unavailable" in r.getMessage()]
            up = [r for r in caplog.records if "again after" in r.getMessage()]
            assert len(down) == 1 and len(up) == 1
            client_side = [f"{r.name}: {r.getMessage()}" for r in caplog.records
                           if r.name.startswith(("asyncua.client", "asyncua.uaprotocol"))]
            assert client_side == []
            assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    finally:
        await srv.server.stop()


async def test_reconnect_to_a_surviving_server_keeps_one_set_of_items() -> None:
    """A dropped connection (server still up) gives a fresh session, and no duplicate data.

    The old session's items stay on the server until its session timeout (the client
    cannot close a session over a dead channel); then exactly one set remains.
    """
    srv = await start_cnc_server(free_port())
    tags = (OpcUaTag("cnc-01", "parts_total", node=PARTS),)
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(_spec(srv.url, tags, session_timeout_s=2.0))
    try:
        async with running(collector, sink):
            await wait_for_sample(sink, lambda s: True)
            await wait_until(lambda: srv.monitored_item_count() == 1)
            for proto in list(srv.server.bserver.clients):
                proto.transport.abort()  # drop the TCP connection, keep the session
            await wait_until(lambda: collector.stats.reconnects >= 1, within=15)
            await srv.set("cnc-01.parts", 77, ua.VariantType.UInt32, datetime.now(UTC))
            await wait_for_sample(sink, lambda s: s.value == 77)
            await asyncio.sleep(0.3)
            assert sink.empty()
            # The server expires the orphaned session (minimum 5 s on asyncua).
            await wait_until(lambda: srv.monitored_item_count() == 1, within=15)
    finally:
        await srv.server.stop()


async def test_a_silent_subscription_forces_a_reconnect_but_a_quiet_one_does_not(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Quiet: nothing changes, the server sends keep-alives, the session stays. Silent:
    the server still answers reads (the liveness probe passes) but publishes nothing,
    not even keep-alives; the collector must notice and reconnect."""
    from asyncua.server.internal_subscription import InternalSubscription

    caplog.set_level(logging.INFO, logger="collectors.opcua")
    srv = await start_cnc_server(free_port())
    tags = (OpcUaTag("cnc-01", "parts_total", node=PARTS),)
    sink: asyncio.Queue[Sample] = asyncio.Queue(1000)
    collector = OpcUaCollector(_spec(srv.url, tags))  # keep-alive 1 s: silent after 4 s
    try:
        async with running(collector, sink):
            await wait_for_sample(sink, lambda s: s.signal == "parts_total")
            await asyncio.sleep(6.0)
            assert collector.stats.connected and collector.stats.reconnects == 0
            assert not any("silent" in r.getMessage() for r in caplog.records)

            async def publish_nothing(self: object, requestdata: object = None) -> bool:
                return False

            monkeypatch.setattr(InternalSubscription, "publish_results", publish_nothing)
            await wait_until(lambda: collector.stats.reconnects >= 1, within=20)
            down = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
            assert down and "subscription silent for" in down[0], down
            monkeypatch.undo()
            await srv.set("cnc-01.parts", 42, ua.VariantType.UInt32, datetime.now(UTC))
            await wait_for_sample(sink, lambda s: s.value == 42, within=20)
            await wait_until(lambda: collector.stats.connected)
            assert collector.health["cnc-01"].failing_since_ms is None
    finally:
        monkeypatch.undo()
        await srv.server.stop()


async def test_bounded_queue_overflow_is_counted_and_state_resynced() -> None:
    srv = await start_cnc_server(free_port())
    try:
        tags = (OpcUaTag("cnc-01", "parts_total", node=PARTS),)
        sink: asyncio.Queue[Sample] = asyncio.Queue(1)  # a consumer that is not reading
        collector = OpcUaCollector(_spec(srv.url, tags, queue_size=1000), queue_maxsize=5)
        async with running(collector, sink):
            await wait_until(lambda: sink.full())
            base = datetime.now(UTC)
            for n in range(1, 51):
                ts = base + timedelta(milliseconds=n)
                await srv.set("cnc-01.parts", n, ua.VariantType.UInt32, ts)
            await wait_until(lambda: collector.stats.overflows > 0)
            assert collector.health["cnc-01"].overflows > 0
            # Now the consumer catches up; the latest state still arrives.
            seen = []
            async with asyncio.timeout(10):
                while not seen or seen[-1] != 50:
                    seen.append((await sink.get()).value)
            assert seen == sorted(seen)  # never backwards
            dropped = collector.stats.overflows
            assert len(seen) < 51 and dropped > 0
    finally:
        await srv.server.stop()


async def test_unreachable_server_is_data_not_a_crash() -> None:
    tags = (OpcUaTag("cnc-01", "parts_total", node="ns=2;s=x"),)
    collector = OpcUaCollector(_spec(f"opc.tcp://127.0.0.1:{free_port()}/", tags))
    sink: asyncio.Queue[Sample] = asyncio.Queue(10)
    async with running(collector, sink):
        await wait_until(lambda: collector.health["cnc-01"].errors >= 2)
        health = collector.health["cnc-01"]
        assert not health.connected and health.failing_since_ms is not None
        assert health.last_error
