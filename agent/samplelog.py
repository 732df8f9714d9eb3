"""The sample log of DESIGN.md (JSON Lines): parsing it, and writing it with rotation.

``edge-agent run --record FILE`` writes it; ``edge-agent kpi`` reads it. A malformed
line is an error naming its line number, never a silent skip.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rules.errors import InputError
from rules.types import QUALITIES, Sample, rfc3339_to_ms

_decode = json.JSONDecoder().decode


def parse_sample(obj: Any, where: str) -> Sample:
    """One decoded sample object into a Sample; ``where`` names the line in errors."""
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
    if quality not in QUALITIES:
        raise InputError(f"{where}: 'quality' must be good, uncertain or bad, not {quality!r}")
    try:
        ts_ms = rfc3339_to_ms(ts)
    except ValueError as err:
        raise InputError(f"{where}: 'ts' {ts!r} is not RFC 3339 ({err})") from None
    return Sample(ts_ms, device, signal, value, quality)


def read_samples(lines: Iterable[str], name: str = "<input>") -> Iterator[Sample]:
    """Stream samples from JSON Lines; blank lines are allowed, anything else must parse."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = _decode(line)
        except ValueError as err:
            raise InputError(f"{name}:{lineno}: not valid JSON ({err})") from None
        yield parse_sample(obj, f"{name}:{lineno}")


class SampleRecorder:
    """Appends samples to a JSON Lines file, rotating it by size (FILE, FILE.1, ...)."""

    def __init__(self, path: Path, *, max_bytes: int = 100 * 2**20, backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._size = self._fh.tell()

    def write(self, samples: Iterable[Sample]) -> None:
        """Append samples and flush them to the OS."""
        chunk = "".join(json.dumps(s.to_json_dict(), separators=(",", ":")) + "\n"
                        for s in samples)
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
