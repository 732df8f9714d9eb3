"""The sample log (JSON Lines): parsing it, and writing it with rotation.

``edge-agent run --record FILE`` writes it; ``edge-agent kpi`` reads it. A malformed
line is an error naming its line number, never a silent skip. One sample a line::

    {"ts": "2026-11-26T08:00:00.000Z", "device": "cnc-01", "signal": "parts_total", "value": 1042}

The agent's observation marker: when ``run`` starts without a usable checkpoint it
observes afresh from that instant (see :meth:`rules.engine.KpiEngine.observe_from`) and
writes, before any sample of the run::

    {"ts": "2026-11-26T08:00:00.000Z", "device": "_agent", "signal": "observing", "value": "start"}

``edge-agent kpi`` makes the same engine call there, so a replayed log gives the records
the live agent published, also across a restart that lost the checkpoint. Ids starting
with ``_`` are reserved (config validation rejects them), so the marker never clashes
with a device; any other ``_agent`` line is an error. A log without a marker (or the
part of a rotated log after the file that holds it) is observed from its oldest sample.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rules.errors import InputError
from rules.types import QUALITIES, Sample, rfc3339_to_ms

_decoder = json.JSONDecoder()
_decode = _decoder.decode
# The decoder's scanner without the two whitespace regex matches ``decode`` adds around
# it: a log line is one object followed by its newline, so the fast path scans from
# index 0 and checks the rest is whitespace; anything else takes the ``decode`` path,
# which also produces the error message.
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
_MISS = object()

OBSERVATION_DEVICE = "_agent"
OBSERVATION_SIGNAL = "observing"
OBSERVATION_START = "start"

_PREFIX_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_SECOND_CACHE_MAX = 4096
_second_ms: dict[str, int] = {}


def fast_rfc3339_to_ms(ts: str) -> int | None:
    """Epoch ms of ``YYYY-MM-DDTHH:MM:SSZ`` or ``YYYY-MM-DDTHH:MM:SS.fffZ``, else None.

    The form the recorder writes. A log holds hundreds of samples per second, so the
    epoch of the ``YYYY-MM-DDTHH:MM:SS`` part is computed once per distinct second and
    cached, and no datetime object is made per line. Every other RFC 3339 form (offsets,
    other fraction lengths, a lower-case ``z``) returns None and takes the general parser.
    """
    n = len(ts)
    if n == 24 and ts[19] == "." and ts[23] == "Z":
        frac = ts[20:23]
        if not (frac.isdigit() and frac.isascii()):
            return None
        millis = int(frac)
    elif n == 20 and ts[19] == "Z":
        millis = 0
    else:
        return None
    prefix = ts[:19]
    base = _second_ms.get(prefix)
    if base is None:
        if not _PREFIX_RE.fullmatch(prefix):
            return None
        try:
            base = rfc3339_to_ms(prefix + "Z")
        except ValueError:
            return None
        if len(_second_ms) >= _SECOND_CACHE_MAX:
            _second_ms.clear()
        _second_ms[prefix] = base
    return base + millis


def parse_sample(obj: Any, where: str) -> Sample:
    """One decoded sample object into a Sample; ``where`` names the line in errors."""
    sample = _fast_sample(obj)
    return sample if sample is not None else _parse_checked(obj, where)


def _fast_sample(obj: Any) -> Sample | None:
    """The common case, checked inline: exact JSON types, the recorder's timestamp form.

    None means "not sure": :func:`_parse_checked` then gives the same result for a good
    object or the error naming what is wrong, so the fast path never changes a verdict.
    """
    if type(obj) is not dict or "value" not in obj:
        return None
    ts = obj.get("ts")
    device = obj.get("device")
    signal = obj.get("signal")
    value = obj["value"]
    quality = obj.get("quality", "good")
    kind = type(value)
    if (
        type(ts) is str
        and type(device) is str
        and device
        and type(signal) is str
        and signal
        and (kind is int or kind is str or value is None
             or (kind is float and value - value == 0.0))
        and type(quality) is str
        and quality in QUALITIES
    ):
        ts_ms = fast_rfc3339_to_ms(ts)
        if ts_ms is not None:
            return Sample(ts_ms, device, signal, value, quality)  # type: ignore[arg-type]
    return None


def _parse_checked(obj: Any, where: str) -> Sample:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object")
    try:
        ts, device, signal = obj["ts"], obj["device"], obj["signal"]
    except KeyError as err:
        raise InputError(f"{where}: missing key {err.args[0]!r}") from None
    if "value" not in obj:
        raise InputError(f"{where}: missing key 'value'")
    value = obj["value"]
    if not isinstance(ts, str):
        raise InputError(f"{where}: 'ts' must be an RFC 3339 string")
    if not isinstance(device, str) or not device:
        raise InputError(f"{where}: 'device' must be a non-empty string")
    if not isinstance(signal, str) or not signal:
        raise InputError(f"{where}: 'signal' must be a non-empty string")
    if isinstance(value, bool) or not isinstance(value, str | int | float | None):
        raise InputError(f"{where}: 'value' has unsupported type {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: 'value' is not a finite number")
    quality = obj.get("quality", "good")
    if not isinstance(quality, str) or quality not in QUALITIES:
        raise InputError(f"{where}: 'quality' must be good, uncertain or bad, not {quality!r}")
    try:
        ts_ms = rfc3339_to_ms(ts)
    except ValueError as err:
        raise InputError(f"{where}: 'ts' {ts!r} is not RFC 3339 ({err})") from None
    return Sample(ts_ms, device, signal, value, quality)  # type: ignore[arg-type]


def observation_marker(ts_ms: int) -> dict[str, Any]:
    """The marker line saying the agent started observing afresh at ``ts_ms``."""
    return Sample(ts_ms, OBSERVATION_DEVICE, OBSERVATION_SIGNAL, OBSERVATION_START
                  ).to_json_dict()


def is_observation_start(sample: Sample) -> bool:
    """Is ``sample`` (as :func:`read_samples` yields it) the observation marker?"""
    return sample.device == OBSERVATION_DEVICE


def _check_marker(sample: Sample, where: str) -> None:
    if (sample.signal != OBSERVATION_SIGNAL or sample.value != OBSERVATION_START
            or sample.quality != "good"):
        raise InputError(
            f"{where}: device {OBSERVATION_DEVICE!r} is reserved for the observation marker "
            f'(signal "{OBSERVATION_SIGNAL}", value "{OBSERVATION_START}"), got signal '
            f"{sample.signal!r}, value {sample.value!r}")


def read_samples(lines: Iterable[str], name: str = "<input>") -> Iterator[Sample]:
    """Stream samples from JSON Lines; blank lines are allowed, anything else must parse.

    The observation marker comes out as a sample too (:func:`is_observation_start`).
    """
    scan = _scan
    miss = _MISS
    fast = _fast_sample
    second_ms = _second_ms
    make = tuple.__new__
    for lineno, line in enumerate(lines, 1):
        try:
            obj, end = scan(line, 0)
        except (StopIteration, ValueError):
            obj = miss
        else:
            if end != len(line) and not line[end:].isspace():
                obj = miss
        if obj is miss:
            if not line.strip():
                continue
            try:
                obj = _decode(line)
            except ValueError as err:
                raise InputError(f"{name}:{lineno}: not valid JSON ({err})") from None
        # The recorder's own lines, inline: exactly its four keys, strings for the first
        # three, ``.fffZ`` time of a second seen before; the rest takes _fast_sample.
        sample = None
        if type(obj) is dict and len(obj) == 4:
            ts = obj.get("ts")
            device = obj.get("device")
            signal = obj.get("signal")
            value = obj.get("value", miss)
            kind = type(value)
            if (type(ts) is str and len(ts) == 24 and ts[23] == "Z" and ts[19] == "."
                    and type(device) is str and device and type(signal) is str and signal
                    and (kind is float or kind is int or kind is str)):
                base = second_ms.get(ts[:19])
                frac = ts[20:23]
                if (base is not None and frac.isdigit() and frac.isascii()
                        and (kind is not float or value - value == 0.0)):
                    sample = make(Sample, (base + int(frac), device, signal, value, "good",
                                           "source"))
        if sample is None:
            sample = fast(obj)
            if sample is None:
                sample = _parse_checked(obj, f"{name}:{lineno}")
        if sample.device == OBSERVATION_DEVICE:
            _check_marker(sample, f"{name}:{lineno}")
        yield sample


class SampleRecorder:
    """Appends samples to a JSON Lines file, rotating it by size (FILE, FILE.1, ...)."""

    def __init__(self, path: Path, *, max_bytes: int = 100 * 2**20, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._size = self._fh.tell()

    def observing(self, ts_ms: int) -> None:
        """Append the observation marker: the agent observes afresh from ``ts_ms``."""
        self._append(json.dumps(observation_marker(ts_ms), separators=(",", ":")) + "\n")

    def write(self, samples: Iterable[Sample]) -> None:
        """Append samples and flush them to the OS."""
        self._append("".join(json.dumps(s.to_json_dict(), separators=(",", ":")) + "\n"
                             for s in samples))

    def _append(self, chunk: str) -> None:
        if not chunk:
            return
        self._fh.write(chunk)
        self._fh.flush()
        self._size += len(chunk.encode())
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        """Flush and close the file."""
        self._fh.close()
