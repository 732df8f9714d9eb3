"""The ingest's own line-protocol encoding equals influxdb-client's, character for
character: InfluxDB must see exactly what the library would have sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from agent.ingest.points import FieldValue, InfluxPoint

_PointFactory: Any = Point  # influxdb-client is only partly typed

# Characters line protocol escapes, and a few it does not, so that escaping is exercised.
_TEXT = st.text(alphabet=st.sampled_from([*"ab_Z9", ",", "=", " ", "\\", '"', "\n", "\t",
                                          "\r", "é", "中"]), max_size=8)
_KEYS = st.text(alphabet=st.sampled_from([*"ab_Z9", ",", "=", " ", "\\", "中"]),
                min_size=1, max_size=6)
_VALUES: st.SearchStrategy[FieldValue] = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), _TEXT,
    st.sampled_from([0.0, -0.0, 1e16, 1e-7, 123456789.0, 0.1, 2.5e300]))


def _library(point: InfluxPoint) -> str:
    ref = _PointFactory(point.measurement)
    for key, tag in point.tags.items():
        ref.tag(key, tag)
    for key, value in point.fields.items():
        ref.field(key, value)
    ref.time(point.time_ms, WritePrecision.MS)
    text: str = ref.to_line_protocol(precision=WritePrecision.MS)
    return text


@given(measurement=st.sampled_from(["kpi", "alarm", "agent status", "a,b"]),
       tags=st.dictionaries(_KEYS, _TEXT, max_size=4),
       fields=st.dictionaries(_KEYS, _VALUES, max_size=5),
       time_ms=st.integers(min_value=0, max_value=4_102_444_800_000))
def test_same_text_as_influxdb_client(measurement: str, tags: dict[str, str],
                                      fields: dict[str, FieldValue], time_ms: int) -> None:
    point = InfluxPoint(measurement, tags, fields, time_ms)
    assert point.to_line_protocol() == _library(point)
