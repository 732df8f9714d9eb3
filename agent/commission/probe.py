"""``edge-agent test``: read every configured signal once, the way ``run`` reads it.

After the config is written and passes ``check-config``, the one question left before
``run`` is whether each signal really reads on the devices: a browse path with a typo,
a register the meter lacks or a state code missing from the map would otherwise show up
as one warning in the log of a running agent and a KPI that never fills. This command
loads the file with ``run``'s checks, builds each source's collector through the
sources registry (the very collector ``run`` would start), lets it make one round (a
poll of every Modbus device, the first read of every OPC UA node), and prints a table
of every signal by its config place: address, raw value, the value after scale, offset,
unit and map, quality and timestamp. Nothing is published, stored or checkpointed.

Exit codes: 0 every signal read with good quality, 1 a signal could not be resolved or
read or was not good (each named by its config place at the end), 2 an invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.commission.table import format_table
from rules.types import ms_to_rfc3339

if TYPE_CHECKING:
    from agent.config.model import AgentConfig, SignalSection
    from collectors.base import Collector, CollectorStats
    from rules.types import Sample

__all__ = [
    "DESCRIPTION",
    "Expected",
    "Result",
    "add_arguments",
    "expected_signals",
    "format_results",
    "probe",
    "results_json",
    "run",
    "shorten",
    "summary",
]

EXIT_OK, EXIT_NOT_READ, EXIT_USAGE = 0, 1, 2
WIDTH = 100
"""Columns the table fits in (a terminal, an e-mail, a ticket)."""
DEFAULT_TIMEOUT_S = 15.0

DESCRIPTION = """\
Load the config with the checks `run` makes, then read every configured signal once
through the collectors `run` uses (one poll of each Modbus device, the first read of
each OPC UA node) and print, per signal: its config place, source, address, the raw
value, the value after scale, offset, unit and map, quality and timestamp. Nothing is
published to MQTT and nothing is written to the outbox or the state directory.

Exit codes: 0 every signal read with good quality, 1 some signal unresolved, failing,
not good or not read within --timeout (each named by its config place), 2 bad config."""


@dataclass(frozen=True, slots=True)
class Expected:
    """One signal the config reads: where the file defines it and where it is read.

    ``item`` is the machine or meter (``machines[0] "cnc-01"``), ``table`` the config
    table under it that defines the signal (``signals``, ``inputs``, ``preset "sdm630"``
    for the registers a preset adds, ``profile`` for the roles a machine profile gives),
    ``role`` the signal.
    """

    item: str
    table: str
    role: str
    device: str
    source: str
    address: str

    @property
    def place(self) -> str:
        """The signal's config place, as every error message names it."""
        if self.table in ("signals", "inputs"):
            return f"{self.item}: {self.table}.{self.role}"
        return f"{self.item}: {self.table.split()[0]} ({self.role})"


@dataclass(frozen=True, slots=True)
class Result:
    """What one signal gave: a sample (with the raw value before scale, offset and
    map), or none, with the collector's status of the signal and why."""

    signal: Expected
    state: str
    """``ok``, ``failing``, ``unresolved`` or ``pending`` (nothing within the timeout)."""
    detail: str | None = None
    sample: Sample | None = None
    raw: object = None

    @property
    def good(self) -> bool:
        """Read, with good quality: the only result that passes."""
        return self.sample is not None and self.sample.quality == "good"

    @property
    def problem(self) -> str:
        """Why the signal does not pass (empty when it does)."""
        if self.good:
            return ""
        if self.sample is not None:
            why = f"quality {self.sample.quality}"
            return f"{why}: {self.detail}" if self.detail else why
        if self.state == "pending":
            return "no value within the timeout"
        return f"{self.state}: {self.detail}" if self.detail else self.state


# ------------------------------------------------------------------ what is expected


def _address(sig: SignalSection) -> str:
    if sig.node is not None:
        return sig.node
    if sig.browse_path is not None:
        return sig.browse_path
    return _register(sig.unit, sig.table, sig.address, sig.type, sig.word_order,
                     sig.byte_order)


def _register(unit: int | None, table: str | None, address: int | None, dtype: str,
              word_order: str, byte_order: str) -> str:
    """``3 holding 0 u32 le``: unit, table, 0-based address, type and any order other
    than the Modbus default (``le`` low word first, ``bs`` bytes swapped)."""
    order = ("" if word_order == "big" else " le") + ("" if byte_order == "big" else " bs")
    return f"{unit} {table} {address} {dtype}{order}"


