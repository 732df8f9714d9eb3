"""Whole-record replacement and no downgrade: the pure plan and the queries it needs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.ingest.deadletter import CANNOT_REPLACE, LESS_COMPLETE
from agent.ingest.points import InfluxPoint, PointKey, alarm_to_point, record_to_point
from agent.ingest.sink import (
    StoredFields,
    flavour_of,
    influxql_delete,
    influxql_select,
    plan_writes,
    v2_delete_predicate,
)
from rules.types import AlarmEvent, KpiRecord

T0 = 1_795_680_000_000


def rec(machine: str = "m1", end: int = T0 + 60_000, **kw: object) -> KpiRecord:
    base: dict[str, object] = {"site": "s", "line": "l", "machine": machine, "window": "1m",
                               "window_start_ms": end - 60_000, "window_end_ms": end,
                               "observed_s": 60.0, "planned_busy_time_s": 60.0}
    base.update(kw)
    return KpiRecord(**base)  # type: ignore[arg-type]


def point(**kw: object) -> InfluxPoint:
    return record_to_point(rec(**kw))  # type: ignore[arg-type]


def stored(p: InfluxPoint) -> dict[PointKey, StoredFields]:
    return {p.key: dict(p.fields)}


def test_nothing_stored_writes_everything_in_arrival_order() -> None:
    points = [point(machine="m2"), alarm_to_point(AlarmEvent(T0, "s", "l", "m1", "r", "raised")),
              point(machine="m1")]
    plan = plan_writes(points, {})
    assert plan.write == (0, 1, 2) and not plan.delete and not plan.refused


def test_a_replay_with_the_same_fields_overwrites_without_a_delete() -> None:
    old = point(oee=0.5, energy_kwh=1.0)
    new = point(oee=0.6, energy_kwh=1.5)
    plan = plan_writes([new], stored(old))
    assert plan.write == (0,) and plan.delete == ()


def test_a_field_that_became_null_needs_the_stored_point_deleted_first() -> None:
    old = point(oee=0.5, energy_kwh=1.0)
    new = point(oee=0.5, energy_kwh=None)
    plan = plan_writes([new], stored(old))
    assert plan.write == (0,) and plan.delete == (new.key,)
    assert plan.needs_delete == {new.key: 0}
    # without a way to delete (InfluxDB 3) the record is refused rather than merged
    blocked = plan.without_deletes("cannot delete")
    assert blocked.write == () and blocked.refused == {0: (CANNOT_REPLACE, "cannot delete")}


@pytest.mark.parametrize(("stored_obs", "new_obs", "replaces"), [
    (60.0, 30.0, False),      # an agent that lost its checkpoint: refused
    (60.0, 60.0, True),       # a tie: the newer replaces
    (30.0, 60.0, True),       # more complete: replaces
    (60.0, 59.9995, True),    # within the rounding millisecond: a tie
    (None, 10.0, True),       # stored by an agent before observed_s: counts as 0 s
    (10.0, None, False),      # an older agent's record never beats a stated one
    (0.0, None, True),        # ... unless that one observed nothing
    (None, None, True),       # neither states it: the newer replaces, as before
])
def test_a_record_never_replaces_a_more_complete_one(
    stored_obs: float | None, new_obs: float | None, replaces: bool
) -> None:
    old = point(observed_s=stored_obs, energy_kwh=2.0)
    new = point(observed_s=new_obs, energy_kwh=2.0)
    plan = plan_writes([new], stored(old))
    if replaces:
        assert plan.write == (0,) and not plan.refused
    else:
        assert plan.write == () and plan.refused[0][0] == LESS_COMPLETE
        reason = plan.refused[0][1]
        assert "s/l/m1 1m window ending 2026-11-26T08:01:00.000Z" in reason
        assert f"observed {new_obs or 0:g} s" in reason and f"stored {stored_obs:g} s" in reason


@pytest.mark.parametrize(("stored_flags", "new_flags", "new_obs", "replaces"), [
    (("energy_pending",), ("revised",), 60.0, True),   # the revision replaces, as it should
    (("revised",), ("energy_pending",), 60.0, False),  # the earlier copy arrives late
    (("revised",), ("energy_pending",), 60.0005, False),  # same observation, float noise
    (("revised",), ("energy_pending",), 61.0, True),   # it observed more: it is newer
    (("energy_pending",), ("energy_pending",), 60.0, True),
    (("revised",), ("revised",), 60.0, True),
    ((), ("energy_pending",), 60.0, True),
])
def test_a_pending_copy_never_replaces_its_revision(
    stored_flags: tuple[str, ...], new_flags: tuple[str, ...], new_obs: float, replaces: bool
) -> None:
    old = point(observed_s=60.0, energy_kwh=2.0, flags=stored_flags)
    new = point(observed_s=new_obs, energy_kwh=1.5, flags=new_flags)
    plan = plan_writes([new], stored(old))
    if replaces:
        assert plan.write == (0,) and not plan.refused
    else:
        assert plan.write == () and plan.refused[0][0] == LESS_COMPLETE
        assert "energy_pending" in plan.refused[0][1] and "stored is already revised" in (
            plan.refused[0][1])
    # the same two copies within one batch, nothing stored
    batch = plan_writes([old, new], {})
    assert batch.write == ((1,) if replaces else (0,))
    assert bool(batch.refused) is not replaces


def test_within_one_batch_the_rules_apply_in_arrival_order() -> None:
    full = point(observed_s=60.0, oee=0.5, energy_kwh=1.0)
    partial = point(observed_s=20.0, oee=0.2)
    fuller = point(observed_s=60.0, oee=0.7)
    other = point(machine="m2")
    # stored 30 s: full replaces it, partial is refused against full, fuller supersedes full
    old = point(observed_s=30.0, energy_kwh=9.0, cycle_time_mean_s=3.0)
    plan = plan_writes([full, partial, other, fuller], stored(old))
    assert plan.write == (2, 3)
    assert plan.superseded == (0,)
    assert set(plan.refused) == {1} and "received earlier 60 s" in plan.refused[1][1]
    assert plan.delete == (fuller.key,)  # fuller lacks energy and cycle time


def test_points_of_other_measurements_are_never_read_or_refused() -> None:
    a = alarm_to_point(AlarmEvent(T0, "s", "l", "m1", "r", "raised", value=1.0))
    b = alarm_to_point(AlarmEvent(T0, "s", "l", "m1", "r", "raised"))
    plan = plan_writes([a, b], {a.key: dict(a.fields)})
    assert plan.write == (0, 1) and not plan.delete and not plan.superseded


def test_influxql_select_groups_by_time_and_escapes() -> None:
    k1 = point(machine="m1").key
    k2 = point(machine="it's \\ \"odd\"").key
    k3 = point(machine="m1", end=T0 + 120_000).key
    text = influxql_select([k1, k2, k3, k1])
    statements = text.split("; ")
    assert len(statements) == 2
    assert statements[0] == (
        f'SELECT * FROM "kpi" WHERE time = {T0 + 60_000}ms AND '
        "((\"line\" = 'l' AND \"machine\" = 'm1' AND \"site\" = 's' AND \"window\" = '1m') OR "
        "(\"line\" = 'l' AND \"machine\" = 'it\\'s \\\\ \"odd\"' AND \"site\" = 's' AND "
        "\"window\" = '1m')) GROUP BY *")
    assert statements[1].startswith(f'SELECT * FROM "kpi" WHERE time = {T0 + 120_000}ms AND ')


def test_influxql_delete_one_statement_per_point() -> None:
    keys = [point(machine="m1").key, point(machine="m2").key]
    assert influxql_delete(keys) == "; ".join(
        f"DELETE FROM \"kpi\" WHERE \"line\" = 'l' AND \"machine\" = '{m}' AND \"site\" = 's' "
        f"AND \"window\" = '1m' AND time = {T0 + 60_000}ms" for m in ("m1", "m2"))


def test_v2_delete_covers_exactly_the_point_s_millisecond() -> None:
    key = replace(point(), tags={"site": 's"1', "line": "l", "machine": "m", "window": "1m"}).key
    start, stop, predicate = v2_delete_predicate(key)
    assert (start, stop) == ("2026-11-26T08:01:00.000000000Z", "2026-11-26T08:01:00.000999999Z")
    assert predicate == ('_measurement="kpi" AND line="l" AND machine="m" AND site="s\\"1" '
                         'AND window="1m"')


@pytest.mark.parametrize(("version", "flavour"), [
    ("1.8.10", "influxql"), ("unknown", "influxql"), ("1.11.8-c1.11.8", "influxql"),
    ("v2.7.10", "v2"), ("2.7.1", "v2"), ("3.0.1", "none"), ("v3.2.0", "none"),
])
def test_how_each_server_deletes_a_point(version: str, flavour: str) -> None:
    assert flavour_of(version) == flavour
