"""ingest.toml validation and the dead-letter file format."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from agent.ingest.config import IngestConfig, load_ingest_config
from agent.ingest.deadletter import DeadLetter, DeadLetterFile, read_dead_letters
from rules.errors import ConfigError, DeliveryError


def test_defaults_subscribe_plainly_and_groups_are_opt_in() -> None:
    config = IngestConfig.model_validate({"ingest": {"client_id": "i1"}})
    assert config.subscriptions() == ["factory/+/+/+/kpi", "factory/+/+/+/alarm",
                                      "factory/+/_agent/+/status"]
    shared = IngestConfig.model_validate({"ingest": {"shared_group": "edge-ingest"}})
    assert shared.subscriptions() == ["$share/edge-ingest/factory/+/+/+/kpi",
                                      "$share/edge-ingest/factory/+/+/+/alarm",
                                      "$share/edge-ingest/factory/+/_agent/+/status"]
    assert config.ingest.batch_size == 500
    assert config.ingest.flush_interval_s == 0.5
    assert config.effective_client_id() == "i1"


def test_plain_subscription_and_prefix() -> None:
    config = IngestConfig.model_validate({"mqtt": {"prefix": "plant", "protocol": "3.1.1"},
                                          "ingest": {"shared_group": ""}})
    assert config.subscriptions() == ["plant/+/+/+/kpi", "plant/+/+/+/alarm",
                                      "plant/+/_agent/+/status"]
    assert config.effective_client_id().startswith("edge-ingest-")


def test_topics_must_start_with_the_prefix() -> None:
    """The levels after the prefix are the record's identity, so a filter elsewhere
    could only ever produce dead letters."""
    IngestConfig.model_validate({"ingest": {"topics": ["{prefix}/site-a/+/+/kpi"]}})
    IngestConfig.model_validate({"mqtt": {"prefix": "plant"},
                                 "ingest": {"topics": ["plant/#"]}})
    with pytest.raises(ValueError, match=re.escape(
            "'other/+/+/+/kpi' must start with the mqtt.prefix level 'factory'")):
        IngestConfig.model_validate({"ingest": {"topics": ["other/+/+/+/kpi"]}})


def test_shared_group_needs_mqtt5() -> None:
    with pytest.raises(ValueError, match="shared_group"):
        IngestConfig.model_validate({"mqtt": {"protocol": "3.1.1"},
                                     "ingest": {"shared_group": "edge-ingest"}})


def test_in_flight_window_must_fit_a_batch() -> None:
    with pytest.raises(ValueError, match="receive_maximum"):
        IngestConfig.model_validate({"ingest": {"batch_size": 2000}})
    with pytest.raises(ValueError, match="queue_size"):
        IngestConfig.model_validate({"ingest": {"queue_size": 100}})
    IngestConfig.model_validate({"ingest": {"batch_size": 2000, "receive_maximum": 4000,
                                            "queue_size": 4000}})


def test_load_resolves_dead_letter_path_and_names_errors(tmp_path: Path) -> None:
    path = tmp_path / "ingest.toml"
    path.write_text('[influxdb]\nbucket = "factory/autogen"\ntoken = "u:p"\n'
                    '[ingest]\ndead_letter_path = "dl/dead.jsonl"\nbatch_size = 10\n')
    config = load_ingest_config(path)
    assert config.ingest.dead_letter_path == tmp_path / "dl" / "dead.jsonl"
    assert config.influxdb.token_value() == "u:p"
    assert "u:p" not in repr(config)

    path.write_text("[ingest]\nbatch_size = 0\nbtach = 1\n[mqtt]\nport = 0\n")
    with pytest.raises(ConfigError) as info:
        load_ingest_config(path)
    places = [place for place, _ in info.value.errors]
    assert sorted(places) == ["ingest.batch_size", "ingest.btach", "mqtt.port"]

    path.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_ingest_config(path)


def test_dead_letter_lines(tmp_path: Path) -> None:
    dlf = DeadLetterFile(tmp_path / "sub" / "dead.jsonl")
    dlf.append([DeadLetter("t/a/kpi", b'{"x": 1}', "bad key 'x'"),
                DeadLetter("t/b/kpi", b"\xff\x00", "not UTF-8", ts_ms=1000,
                           code="ids_differ_from_topic")])
    dlf.append([DeadLetter("t/c/alarm", "café".encode(), "r")])
    entries = read_dead_letters(dlf.path)
    assert entries[0]["topic"] == "t/a/kpi"
    assert entries[0]["payload"] == '{"x": 1}' and entries[0]["encoding"] == "utf-8"
    assert entries[0]["reason"] == "bad key 'x'"
    assert entries[0]["ts"].endswith("Z")
    assert entries[0]["code"] == "invalid_payload"
    assert entries[1] == {"ts": "1970-01-01T00:00:01.000Z", "topic": "t/b/kpi",
                          "code": "ids_differ_from_topic", "reason": "not UTF-8",
                          "payload": base64.b64encode(b"\xff\x00").decode(),
                          "encoding": "base64"}
    assert entries[2]["payload"] == "café"
    assert all(json.loads(line) for line in dlf.path.read_text().splitlines())


def test_dead_letter_failure_is_a_delivery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DeliveryError, match="dead-letter"):
        DeadLetterFile(blocker / "dead.jsonl").append([DeadLetter("t", b"", "r")])
