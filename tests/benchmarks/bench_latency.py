"""Latency from a window's close to its point being queryable in InfluxDB (prints p50/p95/p99).

    python tests/benchmarks/bench_latency.py [--rate 1000] [--seconds 30]

Starts its own Mosquitto and InfluxDB on loopback ports and runs the ingest in-process.
A paho client publishes KPI records (QoS 1) at a steady rate; each record's ``window_end``
is the instant it was created, which is when the agent would close the window. A poller
queries InfluxDB every 50 ms for new points and notes when each one first became
visible, so the figures include broker, ingest batching, the write and InfluxDB's
indexing, with a resolution of about one poll interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
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

POLL_S = 0.05


def publish_steady(broker: ManagedMosquitto, rate: float, seconds: float,
                   created: dict[int, int]) -> None:
    """Publish ``rate`` records/s for ``seconds``; ``created`` maps window_end ms -> itself."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-pub",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.monotonic()
    n = 0
    last_ms = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while n < due:
            # Distinct timestamps even within one millisecond: shift by the record number.
            end_ms = max(int(time.time() * 1000), last_ms + 1)
            last_ms = end_ms
            machine = f"m{n % 50:02d}"
            rec = KpiRecord(site="lat", line="l1", machine=machine, window="1m",
                            window_start_ms=end_ms - 60_000, window_end_ms=end_ms,
                            parts_produced=n, planned_busy_time_s=60.0)
            client.publish(f"factory/lat/l1/{machine}/kpi",
                           json.dumps(rec.to_json_dict()).encode(), qos=1)
            created[end_ms] = end_ms
            n += 1
        time.sleep(0.002)
    client.disconnect()
    client.loop_stop()


def poll_visible(influx: ManagedInfluxd, seen: dict[int, float], stop: threading.Event) -> None:
    """Note when each point (by its time) first answers a query."""
    since = 0
    while not stop.is_set():
        rows = influx.rows(f"SELECT parts_produced FROM kpi WHERE time > {since}ms")
        now_ms = time.time() * 1000
        for row in rows:
            t = int(row["time"])  # type: ignore[call-overload]
            if t not in seen:
                seen[t] = now_ms
        if rows:
            since = max(since, max(int(r["time"]) for r in rows) - 5000)  # type: ignore[call-overload]
        time.sleep(POLL_S)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(rate: float, seconds: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    with ManagedMosquitto() as broker, ManagedInfluxd() as influx, \
            tempfile.TemporaryDirectory() as tmp:
        config = IngestConfig.model_validate({
            "mqtt": {"host": broker.host, "port": broker.port},
            "influxdb": {"url": influx.url, "token": influx.token, "bucket": influx.bucket},
            "ingest": {"client_id": "latency-ingest",
                       "dead_letter_path": str(Path(tmp) / "dead.jsonl")},
        })
        service = IngestService(config)
        task = asyncio.create_task(service.run())
        created: dict[int, int] = {}
        seen: dict[int, float] = {}
        stop = threading.Event()
        poller = threading.Thread(target=poll_visible, args=(influx, seen, stop))
        try:
            await asyncio.wait_for(service.wait_subscribed(), 10)
            poller.start()
            await asyncio.to_thread(publish_steady, broker, rate, seconds, created)
            deadline = time.monotonic() + 60
            while len(seen) < len(created) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            if poller.is_alive():
                await asyncio.to_thread(poller.join)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        latencies = [(seen[t] - t) / 1000 for t in created if t in seen]
        missing = len(created) - len(latencies)
        print(f"latency window close -> queryable at {rate:,.0f} records/s for {seconds:.0f} s "
              f"({len(created)} records, {missing} not seen):")
        print(f"  p50 {pct(latencies, 50) * 1000:.0f} ms   p95 {pct(latencies, 95) * 1000:.0f} ms"
              f"   p99 {pct(latencies, 99) * 1000:.0f} ms   max {max(latencies) * 1000:.0f} ms"
              f"   mean {statistics.fmean(latencies) * 1000:.0f} ms")
        print(f"  target p99 < 2000 ms: {'met' if pct(latencies, 99) < 2 else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds))
