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
    REDACTED,
    JsonFormatter,
    RedactingFilter,
    config_secrets,
    install_redaction,
    setup_logging,
)

SECRET = "s3cr3t-P@ss"


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
    log.warning(f"inline {SECRET} and a key tok")
    try:
        raise ConnectionError(f"auth failed for user:{SECRET}")
    except ConnectionError:
        log.exception("connect failed")
    log.info("nothing secret here: %d%%", 5)
    out = root_stream.getvalue()
    assert SECRET not in out
    assert "connecting with password *** to broker" in out
    assert "inline *** and a key ***" in out
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
    install_redaction(["old-secret"])
    install_redaction(["new-secret"])
    assert handler.filters.count(install_redaction(["new-secret"])) == 1
    logging.getLogger("x").info("old-secret new-secret")
    assert "old-secret ***" in root_stream.getvalue()


def test_longest_secret_wins_and_empty_ones_are_ignored() -> None:
    f = RedactingFilter(["abc", "abcdef", ""])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", ("abcdefg",), None)
    assert f.filter(record)
    assert record.getMessage() == "key=***g"


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
