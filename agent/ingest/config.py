"""Configuration of the platform-side ingest (``edge-agent ingest -c ingest.toml``).

```toml
[mqtt]
host = "broker.example"
port = 8883
client_id = "edge-ingest-1"      # stable: the broker keeps our session under this id

[influxdb]
url = "http://influxdb:8086"
bucket = "factory/autogen"        # InfluxDB 1.8: "db/rp", token "user:password"
token_env = "INFLUX_TOKEN"

[ingest]
shared_group = ""                 # "edge-ingest" = MQTT 5 shared subscription
batch_size = 500
flush_interval_s = 0.5
dead_letter_path = "/var/lib/edge-agent/ingest-dead-letter.jsonl"
```
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from agent.config.common import InfluxSettings, MqttSettings, StrictModel
from agent.config.load import load_model
from agent.health import HealthSettings

__all__ = ["IngestConfig", "IngestSettings", "load_ingest_config"]


class IngestSettings(StrictModel):
    """How the ingest subscribes, batches, retries and where it puts rejected messages."""

    shared_group: str = ""
    """MQTT 5 shared-subscription group, so several ingest processes split one stream.
    Empty (the default) is a plain persistent subscription: Mosquitto 2.0 forgets shared
    subscriptions across a broker restart and would drop what was published meanwhile;
    use a group only on brokers that keep them (EMQX, HiveMQ, VerneMQ)."""
    topics: list[str] = Field(
        default_factory=lambda: ["{prefix}/+/+/+/kpi", "{prefix}/+/+/+/alarm",
                                 "{prefix}/+/_agent/+/status"], min_length=1
    )
    """Topic filters; ``{prefix}`` is replaced by ``mqtt.prefix``, and every filter must
    start with it. The last level of a received topic (``kpi``, ``alarm`` or ``status``)
    selects the parser, and the levels in between are the record's site, line and machine
    (or the agent): the payload must name the same ids."""
    batch_size: int = Field(default=500, ge=1, le=50_000)
    """Most messages written to InfluxDB in one request; larger batches write faster,
    smaller ones acknowledge sooner."""
    flush_interval_s: float = Field(default=0.5, gt=0, le=60)
    """Longest time the first message of a batch waits for the batch to fill."""
    flush_idle_s: float = Field(default=0.05, ge=0, le=60)
    """Flush early when no message arrived for this long (the broker stops sending once
    its in-flight window of unacknowledged messages is full); 0 disables."""
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    """MQTT 5 Receive Maximum: unacknowledged QoS 1 messages the broker may send us.
    Acks are held until storage, so this must exceed ``batch_size`` for full batches."""
    queue_size: int = Field(default=2000, ge=1, le=1_000_000)
    """Bound of the hand-over queue from the MQTT thread; when full, the MQTT thread
    waits (TCP back-pressure to the broker)."""
    dead_letter_path: Path = Path("ingest-dead-letter.jsonl")
    """JSON Lines file where messages that can never be stored (bad payload, ids that
    disagree with the topic, less complete than the stored record) are kept with the reason."""
    retry_min_s: float = Field(default=0.5, gt=0)
    """First delay before a failed write is retried, in seconds; it doubles (with jitter) up
    to ``retry_max_s``."""
    retry_max_s: float = Field(default=30.0, gt=0)
    """Longest delay between retries of a failed write, in seconds."""
    client_id: str | None = None
    """MQTT client id (overrides ``mqtt.client_id``); default ``edge-ingest-<hostname>``.
    Keep it stable so the broker resumes our session; give each ingest process its own."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not exceed retry_max_s")
        if "/" in self.shared_group or "+" in self.shared_group or "#" in self.shared_group:
            raise ValueError("shared_group must not contain '/', '+' or '#'")
        for topic in self.topics:
            if not topic.strip() or topic.startswith("$share/"):
                raise ValueError(f"topic {topic!r}: give the plain filter; shared_group adds "
                                 "the $share prefix")
        return self


class IngestConfig(StrictModel):
    """The whole ``ingest.toml``: broker, database and ingest behaviour."""

    # model_validate({}): the shared models declare defaults positionally in Field(), which
    # mypy (without the pydantic plugin) reads as required constructor arguments.
    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings.model_validate({}))
    """``[mqtt]``: the broker the edge agents publish to, subscribed to by the ingest."""
    influxdb: InfluxSettings = Field(default_factory=lambda: InfluxSettings.model_validate({}))
    """``[influxdb]``: the database the records are written into."""
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings.model_validate({}))
    """``[ingest]``: subscription, batching, retries and the dead-letter file."""
    health: HealthSettings = HealthSettings(port=9465)
    """Health and metrics endpoint (port 9465, so an agent on the same host keeps 9464)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mqtt.protocol == "3.1.1" and self.ingest.shared_group:
            # Some 3.1.1 brokers (Mosquitto, EMQX) accept $share anyway, but it is not part of
            # 3.1.1; make the choice explicit instead of failing at SUBACK time.
            raise ValueError(
                "ingest.shared_group: shared subscriptions are MQTT 5; set shared_group = \"\" "
                "with mqtt.protocol = \"3.1.1\""
            )
        return self

    @model_validator(mode="after")
    def _topics_under_prefix(self) -> Self:
        prefix = self.mqtt.prefix.strip("/")
        for topic in self.topic_filters():
            if topic.split("/", 1)[0] != prefix:
                raise ValueError(
                    f"ingest.topics: {topic!r} must start with the mqtt.prefix level "
                    f"{prefix!r} ({{prefix}}/...): the ingest reads site, line and machine "
                    "from the levels after it")
        return self

    @model_validator(mode="after")
    def _window(self) -> Self:
        ingest = self.ingest
        if self.mqtt.protocol == "5":
            if ingest.receive_maximum < ingest.batch_size:
                raise ValueError(
                    f"ingest.receive_maximum ({ingest.receive_maximum}) must be at least "
                    f"ingest.batch_size ({ingest.batch_size}): acks are held until a batch "
                    "is stored, so the broker would never send a full batch")
            if ingest.queue_size < ingest.receive_maximum:
                raise ValueError(
                    f"ingest.queue_size ({ingest.queue_size}) must be at least "
                    f"ingest.receive_maximum ({ingest.receive_maximum}), so that the MQTT "
                    "thread never has to wait for space")
        return self

    def topic_filters(self) -> list[str]:
        """The plain topic filters with ``{prefix}`` filled in."""
        prefix = self.mqtt.prefix.strip("/")
        return [t.replace("{prefix}", prefix) for t in self.ingest.topics]

    def subscriptions(self) -> list[str]:
        """What to subscribe to: ``$share/{group}/{filter}``, or the plain filters."""
        group = self.ingest.shared_group
        return [f"$share/{group}/{t}" if group else t for t in self.topic_filters()]

    def effective_client_id(self) -> str:
        """The client id the broker knows our persistent session by."""
        return (self.ingest.client_id or self.mqtt.client_id
                or f"edge-ingest-{socket.gethostname()}")


def load_ingest_config(path: Path) -> IngestConfig:
    """Read and validate ``ingest.toml``; raises :class:`ConfigError` naming every bad place.

    A relative ``dead_letter_path`` is taken relative to the config file, so the service
    does not write somewhere different depending on the directory it was started from.
    """
    config = load_model(path, IngestConfig)
    dead = config.ingest.dead_letter_path
    if not dead.is_absolute():
        ingest = config.ingest.model_copy(update={"dead_letter_path": path.parent / dead})
        config = config.model_copy(update={"ingest": ingest})
    return config
