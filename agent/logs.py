"""Logging set-up: readable lines by default, JSON lines for log collectors.

Secrets (passwords, tokens) are never logged on purpose, but a library may still echo
one back, e.g. inside an exception message or a connection string. :func:`install_redaction`
masks the configured secret values in every record before any handler formats it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, SecretStr

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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            # exc_text, not exc_info: the redaction filter may have masked it already
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False)


REDACTED = "***"


class RedactingFilter(logging.Filter):
    """Replaces every known secret value in a record's message, exception and stack text.

    It sits on the handlers (a filter on the root logger would miss records that
    propagate up from child loggers) and always lets the record through.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the set of secrets (longest first, so one secret that contains
        another is masked whole)."""
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True  # let the handler report the broken format call as usual
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True


_REDACTOR = RedactingFilter()


def install_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Mask ``secrets`` in everything the root logger's handlers write from now on.

    Calling it again replaces the set (e.g. after a config reload); handlers set up
    later by :func:`setup_logging` get the filter too.
    """
    _REDACTOR.update(secrets)
    for handler in logging.getLogger().handlers:
        if _REDACTOR not in handler.filters:
            handler.addFilter(_REDACTOR)
    return _REDACTOR


def config_secrets(model: BaseModel) -> set[str]:
    """Every secret a config holds: ``SecretStr`` values and the values of the
    environment variables its ``*_env`` keys name (unset ones are skipped).

    A token of the form ``user:password`` (InfluxDB 1.8) also yields the password alone,
    since a client library may log the two parts separately.
    """
    found: set[str] = set()

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, SecretStr):
            add(value.get_secret_value(), key)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), name)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and key.endswith("_env") and value:
            secret = os.environ.get(value)
            if secret:
                add(secret, key)

    def add(secret: str, key: str) -> None:
        if not secret:
            return
        found.add(secret)
        if key.startswith("token") and ":" in secret:
            password = secret.split(":", 1)[1]
            if password:
                found.add(password)

    walk(model)
    return found


def setup_logging(level: str = "info", fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger; chatty libraries stay at WARNING (asyncua's INFO dumps
    whole publish results)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
