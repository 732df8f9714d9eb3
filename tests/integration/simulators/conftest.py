"""Fixtures: a fast simulated plant on free loopback ports, and helpers to read its ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.plant import Plant
from simulators.scenario import default_scenario


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    """Two fast machines with one SDM630 meter each, ledger in ``tmp_path``."""
    async with Plant(default_scenario(machines=2, seed=7, fast=True), ledger_dir=tmp_path) as p:
        yield p
