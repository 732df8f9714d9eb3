"""Where ``[influxdb]`` takes its token, organisation and bucket from: inline, an
environment variable, or (the token) a file, as docker-compose and systemd hand them over."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.common import InfluxSettings
from agent.ingest.config import load_ingest_config
from rules.errors import ConfigError


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cr3t-token\n")
    assert InfluxSettings.model_validate({"token_file": str(path)}).token_value() == \
        "s3cr3t-token"


def test_unreadable_or_empty_token_file_names_the_file(tmp_path: Path) -> None:
    missing = InfluxSettings.model_validate({"token_file": str(tmp_path / "none")})
    with pytest.raises(ValueError, match=r"influxdb.token_file: cannot read .*none: No such"):
        missing.token_value()
    (tmp_path / "empty").write_text("\n")
    empty = InfluxSettings.model_validate({"token_file": str(tmp_path / "empty")})
    with pytest.raises(ValueError, match=r"influxdb.token_file: .*empty is empty"):
        empty.token_value()


@pytest.mark.parametrize("given", [
    {"token": "t", "token_env": "X"},
    {"token": "t", "token_file": "/run/t"},
    {"token_env": "X", "token_file": "/run/t"},
])
def test_one_token_source_only(given: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="give one of token, token_env and token_file"):
        InfluxSettings.model_validate(given)


def test_org_and_bucket_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_ORG", "hebei")
    monkeypatch.setenv("PLATFORM_BUCKET", "kpi")
    settings = InfluxSettings.model_validate({"org_env": "PLATFORM_ORG",
                                              "bucket_env": "PLATFORM_BUCKET"})
    assert (settings.org, settings.bucket) == ("hebei", "kpi")
    only_bucket = InfluxSettings.model_validate({"org": "-", "bucket_env": "PLATFORM_BUCKET"})
    assert (only_bucket.org, only_bucket.bucket) == ("-", "kpi")


def test_org_or_org_env_not_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_ORG", "hebei")
    with pytest.raises(ValueError, match="give org or org_env, not both"):
        InfluxSettings.model_validate({"org": "x", "org_env": "PLATFORM_ORG"})
    with pytest.raises(ValueError, match="give bucket or bucket_env, not both"):
        InfluxSettings.model_validate({"bucket": "x", "bucket_env": "PLATFORM_ORG"})


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_org_env_is_a_config_error_naming_the_place(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("NO_SUCH_ORG_VARIABLE", raising=False)
    else:
        monkeypatch.setenv("NO_SUCH_ORG_VARIABLE", value)
    path = tmp_path / "ingest.toml"
    path.write_text('[influxdb]\norg_env = "NO_SUCH_ORG_VARIABLE"\nbucket = "factory"\n')
    with pytest.raises(ConfigError) as err:
        load_ingest_config(path)
    assert "influxdb: org_env: environment variable NO_SUCH_ORG_VARIABLE is not set" in \
        str(err.value)
