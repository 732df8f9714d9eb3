"""The agents' retained status lands in ``agent_status``: online, then offline by the Last
Will when the agent dies. Real publisher (in its own process, killed with SIGKILL), real
Mosquitto, the ingest and a real InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.ingest.config import IngestConfig
from agent.ingest.service import IngestService
from agent.services import ManagedInfluxd, ManagedMosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[3]

AGENT = """
import asyncio, sys
from pathlib import Path
from agent.config.common import MqttSettings
from agent.mqtt.publisher import MqttPublisher
from agent.outbox import SqliteOutbox

async def main() -> None:
    box = SqliteOutbox(Path(sys.argv[2]))
    pub = MqttPublisher(MqttSettings(port=int(sys.argv[1]), keepalive_s=5), box,
                        site_id="site-a", agent_id="edge-1", version="9.8.7")
    await pub.run()

asyncio.run(main())
"""


def config(mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
           client_id: str) -> IngestConfig:
    return IngestConfig.model_validate({
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "reconnect_min_s": 1,
                 "reconnect_max_s": 2},
        "influxdb": {"url": influxdb.url, "token": influxdb.token, "org": influxdb.org,
                     "bucket": influxdb.bucket, "timeout_s": 2},
        "ingest": {"dead_letter_path": str(tmp_path / f"{client_id}.jsonl"),
                   "client_id": client_id, "retry_min_s": 0.2, "retry_max_s": 1.0},
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


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_online_then_offline_by_the_last_will(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
) -> None:
    def rows() -> list[dict[str, object]]:
        return influxdb.rows("SELECT * FROM agent_status")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]))
    before_ms = int(time.time() * 1000)
    service = IngestService(config(mosquitto, influxdb, tmp_path, "status-ingest"))
    async with running(service):
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-c", AGENT, str(mosquitto.port), str(tmp_path / "outbox.sqlite"),
            cwd=REPO, env=env)
        try:
            await eventually(lambda: any(r["state"] == "online" for r in rows()), "online")
            agent.kill()  # no DISCONNECT: the broker publishes the Last Will
            await eventually(lambda: rows()[-1]["state"] == "offline", "offline")
        finally:
            if agent.returncode is None:
                agent.kill()
            async with asyncio.timeout(10):
                await agent.wait()
    online, offline = rows()[0], rows()[-1]
    assert online["site"] == offline["site"] == "site-a"
    assert online["agent"] == offline["agent"] == "edge-1"
    assert online["version"] == offline["version"] == "9.8.7"
    assert offline["reason"] == "connection lost"
    assert online["started"] == offline["started"]
    # stamped with the ingest's receive time; last_seen only while online
    assert before_ms <= int(online["time"]) <= int(offline["time"])  # type: ignore[call-overload]
    assert isinstance(online["last_seen"], str) and offline["last_seen"] is None
    assert service.stats.dead_lettered == 0

    # An ingest that starts after the agent died still learns it is offline (retained).
    late = IngestService(config(mosquitto, influxdb, tmp_path, "late-ingest"))
    async with running(late):
        await eventually(lambda: late.stats.written >= 1, "the retained status")
    newest = rows()[-1]
    assert newest["state"] == "offline" and newest["agent"] == "edge-1"
    assert int(newest["time"]) > int(offline["time"])  # type: ignore[call-overload]
