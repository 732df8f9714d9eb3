"""InfluxSink against a real InfluxDB: which answers are retryable, which blame the data."""

from __future__ import annotations

import pytest

from agent.config.common import InfluxSettings
from agent.ingest.points import InfluxPoint
from agent.ingest.sink import InfluxSink, WriteError
from agent.services import ManagedInfluxd, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def settings(influxdb: ManagedInfluxd, **kw: object) -> InfluxSettings:
    return InfluxSettings.model_validate({"url": influxdb.url, "token": influxdb.token,
                                          "bucket": influxdb.bucket, "timeout_s": 2, **kw})


def test_write_and_classify_errors(influxdb: ManagedInfluxd) -> None:
    sink = InfluxSink(settings(influxdb))
    try:
        sink.write([InfluxPoint("kpi", {"site": "s"}, {"oee": 0.5, "n": 3}, 1000)])
        assert influxdb.rows("SELECT * FROM kpi") == [{"time": 1000, "oee": 0.5, "n": 3,
                                                        "site": "s"}]
        with pytest.raises(WriteError) as conflict:
            sink.write([InfluxPoint("kpi", {"site": "s"}, {"oee": "high"}, 2000)])
        assert conflict.value.status == 400
        assert conflict.value.bad_data and not conflict.value.retryable
        assert "conflict" in str(conflict.value)
    finally:
        sink.close()

    missing_db = InfluxSink(settings(influxdb, bucket="nope/autogen"))
    try:
        with pytest.raises(WriteError) as not_found:
            missing_db.write([InfluxPoint("kpi", {"site": "s"}, {"oee": 0.5}, 1000)])
        assert not_found.value.status == 404
        # A missing database is an outage to wait out (held acks), not bad data.
        assert not_found.value.retryable and not_found.value.config_problem
        assert not not_found.value.bad_data
    finally:
        missing_db.close()


def test_connection_refused_is_retryable() -> None:
    sink = InfluxSink(InfluxSettings.model_validate(
        {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1}))
    try:
        with pytest.raises(WriteError) as refused:
            sink.write([InfluxPoint("kpi", {"site": "s"}, {"oee": 0.5}, 1000)])
        assert refused.value.retryable and refused.value.status is None
        assert "unreachable" in str(refused.value)
    finally:
        sink.close()


def test_read_stored_and_delete_find_exactly_the_keys(influxdb: ManagedInfluxd) -> None:
    """The InfluxQL the replacement needs, on the real server: odd characters in ids,
    several window ends in one request, a series with an extra tag not taken for ours."""
    odd = "it's a \\ \"quoted\" 石家庄 id"
    sink = InfluxSink(settings(influxdb))
    try:
        def kpi(machine: str, t: int, **fields: float | str) -> InfluxPoint:
            return InfluxPoint("kpi", {"site": "s", "line": "l", "machine": machine,
                                       "window": "1m"}, {"flags": "", **fields}, t)

        a, b, c = kpi("m1", 60_000, oee=0.5, n=3), kpi(odd, 60_000, oee=0.25), kpi(
            "m1", 120_000, energy_kwh=2.0)
        extra = InfluxPoint("kpi", {**a.tags, "shadow": "x"}, {"oee": 0.9}, 60_000)
        sink.write([a, b, c, extra])
        missing = kpi("m9", 60_000).key
        found = sink.read_stored([a.key, b.key, c.key, missing])
        assert found == {a.key: {"flags": "", "oee": 0.5, "n": 3},
                         b.key: {"flags": "", "oee": 0.25},
                         c.key: {"flags": "", "energy_kwh": 2}}
        sink.delete([a.key, b.key])
        assert sink.read_stored([a.key, b.key, c.key]) == {c.key: {"flags": "",
                                                                    "energy_kwh": 2}}
        # the other window end is untouched (a DELETE matches by tags, so the extra-tag
        # series went too: the measurement is the ingest's own)
        assert [r["time"] for r in influxdb.rows("SELECT * FROM kpi")] == [120_000]
        sink.write([kpi("m1", 60_000, oee=0.75)])
        assert sink.read_stored([a.key]) == {a.key: {"flags": "", "oee": 0.75}}
    finally:
        sink.close()


def test_read_errors_are_classified_like_write_errors(influxdb: ManagedInfluxd) -> None:
    key = InfluxPoint("kpi", {"site": "s"}, {"oee": 0.5}, 1000).key
    missing_db = InfluxSink(settings(influxdb, bucket="nope/autogen"))
    try:
        with pytest.raises(WriteError) as not_found:
            missing_db.read_stored([key])
        assert not_found.value.status == 404 and not_found.value.config_problem
        assert "database not found" in str(not_found.value)
        with pytest.raises(WriteError) as on_delete:
            missing_db.delete([key])
        assert on_delete.value.config_problem
    finally:
        missing_db.close()
    down = InfluxSink(InfluxSettings.model_validate(
        {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1}))
    try:
        with pytest.raises(WriteError) as refused:
            down.read_stored([key])
        assert refused.value.retryable and refused.value.status is None
    finally:
        down.close()
