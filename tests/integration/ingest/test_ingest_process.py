"""`edge-agent ingest` as a process against a real Mosquitto: SIGHUP (``systemctl reload``)
keeps it running and says what to do; two ingests with one client id are told once each.

No InfluxDB is needed: nothing is published, so nothing is written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.mqtt.reconnect import CLASH_MARK
from agent.services import ManagedMosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RELOAD_LINE = "SIGHUP: ingest config reload is not supported; restart to apply changes"


def ingest_toml(broker: ManagedMosquitto, client_id: str, tmp_path: Path,
                batch_size: int = 100) -> str:
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 0.5

[influxdb]
url = "http://127.0.0.1:{free_port()}"
token = "platform-writer:a-long-enough-secret"

[ingest]
client_id = "{client_id}"
dead_letter_path = "{tmp_path / (client_id + '-dead.jsonl')}"
batch_size = {batch_size}

[health]
enabled = false
"""


class Ingest:
    """One `edge-agent ingest` process logging into a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "ingest", "-c", str(config)],
                stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Callable[[str, str], Ingest]]:
    started: list[Ingest] = []

    def start(name: str, toml: str) -> Ingest:
        config = tmp_path / f"{name}.toml"
        config.write_text(toml)
        ingest = Ingest(config, tmp_path / f"{name}.log")
        started.append(ingest)
        return ingest

    yield start
    for ingest in started:
        if ingest.proc.poll() is None:
            ingest.proc.kill()
            ingest.proc.wait(10)


async def until(cond: Callable[[], bool], what: str, ingest: Ingest,
                within_s: float = 30) -> None:
    """Wait for another process's log to show something, failing early if it exited."""
    async with asyncio.timeout(within_s):
        while not cond():
            assert ingest.proc.poll() is None, (
                f"ingest exited while waiting for {what}:\n{ingest.text()}")
            await asyncio.sleep(0.05)


async def test_sighup_keeps_the_ingest_running_and_says_what_to_do(
    mosquitto: ManagedMosquitto, tmp_path: Path,
    start_ingest: Callable[[str, str], Ingest],
) -> None:
    ingest = start_ingest("ingest", ingest_toml(mosquitto, "ingest-hup", tmp_path))
    await until(lambda: "subscribed to" in ingest.text(), "the subscription", ingest)

    def reloads() -> list[str]:
        return [line for line in ingest.text().splitlines() if RELOAD_LINE in line]

    ingest.proc.send_signal(signal.SIGHUP)
    await until(lambda: len(reloads()) == 1, "the first reload line", ingest)
    assert "is unchanged" in reloads()[0] and "WARNING" in reloads()[0]

    ingest.config.write_text(ingest_toml(mosquitto, "ingest-hup", tmp_path, batch_size=50))
    ingest.proc.send_signal(signal.SIGHUP)
    await until(lambda: len(reloads()) == 2, "the second reload line", ingest)
    assert "has changed and passes its checks" in reloads()[1]

    ingest.config.write_text(ingest_toml(mosquitto, "ingest-hup", tmp_path, batch_size=0))
    ingest.proc.send_signal(signal.SIGHUP)
    await until(lambda: len(reloads()) == 3, "the third reload line", ingest)
    assert "fails its checks, fix it before restarting: ingest.batch_size" in reloads()[2]

    assert ingest.stop() == 0, ingest.text()  # SIGTERM after three SIGHUPs: a clean stop
    assert "Traceback" not in ingest.text()
    assert "ingest stopped" in ingest.text()


async def test_two_ingests_with_one_client_id_are_told_once_each(
    mosquitto: ManagedMosquitto, tmp_path: Path,
    start_ingest: Callable[[str, str], Ingest],
) -> None:
    toml = ingest_toml(mosquitto, "ingest-twin", tmp_path)
    twins = [start_ingest(f"twin{i}", toml) for i in (1, 2)]

    def connects(ingest: Ingest) -> int:
        return ingest.text().count("connected to ")

    # Each connect takes the session from the other one.
    await until(lambda: all(connects(t) >= 8 for t in twins), "eight takeovers each",
                twins[0], 60)
    for twin in twins:
        assert twin.stop() == 0
        lines = [line for line in twin.text().splitlines() if CLASH_MARK in line]
        assert len(lines) == 1, twin.text()
        assert "WARNING" in lines[0] and "'ingest-twin'" in lines[0]
        assert "same client id" in lines[0] and "ingest.client_id" in lines[0]
