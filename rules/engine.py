"""The KPI engine: samples in, KPI records and alarm events out.

Pure and single-threaded: time comes only with the samples and with the watermark the
caller passes to :meth:`KpiEngine.advance`.

How it works. :meth:`KpiEngine.add` only files a sample in a per-signal buffer (O(1)).
Time is cut into *slices* (see :mod:`rules.windows`): a slice is *sealed* once it is
older than the lateness allows, i.e. ``slice_end + lateness <= watermark``. Sealing sorts
the slice's samples by time, runs the state timeline, the counters, the energy registers
and the alarms over them, and adds the slice's totals to the one window per label that
contains it. A window closes when its last slice is sealed, and its records are queued
for the next :meth:`advance` or :meth:`finish`. Memory is bounded by the samples of the
unsealed slices plus one open window per label, whatever the length of the stream.

Watermark and lateness (decided here, documented for operators):

* Live mode starts with the first :meth:`advance` call: the watermark is the caller's
  clock and nothing else closes a window.
* Before any :meth:`advance` (offline replay), the watermark is the newest sample time
  seen, so a replay of a year of data keeps memory flat; the caller collects records as
  it goes with :meth:`collect`, which (unlike :meth:`advance`) leaves the engine in this
  event-time mode, so how often it is called never changes the output (but for a
  record and its revision collected together, which come out once: the latest).
* The slice grid (where the first window of each label starts) is fixed in both modes at
  the same point of the input: when the newest sample time, or the clock, is
  ``lateness_s`` past the oldest sample seen. Fixing it earlier (at a first
  :meth:`advance` that has nothing to seal yet) would drop an on-time sample older than
  the first ones.
* Live and offline agree. Fed the same samples in the same order, a live engine whose
  watermark never runs ahead of the newest sample time (at any schedule of
  :meth:`advance` calls) and a replay produce identical records, alarms and counters,
  provided the replay drops nothing as late and each meter reports within the lateness
  (no ``energy_carried``): the replay seals at least as early as the live engine, so it
  is the one that would drop or carry first. With slower meters (but within the
  revision horizon) the two may revise different windows, and what finally stands per
  key (the latest copy) is the same in both, but for the ``revised`` flag.
  ``tests/unit/agent/test_live_vs_offline.py`` checks both properties.
* A sample is accepted while its slice is unsealed: up to ``lateness_s`` after the end of
  the slice it belongs to (so at least ``lateness_s`` late). An older sample is dropped
  and counted in ``stats["late_dropped"]``; so is an energy reading older than one
  already used to close the interval spanning a slice boundary.
* Quality ``uncertain`` is used like ``good``; ``bad`` never enters a KPI: a bad state
  sample makes the state unknown until the next good one, a bad counter or register
  reading is skipped (the next good reading is compared with the last good one), and
  the window is flagged ``bad_quality``.
* A machine without a state signal derives its state (``MachineSpec.state_from``): from
  its input signals by a rule table (:mod:`rules.derived_state`), or from a device's
  ``power_kw`` by thresholds (:mod:`rules.power_state`, which may count its parts too).
  The raw readings are buffered like a state signal's and applied in time order when
  their slice is sealed, so live and replay derive the same states from the same
  samples; the derivation's state is part of the snapshot, and an observation restart
  makes it unknown. The records of a power-read machine, of a line whose output machine
  it is, and the site's when any line's is, carry ``state_source = "power"``.
* Meters attached to neither a machine nor a line count toward the site's energy only.
* An energy interval is spread when its closing reading is known. A window is closed on
  time whatever its meters do; a meter whose reading interval covering the window's end
  is not closed yet (read less often than the lateness, or silent) leaves the record
  with the energy known so far, flagged ``energy_pending``, and the window's totals are
  kept (:mod:`rules.revisions`). When the closing reading arrives, each kept window
  gets its uniform share and all its records (machines, lines, site) are emitted again,
  whole, same key, flagged ``revised``; downstream the latest copy replaces the earlier
  one, so what finally stands is the offline recompute's spread. Two copies of a key in
  one output are sent once (the latest, where the first stood). A window is kept until
  ``revision_horizon_s`` (default 4 h) after its end, and a meter silent for longer
  than that counts as gone (its later windows are neither kept nor flagged pending, so
  a dead meter costs no memory); energy reaching back further is booked to the earliest
  open window and flagged ``energy_carried`` (window sums still add up to the meter's
  total), as is energy reaching back past a restore from a snapshot older than
  version 3. At the end of the input (:meth:`KpiEngine.finish`)
  nothing is pending any more: the kept windows are emitted once more, revised, without
  ``energy_pending``. Revised records raise no alarm: alarms saw the window once.

Observation boundary (decided here, relied on by the ingest and the reports):

* A record exists only for a window the engine observed, and its time elements count
  only observed time: time the agent was running *and* in which the machine's state was
  known. Its ``observed_s`` is the part of the window the agent observed (the same for
  the window's machine, line and site records), so a fully observed window has
  ``observed_s`` equal to its length, and a record that saw less of its window can be
  told from one that saw all of it. A window not fully observed is flagged
  ``incomplete``.
* :meth:`KpiEngine.observe_from` says "observation (re)starts at T, with no continuity
  from before": the live agent calls it when it starts without a usable checkpoint, and
  ``edge-agent kpi`` when the sample log holds the agent's observation marker there.
  Time before T is unknown (outside POT, so outside PBT); a window ending at or before T
  gets no record. A sample dated before T that arrives after the call (an OPC UA
  initial value carries the source timestamp of the value's last change, possibly hours
  old) counts as found at T: a state is the state from T, a counter or energy reading
  is a baseline at T, never an increment over a value from before. The slice grid
  reaches back to T, so a window the agent observed before its first sample arrived
  has a record too, its time unknown.
* Called again mid-stream (a replayed log in which the agent restarted without its
  checkpoint), the time from just after the newest sample seen before the call up to T
  is not observed, states become unknown at T and counters and registers take new
  baselines there. A T earlier than what was already seen moves to just after it.
* An engine never told (a log without a marker) takes its oldest sample as the start of
  observation when it fixes its slice grid, with the same rules from there on: it
  cannot have observed anything before the first thing it saw.
* A restored checkpoint continues the observation it holds: a restart *with* its
  checkpoint loses nothing, and the time the agent was down is caught up by the
  samples' own timestamps, as before.
* A rebuild for another plant (:meth:`KpiEngine.rebuild`, a config reload) continues the
  observation too; a machine or meter it does not carry whole observes from the rebuild
  on: its samples dated before it count as found at it (its source was restarted, and
  an initial value's old timestamp says nothing about the time before).
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from operator import attrgetter
from typing import Any, Literal

from rules.alarms import AlarmBook
from rules.counters import as_count, counter_increase
from rules.derived_state import BAD, INVALID, RuleDeriver, StateRulesSpec
from rules.energy import MeterModel, register_role, share_term
from rules.errors import ConfigError
from rules.kpi import (
    EnergyFactors,
    WindowId,
    line_energy,
    line_record,
    machine_record,
    site_record,
)
from rules.power_state import POWER_SOURCE, PowerDeriver, PowerStateSpec
from rules.revisions import (
    DEFAULT_HORIZON_S,
    LINE,
    MACHINE,
    REVISED,
    SITE,
    LateShare,
    RevisionBook,
    Target,
    mark_pending,
)
from rules.revisions import ordered as revision_order
from rules.spec import ELECTRICITY, EngineSpec, MachineSpec, MeterSpec
from rules.tariff import TariffModel
from rules.timemodel import book
from rules.totals import EnergyTotals, MachineTotals, PlantTotals
from rules.types import MACHINE_STATES, AlarmEvent, KpiRecord, Sample
from rules.windows import SliceInfo, WindowPlan

_NEG = -(1 << 62)
_INF = float("inf")
_POS = 1 << 62
_TS = attrgetter("ts_ms")
SNAPSHOT_VERSION = 3
"""Layout of :meth:`KpiEngine.snapshot`; 2 added the observation state (version 1 is
still restored, as an engine observing since its oldest sample); 3 added the windows
kept for energy revision (an older snapshot is restored keeping none), and may hold
``device_from`` (what :meth:`KpiEngine.rebuild` started afresh; absent: nothing)."""
_MAX_UNKNOWN_KEYS = 100

BAD_QUALITY = "bad_quality"
INVALID_VALUE = "invalid_value"
ENERGY_CARRIED = "energy_carried"
CONFIG_RELOAD = "config_reload"
"""Flag on the records of open windows whose machine, line or meter was not carried whole
across :meth:`KpiEngine.rebuild` (their totals mix two configs, or start at the rebuild)."""

Carry = Literal["all", "totals", "none"]
"""How much state of one machine, meter or line a rebuilt engine keeps:

