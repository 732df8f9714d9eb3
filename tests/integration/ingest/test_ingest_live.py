"""The ingest against a real Mosquitto and a real InfluxDB: land, dedupe, dead-letter, outage."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.ingest.config import IngestConfig
from agent.ingest.deadletter import read_dead_letters
from agent.ingest.points import placeholder_tags
from agent.ingest.schema import COUNT_FIELDS
from agent.ingest.service import IngestService
from agent.services import ManagedInfluxd, ManagedMosquitto
from rules.types import KPI_FIELDS, AlarmEvent, KpiRecord

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = 1_795_680_000_000  # 2026-11-26T08:00:00Z


def make_config(mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
                **ingest: Any) -> IngestConfig:
    return IngestConfig.model_validate({
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "reconnect_min_s": 1,
                 "reconnect_max_s": 2},
        "influxdb": {"url": influxdb.url, "token": influxdb.token, "org": influxdb.org,
                     "bucket": influxdb.bucket, "timeout_s": 2},
        "ingest": {"dead_letter_path": str(tmp_path / "dead.jsonl"), "client_id": "ingest-test",
                   "retry_min_s": 0.2, "retry_max_s": 1.0, **ingest},
    })


@contextlib.asynccontextmanager
async def running(service: IngestService) -> AsyncIterator[IngestService]:
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_subscribed(), 10)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Publisher:
    """A plain paho client publishing QoS 1, as the edge agent does."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub-test",
                                  protocol=mqtt.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(mosquitto: ManagedMosquitto) -> Any:
    pub = Publisher(mosquitto)
    try:
        yield pub
    finally:
        pub.close()


def kpi_topic(r: KpiRecord) -> str:
    line, machine = placeholder_tags(r.line, r.machine)
    return f"factory/{r.site}/{line}/{machine}/kpi"


def sample_records() -> list[KpiRecord]:
    base = {"window": "1m", "window_start_ms": T0, "window_end_ms": T0 + 60_000}
    return [
        KpiRecord(site="s1", line="l1", machine="m1", observed_s=60.0, planned_busy_time_s=60.0,
                  producing_time_s=45.5, setup_time_s=4.5, unplanned_down_time_s=10.0,
                  parts_produced=7, parts_good=6, parts_scrap=1, availability=0.7583333333333333,
                  performance=1.0769230769230769, quality_ratio=6 / 7, oee=0.1 + 0.2,
                  defect_rate=1 / 7, cycle_time_mean_s=6.5, ideal_cycle_time_s=7.0,
                  energy_kwh=1.25, energy_per_unit_kwh=1.25 / 7, energy_per_good_unit_kwh=1.25 / 6,
                  kgce_per_good_unit=0.1229 * 1.25 / 6, co2_kg=0.66325,
                  co2_per_good_unit_kg=0.66325 / 6, flags=("meter_reset", "incomplete"),
                  **base),  # type: ignore[arg-type]
        KpiRecord(site="s1", line="l1", machine="m2", planned_busy_time_s=60.0,
                  idle_time_s=60.0, ideal_cycle_time_s=5.0, **base),  # type: ignore[arg-type]
        KpiRecord(site="s1", line="l1", machine=None, planned_busy_time_s=120.0,
                  parts_produced=7, parts_good=6, parts_scrap=1, energy_kwh=3.0,
                  **base),  # type: ignore[arg-type]
        KpiRecord(site="s1", line=None, machine=None, planned_busy_time_s=120.0,
                  parts_produced=7, parts_good=6, parts_scrap=1, energy_kwh=3.5,
                  **base),  # type: ignore[arg-type]
    ]


