"""Real services for the tests: Mosquitto and InfluxDB on free loopback ports.

Outside CI a test whose service cannot start is skipped with the reason; under CI
(``CI=true``) it fails, so a missing install step can never pass as a green run.

Under pytest-xdist every worker takes its ports from a range of its own (see
``agent.services.PORT_RANGE_ENV``), so that parallel workers never start two services on
one port. Hypothesis runs the "dev" profile, or "ci" under CI: derandomized (the same
examples on every run, so a red build reproduces) and without a per-example deadline
(the shared machines of a CI are slow at unpredictable moments).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from agent.services import PORT_RANGE_ENV, ManagedInfluxd, ManagedMosquitto
from rules.errors import ServiceError

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=100, print_blob=True,
)
settings.load_profile("ci" if IN_CI else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The files that take a minute or more, started first: the workers (one file each at a
# time) then finish together instead of one running a long file alone at the end.
SLOW_FILES = (
    "integration/test_power_state_end_to_end.py",
    "integration/reliability/test_platform_faults.py",
    "integration/reliability/test_edge_faults.py",
    "integration/test_slow_meter_end_to_end.py",
    "integration/test_demo.py",
    "integration/test_opc40501_end_to_end.py",
    "integration/test_end_to_end.py",
    "integration/test_demo_terminal.py",
    "integration/reliability/test_security.py",
    "unit/agent/test_live_vs_offline.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of :data:`SLOW_FILES` first, in that order, each file kept whole."""
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        for i, name in enumerate(SLOW_FILES):
            if path.endswith("tests/" + name):
                return i
        return len(SLOW_FILES)

    items.sort(key=rank)  # stable: every file's tests stay in their order

# Below Linux's ephemeral range (32768-60999): ports there are never handed to outgoing
# connections, and each worker owns a slice of its own.
_PORTS_FIRST, _PORTS_PER_WORKER, _PORT_SLICES = 20000, 1500, 8


def _worker_port_range() -> str | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.removeprefix("gw").isdigit():
        return None
    first = _PORTS_FIRST + int(worker.removeprefix("gw")) % _PORT_SLICES * _PORTS_PER_WORKER
    return f"{first}-{first + _PORTS_PER_WORKER - 1}"


if (_ports := _worker_port_range()) is not None:
    os.environ.setdefault(PORT_RANGE_ENV, _ports)


def service_unavailable(what: str, err: Exception) -> None:
    """Fail under CI, skip elsewhere: a developer without influxd can still run the rest."""
    message = f"{what} unavailable: {err}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def mosquitto() -> Iterator[ManagedMosquitto]:
    """A fresh Mosquitto broker for one test."""
    broker = ManagedMosquitto()
    try:
        broker.start()
    except ServiceError as err:
        broker.close()
        service_unavailable("mosquitto", err)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def _influxd_server() -> Iterator[ManagedInfluxd]:
    """One influxd per test process: it takes seconds to start, and a reset takes ms."""
    server = ManagedInfluxd()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def influxdb(_influxd_server: ManagedInfluxd) -> Iterator[ManagedInfluxd]:
    """An InfluxDB (1.8+, v2 write API) holding only an empty database ``factory``.

    The server is shared by the tests of one process and reset before each; a test that
    stopped it (an outage test) gets it started again by the next test that needs it.
    """
    server = _influxd_server
    try:
        if not server.running:
            server.start()
        server.reset()
    except ServiceError as err:
        service_unavailable("influxd", err)
    yield server
