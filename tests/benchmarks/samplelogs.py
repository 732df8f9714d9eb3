"""Sample logs (JSON Lines, the format of docs/architecture.md) for the offline benchmarks.

One plant for every log: ``machines`` machines in lines of ten, one energy meter per
machine (0.01 kWh register steps). Three ways of sampling it, each generated lazily one
chunk of time at a time (so a day's log costs no memory) and in the order a recorder
writes it:

* ``dense``: every device at 1 Hz on whole seconds (``.000``): ``state``,
  ``parts_total``, ``parts_bad`` and ``energy_kwh`` every second. Every energy reading
  falls on a slice boundary, so no share is fractional: the engine's best case.
* ``phased``: the same rates, but every device on its own millisecond phase within the
  second and ``parts_bad`` every 10 s, so energy intervals straddle slice boundaries.
* ``realistic``: what subscriptions and polling give on a real shop floor. Meters are
  polled every 3 s on their own phase with a few milliseconds of jitter; machines
  report only changes: a part counted at the end of each (irregular) cycle while
  producing, a scrap now and then, a state change every ten minutes or so, each at its
  own millisecond. About 0.4 samples per machine and second, so with the windows
  1m/15m/1h a record per ~20 samples.

The generators are deterministic for a seed.
"""

from __future__ import annotations

import heapq
import random
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from agent.config import AgentConfig

START_MS = 1_741_507_200_000  # 2025-03-09T08:00:00Z
STATES = ("producing", "producing", "producing", "setup", "idle", "unplanned_down")
WINDOWS = ("1m", "15m", "1h")
LOGS = ("dense", "phased", "realistic")


