"""Records per second the ingest (``edge-agent ingest``) stores into a real InfluxDB.

    python tests/benchmarks/bench_ingest.py [--records 20000] [--batch-size 500]

Starts its own Mosquitto and InfluxDB on loopback ports. The broker is preloaded while
no ingest runs: a client with the ingest's client id opens the persistent session and
subscribes (QoS 1) to the ingest's topics, disconnects, and then another client publishes
every KPI record with QoS 1, so the broker queues them all for that session. Only then
does ``edge-agent ingest`` start, in a process of its own, and drain the queue.

The figure is measured on the database: from the first point stored until all of them
are (the points in ``kpi``, counted by InfluxQL), so neither the publisher nor the
ingest's start-up is in it. It prints records/s and the ingest process's CPU time
(utime + stime of ``/proc/PID/stat``, all threads) over the same interval, per 1,000
records, next to the target of 5,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.ingest.config import IngestConfig  # noqa: E402
from agent.services import ManagedInfluxd, ManagedMosquitto  # noqa: E402
from rules.types import KpiRecord  # noqa: E402

T0 = 1_795_680_000_000
TARGET_PER_S = 5_000
CLIENT_ID = "bench-ingest"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EDGE_AGENT = [sys.executable, "-c",
              "import sys; from agent.cli import main; sys.argv[0] = 'edge-agent'; "
              "sys.exit(main())"]
"""``edge-agent`` as this interpreter runs it (the same process, not a wrapper script)."""


def payloads(n: int) -> list[tuple[str, bytes]]:
    """``n`` KPI records, each a point of its own (100 machines x n/100 windows)."""
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


def _connect(broker: ManagedMosquitto, client_id: str, *, clean_start: bool) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
    client.loop_start()
    return client


def open_session(broker: ManagedMosquitto, topics: list[str]) -> None:
    """Create the ingest's persistent session with its QoS 1 subscriptions, then leave."""
    client = _connect(broker, CLIENT_ID, clean_start=True)
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise SystemExit("cannot connect to the broker")
            time.sleep(0.01)
        granted: list[object] = []
        client.on_subscribe = lambda *args: granted.append(args)
        client.subscribe([(t, 1) for t in topics])
        while not granted:
            if time.monotonic() > deadline:
                raise SystemExit("the broker did not grant the subscriptions")
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()


def preload(broker: ManagedMosquitto, messages: list[tuple[str, bytes]]) -> float:
    """Publish everything with QoS 1 and wait for every PUBACK; returns the seconds taken."""
    client = _connect(broker, "bench-pub", clean_start=True)
    started = time.monotonic()
    try:
        infos = [client.publish(topic, body, qos=1) for topic, body in messages]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - started


def cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stored(influx: ManagedInfluxd) -> int:
    """Points in ``kpi``."""
    rows = influx.rows("SELECT count(parts_produced) FROM kpi")
    return int(str(rows[0]["count"])) if rows else 0


def main(records: int, batch_size: int) -> None:
    messages = payloads(records)
    with ManagedMosquitto() as broker, ManagedInfluxd() as influx, \
            tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        raw = {
            "mqtt": {"host": broker.host, "port": broker.port},
            "influxdb": {"url": influx.url, "token": influx.token, "bucket": influx.bucket},
            "ingest": {"client_id": CLIENT_ID, "batch_size": batch_size,
                       "receive_maximum": max(1000, 2 * batch_size),
                       "queue_size": max(2000, 4 * batch_size),
                       "dead_letter_path": str(Path(tmp) / "dead.jsonl")},
            "health": {"enabled": False},
        }
        config = IngestConfig.model_validate(raw)
        cfg_path = Path(tmp) / "ingest.toml"
        cfg_path.write_text(tomli_w.dumps(raw))
        open_session(broker, config.subscriptions())
        took = preload(broker, messages)
        print(f"preloaded {records:,} records into the broker in {took:.1f} s "
              f"({records / took:,.0f} msg/s)")
        log_path = Path(tmp) / "ingest.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([*EDGE_AGENT, "ingest", "-c", str(cfg_path)], stdout=log,
                                    stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            launched = time.monotonic()
            first: tuple[float, float, int] | None = None
            count = 0
            while count < records:
                if proc.poll() is not None:
                    raise SystemExit(f"the ingest exited with code {proc.returncode}:\n"
                                     f"{log_path.read_text(errors='replace')[-2000:]}")
                if time.monotonic() - launched > 600:
                    raise SystemExit(f"stalled at {count} of {records} points")
                count = stored(influx)
                if first is None and count > 0:
                    first = (time.monotonic(), cpu_s(proc.pid), count)
                time.sleep(0.02)
            done, cpu_done = time.monotonic(), cpu_s(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert first is not None
        t_first, cpu_first, n_first = first
        drained = records - n_first
        elapsed = max(done - t_first, 1e-9)
        rate = drained / elapsed
        cpu = cpu_done - cpu_first
        print(f"ingest: {drained:,} records stored in {elapsed:.2f} s = {rate:,.0f} records/s "
              f"(target {TARGET_PER_S:,}: {'met' if rate >= TARGET_PER_S else 'NOT met'}); "
              f"points in InfluxDB {count:,}")
        print(f"ingest process CPU: {cpu:.2f} s over that interval = "
              f"{cpu * 1000 / max(drained, 1) * 1000:.1f} ms per 1,000 records "
              f"({100 * cpu / elapsed:.0f} % of one core); "
              f"{cpu_done:.2f} s since its start {done - launched:.1f} s ago")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    main(args.records, args.batch_size)
