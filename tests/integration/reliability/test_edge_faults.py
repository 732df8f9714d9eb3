"""Issue #6, edge side: a 30 s broker outage and a kill -9 of the agent lose no window and
double none (tests 1 and 2)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

OUTAGE_S = 30


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_broker_stopped_for_30_s_loses_and_doubles_nothing(
    chain: Any, monitor: Any, helpers: Any
) -> None:
    """Test 1: while Mosquitto is down the agent keeps computing into its outbox; after it
    returns every closed window reaches InfluxDB exactly once and matches the ledger.

    The ingest uses a plain persistent subscription here: Mosquitto 2.0 does not restore a
    *shared* subscription from its persistence file, so after a broker restart messages
    published before the ingest has resubscribed never reach it (see
    deploy/mosquitto/README.md). With one ingest per Mosquitto broker, use shared_group = "".
    """
    async with Plant(default_scenario(machines=2, seed=11, fast=True),
                     ledger_dir=chain.tmp / "ledger") as plant:
        ingest = chain.run_ingest(chain.ingest_config(shared_group=""))
        started_ms = _now_ms()
        agent = chain.run_agent(chain.agent_config(plant))
        await asyncio.sleep(12)
        down_ms = _now_ms()
        await asyncio.to_thread(chain.mosquitto.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(chain.mosquitto.start)
        up_ms = _now_ms()
        await asyncio.sleep(12)
        # On a loaded machine the agent may have closed fewer windows by now: wait until
        # it has published what the assertions below compare.
        await helpers.eventually(lambda: monitor.assert_replays_identical() >= 4 * 10,
                                 timeout_s=90, what="40 KPI windows published")
        stopped_ms = _now_ms()
        agent.stop()
        await chain.wait_settled(minimum=4 * 10)
        ingest.stop()
    assert up_ms - down_ms >= OUTAGE_S * 1000
    compared = chain.check_windows(plant, started_ms=started_ms, stopped_ms=stopped_ms)
    # The outage alone spans six windows; every window was compared with the truth.
    assert compared >= 2 * 8, compared
    assert monitor.assert_replays_identical() >= 4 * 10
    log = agent.text()
    assert "lost connection to MQTT broker" in log or "cannot reach MQTT broker" in log, log
    assert "OUTBOX DROPPED" not in log and "OUTBOX FULL" not in log
    assert not chain.dead_letters()


async def test_agent_killed_mid_run_restarts_without_gap_or_double(
    chain: Any, monitor: Any, helpers: Any
) -> None:
    """Test 2: kill -9 of the agent between checkpoints, restart: the checkpoint plus the
    sample journal give back exactly the engine it had, so no window is missing, none is
    stored twice or republished with other contents, and the counts match the ledger."""
    async with Plant(default_scenario(machines=2, seed=12, fast=True),
                     ledger_dir=chain.tmp / "ledger") as plant:
        ingest = chain.run_ingest(chain.ingest_config())
        config = chain.agent_config(plant)
        started_ms = _now_ms()
        first = chain.run_agent(config, "agent-1")
        # Kill mid-window, between the 5 s checkpoints: samples since then live only in
        # the journal.
        await asyncio.sleep(13.5)
        killed_ms = _now_ms()
        first.kill()
        await asyncio.sleep(1)
        second = chain.run_agent(config, "agent-2")
        restarted_ms = _now_ms()
        await asyncio.sleep(18)
        # On a loaded machine the restarted agent may have closed fewer windows by now.
        await helpers.eventually(lambda: monitor.assert_replays_identical() >= 4 * 5,
                                 timeout_s=90, what="20 KPI windows published")
        stopped_ms = _now_ms()
        second.stop()
        await chain.wait_settled(minimum=4 * 5)
        ingest.stop()
    log = second.text()
    assert "restored the KPI engine from its checkpoint" in log, log
    assert "journal entries replayed" in log
    # A value that changed twice while no agent ran is seen once, at its last change: the
    # windows around the outage are compared as a sum (nothing lost, nothing doubled), all
    # others one by one.
    disturbed = [(killed_ms, restarted_ms + 8000)]
    compared = chain.check_windows(plant, started_ms=started_ms, stopped_ms=stopped_ms,
                                   disturbed=disturbed)
    assert compared >= 2, compared
    assert monitor.assert_replays_identical() >= 4 * 5
    assert not chain.dead_letters()
