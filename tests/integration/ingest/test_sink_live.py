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
