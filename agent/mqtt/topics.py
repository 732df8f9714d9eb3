"""MQTT topic names, built in one place so publisher, ingest and docs cannot drift apart.

Every data topic has the same depth, ``{prefix}/{site}/{line}/{machine}/{kind}``, so one
filter (``factory/+/+/+/kpi``) subscribes to machines, lines and sites alike. Line and
site records fill the missing levels with ``_line`` and ``_site``; the agent's own status
lives under ``_agent``. Because of these placeholders, real ids must not start with
``_`` (config validation rejects them; the builders here check again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rules.errors import InputError

__all__ = [
    "AGENT_LEVEL",
    "LINE_LEVEL",
    "SITE_LEVEL",
    "TopicRef",
    "alarm_topic",
    "kpi_topic",
    "parse_topic",
    "status_topic",
    "subscription_filter",
]

LINE_LEVEL = "_line"
SITE_LEVEL = "_site"
AGENT_LEVEL = "_agent"

Kind = Literal["kpi", "alarm", "status"]
_FORBIDDEN = frozenset("/+#\x00")


def _level(value: str, what: str) -> str:
    """One topic level from an id, or InputError naming what is wrong with it."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} id must be a non-empty string, got {value!r}")
    if value.startswith("_"):
        raise InputError(f"{what} id {value!r} must not start with '_' (reserved in topics)")
    bad = sorted(set(value) & _FORBIDDEN)
    if bad:
        raise InputError(f"{what} id {value!r} contains characters not allowed in a topic "
                         f"level: {' '.join(repr(c) for c in bad)}")
    return value


def _prefix(prefix: str) -> str:
    p = prefix.strip("/")
    if not p or set(p) & _FORBIDDEN:
        raise InputError(f"topic prefix {prefix!r} must be one non-empty topic level")
    return p


def _data_topic(prefix: str, site: str, line: str | None, machine: str | None,
                kind: str) -> str:
    site_level = _level(site, "site")
    if line is None:
        if machine is not None:
            raise InputError(f"machine {machine!r} has no line: a machine topic needs both")
        return f"{_prefix(prefix)}/{site_level}/{SITE_LEVEL}/{SITE_LEVEL}/{kind}"
    line_level = _level(line, "line")
    machine_level = LINE_LEVEL if machine is None else _level(machine, "machine")
    return f"{_prefix(prefix)}/{site_level}/{line_level}/{machine_level}/{kind}"


def kpi_topic(prefix: str, site: str, line: str | None, machine: str | None) -> str:
    """Topic of a KPI record: machine (line and machine given), line (machine None) or
    site (both None) record, always five levels deep."""
    return _data_topic(prefix, site, line, machine, "kpi")


def alarm_topic(prefix: str, site: str, line: str | None, machine: str | None) -> str:
    """Topic of an alarm event; same levels as :func:`kpi_topic`, ending in ``alarm``."""
    return _data_topic(prefix, site, line, machine, "alarm")


def status_topic(prefix: str, site: str, agent_id: str) -> str:
    """The agent's retained status topic (the Last Will sets it offline)."""
    site_level, agent_level = _level(site, "site"), _level(agent_id, "agent")
    return f"{_prefix(prefix)}/{site_level}/{AGENT_LEVEL}/{agent_level}/status"


def subscription_filter(prefix: str, kind: Kind = "kpi", site: str | None = None) -> str:
    """A filter matching every data topic of one kind, optionally of one site only."""
    site_level = "+" if site is None else _level(site, "site")
    return f"{_prefix(prefix)}/{site_level}/+/+/{kind}"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """What a topic names: ``line``/``machine`` are None for line and site records, and
    for a status topic ``machine`` holds the agent id."""

    site: str
    line: str | None
    machine: str | None
    kind: str


def parse_topic(prefix: str, topic: str) -> TopicRef:
    """The inverse of the builders, for the ingest side; InputError if it does not fit."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != _prefix(prefix):
        raise InputError(f"topic {topic!r} is not {prefix}/<site>/<line>/<machine>/<kind>")
    _, site, line, machine, kind = parts
    _level(site, "site")
    if kind == "status":
        if line != AGENT_LEVEL:
            raise InputError(f"status topic {topic!r} must have {AGENT_LEVEL!r} as third level")
        return TopicRef(site, None, _level(machine, "agent"), kind)
    if kind not in ("kpi", "alarm"):
        raise InputError(f"topic {topic!r}: unknown kind {kind!r}")
    if line == SITE_LEVEL:
        if machine != SITE_LEVEL:
            raise InputError(f"topic {topic!r}: a site record has {SITE_LEVEL!r} twice")
        return TopicRef(site, None, None, kind)
    _level(line, "line")
    if machine == LINE_LEVEL:
        return TopicRef(site, line, None, kind)
    return TopicRef(site, line, _level(machine, "machine"), kind)
