"""Secret redaction in log output, for both the text and the JSON format."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from agent.config.common import InfluxSettings, MqttSettings
from agent.logs import (
    MIN_ANYWHERE_LEN,
    REDACTED,
    JsonFormatter,
    RedactingFilter,
    config_secrets,
    install_redaction,
    mask_secrets,
    setup_logging,
)

SECRET = "s3cr3t-P@ssw0rd"  # long enough to be masked anywhere


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """Point the root handler at a buffer, and restore logging afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        install_redaction(())
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_in_messages_args_and_exceptions(
    fmt: str, root_stream: io.StringIO
) -> None:
    setup_logging("debug", fmt)  # type: ignore[arg-type]
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(root_stream)
    install_redaction([SECRET, "tok"])
    log = logging.getLogger("agent.some.module")
    log.info("connecting with password %s to %s", SECRET, "broker")
    log.warning(f"inline {SECRET} and a short one: tok, stock")
    try:
        raise ConnectionError(f"auth failed for user:{SECRET}")
    except ConnectionError:
        log.exception("connect failed")
    log.info("nothing secret here: %d%%", 5)
    out = root_stream.getvalue()
    assert SECRET not in out
    assert "connecting with password *** to broker" in out
    assert "inline *** and a short one: tok, stock" in out  # too short to hunt down
    assert "auth failed for user:***" in out
    assert "nothing secret here: 5%" in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert [x["level"] for x in lines] == ["info", "warning", "error", "info"]
        assert "ConnectionError" in lines[2]["exception"]


def test_handlers_set_up_later_are_covered(root_stream: io.StringIO) -> None:
    install_redaction([SECRET])
    setup_logging("info", "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(root_stream)
    logging.getLogger("x").info("pw=%s", SECRET)
    assert f"pw={REDACTED}" in root_stream.getvalue()


def test_reinstall_replaces_the_set(root_stream: io.StringIO) -> None:
    setup_logging("info", "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(root_stream)
    install_redaction(["old-secret-value"])
    install_redaction(["new-secret-value"])
    assert handler.filters.count(install_redaction(["new-secret-value"])) == 1
    logging.getLogger("x").info("old-secret-value new-secret-value")
    assert "old-secret-value ***" in root_stream.getvalue()


def test_longest_secret_wins_and_empty_ones_are_ignored() -> None:
    f = RedactingFilter(["abcdefghijkl", "abcdefghijklmnop", ""])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "id %s",
                               ("abcdefghijklmnopq",), None)
    assert f.filter(record)
    assert record.getMessage() == "id ***q"


def test_a_broken_format_call_passes_through() -> None:
    f = RedactingFilter([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("nan",), None)
    assert f.filter(record)
    assert record.args == ("nan",)


def test_json_formatter_uses_redacted_exception_text() -> None:
    f = RedactingFilter([SECRET])
    try:
        raise ValueError(SECRET)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None,
                                   sys.exc_info())
    f.filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert SECRET not in line["exception"] and REDACTED in line["exception"]


def test_config_secrets_from_models_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MQTT_PW", "from-env")
    mqtt = MqttSettings.model_validate({"password_env": "TEST_MQTT_PW"})
    assert config_secrets(mqtt) == {"from-env"}
    inline = MqttSettings.model_validate({"password": "inline-pw"})
    assert config_secrets(inline) == {"inline-pw"}
    influx = InfluxSettings.model_validate({"token": SecretStr("admin:pa55")})
    assert config_secrets(influx) == {"admin:pa55", "pa55"}
    monkeypatch.delenv("TEST_MQTT_PW")
    assert config_secrets(mqtt) == set()


def test_plain_values_named_by_env_keys_are_not_secrets(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """``org_env`` and ``bucket_env`` name plain values: masking the org "-" once turned
    every "->" of the ingest's start line into "***>"."""
    monkeypatch.setenv("TEST_ORG", "-")
    monkeypatch.setenv("TEST_BUCKET", "factory")
    monkeypatch.setenv("TEST_TOKEN", "a-token-of-some-length")
    influx = InfluxSettings.model_validate(
        {"org_env": "TEST_ORG", "bucket_env": "TEST_BUCKET", "token_env": "TEST_TOKEN"})
    assert config_secrets(influx) == {"a-token-of-some-length"}


def test_a_short_password_no_longer_mangles_other_text() -> None:
    """An InfluxDB 1.8 token "noloss:noloss" once turned the client id noloss-ingest
    into ***-ingest: its password part is too short to be masked everywhere."""
    influx = InfluxSettings.model_validate({"token": SecretStr("noloss:noloss")})
    secrets = config_secrets(influx)
    assert "noloss" in secrets
    assert mask_secrets("connected to 127.0.0.1:1883 as 'noloss-ingest' (session present: "
                        "False)", secrets) == ("connected to 127.0.0.1:1883 as "
                                               "'noloss-ingest' (session present: False)")
    # ... while the whole token (13 characters) is still masked wherever it appears
    assert mask_secrets("write as noloss:noloss failed", secrets) == "write as *** failed"


@pytest.mark.parametrize(("text", "masked"), [
    ("cannot reach mqtts://edge:pa55@broker.example:8883/x",
     "cannot reach mqtts://edge:***@broker.example:8883/x"),
    ("GET http://admin:hunter2@127.0.0.1:8086/query failed",
     "GET http://admin:***@127.0.0.1:8086/query failed"),
    ("Authorization: Token noloss:noloss", "Authorization: Token ***"),
    ("headers {'Authorization': 'Token admin:pa55', 'Accept': 'json'}",
     "headers {'Authorization': 'Token ***', 'Accept': 'json'}"),
    ("authorization=Bearer eyJhbGc.eyJzdWIi.c2ln", "authorization=Bearer ***"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ('password = "pw1"', 'password = "***"'),
    ("MqttSettings(username='edge', password='pw1', port=1883)",
     "MqttSettings(username='edge', password='***', port=1883)"),
    ('{"token": "abc", "org": "-"}', '{"token": "***", "org": "-"}'),
    ("/api/v2/write?org=-&token=abc&bucket=b", "/api/v2/write?org=-&token=***&bucket=b"),
    ("client_secret=xyz api-key: 'k1'", "client_secret=*** api-key: '***'"),
])
def test_secrets_are_masked_where_they_are_printed_whatever_their_value(
    text: str, masked: str
) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("text", [
    "mqtt.password_env: environment variable MQTT_PW is not set",
    "mqtt.password: give password or password_env, not both",
    "influxdb.token: Field required",
    "password=None token_env=INFLUX_TOKEN tokens=5",
    "MqttSettings(password=SecretStr('**********'))",
    "connected to mqtt://broker.example:1883 as edge-s1-a1",
    "Authorization header missing",
])
def test_ordinary_text_about_secrets_stays_readable(text: str) -> None:
    assert mask_secrets(text) == text


def test_a_long_secret_is_masked_anywhere(root_stream: io.StringIO) -> None:
    long_secret = "x" * (MIN_ANYWHERE_LEN - 3) + "Q7!"
    assert len(long_secret) == MIN_ANYWHERE_LEN
    setup_logging("info", "text")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(root_stream)
    install_redaction([long_secret, "short"])
    log = logging.getLogger("agent.x")
    log.info("glued%sto text, a short one stays: shortcut", long_secret)
    try:
        raise OSError(f"library echo: [{long_secret}]")
    except OSError:
        log.exception("failed")
    out = root_stream.getvalue()
    assert long_secret not in out
    assert "glued***to text, a short one stays: shortcut" in out
    assert "library echo: [***]" in out