def expected_signals(cfg: AgentConfig) -> list[Expected]:
    """Every signal ``run`` reads, source by source in config order: machines' and
    meters' ``signals`` tables, then the registers of meter presets."""
    from agent.config.load import label
    from agent.sources.base import signal_uses
    from collectors.presets import preset_points

    out: list[Expected] = []
    rank = {label("machines", i, m.id): (0, i) for i, m in enumerate(cfg.machines)}
    rank |= {label("meters", i, mt.id): (1, i) for i, mt in enumerate(cfg.meters)}
    for src in cfg.sources:
        for use in signal_uses(cfg, src.id):
            item, _, key = use.place.partition(": ")
            out.append(Expected(item, key.split(".", 1)[0], use.role, use.device, src.id,
                                _address(use.sig)))
        for i, mt in enumerate(cfg.meters):
            if mt.preset is None or mt.source != src.id or mt.unit is None:
                continue
            for pt in preset_points(mt.preset, mt.id, resolution_kwh=mt.resolution_kwh):
                out.append(Expected(label("meters", i, mt.id), f'preset "{mt.preset}"',
                                    pt.signal, mt.id, src.id,
                                    _register(mt.unit, pt.table, pt.address, pt.dtype,
                                              pt.word_order, pt.byte_order)))
    return sorted(out, key=lambda exp: rank.get(exp.item, (2, 0)))


# ------------------------------------------------------------------ the one round