* ``all``: everything (only values applied when a record is built changed, such as the
  ideal cycle time or line membership, and they apply to the whole open window);
* ``totals``: the open windows' totals survive, but counter/register baselines and
  buffered raw readings are dropped (their meaning may have changed);
* ``none``: nothing (added, or the accumulated totals no longer mean the same).
"""


@dataclass(frozen=True, slots=True)
class StateCarry:
    """What :meth:`KpiEngine.rebuild` keeps of the old engine's state, by id.

    Whoever knows what changed (the config reload's planner) decides it; only the engine
    knows what its state is, so it alone applies it. An id not named carries ``none``.
    """

    machines: Mapping[str, Carry] = field(default_factory=dict)
    meters: Mapping[str, Carry] = field(default_factory=dict)
    lines: Mapping[str, Carry] = field(default_factory=dict)
    fresh_alarms: frozenset[str] = frozenset()
    """Alarm rules whose state restarts although a rule of that name existed."""
    at_ms: int | None = None
    """When the rebuild happens (the caller's clock). A machine or meter not carried whole
    observes from then: its samples dated before it (a restarted source's initial values
    carry old source timestamps) count as found at it, as after :meth:`KpiEngine.observe_from`.
    None: no such boundary."""

_STAT_NAMES = (
    "samples",
    "ignored_unknown",
    "ignored_bad_quality",
    "ignored_invalid",
    "ignored_after_end",
    "late_dropped",
    "windows_closed",
    "records",
    "records_revised",
    "alarms",
)


@dataclass
class EngineOutput:
    """What became final since the previous call.

    ``records`` are in window order: by ``window_end_ms``, then the label order of
    ``spec.windows``, then machines (config order), then lines, then the site record.
    """

    records: list[KpiRecord] = field(default_factory=list)
    alarms: list[AlarmEvent] = field(default_factory=list)


def _take(buf: list[Sample], end_ms: int, ordered: bool) -> list[Sample]:
    """Remove and return, in time order, the buffered samples before ``end_ms``.

    ``ordered`` says no sample arrived out of time order since the last seal, so the
    buffer is already sorted (equal times keep their arrival order either way).
    """
    if not buf:
        return []
    if not ordered:
        buf.sort(key=_TS)
    if buf[-1].ts_ms < end_ms:
        taken = buf[:]
        buf.clear()
        return taken
    cut = bisect.bisect_left(buf, end_ms, key=_TS)
    taken = buf[:cut]
    del buf[:cut]
    return taken


class _Machine:
    __slots__ = ("buf_inputs", "buf_second", "buf_state", "buf_total", "deriver", "idx",
                 "last_second", "last_total", "spec", "state")

    def __init__(self, idx: int, spec: MachineSpec) -> None:
        self.idx = idx
        self.spec = spec
        self.state: str | None = None
        self.last_total: int | None = None
        self.last_second: int | None = None
        self.buf_state: list[Sample] = []
        self.buf_total: list[Sample] = []
        self.buf_second: list[Sample] = []
        # A state derived from other signals (rules.derived_state, rules.power_state):
        # their readings, applied in time order when a slice is sealed.
        self.buf_inputs: list[Sample] = []
        src = spec.state_from
        self.deriver: RuleDeriver | PowerDeriver | None = (
            RuleDeriver(src) if isinstance(src, StateRulesSpec)
            else PowerDeriver(src) if isinstance(src, PowerStateSpec) else None)


class _Meter:
    __slots__ = ("buf", "last_steps", "last_ts", "line_idx", "machine_idx", "model", "pending",
                 "spec")

    def __init__(self, spec: MeterSpec, machine_idx: int | None, line_idx: int | None) -> None:
        self.spec = spec
        self.model = MeterModel.from_spec(spec)
        self.machine_idx = machine_idx
        self.line_idx = line_idx
        self.last_ts: int | None = None
        self.last_steps: int | None = None
        # (t1, t2, steps, flag) of an interval only partly booked (it spans a seal point)
        self.pending: tuple[int, int, int, str | None] | None = None
        self.buf: list[Sample] = []


class _Window:
    __slots__ = ("end", "label_idx", "start", "totals")

    def __init__(self, label_idx: int, start: int, end: int, totals: PlantTotals) -> None:
        self.label_idx = label_idx
        self.start = start
        self.end = end
        self.totals = totals


class KpiEngine:
    """Computes ISO 22400 and green-factory KPI records and alarm events from samples.

    One engine per site (per agent). Feed samples with :meth:`add` in roughly time order;
    collect results with :meth:`advance` (live) or :meth:`finish` (end of input).
    """

    def __init__(self, spec: EngineSpec, *,
                 revision_horizon_s: float = DEFAULT_HORIZON_S) -> None:
        """``revision_horizon_s`` bounds how long after its end a closed window's energy
        may still be revised (see :mod:`rules.revisions`); 0 never revises."""
        self.spec = spec
        problems: list[tuple[str, str]] = []
        self._plan = WindowPlan.for_spec(spec)
        self._lateness_ms = round(spec.lateness_s * 1000)
        self._grid = EnergyFactors.of(spec)
        self._tariff = None if spec.tariff is None else TariffModel(spec.tariff, spec.timezone)
        self._machines = [_Machine(i, m) for i, m in enumerate(spec.machines)]
        machine_idx = {m.id: i for i, m in enumerate(spec.machines)}
        line_idx = {ln.id: i for i, ln in enumerate(spec.lines)}
        self._line_members: list[list[int]] = [[] for _ in spec.lines]
        for i, mspec in enumerate(spec.machines):
            if mspec.line in line_idx:
                self._line_members[line_idx[mspec.line]].append(i)
        self._line_output: list[int] = []
        for i, ln in enumerate(spec.lines):
            if ln.output_machine not in machine_idx:
                problems.append((f"lines[{i}] {ln.id!r}",
                                 f"output_machine {ln.output_machine!r} is not a machine"))
                self._line_output.append(-1)
            else:
                self._line_output.append(machine_idx[ln.output_machine])
        self._meters: list[_Meter] = []
        for i, ms in enumerate(spec.meters):
            if ms.machine is not None and ms.machine not in machine_idx:
                problems.append((f"meters[{i}] {ms.id!r}", f"machine {ms.machine!r} unknown"))
                continue
            if ms.machine is None and ms.line is not None and ms.line not in line_idx:
                problems.append((f"meters[{i}] {ms.id!r}", f"line {ms.line!r} unknown"))
                continue
            if ms.resolution_kwh <= 0:
                problems.append((f"meters[{i}] {ms.id!r}", "resolution_kwh must be > 0"))
                continue
            if ms.carrier not in self._grid.carriers:
                problems.append((f"meters[{i}] {ms.id!r}", f"carrier {ms.carrier!r} unknown"))
                continue
            self._meters.append(_Meter(
                ms,
                None if ms.machine is None else machine_idx[ms.machine],
                None if ms.machine is not None or ms.line is None else line_idx[ms.line],
            ))
        if problems:
            raise ConfigError(problems)

        self._alarms = AlarmBook(spec)
        # Routing: (device, signal) -> buffer. Known signals that no KPI or alarm uses go
        # to a list emptied at every seal: they still show the engine that time moves.
        self._routes: dict[tuple[str, str], list[Sample]] = {}
        self._discard: list[Sample] = []
        for m in self._machines:
            second = "parts_good" if m.spec.good_counter else "parts_bad"
            self._routes[(m.spec.id, "state")] = m.buf_state
            self._routes[(m.spec.id, "parts_total")] = m.buf_total
            self._routes[(m.spec.id, second)] = m.buf_second
            self._routes[(m.spec.id, "power_kw")] = self._discard
        for meter in self._meters:
            self._routes[(meter.spec.id, register_role(meter.spec.carrier))] = meter.buf
            self._routes[(meter.spec.id, "power_kw")] = self._discard
        problems += self._route_derived(spec)
        if problems:
            raise ConfigError(problems)
        known_devices = {m.id for m in spec.machines} | {m.spec.id for m in self._meters}
        self._alarm_only: dict[tuple[str, str], list[Sample]] = {}
        for key in self._alarms.threshold_keys:
            if key[0] in known_devices and self._routes.get(key, self._discard) is self._discard:
                buf: list[Sample] = []
                self._alarm_only[key] = buf
                self._routes[key] = buf

        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._n = 0
        self._unknown = 0
        self._unknown_keys: dict[tuple[str, str], int] = {}
        self._late = 0
        self._bad = 0
        self._min_ts = _POS
        self._hw = _NEG
        self._event_mode = True
        self._seal_trigger = _POS
        self._sealed_until = _NEG
        self._slice: SliceInfo | None = None
        self._known_until: int | None = None
        self._create_before = _POS
        # Observation: samples dated before ``_observe_from`` count at it (_NEG: the engine
        # was never told, see _settle_start); ``_gaps`` are the unobserved intervals
        # [from, restart) not yet sealed past, in time order. A restart point is always a
        # slice boundary, so within one slice an unobserved interval is a suffix of it.
        self._observe_from = _NEG
        self._gaps: list[tuple[int, int]] = []
        # Per device, the same for one machine or meter started afresh by a rebuild; an
        # entry goes once sealed past (an older sample is late anyway).
        self._device_from: dict[str, int] = {}
        self._open: dict[tuple[int, int], _Window] = {}
        self._out_records: list[KpiRecord] = []
        # Energy revisions (rules.revisions): closed windows kept for a slow meter's
        # closing reading, and the late shares noted while the current slice is sealed.
        self._revisions = RevisionBook(round(revision_horizon_s * 1000))
        self._late_shares: list[LateShare] = []
        self._revised_drained = 0  # records_revised when output was last drained
        self._ordered = True
        power = {i for i, m in enumerate(spec.machines)
                 if isinstance(m.state_from, PowerStateSpec)}
        # Per record of a window (machines, lines, site): its state_source.
        self._sources: list[str | None] = (
            [POWER_SOURCE if i in power else None for i in range(len(spec.machines))]
            + [POWER_SOURCE if out in power else None for out in self._line_output]
            + [POWER_SOURCE if power & set(self._line_output) else None])
        self._any_power = bool(power)

    def _route_derived(self, spec: EngineSpec) -> list[tuple[str, str]]:
        """Route the signals a machine's state is derived from to that machine."""
        problems: list[tuple[str, str]] = []
        devices = {m.id for m in spec.machines} | {m.spec.id for m in self._meters}
        taken: dict[tuple[str, str], str] = {}
        for i, m in enumerate(self._machines):
            src = m.spec.state_from
            if src is None:
                continue
            where = f"machines[{i}] {m.spec.id!r}"
            if isinstance(src, StateRulesSpec):
                keys = [(m.spec.id, name) for name in src.inputs]
                problems += [(f"{where}: {p}", msg) for p, msg in src.problems()]
            else:
                keys = [(src.device, src.signal)]
                problems += [(f"{where}: {p}", msg) for p, msg in src.problems()]
                if src.device not in devices:
                    problems.append((f"{where}: power_state",
                                     f"device {src.device!r} is neither a machine nor a meter"))
            del self._routes[(m.spec.id, "state")]
            for key in keys:
                if key in taken:
                    problems.append((f"{where}: state", f"{key[0]}.{key[1]} already gives "
                                     f"the state of machine {taken[key]!r}"))
                taken[key] = m.spec.id
                self._routes[key] = m.buf_inputs
        return problems

    # ------------------------------------------------------------------ input

    def add(self, sample: Sample) -> None:
        """File one sample. Unknown device/signal pairs are counted and ignored; a sample
        older than the lateness allows is counted and dropped; bad quality is kept only
        as "state unknown" / a flag and never enters a KPI."""
        self._n += 1
        buf = self._routes.get((sample.device, sample.signal))
        ts = sample.ts_ms
        if buf is None:
            self._unknown += 1
            key = (sample.device, sample.signal)
            if key in self._unknown_keys or len(self._unknown_keys) < _MAX_UNKNOWN_KEYS:
                self._unknown_keys[key] = self._unknown_keys.get(key, 0) + 1
            return
        if ts < self._observe_from:
            # Dated before observation (re)started: what the agent found at the start.
            ts = self._observe_from
            sample = sample._replace(ts_ms=ts)
        if self._device_from:
            since = self._device_from.get(sample.device)
            if since is not None and ts < since:
                ts = since
                sample = sample._replace(ts_ms=ts)
        if ts < self._sealed_until:
            self._late += 1
            return
        if sample.quality == "bad":
            self._bad += 1
        buf.append(sample)
        if ts < self._min_ts:
            self._min_ts = ts
            if self._slice is None:
                self._seal_trigger = ts + self._lateness_ms
        if ts > self._hw:
            self._hw = ts
            if ts >= self._seal_trigger:
                if self._event_mode:
                    self._seal_to(ts - self._lateness_ms)
                else:
                    # Live mode: only the clock seals, but the slice grid starts where an
                    # offline replay of the same samples starts it (see the module doc).
                    self._start_slicing()
                    self._seal_trigger = _POS
        elif ts < self._hw:
            self._ordered = False

    def observe_from(self, ts_ms: int) -> None:
        """Observation (re)starts at ``ts_ms``, with no continuity from before.

        Time before it is unknown, and a window ending at or before it gets no record; a
        sample dated before it that arrives after this call counts as found at it (a
        state from then on, a counter or register reading as a new baseline). Called
        mid-stream, the time between the newest sample seen so far and ``ts_ms`` is not
        observed, and every state, counter and register restarts at ``ts_ms``. A
        ``ts_ms`` not after what was already seen or sealed moves to just after it.
        See the module doc, "Observation boundary".
        """
        self._settle_start()
        start = max(ts_ms, self._hw + 1, self._sealed_until, self._observe_from)
        gap_from = min(max(self._hw + 1, self._observe_from, self._sealed_until), start)
        gaps = self._gaps
        if gaps and gaps[-1][1] >= gap_from:  # nothing seen since the previous restart
            gaps[-1] = (gaps[-1][0], start)
        else:
            gaps.append((gap_from, start))
        self._observe_from = start
        sl = self._slice
        if sl is not None and sl.start_ms < start < sl.end_ms:
            self._slice = replace(sl, end_ms=start)
            if self._event_mode:  # the shorter slice is due earlier
                self._seal_trigger = start + self._lateness_ms

    @property
    def observing_from_ms(self) -> int | None:
        """Where observation last (re)started: the latest :meth:`observe_from`, or the
        oldest sample of an engine never told; None before either."""
        return None if self._observe_from == _NEG else self._observe_from

    def advance(self, watermark_ms: int) -> EngineOutput:
        """Live mode: close every window whose ``end + lateness <= watermark_ms``.

        Machine states are carried forward to the window ends (a subscription reports
        only changes). Returns the records and alarms that became final.
        """
        self._event_mode = False
        if self._slice is not None:
            self._seal_trigger = _POS
        self._seal_to(watermark_ms - self._lateness_ms)
        return self._drain()

    def finish(self, end_ms: int | None = None) -> EngineOutput:
        """End of input: close every window that started before ``end_ms``.

        ``end_ms`` defaults to the newest sample time (windows starting at exactly that
        instant are closed too, so the last sample is never lost). States are known up to
        ``end_ms``; the rest of a window after it is unknown and flags ``incomplete``.
        Samples at or after an explicit ``end_ms`` are dropped (``ignored_after_end``).
        """
        if self._min_ts == _POS:
            return self._drain()
        if end_ms is None:
            end = self._hw
            cut = self._hw + 1
        else:
            end = cut = end_ms
            bufs = [m.buf_state for m in self._machines] + [m.buf_total for m in self._machines]
            bufs += [m.buf_second for m in self._machines] + [m.buf for m in self._meters]
            bufs += [m.buf_inputs for m in self._machines]
            bufs += list(self._alarm_only.values())
            for buf in bufs:
                kept = [s for s in buf if s.ts_ms < end]
                self._stats["ignored_after_end"] += len(buf) - len(kept)
                buf[:] = kept
        self._known_until = end
        self._create_before = cut
        self._event_mode = False
        self._seal_trigger = _POS
        self._start_slicing()
        while self._slice is not None and (self._slice.start_ms < cut or self._open):
            self._seal_one()
        self._settle_revisions()
        self._known_until = None
        return self._drain()

    def collect(self) -> EngineOutput:
        """Offline replay: the records and alarms that became final so far.

        Unlike :meth:`advance` it fixes no watermark and keeps the engine in event-time
        mode, so how often a replay collects its output never changes the output, but
        for a record whose revision became final before it was collected: the two come
        out once, as the revision. What finally stands per key is the same either way.
        """
        return self._drain()

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters for the health endpoint and the offline command's summary."""
        out = dict(self._stats)
        out["samples"] = self._n
        out["ignored_unknown"] = self._unknown
        out["late_dropped"] += self._late
        out["ignored_bad_quality"] = self._bad
        return out

    @property
    def unknown_signals(self) -> Mapping[tuple[str, str], int]:
        """How often each unknown (device, signal) pair was seen, for the first
        ``_MAX_UNKNOWN_KEYS`` distinct pairs, so an operator can tell a typo in the
        config from a device that is simply not configured. Not part of a checkpoint."""
        return dict(self._unknown_keys)

    # ---------------------------------------------------------------- sealing

    def _drain(self) -> EngineOutput:
        if self._revised_drained != self._stats["records_revised"]:
            self._revised_drained = self._stats["records_revised"]
            self._out_records = _latest_copies(self._out_records)
        out = EngineOutput(self._out_records, self._alarms.drain())
        self._out_records = []
        self._stats["alarms"] += len(out.alarms)
        return out

    def _settle_start(self) -> None:
        """An engine never told where observation started takes its oldest sample as the
        start (and samples arriving later dated before it as found at it)."""
        if self._observe_from == _NEG and self._min_ts != _POS:
            self._observe_from = self._min_ts
            self._gaps.insert(0, (_NEG, self._min_ts))

    def _next_slice(self, start_ms: int) -> SliceInfo:
        """The plan's slice at ``start_ms``, cut at the next observation restart point."""
        info = self._plan.slice_at(start_ms)
        for _, restart in self._gaps:
            if restart >= info.end_ms:
                break
            if restart > start_ms:
                return replace(info, end_ms=restart)
        return info

    def _restart(self) -> None:
        """No continuity across an observation restart: every state is unknown, the next
        counter and register readings are baselines, and no alarm duration runs on
        from before (a raised alarm stays raised until its condition clears)."""
        alarms = self._alarms
        for idx in alarms.timed:
            alarms.states[idx].since = None
        for m in self._machines:
            m.state = None
            m.last_total = None
            m.last_second = None
            if m.deriver is not None:
                m.deriver.reset()
        for meter in self._meters:
            meter.last_ts = None
            meter.last_steps = None
            meter.pending = None

    def _unobserved(self, start_ms: int, end_ms: int) -> bool:
        """Does ``[start_ms, end_ms)`` lie wholly in time the engine did not observe?"""
        return any(a <= start_ms and end_ms <= b for a, b in self._gaps)

    def _start_slicing(self) -> None:
        if self._slice is None and self._min_ts != _POS:
            self._settle_start()
            # From the observation start at the latest: a sample counted at it (an initial
            # value coming after the first ones) must not find its slice already sealed.
            start = self._plan.first_slice_start(min(self._min_ts, self._observe_from))
            self._slice = self._next_slice(start)
            self._sealed_until = start

    def _seal_to(self, until_ms: int) -> None:
        if self._slice is None:
            if until_ms < self._min_ts:
                # Nothing to seal yet. Fixing the slice grid now, from the samples seen so
                # far, would drop an on-time sample older than those (see the module doc).
                return
            self._start_slicing()
        while self._slice is not None and self._slice.end_ms <= until_ms:
            self._seal_one()
        if self._slice is None:
            return
        self._seal_trigger = (self._slice.end_ms + self._lateness_ms if self._event_mode
                              else _POS)

    def _seal_one(self) -> None:
        info = self._slice
        assert info is not None
        p, s = info.start_ms, info.end_ms
        gaps = self._gaps
        while gaps and gaps[0][1] <= p:
            del gaps[0]
            self._restart()
        # Known (and observed) until: the end of the input, or where an unobserved
        # interval begins in this slice (it then runs to the slice end at least). Alarm
        # timers stop where observation stopped, even in a later slice of the interval.
        ku = self._known_until
        alarm_until = s if ku is None else min(s, ku)
        if gaps and gaps[0][0] < s:
            cut = max(gaps[0][0], p)
            ku = cut if ku is None else min(ku, cut)
            alarm_until = min(alarm_until, gaps[0][0])
        n_lines = len(self.spec.lines)
        totals = PlantTotals.empty(len(self._machines), n_lines)
        totals.observed = s - p if ku is None else max(0, min(ku, s) - p)
        ordered = self._ordered
        self._discard.clear()
        self._seal_machines(info, totals, ordered, ku)
        self._seal_meters(info, totals, ordered)
        for key, buf in self._alarm_only.items():
            for smp in _take(buf, s, ordered):
                if smp.quality != "bad":
                    self._alarms.on_value(key, smp.ts_ms, smp.value)
        self._alarms.advance_to(alarm_until)
        self._fold(info, totals)
        self._revise(info)
        self._ordered = True  # every non-empty buffer was sorted by _take
        self._sealed_until = s
        if self._device_from:
            self._device_from = {d: t for d, t in self._device_from.items() if t >= s}
        self._slice = self._next_slice(s)
        self._close_until(s)

    def _seal_machines(self, info: SliceInfo, totals: PlantTotals, ordered: bool,
                       ku: int | None) -> None:
        p, s = info.start_ms, info.end_ms
        alarms = self._alarms
        state_alarms = alarms.state_rules
        threshold_keys = alarms.threshold_keys
        for m, mt in zip(self._machines, totals.machines, strict=True):
            mid = m.spec.id
            working = info.working_for(m.idx)  # the machine's own calendar
            # --- state timeline
            items = _take(m.buf_state, s, ordered)
            if m.deriver is not None:
                steps = self._derived_steps(m, mt, _take(m.buf_inputs, s, ordered))
                items = []
            else:
                steps = self._state_steps(items, mt)
            cur = m.state
            watch = mid in state_alarms
            if steps:
                times = mt.times
                t = p
                for ts, new in steps:
                    if ts > t:
                        if working:
                            book(times, cur, t, ts, ku)
                        t = ts
                    if watch:
                        alarms.on_state(mid, ts, new)
                    cur = new
                if working:
                    book(times, cur, t, s, ku)
                m.state = cur
                if items and (mid, "state") in threshold_keys:
                    for smp in items:
                        if smp.quality != "bad":
                            alarms.on_value((mid, "state"), smp.ts_ms, smp.value)
            elif working:
                book(mt.times, cur, p, s, ku)
            # --- counters
            modulus = m.spec.counter_modulus
            if m.buf_total:
                items = _take(m.buf_total, s, ordered)
                m.last_total, produced = self._count(items, m.last_total, modulus, mt)
                mt.produced += produced
                self._counter_alarms((mid, "parts_total"), items)
            if m.buf_second:
                items = _take(m.buf_second, s, ordered)
                last, inc = self._count(items, m.last_second, modulus, mt)
                m.last_second = last
                if m.spec.good_counter:
                    mt.good = inc
                    self._counter_alarms((mid, "parts_good"), items)
                else:
                    mt.scrap = inc
                    self._counter_alarms((mid, "parts_bad"), items)

    def _state_steps(self, items: list[Sample], mt: MachineTotals
                     ) -> list[tuple[int, str | None]]:
        """A state signal's samples as ``(time, state from then on)``, None = unknown."""
        steps: list[tuple[int, str | None]] = []
        for smp in items:
            new: str | None
            if smp.quality == "bad":
                new = None
                mt.flags.add(BAD_QUALITY)
            elif smp.value in MACHINE_STATES:
                new = str(smp.value)
            else:
                new = None
                mt.flags.add(INVALID_VALUE)
                self._stats["ignored_invalid"] += 1
            steps.append((smp.ts_ms, new))
        return steps

    def _derived_steps(self, m: _Machine, mt: MachineTotals, items: list[Sample]
                       ) -> list[tuple[int, str | None]]:
        """The derived state after each of the slice's input readings (in time order),
        and the parts the power model counted; threshold alarms see the readings."""
        deriver = m.deriver
        assert deriver is not None
        keys = self._alarms.threshold_keys
        steps: list[tuple[int, str | None]] = []
        for smp in items:
            new, problem, parts = deriver.update(smp)
            if problem == BAD:
                mt.flags.add(BAD_QUALITY)
            elif problem == INVALID:
                mt.flags.add(INVALID_VALUE)
                self._stats["ignored_invalid"] += 1
            elif (smp.device, smp.signal) in keys:
                self._alarms.on_value((smp.device, smp.signal), smp.ts_ms, smp.value)
            mt.produced += parts
            steps.append((smp.ts_ms, new))
        return steps

    def _counter_alarms(self, key: tuple[str, str], items: list[Sample]) -> None:
        if key in self._alarms.threshold_keys:
            for smp in items:
                if smp.quality != "bad":
                    self._alarms.on_value(key, smp.ts_ms, smp.value)

    def _count(
        self, items: list[Sample], last: int | None, modulus: int, mt: MachineTotals
    ) -> tuple[int | None, int]:
        inc = 0
        for smp in items:
            if smp.quality == "bad":
                mt.flags.add(BAD_QUALITY)
                continue
            value = smp.value
            if type(value) is not int:
                value = as_count(value)
                if value is None:
                    mt.flags.add(INVALID_VALUE)
                    self._stats["ignored_invalid"] += 1
                    continue
            elif value < 0:
                mt.flags.add(INVALID_VALUE)
                self._stats["ignored_invalid"] += 1
                continue
            if last is not None:
                if value >= last:
                    inc += value - last
                else:
                    step, flag = counter_increase(last, value, modulus)
                    inc += step
                    if flag:
                        mt.flags.add(flag)
            last = value
        return last, inc

    def _reach(self, info: SliceInfo) -> int:
        """Until when every label's window holding this slice runs (at least its end).

        An energy interval from this slice that closes by then lands in the same window
        of every label whichever of its slices the shares go to, so it is booked whole to
        this one: exact fractional shares are needed only across a window boundary."""
        windows = self._plan.windows_of(info)
        if len(windows) != len(self.spec.windows):  # a shift label between or across shifts
            return info.end_ms
        return min(end for _, _, end in windows)

    def _seal_meters(self, info: SliceInfo, totals: PlantTotals, ordered: bool) -> None:
        p, s = info.start_ms, info.end_ms
        restart = self._gaps[0][1] if self._gaps else _POS
        reach = self._reach(info) if self._meters else s
        for meter in self._meters:
            if meter.machine_idx is not None:
                target = totals.machines[meter.machine_idx].energy
            elif meter.line_idx is not None:
                target = totals.lines[meter.line_idx]
            else:
                target = totals.site
            # whole steps, and the fractional shares as {denominator: numerator} in steps
            whole = 0
            terms: dict[int, int] = {}
            # time-of-use cost in steps x price, booked with every share of ``steps``
            cost: Fraction | int = 0
            tariff = self._tariff if meter.spec.carrier == ELECTRICITY else None
            seen = False
            flags = target.flags
            if meter.pending is not None:
                t1, t2, delta, flag = meter.pending
                num, den = share_term(delta, t1, t2, p, s)
                if den == 1:
                    whole += num
                elif num:
                    terms[den] = terms.get(den, 0) + num
                if tariff is not None:
                    cost += tariff.cost(delta, t1, t2, p, s)
                seen = True
                if flag:
                    flags.add(flag)
                if t2 <= s:
                    meter.pending = None
            items = _take(meter.buf, s, ordered) if meter.buf else []
            model = meter.model
            resolution_kwh = model.resolution_kwh
            last_ts = meter.last_ts
            last_steps = meter.last_steps
            for smp in items:
                if smp.quality == "bad":
                    flags.add(BAD_QUALITY)
                    continue
                ts = smp.ts_ms
                if last_ts is not None and ts <= last_ts:
                    if ts < last_ts:
                        self._late += 1
                    continue
                reading = smp.value
                # MeterModel.to_steps, its common case inline
                value = (round(reading / resolution_kwh)
                         if type(reading) is float and 0 <= reading < _INF
                         else model.to_steps(reading))
                if value is None:
                    flags.add(INVALID_VALUE)
                    self._stats["ignored_invalid"] += 1
                    continue
                seen = True
                if last_ts is not None and last_steps is not None:
                    if value >= last_steps:
                        delta, flag = value - last_steps, None
                    else:
                        delta, flag = model.increase(last_steps, value, ts - last_ts)
                    if flag:
                        flags.add(flag)
                    whole += delta
                    if tariff is not None:
                        cost += tariff.cost(delta, last_ts, ts, last_ts, ts)
                    if last_ts < p and delta:
                        # arrived after the slice holding the interval's start was sealed
                        self._note_late(meter, last_ts, ts, delta, p, flag)
                last_ts, last_steps = ts, value
            # Look ahead: the first good reading after the slice closes the interval that
            # spans the slice end, so its share of this slice is booked now; never one
            # after an observation restart, which is a new baseline.
            if last_ts is not None and last_steps is not None and meter.pending is None:
                for smp in meter.buf:
                    if smp.ts_ms >= restart:
                        break
                    if smp.quality == "bad" or smp.ts_ms <= last_ts:
                        continue
                    value = model.to_steps(smp.value)
                    if value is None:
                        continue
                    ts = smp.ts_ms
                    delta, flag = model.increase(last_steps, value, ts - last_ts)
                    if flag:
                        flags.add(flag)
                    seen = True
                    if last_ts < p:
                        num, den = share_term(delta, last_ts, ts, last_ts, p)
                        if num:
                            if den == 1:
                                whole += num
                            else:
                                terms[den] = terms.get(den, 0) + num
                            if tariff is not None:
                                cost += tariff.cost(delta, last_ts, ts, last_ts, p)
                            self._note_late(meter, last_ts, ts, delta, p, flag)
                    until = ts if ts <= reach else s
                    num, den = share_term(delta, last_ts, ts, p, until)
                    if den == 1:
                        whole += num
                    elif num:
                        terms[den] = terms.get(den, 0) + num
                    if tariff is not None:
                        cost += tariff.cost(delta, last_ts, ts, p, until)
                    if ts > until:
                        meter.pending = (last_ts, ts, delta, flag)
                    last_ts, last_steps = ts, value
                    break
            meter.last_ts, meter.last_steps = last_ts, last_steps
            key = (meter.spec.id, register_role(meter.spec.carrier))
            if items and key in self._alarms.threshold_keys:
                for smp in items:
                    if smp.quality != "bad":
                        self._alarms.on_value(key, smp.ts_ms, smp.value)
            if seen:
                resolution = model.resolution
                booked_cost = cost * resolution if cost else 0
                if meter.spec.carrier == ELECTRICITY:
                    target.book_steps(whole, terms, resolution.numerator,
                                      resolution.denominator, booked_cost)
                else:
                    steps = whole + sum((Fraction(num, den) for den, num in terms.items()),
                                        Fraction(0)) if terms else whole
                    target.book(meter.spec.carrier, steps * resolution, booked_cost)

    def _fold(self, info: SliceInfo, totals: PlantTotals) -> None:
        for label_idx, start, end in self._plan.windows_of(info):
            key = (label_idx, start)
            win = self._open.get(key)
            if win is None:
                if start >= self._create_before or self._unobserved(start, end):
                    continue
                win = _Window(label_idx, start, end, PlantTotals.empty(
                    len(self._machines), len(self.spec.lines)))
                self._open[key] = win
            win.totals.add(totals)

    def _close_until(self, end_ms: int) -> None:
        closing = [w for w in self._open.values() if w.end <= end_ms]
        if not closing:
            return
        closing.sort(key=lambda w: (w.end, w.label_idx, w.start))
        for win in closing:
            del self._open[(win.label_idx, win.start)]
            self._emit(win)
            self._retain(win)

    def _emit(self, win: _Window, revised: bool = False) -> None:
        self._mark_pending(win)
        spec = self.spec
        tot = win.totals
        wid = WindowId(spec.site_id, spec.windows[win.label_idx], win.start, win.end,
                       tot.observed)
        grid = self._grid
        records = [
            machine_record(wid, m.spec, mt, grid)
            for m, mt in zip(self._machines, tot.machines, strict=True)
        ]
        outputs = []
        for i, ln in enumerate(spec.lines):
            out_idx = self._line_output[i]
            energy = line_energy([tot.machines[j] for j in self._line_members[i]], tot.lines[i])
            out_spec = self._machines[out_idx].spec
            outputs.append((out_spec, tot.machines[out_idx]))
            members = [(self._machines[j].spec, tot.machines[j]) for j in self._line_members[i]]
            records.append(line_record(wid, ln.id, out_spec, tot.machines[out_idx], energy, grid,
                                       members))
        site_energy = EnergyTotals()
        for mt in tot.machines:
            site_energy.add(mt.energy)
        for et in tot.lines:
            site_energy.add(et)
        site_energy.add(tot.site)
        everyone = [(m.spec, mt) for m, mt in zip(self._machines, tot.machines, strict=True)]
        records.append(site_record(wid, outputs, site_energy, grid, everyone))
        if self._any_power:
            records = [r if src is None else replace(r, state_source=src)
                       for r, src in zip(records, self._sources, strict=True)]
        if revised:
            # A revision replaces records already out; alarms saw the window once.
            self._out_records.extend(_flag_revised(records))
            self._stats["records_revised"] += len(records)
            return
        for rec in records:
            self._alarms.on_record(rec)
        self._out_records.extend(records)
        self._stats["windows_closed"] += 1
        self._stats["records"] += len(records)

    # ------------------------------------------------------- energy revisions

    def _target(self, meter: _Meter) -> Target:
        if meter.machine_idx is not None:
            return (MACHINE, meter.machine_idx)
        if meter.line_idx is not None:
            return (LINE, meter.line_idx)
        return (SITE, 0)

    def _note_late(self, meter: _Meter, t1: int, t2: int, delta: int, until: int,
                   flag: str | None) -> None:
        """The interval ``[t1, t2)`` closed after the slices before ``until`` were sealed:
        its share before ``until`` was booked to the slice being sealed, and
        :meth:`_revise` moves it (quantity in the meter's carrier and time-of-use cost
        of its own span) to the windows it belongs to where it still can."""
        if delta:
            self._late_shares.append(
                LateShare(self._target(meter), t1, t2, delta, until, meter.model.resolution,
                          flag, meter.spec.carrier,
                          self._tariff if meter.spec.carrier == ELECTRICITY else None))

    def _pending_targets(self, end_ms: int) -> set[Target]:
        """The meters whose open interval (last reading, no closing one yet) reaches into
        time before ``end_ms``; none at the end of the input, where nothing is pending.

        A meter silent for longer than the revision horizon counts as gone: its windows
        are no longer kept (else a dead meter would keep a horizon of windows in every
        checkpoint), and its energy, should it come back, is carried."""
        if self._known_until is not None:
            return set()
        # Observation stopping after a reading ends its interval for good: the next
        # reading is a new baseline, so nothing is pending across a gap.
        gaps = self._gaps
        alive_after = self._sealed_until - self._revisions.horizon_ms
        return {
            self._target(m) for m in self._meters
            if m.pending is None and m.last_ts is not None and alive_after < m.last_ts < end_ms
            and not any(a > m.last_ts for a, _ in gaps)
        }

    def _mark_pending(self, win: _Window) -> None:
        mark_pending(win.totals, self._pending_targets(win.end))

    def _retain(self, win: _Window) -> None:
        """Keep a window just closed with energy pending, for its revision."""
        if self._pending_targets(win.end):
            self._revisions.retain(win, self._sealed_until)

    def _revise(self, info: SliceInfo) -> None:
        """Book this slice's late shares to the kept windows they belong to and emit
        those windows again, flagged ``revised`` (what no kept window takes stays in the
        open window, flagged ``energy_carried``); drop what the horizon no longer keeps."""
        book = self._revisions
        if self._late_shares:
            late, self._late_shares = self._late_shares, []
            current = {label_idx: self._open.get((label_idx, start))
                       for label_idx, start, _ in self._plan.windows_of(info)}
            touched: dict[tuple[int, int], _Window] = {}
            for item in late:
                book.spread(item, current, self._spans(item.t1, item.until), touched)
            for win in revision_order(touched.values()):
                self._emit(win, revised=True)
                if not self._pending_targets(win.end):
                    book.release(win)
        book.prune(info.end_ms)

    def _spans(self, t1: int, t2: int) -> dict[int, list[tuple[int, int]]]:
        """Per label, the windows (start, end) covering time of ``[t1, t2)``, from the
        slice plan (a shift label leaves the time between shifts uncovered)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        t = t1
        while t < t2:
            info = self._plan.slice_at(t)
            for label_idx, start, end in self._plan.windows_of(info):
                found = spans.setdefault(label_idx, [])
                if not found or found[-1][0] != start:
                    found.append((start, end))
            t = info.end_ms
        return spans

    def _settle_revisions(self) -> None:
        """End of input: no closing reading is pending any more, so each kept window is
        final as it stands and is emitted so, revised, without ``energy_pending``."""
        book = self._revisions
        for win in revision_order(book.windows.values()):
            assert isinstance(win, _Window)
            self._emit(win, revised=True)
        book.windows.clear()

    # ------------------------------------------------------------- checkpoint

    def _shape(self) -> dict[str, Any]:
        """What a checkpoint's layout depends on; a restore into another shape is refused."""
        spec = self.spec
        return {
            "site": spec.site_id,
            "windows": list(spec.windows),
            "machines": [m.spec.id for m in self._machines],
            "lines": [ln.id for ln in spec.lines],
            "meters": [m.spec.id for m in self._meters],
            "alarms": [a.name for a in spec.alarms],
        }

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state for a crash-safe checkpoint.

        Holds counter and register baselines, last states, unsealed samples, open
        windows and any output not yet collected, so :meth:`restore` continues exactly
        where this engine stands.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "shape": self._shape(),
            "stats": dict(self._stats),
            "n": self._n,
            "unknown": self._unknown,
            "late": self._late,
            "bad": self._bad,
            "min_ts": self._min_ts,
            "hw": self._hw,
            "event_mode": self._event_mode,
            "ordered": self._ordered,
            "seal_trigger": self._seal_trigger,
            "sealed_until": self._sealed_until,
            "slice_start": None if self._slice is None else self._slice.start_ms,
            "create_before": self._create_before,
            "observe_from": self._observe_from,
            "gaps": [list(g) for g in self._gaps],
            "device_from": dict(self._device_from),
            "machines": [
                {
                    "state": m.state,
                    "last_total": m.last_total,
                    "last_second": m.last_second,
                    "buf_state": [s.to_row() for s in m.buf_state],
                    "buf_total": [s.to_row() for s in m.buf_total],
                    "buf_second": [s.to_row() for s in m.buf_second],
                    **({} if m.deriver is None else {
                        "buf_inputs": [s.to_row() for s in m.buf_inputs],
                        "derive": m.deriver.to_json(),
                    }),
                }
                for m in self._machines
            ],
            "meters": [
                {
                    "last_ts": mt.last_ts,
                    "last_steps": mt.last_steps,
                    "pending": None if mt.pending is None else list(mt.pending),
                    "buf": [s.to_row() for s in mt.buf],
                }
                for mt in self._meters
            ],
            "alarm_only": [
                [list(key), [s.to_row() for s in buf]]
                for key, buf in self._alarm_only.items()
            ],
            "open": [
                [w.label_idx, w.start, w.end, w.totals.to_json()] for w in self._open.values()
            ],
            "revisable": self._revisions.to_json(),
            "alarms": self._alarms.to_json(),
            "alarm_events": [
                [ts, idx, asdict(ev)] for ts, idx, ev in self._alarms.events
            ],
            "out_records": [
                {**asdict(r), "flags": list(r.flags)} for r in self._out_records
            ],
        }

    @classmethod
    def restore(cls, spec: EngineSpec, state: dict[str, Any], *,
                revision_horizon_s: float = DEFAULT_HORIZON_S) -> KpiEngine:
        """An engine continuing from :meth:`snapshot` output (possibly after a JSON
        round trip).

        Raises ValueError (or KeyError/TypeError for a damaged state) when the snapshot
        does not fit ``spec`` (other machines, meters, lines, windows or alarms), so the
        caller can start afresh instead. A version 1 snapshot (taken before the engine
        kept its observation state) is upgraded: see :func:`_upgrade_v1`; a version 2
        one (before energy revisions) keeps no window for revision, so energy reaching
        back before the restore is carried as an older engine carried it.
        """
        if state.get("version") == 1:
            state = _upgrade_v1(state)
        if state.get("version") == 2:
            state = {**state, "version": 3, "revisable": []}
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported engine snapshot version {state.get('version')!r}")
        eng = cls(spec, revision_horizon_s=revision_horizon_s)
        if state.get("shape") != eng._shape():
            raise ValueError("the engine snapshot was taken with a different plant or windows")
        eng._stats.update({k: int(v) for k, v in state["stats"].items()})
        eng._n = int(state["n"])
        eng._unknown = int(state["unknown"])
        eng._late = int(state["late"])
        eng._bad = int(state["bad"])
        eng._min_ts = int(state["min_ts"])
        eng._hw = int(state["hw"])
        eng._event_mode = bool(state["event_mode"])
        eng._ordered = bool(state["ordered"])
        eng._seal_trigger = int(state["seal_trigger"])
        eng._sealed_until = int(state["sealed_until"])
        eng._create_before = int(state["create_before"])
        eng._observe_from = int(state["observe_from"])
        eng._gaps = [(int(a), int(b)) for a, b in state["gaps"]]
        eng._device_from = {str(d): int(t) for d, t in state.get("device_from", {}).items()}
        start = state["slice_start"]
        eng._slice = None if start is None else eng._next_slice(int(start))
        for m, d in zip(eng._machines, state["machines"], strict=True):
            m.state = d["state"]
            m.last_total = d["last_total"]
            m.last_second = d["last_second"]
            m.buf_state.extend(Sample.from_row(x) for x in d["buf_state"])
            m.buf_total.extend(Sample.from_row(x) for x in d["buf_total"])
            m.buf_second.extend(Sample.from_row(x) for x in d["buf_second"])
            if m.deriver is not None:
                m.buf_inputs.extend(Sample.from_row(x) for x in d.get("buf_inputs", ()))
                m.deriver.load_json(d.get("derive"))
        for mt, d in zip(eng._meters, state["meters"], strict=True):
            mt.last_ts = d["last_ts"]
            mt.last_steps = d["last_steps"]
            p = d["pending"]
            mt.pending = None if p is None else (int(p[0]), int(p[1]), int(p[2]), p[3])
            mt.buf.extend(Sample.from_row(x) for x in d["buf"])
        for key, samples in state["alarm_only"]:
            buf = eng._alarm_only.get((key[0], key[1]))
            if buf is not None:
                buf.extend(Sample.from_row(x) for x in samples)
        for label_idx, wstart, wend, totals in state["open"]:
            eng._open[(int(label_idx), int(wstart))] = _Window(
                int(label_idx), int(wstart), int(wend), PlantTotals.from_json(totals)
            )
        for label_idx, wstart, wend, totals in state["revisable"]:
            eng._revisions.retain(_Window(int(label_idx), int(wstart), int(wend),
                                          PlantTotals.from_json(totals)), eng._sealed_until)
        eng._alarms.load_json(state["alarms"])
        eng._alarms.events = [
            (int(ts), int(idx), AlarmEvent(**ev)) for ts, idx, ev in state["alarm_events"]
        ]
        eng._out_records = [
            KpiRecord(**{**r, "flags": tuple(r["flags"])}) for r in state["out_records"]
        ]
        return eng


    @classmethod
    def started_at(cls, spec: EngineSpec, start_ms: int) -> KpiEngine:
        """A fresh engine as a live agent starts one at ``start_ms`` (its clock): observing
        from then, and in live mode from the start (the clock, not sample times, closes
        windows), so a device's old initial value books nothing before ``start_ms``."""
        engine = cls(spec)
        engine.observe_from(start_ms)
        engine.advance(start_ms)
        return engine

    def rebuild(self, spec: EngineSpec, carry: StateCarry) -> KpiEngine:
        """An engine for ``spec`` continuing this one's state as far as ``carry`` allows;
        this engine is left as it was.

        Machines, meters, lines and alarm rules are matched by id, not position, so adding,
        removing or reordering them keeps everyone else's open windows, baselines and last
        states; see :func:`carry_state`. Raises ValueError when no state can be carried:
        the slice grid differs (site, windows, time zone or calendars), so no open window
        of this engine is a window of the new one.
        """
        if _grid_of(self.spec) != _grid_of(spec):
            raise ValueError("the windows, time zone or calendars differ: no open window "
                             "carries over")
        return KpiEngine.restore(spec, carry_state(self.snapshot(), spec, carry),
                                 revision_horizon_s=self._revisions.horizon_ms / 1000)


def _grid_of(spec: EngineSpec) -> tuple[Any, ...]:
    """What the slice grid (the windows and where they lie) depends on."""
    return (spec.site_id, spec.windows, spec.timezone, spec.site_calendar(), spec.calendars)


_MACHINE_BASELINES = ("last_total", "last_second", "buf_total", "buf_second")
"""A machine's snapshot entries tied to its raw counter values (state is not)."""
_METER_BASELINES = ("last_ts", "last_steps", "pending", "buf")
"""A meter's snapshot entries tied to its raw register values."""


def _index(ids: Sequence[str]) -> dict[str, int]:
    return {item: i for i, item in enumerate(ids)}


def _flagged(totals: dict[str, Any]) -> dict[str, Any]:
    totals["flags"] = sorted({*totals.get("flags", ()), CONFIG_RELOAD})
    return totals


def carry_state(state: Mapping[str, Any], spec: EngineSpec,
                carry: StateCarry) -> dict[str, Any]:
    """A :meth:`KpiEngine.snapshot` reshaped for ``spec``, holding the state ``carry``
    keeps, so that :meth:`KpiEngine.restore` accepts it (the input is not changed).

    Engine-wide state (observation, watermark, slicing, output not yet collected) carries
    whole. Per id: a machine or meter carried ``all`` keeps everything; ``totals`` keeps
    its share of the open windows and its last state but takes new counter or register
    baselines; ``none`` (or a new id) starts as in a fresh engine, and the state of an id
    no longer in ``spec`` goes. The open windows, and the closed ones kept for an energy
    revision, are re-indexed the same way; the totals of whatever is not carried whole
    are flagged ``config_reload`` (an added machine's from an empty start). Alarm rules
    keep their state by name, unless named in ``carry.fresh_alarms``. Raises ValueError
    for a snapshot of another version, site or windows.
    """
    if state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported engine snapshot version {state.get('version')!r}")
    fresh = KpiEngine(spec).snapshot()  # the exact layout restore() expects
    old_shape, shape = state["shape"], fresh["shape"]
    if (old_shape["site"], old_shape["windows"]) != (shape["site"], shape["windows"]):
        raise ValueError("the engine snapshot was taken with another site or other windows")
    old = copy.deepcopy(dict(state))
    out: dict[str, Any] = {**old, "shape": shape}

    def how(kind: str, item_id: str) -> Carry:
        chosen: Mapping[str, Carry] = getattr(carry, kind)
        return chosen.get(item_id, "none")

    def entries(kind: str, baselines: tuple[str, ...]) -> list[Any]:
        where = _index(old_shape[kind])
        kept: list[Any] = []
        for i, item_id in enumerate(shape[kind]):
            entry = fresh[kind][i]
            mode = how(kind, item_id)
            if item_id in where and mode != "none":
                entry = old[kind][where[item_id]]
                if mode == "totals":
                    entry.update({k: fresh[kind][i][k] for k in baselines})
            kept.append(entry)
        return kept

    out["machines"] = entries("machines", _MACHINE_BASELINES)
    out["meters"] = entries("meters", _METER_BASELINES)

    old_m, old_ln = _index(old_shape["machines"]), _index(old_shape["lines"])
    m_pos, ln_pos = _index(shape["machines"]), _index(shape["lines"])
    meter_specs = {m.id: m for m in spec.meters}

    def windows(kept: list[Any]) -> list[Any]:
        reshaped = []
        for label_idx, start, end, totals in kept:
            m_tot = []
            for mid in shape["machines"]:
                mode = how("machines", mid)
                if mid in old_m and mode != "none":
                    t = totals["machines"][old_m[mid]]
                    m_tot.append(t if mode == "all" else _flagged(t))
                else:
                    m_tot.append(_flagged(MachineTotals().to_json()))
            l_tot = [
                totals["lines"][old_ln[lid]]
                if lid in old_ln and how("lines", lid) != "none"
                else _flagged(EnergyTotals().to_json())
                for lid in shape["lines"]
            ]
            site = totals["site"]
            for mid in shape["meters"]:
                if how("meters", mid) == "all":
                    continue
                ms = meter_specs[mid]
                if ms.machine is not None and ms.machine in m_pos:
                    _flagged(m_tot[m_pos[ms.machine]]["energy"])
                elif ms.machine is None and ms.line is not None and ms.line in ln_pos:
                    _flagged(l_tot[ln_pos[ms.line]])
                else:
                    _flagged(site)
            reshaped.append([label_idx, start, end,
                             {**totals, "machines": m_tot, "lines": l_tot, "site": site}])
        return reshaped

    out["open"] = windows(old["open"])
    out["revisable"] = windows(old["revisable"])

    old_alarms, new_alarms = _index(old_shape["alarms"]), _index(shape["alarms"])
    out["alarms"] = [
        old["alarms"][old_alarms[name]]
        if name in old_alarms and name not in carry.fresh_alarms else fresh["alarms"][i]
        for i, name in enumerate(shape["alarms"])
    ]
    # Events already produced are kept; the index only orders events of the same instant.
    out["alarm_events"] = [
        [ts, new_alarms.get(old_shape["alarms"][idx] if idx < len(old_shape["alarms"])
                            else "", len(new_alarms)), ev]
        for ts, idx, ev in old["alarm_events"]
    ]

    devices = {*shape["machines"], *shape["meters"]}
    since = {d: t for d, t in old.get("device_from", {}).items() if d in devices}
    if carry.at_ms is not None:
        for kind in ("machines", "meters"):
            for item_id in shape[kind]:
                if how(kind, item_id) != "all":
                    since[item_id] = max(since.get(item_id, carry.at_ms), carry.at_ms)
    out["device_from"] = since
    return out


def _flag_revised(records: list[KpiRecord]) -> list[KpiRecord]:
    return [replace(r, flags=tuple(sorted({*r.flags, REVISED}))) for r in records]


def _latest_copies(records: list[KpiRecord]) -> list[KpiRecord]:
    """Each key once, the latest copy in the place of the first: a revision that
    becomes final in the same output as the record it replaces is sent once."""
    where: dict[tuple[str, str | None, str | None, str, int], int] = {}
    out: list[KpiRecord] = []
    for rec in records:
        key = rec.key
        if key in where:
            out[where[key]] = rec
        else:
            where[key] = len(out)
            out.append(rec)
    return out


def _upgrade_v1(state: dict[str, Any]) -> dict[str, Any]:
    """A version 1 snapshot in the version 2 layout.

    Version 1 engines had no observation state: they observed from their oldest sample
    on, without a break. So the observation started there (once slicing had begun; else
    the restored engine settles it as a new one would), no unobserved interval is left
    to seal, and a window's observed time is what was sealed of it since that sample.
    """
    min_ts = int(state["min_ts"])
    sealed = int(state["sealed_until"])
    started = state["slice_start"] is not None

    def observed(start: int, end: int) -> int:
        return max(0, min(sealed, end) - max(start, min_ts))

    out = dict(state)
    out["version"] = 2
    out["observe_from"] = min_ts if started else _NEG
    out["gaps"] = []
    out["open"] = [
        [label_idx, start, end, {**totals, "observed": observed(int(start), int(end))}]
        for label_idx, start, end, totals in state["open"]
    ]
    out["out_records"] = [
        {**r, "observed_s": observed(int(r["window_start_ms"]), int(r["window_end_ms"]))
         / 1000}
        for r in state["out_records"]
    ]
    return out


__all__ = ["CONFIG_RELOAD", "SNAPSHOT_VERSION", "Carry", "EngineOutput", "KpiEngine",
           "StateCarry", "carry_state"]
