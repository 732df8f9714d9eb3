"""Outbox and publisher throughput, run as a script (not collected by pytest).

    python tests/benchmarks/bench_outbox.py [--records 20000] [--drain 20000]

Prints durable enqueue rates (one transaction per ``put_many`` batch, for several batch
sizes, with ``synchronous=full`` and ``normal``) and, when Mosquitto is installed, the
rate at which the publisher drains a backlog to a real broker (PUBACK and row delete
included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Literal

from agent.config.common import MqttSettings
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.topics import kpi_topic
from agent.outbox import SqliteOutbox
from agent.services import ManagedMosquitto, find_mosquitto

PAYLOAD = b'{"schema":"factory-kpi/1","site":"s1","line":"line-a","machine":"cnc-01",' + (
    b'"window":"1m","oee":0.8123,"availability":0.9,"performance":0.95,"flags":[]}'
)


def bench_enqueue(workdir: Path, records: int, batch: int,
                  sync: Literal["full", "normal"]) -> tuple[float, float]:
    """Records/s and commits/s for ``records`` rows written ``batch`` at a time."""
    box = SqliteOutbox(workdir / f"enqueue-{sync}-{batch}.sqlite", synchronous=sync)
    topic = kpi_topic("factory", "s1", "line-a", "cnc-01")
    items = [(topic, PAYLOAD)] * batch
    commits = max(1, records // batch)
    start = time.perf_counter()
    for _ in range(commits):
        box.put_many(items, state={"engine": '{"seq": 1}'})
    elapsed = time.perf_counter() - start
    box.close()
    return commits * batch / elapsed, commits / elapsed


async def bench_drain(workdir: Path, records: int, max_inflight: int) -> float | None:
    """Messages/s from a full outbox to a real Mosquitto until the outbox is empty."""
    if find_mosquitto() is None:
        return None
    box = SqliteOutbox(workdir / f"drain-{max_inflight}.sqlite", synchronous="full")
    topic = kpi_topic("factory", "s1", "line-a", "cnc-01")
    for _ in range(0, records, 1000):
        box.put_many([(topic, PAYLOAD)] * 1000)
    with ManagedMosquitto() as broker:
        settings = MqttSettings(host=broker.host, port=broker.port, max_inflight=max_inflight)
        pub = MqttPublisher(settings, box, site_id="s1", agent_id="bench", version="0")
        task = asyncio.create_task(pub.run())
        start = time.perf_counter()
        while box.depth():  # noqa: ASYNC110 - measuring, not coordinating
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    box.close()
    return box.stats.acked / elapsed


def main() -> None:
    """Parse arguments, run the benchmarks, print one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--drain", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        workdir = Path(tmp)
        print(f"payload {len(PAYLOAD)} bytes")
        syncs: tuple[Literal["full", "normal"], ...] = ("full", "normal")
        for sync in syncs:
            for batch in (1, 10, 100, 1000):
                n = args.records if batch > 1 else min(args.records, 2_000)
                rate, commits = bench_enqueue(workdir, n, batch, sync)
                print(f"enqueue synchronous={sync:6s} batch={batch:5d}: "
                      f"{rate:10.0f} records/s ({commits:7.0f} commits/s)")
        for inflight in (20, 100, 1000):
            drained = asyncio.run(bench_drain(workdir, args.drain, inflight))
            if drained is None:
                print("drain: mosquitto not installed, skipped")
                break
            print(f"drain to mosquitto max_inflight={inflight:5d}: {drained:10.0f} messages/s")


if __name__ == "__main__":
    main()
