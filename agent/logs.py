"""Logging set-up: readable lines by default, JSON lines for log collectors."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

NOISY = ("asyncua", "pymodbus", "amqtt", "transitions", "urllib3", "influxdb_client")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message (and exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger; chatty libraries stay at WARNING (asyncua's INFO dumps
    whole publish results)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