def series(n: int, start: int = 0) -> list[KpiRecord]:
    return [KpiRecord(site="s2", line="la", machine=f"m{i % 5}", window="1m",
                      window_start_ms=T0 + 60_000 * (i // 5),
                      window_end_ms=T0 + 60_000 * (i // 5 + 1), planned_busy_time_s=60.0,
                      producing_time_s=float(i), parts_produced=i, parts_good=i,
                      oee=i / 1000) for i in range(start, start + n)]


def expected_row(r: KpiRecord) -> dict[str, Any]:
    line, machine = placeholder_tags(r.line, r.machine)
    row: dict[str, Any] = {"time": r.window_end_ms, "site": r.site, "line": line,
                           "machine": machine, "window": r.window, "flags": ",".join(r.flags)}
    for name in KPI_FIELDS:
        row[name] = getattr(r, name)
    return row


def normalise(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    keys = ["time", "site", "line", "machine", "window", "flags", *KPI_FIELDS]
    out = [{k: row.get(k) for k in keys} for row in rows]
    return sorted(out, key=lambda r: (str(r["site"]), str(r["line"]), str(r["machine"]),
                                      str(r["window"]), int(r["time"])))  # type: ignore[call-overload]


async def eventually(check: Callable[[], bool], timeout_s: float = 20.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await asyncio.to_thread(check):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def publish_records(pub: Publisher, records: Sequence[KpiRecord]) -> None:
    for r in records:
        pub.publish(kpi_topic(r), json.dumps(r.to_json_dict()).encode())


async def test_records_land_exactly_and_types_are_stable(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    records = sample_records()
    alarm = AlarmEvent(ts_ms=T0 + 1234, site="s1", line="l1", machine="m1", rule="oee_low",
                       state="raised", severity="critical", value=0.31, message="OEE < 40 %")
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, records)
        publisher.publish("factory/s1/l1/m1/alarm", json.dumps(alarm.to_json_dict()).encode())
        await eventually(lambda: service.stats.acked == 5, what="5 acks")
    rows = influxdb.rows("SELECT * FROM kpi")
    assert normalise(rows) == normalise([expected_row(r) for r in records])
    # counts are integer fields, everything else float, whatever the first value looked like
    body: Any = influxdb.query("SHOW FIELD KEYS FROM kpi")
    field_types = dict(body["results"][0]["series"][0]["values"])
    # (a field that is null in every record written never becomes a field key)
    assert {"oee", "energy_kwh", "observed_s", "parts_produced"} <= set(field_types)
    assert all(field_types[f] == "integer" for f in COUNT_FIELDS if f in field_types)
    assert all(field_types[f] == "float" for f in KPI_FIELDS
               if f not in COUNT_FIELDS and f in field_types)
    assert field_types["flags"] == "string"
    assert influxdb.rows("SELECT * FROM alarm") == [{
        "time": T0 + 1234, "site": "s1", "line": "l1", "machine": "m1", "rule": "oee_low",
        "state": "raised", "severity": "critical", "value": 0.31, "message": "OEE < 40 %",
    }]
    assert service.stats.written == 5
    assert service.stats.dead_lettered == 0


async def test_republishing_does_not_double(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    records = series(50)
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, records)
        await eventually(lambda: service.stats.acked == 50, what="first 50 acks")
        publish_records(publisher, records)
        await eventually(lambda: service.stats.acked == 100, what="republished acks")
    rows = influxdb.rows("SELECT * FROM kpi")
    assert len(rows) == 50
    assert normalise(rows) == normalise([expected_row(r) for r in records])


async def test_malformed_payloads_are_dead_lettered_and_the_rest_lands(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    good = series(3)
    nan_payload = json.dumps(good[0].to_json_dict()).replace('"oee": 0.0', '"oee": NaN')
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, good[:2])
        publisher.publish("factory/s2/la/m9/kpi", b"{not json")
        publisher.publish("factory/s2/la/m0/kpi", nan_payload.encode())
        publisher.publish("factory/s2/la/m0/kpi", b"\xff\xfe")
        publish_records(publisher, good[2:])
        await eventually(lambda: service.stats.acked == 6, what="6 acks")
    assert normalise(influxdb.rows("SELECT * FROM kpi")) == normalise(
        [expected_row(r) for r in good])
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(d["topic"], d["encoding"]) for d in dead] == [
        ("factory/s2/la/m9/kpi", "utf-8"), ("factory/s2/la/m0/kpi", "utf-8"),
        ("factory/s2/la/m0/kpi", "base64")]
    assert dead[0]["payload"] == "{not json"
    assert "not valid JSON" in dead[0]["reason"]
    assert "'oee'" in dead[1]["reason"] and "factory/s2/la/m0/kpi" in dead[1]["reason"]
    assert dead[1]["payload"] == nan_payload
    assert service.stats.dead_lettered == 3


async def test_point_refused_by_influxdb_is_dead_lettered_alone(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    # A foreign writer already stored `oee` as a string in this shard: our float is refused
    # (HTTP 400 field type conflict) and only that record may go to the dead-letter file.
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influxdb.bucket, record=f'kpi,site=x oee="high" {T0}', write_precision="ms")
    records = [r if i % 3 == 0 else dataclasses.replace(r, oee=None)
               for i, r in enumerate(series(9))]
    service = IngestService(make_config(mosquitto, influxdb, tmp_path, batch_size=9,
                                        flush_interval_s=2.0, flush_idle_s=0.5))
    async with running(service):
        publish_records(publisher, records)
        await eventually(lambda: service.stats.acked == 9, what="9 acks")
    rows = [r for r in influxdb.rows("SELECT * FROM kpi") if r.get("site") == "s2"]
    assert normalise(rows) == normalise([expected_row(r) for r in records if r.oee is None])
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted(json.loads(d["payload"])["producing_time_s"] for d in dead) == [0.0, 3.0, 6.0]
    for entry in dead:
        assert "HTTP 400" in entry["reason"] and "conflict" in entry["reason"]
    assert service.stats.dead_lettered == 3
    assert service.stats.written == 6


async def test_influxdb_outage_holds_acks_and_catches_up(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.ingest")
    before, during = series(20), series(30, start=20)
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, before)
        await eventually(lambda: service.stats.acked == 20, what="acks before the outage")
        await asyncio.to_thread(influxdb.stop)
        publish_records(publisher, during)
        await eventually(lambda: service.stats.retries >= 2, what="retries")
        await asyncio.sleep(2)
        assert service.stats.acked == 20
        assert service.stats.influx_down_since is not None
        await asyncio.to_thread(influxdb.start)
        await eventually(lambda: service.stats.acked == 50, what="catch-up")
        assert service.stats.influx_down_since is None
    rows = influxdb.rows("SELECT * FROM kpi")
    assert normalise(rows) == normalise([expected_row(r) for r in before + during])
    assert service.stats.dead_lettered == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("InfluxDB write failed" in m for m in messages) == 1
    assert sum("InfluxDB writes recovered" in m for m in messages) == 1


async def test_unacked_messages_survive_an_ingest_restart(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    # InfluxDB is down while messages arrive, and the ingest stops before it comes back:
    # nothing was acked, so the broker hands everything to the next run of the same client.
    records = series(25)
    config = make_config(mosquitto, influxdb, tmp_path)
    first = IngestService(config)
    async with running(first):
        await asyncio.to_thread(influxdb.stop)
        publish_records(publisher, records)
        await eventually(lambda: first.stats.retries >= 1 and first.stats.received == 25,
                         what="messages received while InfluxDB is down")
    assert first.stats.acked == 0
    # published while no ingest runs: the broker queues them for the persistent session
    offline = series(10, start=25)
    publish_records(publisher, offline)
    await asyncio.to_thread(influxdb.start)
    second = IngestService(config)
    async with running(second):
        await eventually(lambda: second.stats.acked >= 35, what="redelivery")
    assert normalise(influxdb.rows("SELECT * FROM kpi")) == normalise(
        [expected_row(r) for r in records + offline])


async def test_mqtt_311_plain_subscription(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    base = make_config(mosquitto, influxdb, tmp_path)
    config = IngestConfig.model_validate({
        **base.model_dump(), "mqtt": {**base.mqtt.model_dump(), "protocol": "3.1.1"},
        "ingest": {**base.ingest.model_dump(), "shared_group": ""},
    })
    records = series(300)
    service = IngestService(config)
    async with running(service):
        publish_records(publisher, records)
        await eventually(lambda: service.stats.acked == 300, what="300 acks")
    assert len(influxdb.rows("SELECT * FROM kpi")) == 300


async def test_two_ingests_in_one_shared_group_split_the_stream(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path
) -> None:
    first = IngestService(make_config(mosquitto, influxdb, tmp_path, shared_group="g",
                                      client_id="ingest-a"))
    second = IngestService(make_config(mosquitto, influxdb, tmp_path, shared_group="g",
                                       client_id="ingest-b"))
    records = series(200)
    async with running(first), running(second):
        for r in records:
            publisher.publish(kpi_topic(r), json.dumps(r.to_json_dict()).encode())
        await eventually(lambda: len(influxdb.rows("SELECT * FROM kpi")) == len(records),
                         what="all 200 records stored")
    assert first.stats.written > 0 and second.stats.written > 0
    assert first.stats.written + second.stats.written == len(records)
    assert normalise(influxdb.rows("SELECT * FROM kpi")) == normalise(
        [expected_row(r) for r in records])


def stored_row(influxdb: ManagedInfluxd, r: KpiRecord) -> dict[str, object]:
    """The one stored point of ``r``'s key, every field (absent ones as None)."""
    line, machine = placeholder_tags(r.line, r.machine)
    rows = influxdb.rows(
        f"SELECT * FROM kpi WHERE site = '{r.site}' AND line = '{line}' AND "
        f"machine = '{machine}' AND \"window\" = '{r.window}' AND time = {r.window_end_ms}ms")
    assert len(rows) == 1, rows
    return normalise(rows)[0]


async def test_a_rewrite_with_null_fields_leaves_exactly_the_newer_record(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    """InfluxDB merges the fields of a point written again; the ingest deletes the stored
    point first when the newer version lacks some of its fields."""
    older = sample_records()[0]
    newer = dataclasses.replace(
        older, producing_time_s=40.0, parts_produced=6, parts_good=6, parts_scrap=0,
        defect_rate=0.0, quality_ratio=1.0, energy_kwh=None, energy_per_unit_kwh=None,
        energy_per_good_unit_kwh=None, kgce_per_good_unit=None, co2_kg=None,
        co2_per_good_unit_kg=None, cycle_time_mean_s=None, flags=())
    neighbour = dataclasses.replace(older, machine="m2")
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, [older, neighbour])
        await eventually(lambda: service.stats.acked == 2, what="the first version")
        assert stored_row(influxdb, older) == normalise([expected_row(older)])[0]
        publish_records(publisher, [newer])
        await eventually(lambda: service.stats.acked == 3, what="the rewrite")
    assert stored_row(influxdb, newer) == normalise([expected_row(newer)])[0]
    assert stored_row(influxdb, newer)["energy_kwh"] is None
    assert stored_row(influxdb, neighbour) == normalise([expected_row(neighbour)])[0]
    assert service.stats.replaced == 1 and service.stats.dead_lettered == 0


async def test_a_less_complete_record_never_replaces_the_stored_one(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, publisher: Publisher, tmp_path: Path,
) -> None:
    """An agent that lost its checkpoint re-sends a window it saw only part of."""
    full = sample_records()[0]
    partial = dataclasses.replace(
        full, observed_s=12.0, planned_busy_time_s=12.0, producing_time_s=12.0,
        setup_time_s=0.0, unplanned_down_time_s=0.0, parts_produced=0, parts_good=0,
        parts_scrap=0, availability=1.0, performance=0.0, quality_ratio=None, oee=0.0,
        defect_rate=None, cycle_time_mean_s=None, energy_kwh=0.1, energy_per_unit_kwh=None,
        energy_per_good_unit_kwh=None, kgce_per_good_unit=None, co2_kg=0.05,
        co2_per_good_unit_kg=None, flags=("incomplete",))
    service = IngestService(make_config(mosquitto, influxdb, tmp_path))
    async with running(service):
        publish_records(publisher, [full])
        await eventually(lambda: service.stats.acked == 1, what="the full record")
        publish_records(publisher, [partial, partial])
        await eventually(lambda: service.stats.acked == 3, what="the partial ones")
        publish_records(publisher, [full])  # the original agent's replay still lands
        await eventually(lambda: service.stats.acked == 4, what="the replay")
    assert stored_row(influxdb, full) == normalise([expected_row(full)])[0]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [d["code"] for d in dead] == ["less_complete_than_stored"] * 2
    assert json.loads(dead[0]["payload"])["observed_s"] == 12.0
    assert "observed 12 s of its window, the one stored 60 s" in dead[0]["reason"]
    assert service.stats.rejected == {"less_complete_than_stored": 2}