def config_text(machines: int, windows: tuple[str, ...] | list[str] = WINDOWS,
                timezone: str = "Asia/Shanghai") -> str:
    """An ``agent.toml`` (KPI keys only) for the plant of ``machines`` machines."""
    quoted = ", ".join(f'"{w}"' for w in windows)
    parts = [f'[site]\nid = "bench"\ntimezone = "{timezone}"\n',
             f"[kpi]\nwindows = [{quoted}]\nlateness_s = 5\n"]
    for i in range((machines + 9) // 10):
        last = min(i * 10 + 9, machines - 1)
        parts.append(f'[[lines]]\nid = "line-{i:02d}"\noutput_machine = "cnc-{last:03d}"\n')
    for i in range(machines):
        parts.append(f'[[machines]]\nid = "cnc-{i:03d}"\nline = "line-{i // 10:02d}"\n'
                     "ideal_cycle_time_s = 45.0\n")
        parts.append(f'[[meters]]\nid = "meter-{i:03d}"\nmachine = "cnc-{i:03d}"\n'
                     "resolution_kwh = 0.01\nmodulus_kwh = 100000000.0\nmax_power_kw = 500.0\n")
    return "\n".join(parts)


def config(machines: int, windows: tuple[str, ...] | list[str] = WINDOWS,
           timezone: str = "Asia/Shanghai") -> AgentConfig:
    """The same plant as an :class:`AgentConfig` (what :func:`config_text` loads as)."""
    return AgentConfig.model_validate(tomllib.loads(config_text(machines, windows, timezone)))


_second_text: dict[int, str] = {}


def rfc3339(ts_ms: int) -> str:
    """The recorder's timestamp form (``...T08:00:00.123Z``), cached per second."""
    sec, millis = divmod(ts_ms, 1000)
    head = _second_text.get(sec)
    if head is None:
        if len(_second_text) > 4096:
            _second_text.clear()
        head = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text[sec] = head
    return f"{head}.{millis:03d}Z"


def _line(ts_ms: int, device: str, signal: str, value: str | int) -> str:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return (f'{{"ts":"{rfc3339(ts_ms)}","device":"{device}","signal":"{signal}",'
            f'"value":{shown}}}\n')


def _energy(steps: int) -> str:
    return f"{steps // 100}.{steps % 100:02d}"


def dense_lines(machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The ``dense`` log, one second of lines at a time."""
    rng = random.Random(seed)
    counts = [0] * machines
    bad = [0] * machines
    steps = [rng.randrange(100_000, 10_000_000) for _ in range(machines)]
    state = ["producing"] * machines
    for sec in range(int(hours * 3600)):
        ts = START_MS + sec * 1000
        chunk: list[str] = []
        for i in range(machines):
            if rng.random() < 0.002:
                state[i] = rng.choice(STATES)
            if state[i] == "producing" and rng.random() < 0.03:
                counts[i] += 1
                if rng.random() < 0.05:
                    bad[i] += 1
            steps[i] += rng.randrange(3)
            machine = f"cnc-{i:03d}"
            chunk.append(_line(ts, machine, "state", state[i]))
            chunk.append(_line(ts, machine, "parts_total", counts[i]))
            chunk.append(_line(ts, machine, "parts_bad", bad[i]))
            chunk.append(f'{{"ts":"{rfc3339(ts)}","device":"meter-{i:03d}",'
                         f'"signal":"energy_kwh","value":{_energy(steps[i])}}}\n')
        yield "".join(chunk)


def phased_lines(machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The ``phased`` log, one second of lines at a time."""
    rng = random.Random(seed)
    counts = [0] * machines
    bad = [0] * machines
    steps = [rng.randrange(100_000, 10_000_000) for _ in range(machines)]
    state = ["producing"] * machines
    phase = [(rng.randrange(1000), rng.randrange(1000)) for _ in range(machines)]
    for sec in range(int(hours * 3600)):
        base = START_MS + sec * 1000
        chunk: list[tuple[int, str]] = []
        for i in range(machines):
            at_machine = base + phase[i][0]
            at_meter = base + phase[i][1]
            if rng.random() < 0.002:
                state[i] = rng.choice(STATES)
            if state[i] == "producing" and rng.random() < 0.03:
                counts[i] += 1
                if rng.random() < 0.05:
                    bad[i] += 1
            steps[i] += rng.randrange(3)
            machine = f"cnc-{i:03d}"
            chunk.append((at_machine, _line(at_machine, machine, "state", state[i])))
            chunk.append((at_machine, _line(at_machine, machine, "parts_total", counts[i])))
            if sec % 10 == 0:
                chunk.append((at_machine, _line(at_machine, machine, "parts_bad", bad[i])))
            chunk.append((at_meter, f'{{"ts":"{rfc3339(at_meter)}","device":"meter-{i:03d}",'
                                    f'"signal":"energy_kwh","value":{_energy(steps[i])}}}\n'))
        # the devices' phases interleave within the second, as a recorder writes them
        chunk.sort(key=lambda item: item[0])
        yield "".join(line for _, line in chunk)


METER_PERIOD_MS = 3000


def _meter_events(i: int, rng: random.Random, end_ms: int) -> Iterator[tuple[int, str]]:
    """One meter polled every 3 s on its own phase, a few ms of jitter, 2 to 60 kW."""
    device = f"meter-{i:03d}"
    steps = rng.randrange(100_000, 10_000_000)
    milli_steps = 0  # consumption below one register step, carried over
    kw = rng.uniform(2.0, 60.0)
    t = START_MS + rng.randrange(METER_PERIOD_MS)
    poll = t
    while t < end_ms:
        yield t, (f'{{"ts":"{rfc3339(t)}","device":"{device}","signal":"energy_kwh",'
                  f'"value":{_energy(steps)}}}\n')
        if rng.random() < 0.01:
            kw = rng.uniform(2.0, 60.0)
        poll += METER_PERIOD_MS
        nxt = poll + rng.randrange(-4, 5)
        # kW * ms / 3600 = 1/1000 kWh; one register step is 10 of those
        milli_steps += round(kw * (nxt - t) / 3600)
        steps += milli_steps // 10
        milli_steps %= 10
        t = nxt


def _machine_events(i: int, rng: random.Random, end_ms: int) -> Iterator[tuple[int, str]]:
    """One machine reporting changes only: parts at the end of irregular cycles while
    producing (12 to 24 s), a scrap per ~20 parts, a state change every ~10 minutes."""
    device = f"cnc-{i:03d}"
    state = "producing"
    count = rng.randrange(10_000)
    bad = count // 20
    t = START_MS + rng.randrange(1000)
    yield t, _line(t, device, "state", state)
    yield t, _line(t, device, "parts_total", count)
    yield t, _line(t, device, "parts_bad", bad)
    change = t + round(rng.expovariate(1 / 600_000))
    part = t + rng.randrange(12_000, 24_000)
    while True:
        if state == "producing" and part < change:
            t = part
            if t >= end_ms:
                return
            count += 1
            yield t, _line(t, device, "parts_total", count)
            if rng.random() < 0.05:
                bad += 1
                yield t, _line(t, device, "parts_bad", bad)
            part = t + rng.randrange(12_000, 24_000)
        else:
            t = change
            if t >= end_ms:
                return
            state = rng.choice([s for s in STATES if s != state])
            yield t, _line(t, device, "state", state)
            change = t + round(rng.expovariate(1 / 600_000))
            part = t + rng.randrange(12_000, 24_000)


def realistic_lines(machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The ``realistic`` log, about a minute of lines at a time, in time order."""
    rng = random.Random(seed)
    end_ms = START_MS + round(hours * 3_600_000)
    streams: list[Iterator[tuple[int, str]]] = []
    for i in range(machines):
        streams.append(_machine_events(i, random.Random(rng.random()), end_ms))
        streams.append(_meter_events(i, random.Random(rng.random()), end_ms))
    chunk: list[str] = []
    flush_at = START_MS + 60_000
    for ts, line in heapq.merge(*streams, key=lambda item: item[0]):
        if ts >= flush_at:
            yield "".join(chunk)
            chunk = []
            flush_at = ts + 60_000
        chunk.append(line)
    if chunk:
        yield "".join(chunk)


GENERATORS: dict[str, Callable[[int, float, int], Iterator[str]]] = {
    "dense": dense_lines,
    "phased": phased_lines,
    "realistic": realistic_lines,
}


def log_lines(log: str, machines: int, hours: float, seed: int = 1) -> Iterator[str]:
    """The log named ``log`` (one of :data:`LOGS`), in chunks of whole lines."""
    return GENERATORS[log](machines, hours, seed)
