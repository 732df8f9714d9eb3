"""The sample log: every malformed line is an error naming its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.samplelog import SampleRecorder, fast_rfc3339_to_ms, read_samples
from rules.errors import InputError
from rules.types import Sample, ms_to_rfc3339, rfc3339_to_ms

GOOD = '{"ts": "2026-11-26T08:00:00.000Z", "device": "cnc-01", "signal": "parts_total", "value": 5}'


def test_reads_good_lines_and_skips_blank_ones() -> None:
    lines = [GOOD, "", '{"ts": "2026-11-26T08:00:01.5+08:00", "device": "m", '
             '"signal": "energy_kwh", "value": 1.5, "quality": "bad"}']
    samples = list(read_samples(lines, "s.jsonl"))
    assert samples[0] == Sample(1795680000000, "cnc-01", "parts_total", 5)
    assert samples[1].ts_ms == 1795680000000 - 8 * 3_600_000 + 1500
    assert samples[1].quality == "bad"


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "s.jsonl:2: not valid JSON"),
    ("[1, 2]", "s.jsonl:2: expected a JSON object"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "value": 1}', "missing key 'signal'"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "signal": "x"}', "missing key 'value'"),
    ('{"ts": "yesterday", "device": "m", "signal": "x", "value": 1}', "'ts' 'yesterday' is not"),
    ('{"ts": "2026-11-26T08:00:00", "device": "m", "signal": "x", "value": 1}', "no UTC offset"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "signal": "x", "value": [1]}',
     "'value' has unsupported type list"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "signal": "x", "value": true}',
     "unsupported type bool"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "signal": "x", "value": NaN}',
     "not a finite number"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "m", "signal": "x", "value": 1, "quality": "ok"}',
     "'quality' must be"),
    ('{"ts": "2026-11-26T08:00:00Z", "device": "", "signal": "x", "value": 1}',
     "'device' must be a non-empty string"),
])
def test_malformed_line_names_its_number(line: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        list(read_samples([GOOD, line], "s.jsonl"))
    assert str(info.value).startswith("s.jsonl:2:")
    assert message in str(info.value)


def test_recorder_round_trips_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    rec = SampleRecorder(path, max_bytes=400, backups=2)
    samples = [Sample(1795680000000 + i, "cnc-01", "parts_total", i) for i in range(20)]
    for s in samples:
        rec.write([s])
    rec.close()
    files = [path.with_name("samples.jsonl.2"), path.with_name("samples.jsonl.1"), path]
    assert all(f.exists() for f in files)
    assert not path.with_name("samples.jsonl.3").exists()
    tail = [s for f in files for s in read_samples(f.read_text().splitlines())]
    assert tail == samples[-len(tail):]
    assert tail[-1].value == 19
    assert all(f.stat().st_size < 400 + 100 for f in files)
    first = json.loads(files[0].read_text().splitlines()[0])
    assert first["ts"].endswith("Z") and "quality" not in first


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=253_402_300_799_999), st.booleans())
def test_fast_timestamp_path_agrees_with_the_general_parser(ts_ms: int, millis: bool) -> None:
    text = ms_to_rfc3339(ts_ms)
    if not millis:
        text = text[:19] + "Z"
        ts_ms -= ts_ms % 1000
    assert fast_rfc3339_to_ms(text) == rfc3339_to_ms(text) == ts_ms


@pytest.mark.parametrize("text", [
    "2026-11-26T08:00:00+08:00", "2026-11-26T08:00:00.5Z", "2026-11-26T08:00:00.000z",
    "2026-11-26 08:00:00.000Z", "2026-11-26T08:00:00.0a0Z",
    "2026-11-26T08:00:00.\u00b2\u00b2\u00b2Z",
    "2026-13-26T08:00:00.000Z", "2026-11-26T24:00:00Z", "yesterday",
])
def test_fast_timestamp_path_declines_other_forms(text: str) -> None:
    assert fast_rfc3339_to_ms(text) is None


def test_lines_the_fast_path_declines_still_parse_or_fail_the_same() -> None:
    lines = [
        "  " + GOOD + "  \r\n",  # surrounding whitespace
        GOOD.replace("08:00:00.000Z", "16:00:00+08:00"),  # an offset
        GOOD.replace('"value": 5', '"value": 5, "quality": "uncertain"'),
    ]
    samples = list(read_samples(lines, "s.jsonl"))
    assert [s.ts_ms for s in samples] == [1795680000000] * 3
    assert samples[2].quality == "uncertain"
    for bad, message in [
        (GOOD + " x", "not valid JSON"),
        (GOOD.replace('"value": 5', '"value": 5, "quality": ["good"]'), "'quality' must be"),
        (GOOD.replace('"value": 5', '"value": 1e999'), "not a finite number"),
        (GOOD.replace("08:00:00.000Z", "25:00:00.000Z"), "is not RFC 3339"),
    ]:
        with pytest.raises(InputError, match=message):
            list(read_samples([GOOD, bad], "s.jsonl"))
