"""`edge-agent demo --duration` runs the whole chain, shows KPIs and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.services import find_influxd, find_mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.mark.parametrize("broker", ["auto", "embedded"])
def test_demo_shows_kpis_and_a_summary(broker: str, tmp_path: Path) -> None:
    if IN_CI:
        assert find_mosquitto() and find_influxd(), "CI must have mosquitto and influxd"
    # As a user runs it: from a directory of their own, where it leaves its report.
    res = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--duration", "25", "--window", "5s",
         "--broker", broker],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "Simulators: OPC UA opc.tcp://127.0.0.1:" in out
    assert "Summary" in out
    assert ("embedded broker" in out) == (broker == "embedded"), out
    # The summary covers the whole run (sums of every window), so a last window that
    # happened to fall in a planned break does not leave it without an OEE.
    for machine in ("cnc-01", "cnc-02"):
        assert re.search(rf"^  {machine}: OEE [0-9.]+, defect rate .* parts \d+ \(\d+ scrap\)$",
                         out, re.M), out
    windows = re.search(r"^  \(all (\d+) windows from", out, re.M)
    assert windows and int(windows.group(1)) >= 3, out
    broker = int(re.search(r"reached the broker: (\d+)", out).group(1))  # type: ignore[union-attr]
    computed = int(re.search(r"records computed: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert computed > 0 and broker == computed, out
    stored = re.search(r"stored in InfluxDB: (\S+)", out).group(1)  # type: ignore[union-attr]
    if find_influxd():
        assert int(stored) == computed, out
    assert "Traceback" not in res.stderr, res.stderr
    assert (tmp_path / "demo-report.html").is_file(), out
