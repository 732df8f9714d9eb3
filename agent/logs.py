"""Logging set-up: readable lines by default, JSON lines for log collectors.

Secrets (passwords, tokens) are never logged on purpose, but a library may still echo
one back, e.g. inside an exception message or a connection string. Every record is masked
before any handler formats it, in two ways:

- **Where secrets are printed**, whatever their value: the password of a URL
  (``scheme://user:***@host``), the credentials of an ``Authorization`` header
  (``Authorization: Token ***``), and the values of keys named like a secret in config
  dumps, reprs and query strings (``password = "***"``, ``'token': '***'``,
  ``api_key=***``; a ``:`` counts only before a quoted value, so an error message such
  as ``mqtt.password: give password or password_env`` stays readable).
- **Anywhere in the text**, the configured secrets (:func:`install_redaction`) that are at
  least :data:`MIN_ANYWHERE_LEN` (12) characters long. A shorter one is masked only where
  it is printed as above: replacing every occurrence of a short string mangles unrelated
  text (a password ``noloss`` turned the client id ``noloss-ingest`` into
  ``***-ingest``), and a short secret is weak anyway. Use long ones.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, SecretStr

NOISY = ("asyncua", "pymodbus", "amqtt", "transitions", "urllib3", "influxdb_client")

QUIET_UNLESS_DEBUG = ("pymodbus",)
"""Libraries whose ERROR lines only repeat, as hex frame dumps, what the agent's own
log-once warning already said (pymodbus logs one for every unanswered request)."""


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

MIN_ANYWHERE_LEN = 12
"""Configured secrets at least this long are masked wherever they appear."""

_SECRET_KEY = r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|passphrase|token|secret|api[_-]?key)"
_VALUE = r"""'[^']*'|"[^"]*"|(?!None\b|null\b|SecretStr\()[^\s,;&'")}\]]+"""
_POSITIONS = (
    # scheme://user:PASSWORD@host
    re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<secret>[^\s/@]+)(?=@)"),
    # Authorization: Token CREDENTIALS (also 'Authorization': 'Bearer ...' in a dict repr)
    re.compile(r"""(?i)(?P<head>\bauthorization['"]?\s*[:=]\s*['"]?"""
               r"(?:(?:bearer|token|basic|digest)\s+)?)(?P<secret>[^\s'\",;}]+)"),
    # password = "..." / token=... / 'api_key': '...' / "secret": "..."
    re.compile(rf"""(?i)(?P<head>(?<![A-Za-z0-9]){_SECRET_KEY}['"]?\s*"""
               rf"""(?:=|:(?=\s*['"]))\s*)(?P<secret>{_VALUE})"""),
)


def _masked(match: re.Match[str]) -> str:
    secret = match["secret"]
    quote = secret[0] if secret[0] in "'\"" and len(secret) > 1 else ""
    return f"{match['head']}{quote}{REDACTED}{quote}"


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secrets masked where they are printed, and ``secrets`` of at least
    :data:`MIN_ANYWHERE_LEN` characters masked anywhere (longest first, so one secret
    that contains another is masked whole)."""
    for pattern in _POSITIONS:
        text = pattern.sub(_masked, text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_ANYWHERE_LEN and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, exception and stack text (see the module
    docstring for what is masked where).

    It sits on the handlers (a filter on the root logger would miss records that
    propagate up from child loggers) and always lets the record through.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the set of secrets (only long ones are masked anywhere, see
        :data:`MIN_ANYWHERE_LEN`)."""
        self._secrets = tuple(s for s in set(secrets) if len(s) >= MIN_ANYWHERE_LEN)

    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
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


_SECRET_ENV_KEYS = ("password_env", "token_env", "secret_env", "key_env", "passphrase_env")
"""``*_env`` keys whose variable holds a secret; others (``org_env``, ``bucket_env``) name
plain values that masking would only make unreadable."""


def config_secrets(model: BaseModel) -> set[str]:
    """Every secret a config holds: ``SecretStr`` values and the values of the
    environment variables its secret ``*_env`` keys name (unset ones are skipped).

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
        elif isinstance(value, str) and key.endswith(_SECRET_ENV_KEYS) and value:
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
    whole publish results), and :data:`QUIET_UNLESS_DEBUG` ones say nothing below
    CRITICAL unless ``level`` is ``debug``."""
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
    if root.level > logging.DEBUG:
        for name in QUIET_UNLESS_DEBUG:
            logging.getLogger(name).setLevel(logging.CRITICAL)