class _Recorder:
    """The sink the collectors deliver to: the first sample of each signal, and the
    raw value its collector saw for it."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], Sample] = {}
        self.raws: dict[tuple[str, str], object] = {}
        self.pending_raw: dict[tuple[str, str], object] = {}

    async def put(self, sample: Sample, /) -> None:
        key = (sample.device, sample.signal)
        if key not in self.samples:
            self.samples[key] = sample
            self.raws[key] = self.pending_raw.get(key, sample.value)

    def tap(self, device: str, signal: str, raw: object) -> None:
        self.pending_raw.setdefault((device, signal), raw)


def _settled(expected: Sequence[Expected], recorder: _Recorder,
             stats: dict[str, CollectorStats]) -> bool:
    for exp in expected:
        key = (exp.device, exp.role)
        if key in recorder.samples:
            continue
        source = stats.get(exp.source)
        if source is None:
            continue  # no collector reads it: nothing will come
        status = source.signals.get(key)
        if status is None or status.state in ("pending", "ok"):
            return False
    return True


async def probe(cfg: AgentConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Result]:
    """One round of every collector the config builds, as :class:`Result` per signal.

    The collectors are the ones ``run`` starts (``build`` of each source type), run until
    every signal has given a sample or a verdict (unresolved, failing) or ``timeout_s``
    has passed, then cancelled.
    """
    from agent.sources.registry import source_type
    from collectors.base import RawTapping

    expected = expected_signals(cfg)
    recorder = _Recorder()
    collectors: list[Collector] = []
    for i, src in enumerate(cfg.sources):
        collector = source_type(src.type).build(cfg, i, src)
        if collector is None:
            continue
        if isinstance(collector, RawTapping):
            collector.raw_tap = recorder.tap
        collectors.append(collector)
    stats = {c.name: c.stats for c in collectors}
    expected += _unlisted(cfg, expected, stats)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(c.run(recorder), name=f"test-{c.name}") for c in collectors]
        deadline = time.monotonic() + timeout_s
        # Polled: a verdict (unresolved, failing) is a change of the collectors' stats,
        # which announce nothing; a CLI run that ends within a tick of it is enough.
        while time.monotonic() < deadline:
            stats = {c.name: c.stats for c in collectors}
            if _settled(expected, recorder, stats):
                break
            await asyncio.sleep(0.05)
        stats = {c.name: c.stats for c in collectors}
        for task in tasks:
            task.cancel()
    return [_result(exp, recorder, stats.get(exp.source)) for exp in expected]


def _unlisted(cfg: AgentConfig, expected: Sequence[Expected],
              stats: dict[str, CollectorStats]) -> list[Expected]:
    """Signals a collector reads that no ``signals`` table names (a machine profile's
    roles), so that they are tested too."""
    from agent.config.load import label

    known = {(exp.device, exp.role) for exp in expected}
    items: dict[str, tuple[str, object]] = {
        m.id: (label("machines", i, m.id), m) for i, m in enumerate(cfg.machines)}
    items |= {mt.id: (label("meters", i, mt.id), mt) for i, mt in enumerate(cfg.meters)}
    out: list[Expected] = []
    for source, st in stats.items():
        for device, signal in st.signals:
            if (device, signal) in known:
                continue
            where, item = items.get(device, (device, None))
            table = "profile" if getattr(item, "profile", None) else "signals"
            out.append(Expected(where, table, signal, device, source, "-"))
    return out


def _result(exp: Expected, recorder: _Recorder, stats: CollectorStats | None) -> Result:
    key = (exp.device, exp.role)
    status = stats.signals.get(key) if stats is not None else None
    state = status.state if status is not None else "pending"
    detail = status.detail if status is not None else None
    sample = recorder.samples.get(key)
    if sample is not None and sample.quality == "good":
        state, detail = "ok", None
    return Result(exp, state, detail, sample, recorder.raws.get(key))


# ------------------------------------------------------------------ output


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, keeping what tells addresses apart:
    the last elements of a browse path (``Objects/…/cnc:cnc-01/cnc:State``), else the
    start and the end."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    parts = text.split("/")
    if len(parts) > 2:
        head = parts[0] + "/…/"
        tail: list[str] = []
        for part in reversed(parts[1:]):
            if len(head) + len("/".join([part, *tail])) > width:
                break
            tail.insert(0, part)
        if tail:
            return head + "/".join(tail)
        return "…" + text[-(width - 1):]
    front = max(1, (width - 1) // 3)
    return text[:front] + "…" + text[-(width - 1 - front):]


_TABLES = {"holding": "hr", "input": "ir", "coil": "co", "discrete": "di"}
_REGISTER = re.compile(r"^(\d+) (holding|input|coil|discrete) (\d+ .*)$")


def _abbreviated(text: str) -> str:
    """A Modbus address with its table abbreviated (``3 hr 2304 u32 le``)."""
    match = _REGISTER.match(text)
    return f"{match[1]} {_TABLES[match[2]]} {match[3]}" if match else text


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, list):
        return " ".join(f"{v:04X}" if isinstance(v, int) else str(v) for v in value)
    return str(value)


_STAMP_MARK = {"source": "", "server": " v", "receive": " r"}


def _stamp(sample: Sample | None, today: str) -> str:
    if sample is None:
        return "-"
    text = ms_to_rfc3339(sample.ts_ms)
    # Another day (a device clock that is off) is worth the date, not the milliseconds.
    shown = text[11:23] if text[:10] == today else f"{text[:10]} {text[11:19]}"
    return shown + _STAMP_MARK.get(sample.ts_source, f" {sample.ts_source}")


_HEADERS = ("SIGNAL", "SOURCE", "ADDRESS", "RAW", "VALUE", "QUALITY", "TIME (UTC)")
_SHRINK = ((2, 24), (3, 12), (4, 12), (2, 16), (1, 10), (2, 10), (3, 8), (4, 8))
"""How a table too wide gives up room: ``(column, narrowest)`` in turn, the address
first (its end is kept), then raw and value, then the source; role, quality and time
are never cut."""


def _rows(results: Sequence[Result], today: str) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []
    for res in results:
        exp = res.signal
        quality = res.sample.quality if res.sample is not None else res.state.upper()
        value = _cell(res.sample.value) if res.sample is not None else "-"
        raw = _cell(res.raw) if res.sample is not None else "-"
        rows.append((f"{exp.item}: {exp.table}", [
            "  " + exp.role, exp.source, exp.address, raw, value, quality,
            _stamp(res.sample, today)]))
    return rows


def format_results(results: Sequence[Result], *, width: int = WIDTH,
                   now_ms: int | None = None) -> list[str]:
    """The table: a line per machine's or meter's config table, under it a row per
    signal; long cells (addresses first) cut so that no line exceeds ``width``."""
    today = ms_to_rfc3339(now_ms if now_ms is not None else time.time_ns() // 1_000_000)[:10]
    rows = _rows(results, today)
    widths = [max([len(h), *(len(r[i]) for _, r in rows)]) for i, h in enumerate(_HEADERS)]
    room = width - 2 * (len(_HEADERS) - 1)
    for col, narrowest in _SHRINK:
        excess = sum(widths) - room
        if excess <= 0:
            break
        widths[col] = max(min(narrowest, widths[col]), widths[col] - excess)
    if any(len(cells[2]) > widths[2] and _REGISTER.match(cells[2]) for _, cells in rows):
        for _, cells in rows:  # all or none, so the column reads alike
            cells[2] = _abbreviated(cells[2])
    cut = [[shorten(cell, widths[i]) for i, cell in enumerate(cells)] for _, cells in rows]
    table = format_table(_HEADERS, cut)
    lines = [table[0]]
    group = None
    for (heading, _), line in zip(rows, table[1:], strict=True):
        if heading != group:
            lines.append(shorten(heading, width))
            group = heading
        lines.append(line)
    return lines


def summary(results: Sequence[Result]) -> list[str]:
    """The closing lines: how many signals passed, and every one that did not, named
    by its config place with the reason."""
    bad = [res for res in results if not res.good]
    if not results:
        return ["no signals configured: nothing to read"]
    if not bad:
        return [f"all {len(results)} signals read with good quality"]
    lines = [f"{len(bad)} of {len(results)} signals not read with good quality:"]
    lines += [f"  {res.signal.place}: {res.problem}" for res in bad]
    return lines


def results_json(results: Sequence[Result]) -> dict[str, Any]:
    """The ``--json`` document: every signal with its place and what it gave."""
    signals = []
    for res in results:
        exp, sample = res.signal, res.sample
        signals.append({
            "place": exp.place, "device": exp.device, "role": exp.role,
            "source": exp.source, "address": exp.address, "state": res.state,
            "detail": res.detail,
            "raw": _jsonable(res.raw) if sample is not None else None,
            "value": sample.value if sample is not None else None,
            "quality": sample.quality if sample is not None else None,
            "ts": ms_to_rfc3339(sample.ts_ms) if sample is not None else None,
            "ts_source": sample.ts_source if sample is not None else None,
            "ok": res.good, "problem": res.problem or None,
        })
    return {"ok": all(r.good for r in results), "signals": signals,
            "not_good": [r.signal.place for r in results if not r.good]}


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value)


# ------------------------------------------------------------------ the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``test`` subcommand's options (for ``agent/cli.py``)."""
    parser.add_argument("-c", "--config", type=Path, required=True, help="agent config")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="seconds to wait for every signal (default "
                             f"{DEFAULT_TIMEOUT_S:g}); the read ends as soon as each has "
                             "a value or a verdict")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the table")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run with the namespace parsed by :func:`add_arguments`; a config error is raised
    (``ConfigError``) for the CLI to print, as ``check-config`` does."""
    from agent.config import load_run_config
    from agent.logs import config_secrets, install_redaction
    from rules.errors import InputError

    stdout = out or sys.stdout
    if not args.timeout > 0:
        raise InputError("--timeout: give a positive number of seconds")
    cfg = load_run_config(args.config)
    install_redaction(config_secrets(cfg))
    quiet = logging.getLogger("collectors")
    level = quiet.level
    if not quiet.isEnabledFor(logging.DEBUG):
        # Every problem is in the summary, by config place; the collectors' own lines
        # (by device and role) would only say it twice.
        quiet.setLevel(logging.ERROR)
    try:
        results = asyncio.run(probe(cfg, args.timeout))
    finally:
        quiet.setLevel(level)
    if args.json:
        json.dump(results_json(results), stdout, indent=2)
        stdout.write("\n")
    else:
        for line in format_results(results):
            print(line, file=stdout)
        print("Modbus ADDRESS: unit, table (hr/ir holding/input registers, co coils, di "
              "discrete inputs),", file=stdout)
        print("  0-based address, type (le: low word first, bs: bytes swapped)", file=stdout)
        print("TIME: the source timestamp; v: the server's, r: when the reply came (Modbus)",
              file=stdout)
        print("", file=stdout)
        for line in summary(results):
            print(line, file=stdout)
    return EXIT_OK if all(r.good for r in results) else EXIT_NOT_READ
