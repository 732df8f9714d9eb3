"""What the integration tests share: ``edge-agent`` commands run as real subprocesses,
and an ingest config for the test's own broker and InfluxDB.

A test that starts ``edge-agent run`` or ``edge-agent ingest`` gets them through the
``edge_agent`` fixture, so each one logs into a file of its own, is stopped the way
systemd stops it (SIGTERM, then a clean exit is expected) and can never outlive its test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from agent.services import ManagedInfluxd, ManagedMosquitto


class CliProcess:
    """An ``edge-agent`` command in a subprocess, its output appended to ``log``."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log.open("ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *args],
                                         stdout=fh, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        """Everything it has logged so far."""
        return self.log.read_text(errors="replace")

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.proc.poll()

    async def wait_for_log(self, text: str, timeout_s: float = 60) -> None:
        """Wait until the log shows ``text`` (e.g. "subscribed to"); fail fast if it died."""
        deadline = time.monotonic() + timeout_s
        while text not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited {self.proc.returncode} before "
                                     f"logging {text!r}:\n{self.text()[-5000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.args} did not log {text!r} within "
                                     f"{timeout_s:.0f} s:\n{self.text()[-5000:]}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (unless it has already exited) and expect a clean exit (0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"{self.args} ignored SIGTERM:\n{self.text()}") from None
        code = self.proc.returncode
        assert code == 0, f"{self.args} exited {code}:\n{self.text()[-5000:]}"

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as with a crash or a power cut."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


SpawnCli = Callable[[list[str], Path], CliProcess]


@pytest.fixture
def edge_agent() -> Iterator[SpawnCli]:
    """``edge_agent(["run", "-c", path], log)`` starts a command; at the end of the test
    whatever still runs is killed, whatever happened."""
    started: list[CliProcess] = []

    def spawn(args: list[str], log: Path) -> CliProcess:
        proc = CliProcess(args, log)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def ingest_toml(tmp_path: Path, mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd) -> Path:
    """``ingest.toml`` for this test's broker and InfluxDB: the defaults otherwise, dead
    letters in ``tmp_path/dead.jsonl``, no health endpoint (its port could be taken)."""
    path = tmp_path / "ingest.toml"
    path.write_text(tomli_w.dumps({
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "influxdb": {"url": influxdb.url, "org": influxdb.org, "bucket": influxdb.bucket,
                     "token": influxdb.token},
        "ingest": {"dead_letter_path": str(tmp_path / "dead.jsonl")},
        "health": {"enabled": False},
    }))
    return path
