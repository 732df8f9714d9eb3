"""Records per second through the ingest into a real InfluxDB (prints the result).

    python tests/benchmarks/bench_ingest.py [--records 20000] [--batch-size 500]

Starts its own Mosquitto and InfluxDB on loopback ports, publishes KPI records with QoS 1
as fast as one paho client can, and measures from the first publish until the last record
is acknowledged (i.e. stored) by the ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.ingest.config import IngestConfig
from agent.ingest.service import IngestService
from agent.services import ManagedInfluxd, ManagedMosquitto
from rules.types import KpiRecord

T0 = 1_795_680_000_000


def payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        machine, window = f"m{i % 100:03d}", i // 100
        r = KpiRecord(site="bench", line=f"l{i % 7}", machine=machine, window="1m",
                      window_start_ms=T0 + 60_000 * window,
                      window_end_ms=T0 + 60_000 * (window + 1), planned_busy_time_s=60.0,
                      producing_time_s=50.0, parts_produced=i % 13, parts_good=i % 13,
                      availability=0.83, performance=0.9, quality_ratio=1.0, oee=0.747,
                      energy_kwh=1.5, flags=("incomplete",) if i % 50 == 0 else ())
        out.append((f"factory/bench/l{i % 7}/{machine}/kpi", json.dumps(r.to_json_dict()).encode()))
    return out


def publish_all(broker: ManagedMosquitto, messages: list[tuple[str, bytes]]) -> float:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.monotonic()
    infos = [client.publish(topic, body, qos=1) for topic, body in messages]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


async def main(records: int, batch_size: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    messages = payloads(records)
    with ManagedMosquitto() as broker, ManagedInfluxd() as influx, \
            tempfile.TemporaryDirectory() as tmp:
        config = IngestConfig.model_validate({
            "mqtt": {"host": broker.host, "port": broker.port},
            "influxdb": {"url": influx.url, "token": influx.token, "bucket": influx.bucket},
            "ingest": {"client_id": "bench-ingest", "batch_size": batch_size,
                       "receive_maximum": max(1000, 2 * batch_size),
                       "dead_letter_path": str(Path(tmp) / "dead.jsonl")},
        })
        service = IngestService(config)
        task = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.wait_subscribed(), 10)
            started = time.monotonic()
            publisher = threading.Thread(
                target=lambda: print(f"publish: {records / publish_all(broker, messages):,.0f}"
                                     " msg/s"))
            publisher.start()
            while service.stats.acked < records:
                await asyncio.sleep(0.05)
                if time.monotonic() - started > 600:
                    raise SystemExit(f"stalled at {service.stats}")
            elapsed = time.monotonic() - started
            await asyncio.to_thread(publisher.join)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stats = service.stats
        count = influx.rows("SELECT count(parts_produced) FROM kpi")[0]["count"]
        print(f"ingest: {records} records in {elapsed:.2f} s = {records / elapsed:,.0f} records/s;"
              f" batches {stats.batches} (mean {stats.acked / max(stats.batches, 1):.0f}),"
              f" max write latency {stats.max_write_latency_s * 1000:.0f} ms,"
              f" points in InfluxDB {count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.batch_size))
