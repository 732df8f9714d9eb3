"""Config sections shared by the edge agent and the platform ingest: MQTT, TLS, InfluxDB.

Secrets (passwords, tokens) may be given inline or, better, by naming an environment
variable (``password_env``); they are ``SecretStr`` so that neither a log line nor a
validation error ever shows them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not pass silently).

    A model's validator is built when it is first used, not when its module is imported,
    so a command pays only for the models it validates. The field docstrings stay in the
    source only (scripts/gen-config-reference reads them there): having pydantic copy
    them into the fields parses the source of every model at every start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


Id = Annotated[str, Field(min_length=1, max_length=64)]
"""An id of the config (site, line, machine, meter, source, ...)."""

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_id(value: str) -> str:
    """``value`` if it can be an MQTT topic level, else ValueError saying why.

    Ids become topic levels; ``_`` prefixes are reserved for ``_line``/``_site``/``_agent``.
    """
    if not _ID_RE.match(value):
        wildcard = next((c for c in value if c in "+#/"), None)
        why = (f": {wildcard!r} is not allowed in an MQTT topic level" if wildcard
               else " (ids starting with '_' are reserved)" if value.startswith("_")
               else "")
        raise ValueError(
            f"id {value!r} is not a valid topic level{why}; an id starts with a letter or "
            "digit and contains only letters, digits, '_', '.', '-'"
        )
    return value


def resolve_secret(inline: SecretStr | None, env_name: str | None, place: str) -> str | None:
    """The secret's value, from the environment variable when one is named."""
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise ValueError(f"{place}: environment variable {env_name} is not set")
        return value
    return inline.get_secret_value() if inline is not None else None


class TlsSettings(StrictModel):
    """TLS towards the broker: CA bundle, optional client certificate (mutual TLS)."""

    enabled: bool = True
    """Use TLS (a `[mqtt.tls]` table turns it on by being there)."""
    ca_file: Path | None = None
    """CA bundle that signed the broker's certificate; none = the system's CAs."""
    cert_file: Path | None = None
    """Client certificate for mutual TLS (goes with key_file)."""
    key_file: Path | None = None
    """Private key of cert_file."""
    insecure_skip_verify: bool = False
    """Accept any broker certificate: for a first test only, never in production."""

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttSettings(StrictModel):
    """How to reach the broker. MQTT 5 by default; ``protocol = "3.1.1"`` for old brokers."""

    host: str = "127.0.0.1"
    """Broker host name or address."""
    port: int = Field(1883, ge=1, le=65535)
    """Broker port (1883 plain, 8883 usually TLS)."""
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version; 3.1.1 only for brokers that lack 5 (no shared subscriptions)."""
    client_id: str | None = None
    """Client id; default derived from the agent id. Must be unique per broker."""
    username: str | None = None
    """User name for the broker."""
    password: SecretStr | None = None
    """Password inline (prefer password_env); never logged."""
    password_env: str | None = None
    """Name of the environment variable that holds the password."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    """MQTT keep-alive; the broker fires the Last Will after 1.5x this."""
    session_expiry_s: int = Field(3600, ge=0)
    """How long the broker keeps our session (and queued QoS 1 messages) while we are away."""
    prefix: str = "factory"
    """First topic level: {prefix}/{site}/{line}/{machine}/kpi."""
    qos: Literal[1] = 1
    """QoS of KPI and alarm messages: always 1 (at least once; writes are idempotent)."""
    max_inflight: int = Field(100, ge=1, le=65535)
    """Unacknowledged messages at most (also bounded by the broker's Receive Maximum)."""
    reconnect_min_s: float = Field(1.0, gt=0)
    """First reconnect delay; it doubles with jitter up to reconnect_max_s."""
    reconnect_max_s: float = Field(60.0, gt=0)
    """Longest reconnect delay."""
    tls: TlsSettings | None = None
    """TLS towards the broker; absent = plain TCP."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        level = self.prefix.strip("/")
        if not level or any(c in level for c in "/+#") or level.startswith("$"):
            raise ValueError("prefix must be one non-empty topic level without '/', '+', '#' "
                             "or a leading '$', e.g. 'factory'")
        return self

    def password_value(self) -> str | None:
        """The password, read from the environment when ``password_env`` is set."""
        return resolve_secret(self.password, self.password_env, "mqtt.password_env")


class InfluxSettings(StrictModel):
    """Where the ingest writes. On InfluxDB 1.8 the bucket is ``db/rp`` and the token
    ``user:password``; on 2.x/3.x they are the real bucket and token."""

    url: str = "http://127.0.0.1:8086"
    """InfluxDB base URL."""
    org: str = "-"
    """Organisation (InfluxDB 2.x/3.x); ignored by 1.8, use "-"."""
    bucket: str = "factory/autogen"
    """Bucket; on InfluxDB 1.8 "database/retention_policy"."""
    token: SecretStr | None = None
    """API token inline (prefer token_env); on 1.8 "user:password". Never logged."""
    token_env: str | None = None
    """Name of the environment variable that holds the token."""
    token_file: Path | None = None
    """File that holds the token (a secret mounted by docker-compose or systemd), read
    when the ingest connects; surrounding whitespace is ignored."""
    org_env: str | None = None
    """Name of an environment variable that holds the organisation, instead of org: the
    deployment's environment (e.g. docker-compose's .env) then decides it in one place."""
    bucket_env: str | None = None
    """Name of an environment variable that holds the bucket, instead of bucket."""
    timeout_s: float = Field(10.0, gt=0)
    """HTTP timeout of one write."""

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        # Resolved at load time, so that every user of ``org`` and ``bucket`` (ingest,
        # report, check-config) sees the same value and an unset variable is a config error.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key in ("org", "bucket"):
            env_name = data.get(f"{key}_env")
            if env_name is None:
                continue
            if key in data:
                raise ValueError(f"give {key} or {key}_env, not both")
            value = os.environ.get(str(env_name), "")
            if not value.strip():
                raise ValueError(f"{key}_env: environment variable {env_name} is not set")
            out[key] = value
        return out

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        given = [name for name, value in (("token", self.token), ("token_env", self.token_env),
                                          ("token_file", self.token_file)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one of token, token_env and token_file, not {given[0]} "
                             f"and {given[1]}")
        return self

    def token_value(self) -> str:
        """The token, read from ``token_file`` or the environment variable when one is set."""
        if self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as err:
                reason = err.strerror if isinstance(err, OSError) and err.strerror else err
                raise ValueError(f"influxdb.token_file: cannot read {self.token_file}: "
                                 f"{reason}") from err
            if not token:
                raise ValueError(f"influxdb.token_file: {self.token_file} is empty")
            return token
        return resolve_secret(self.token, self.token_env, "influxdb.token_env") or ""
