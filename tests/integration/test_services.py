"""The helper services themselves start, answer and stop."""

from __future__ import annotations

import socket

import pytest

from agent.services import ManagedInfluxd, ManagedMosquitto

pytestmark = pytest.mark.integration


def test_mosquitto_listens_on_loopback(mosquitto: ManagedMosquitto) -> None:
    with socket.create_connection((mosquitto.host, mosquitto.port), timeout=2):
        pass
    assert f"listener {mosquitto.port} 127.0.0.1" in mosquitto.config_text()


def test_influxd_accepts_v2_write_and_query(influxdb: ManagedInfluxd) -> None:
    from influxdb_client import InfluxDBClient, Point
    from influxdb_client.client.write_api import SYNCHRONOUS

    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=influxdb.bucket, record=Point("probe").tag("t", "x").field("v", 1.5).time(1000,
                                                                                          "ms"))
    rows = influxdb.rows('SELECT "v" FROM "probe"')
    assert rows == [{"time": 1000, "v": 1.5}]


def test_mosquitto_can_write_its_persistence_file(mosquitto: ManagedMosquitto) -> None:
    mosquitto.stop()
    assert (mosquitto.workdir / "mosquitto.db").exists(), mosquitto.log_tail()
    assert "Permission denied" not in mosquitto.log_tail()
