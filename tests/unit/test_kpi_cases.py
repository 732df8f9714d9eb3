"""The worked examples of docs/kpi.md, as data: ``tests/cases/kpi/<case>/``.

Each case is an ``agent.toml`` and a ``samples.jsonl`` run through ``edge-agent kpi``, and
an ``expected.jsonl`` computed by hand from the definitions (never pasted from the
engine's output). Each expected line names one record by ``line``, ``machine``,
``window`` and ``window_start`` and lists the fields it checks; records it does not name
are not checked. ``"absent": true`` says no such record may be emitted.

Numbers match within a relative 1e-9, ``null`` only ``null``, everything else exactly.
When a record key occurs twice the later record counts: it replaces the earlier one
whole, as it does in InfluxDB. A case whose ``xfail.txt`` exists is a definition the
engine does not meet yet; the file says why, and the case fails the suite once it passes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import agent.cli
import agent.logs

CASES = Path(__file__).resolve().parents[1] / "cases" / "kpi"
KEY = ("line", "machine", "window", "window_start")
REL_TOL = 1e-9


def _case_params() -> list[Any]:
    params = []
    for path in sorted(p for p in CASES.iterdir() if p.is_dir()):
        xfail = path / "xfail.txt"
        marks = []
        if xfail.exists():
            reason = " ".join(xfail.read_text(encoding="utf-8").split())
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        params.append(pytest.param(path.name, marks=marks, id=path.name))
    return params


def _matches(want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return math.isclose(want, got, rel_tol=REL_TOL, abs_tol=0.0)
    return bool(want == got)


def _run_kpi(case: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    # The command configures the root logger for a process of its own; in process it
    # would take the handlers away from pytest.
    monkeypatch.setattr(agent.logs, "setup_logging", lambda *args, **kwargs: None)
    rc = agent.cli.main(["kpi", "--input", str(case / "samples.jsonl"),
                         "-c", str(case / "agent.toml")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return [json.loads(line) for line in out.out.splitlines()]


def _expected(case: Path) -> list[dict[str, Any]]:
    path = case / "expected.jsonl"
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in KEY if k not in row]
        assert not missing, f"{path}:{n}: names no {', '.join(missing)}"
        rows.append(row)
    assert rows, f"{path} expects nothing"
    return rows


@pytest.mark.parametrize("name", _case_params())
def test_kpi_case(name: str, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES / name
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in _run_kpi(case, capsys, monkeypatch):
        by_key[tuple(record[k] for k in KEY)] = record
    problems = []
    for want in _expected(case):
        key = tuple(want[k] for k in KEY)
        got = by_key.get(key)
        if want.get("absent"):
            if got is not None:
                problems.append(f"{key}: emitted, expected none")
            continue
        if got is None:
            problems.append(f"{key}: no such record")
            continue
        for field, value in want.items():
            if field in KEY:
                continue
            if field not in got:
                problems.append(f"{key}: record has no field {field!r}")
            elif not _matches(value, got[field]):
                problems.append(f"{key}: {field} = {got[field]!r}, expected {value!r}")
    assert not problems, f"case {name}:\n" + "\n".join(problems)


def test_every_case_is_complete() -> None:
    names = [p.name for p in CASES.iterdir() if p.is_dir()]
    assert len(names) >= 10
    for name in names:
        for part in ("agent.toml", "samples.jsonl", "expected.jsonl"):
            assert (CASES / name / part).is_file(), f"{name}/{part} is missing"
