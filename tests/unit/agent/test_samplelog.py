"""The sample log: every malformed line is an error naming its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.samplelog import SampleRecorder, read_samples
from rules.errors import InputError
from rules.types import Sample

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
