"""Topic builders: one fixed depth, placeholders for line/site records, ids checked."""

from __future__ import annotations

import pytest

from agent.mqtt.topics import (
    TopicRef,
    alarm_topic,
    kpi_topic,
    parse_topic,
    status_topic,
    subscription_filter,
)
from rules.errors import InputError


@pytest.mark.parametrize(
    ("line", "machine", "expected"),
    [
        ("line-a", "cnc-01", "factory/hb-sjz-01/line-a/cnc-01/kpi"),
        ("line-a", None, "factory/hb-sjz-01/line-a/_line/kpi"),
        (None, None, "factory/hb-sjz-01/_site/_site/kpi"),
    ],
)
def test_kpi_topic(line: str | None, machine: str | None, expected: str) -> None:
    assert kpi_topic("factory", "hb-sjz-01", line, machine) == expected
    assert alarm_topic("factory", "hb-sjz-01", line, machine) == expected[:-3] + "alarm"


def test_status_topic() -> None:
    assert status_topic("plant", "s1", "edge-7") == "plant/s1/_agent/edge-7/status"


def test_every_data_topic_has_the_same_depth() -> None:
    topics = [kpi_topic("factory", "s", "l", "m"), kpi_topic("factory", "s", "l", None),
              kpi_topic("factory", "s", None, None)]
    assert {t.count("/") for t in topics} == {4}


@pytest.mark.parametrize(
    ("site", "line", "machine", "message"),
    [
        ("", "l", "m", "site id must be a non-empty"),
        ("_s", "l", "m", "must not start with '_'"),
        ("s", "_line", None, "must not start with '_'"),
        ("s", "l", "a/b", "not allowed in a topic level"),
        ("s", "l", "m+", "not allowed in a topic level"),
        ("s#", "l", "m", "not allowed in a topic level"),
        ("s", None, "m", "has no line"),
    ],
)
def test_bad_ids_are_rejected_with_the_reason(
    site: str, line: str | None, machine: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        kpi_topic("factory", site, line, machine)


def test_bad_prefix_is_rejected() -> None:
    with pytest.raises(InputError, match="prefix"):
        kpi_topic("a/b", "s", "l", "m")


def test_subscription_filter_matches_the_builders() -> None:
    assert subscription_filter("factory") == "factory/+/+/+/kpi"
    assert subscription_filter("factory", "alarm", site="s1") == "factory/s1/+/+/alarm"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("factory/s/l/m/kpi", TopicRef("s", "l", "m", "kpi")),
        ("factory/s/l/_line/alarm", TopicRef("s", "l", None, "alarm")),
        ("factory/s/_site/_site/kpi", TopicRef("s", None, None, "kpi")),
        ("factory/s/_agent/a1/status", TopicRef("s", None, "a1", "status")),
    ],
)
def test_parse_inverts_the_builders(topic: str, expected: TopicRef) -> None:
    assert parse_topic("factory", topic) == expected


@pytest.mark.parametrize(
    "topic",
    ["factory/s/l/m", "other/s/l/m/kpi", "factory/s/l/m/what", "factory/s/_site/m/kpi",
     "factory/s/l/_x/kpi", "factory/s/l/m/status"],
)
def test_parse_rejects_foreign_topics(topic: str) -> None:
    with pytest.raises(InputError):
        parse_topic("factory", topic)
