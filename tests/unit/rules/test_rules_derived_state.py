"""A machine state from several signals: the condition language, three-valued evaluation,
the rule table, and the engine applying it in time order."""

from __future__ import annotations

import json

import pytest
from rules_helpers import T0, H, M, S, one_machine, pick, run, smp

from rules.derived_state import (
    BAD,
    INVALID,
    And,
    Compare,
    Name,
    Not,
    Number,
    Or,
    RuleDeriver,
    StateRule,
    StateRulesSpec,
    evaluate,
    names_in,
    parse_condition,
)
from rules.engine import KpiEngine
from rules.errors import ConfigError
from rules.spec import MachineSpec
from rules.types import Sample


@pytest.mark.parametrize(("text", "tree"), [
    ("emergency_stop", Name("emergency_stop")),
    ("not feed_hold", Not(Name("feed_hold"))),
    ("program_running and spindle_on",
     And((Name("program_running"), Name("spindle_on")))),
    ("a or b and not c", Or((Name("a"), And((Name("b"), Not(Name("c"))))))),
    ("(a or b) and c", And((Or((Name("a"), Name("b"))), Name("c")))),
    ("mode == 2", Compare(Name("mode"), ("==",), (Number(2.0),))),
    ("0 < mode <= 3.5", Compare(Number(0.0), ("<", "<="), (Name("mode"), Number(3.5)))),
    ("load >= -1", Compare(Name("load"), (">=",), (Number(-1.0),))),
    ("alarm == true", Compare(Name("alarm"), ("==",), (Number(1.0),))),
    ("door != False", Compare(Name("door"), ("!=",), (Number(0.0),))),
    ("  spaced  ", Name("spaced")),
])
def test_conditions_parse_into_plain_trees(text: str, tree: object) -> None:
    assert parse_condition(text) == tree


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("a and", "syntax error"),
    ("a +", "syntax error"),
    ("a + 1 > 2", "arithmetic"),
    ("f(a)", "function call"),
    ("__import__('os')", "function call"),
    ("a.b", "'.'"),
    ("a[0]", "indexing"),
    ("'on' == a", "not a number"),
    ("a if b else c", "'if ... else'"),
    ("a is b", "not a comparison"),
    ("a in b", "not a comparison"),
    ("lambda: 1", "lambda"),
    ("a\nor b", "one line"),
    ("a == None", "None"),
    ("a == 1e999", "not a number"),
])
def test_anything_outside_the_language_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        parse_condition(text)
    assert why in str(err.value)


def test_names_in_a_condition() -> None:
    assert names_in(parse_condition("a and (b or not c) and 1 < d < 3")) == {"a", "b", "c",
                                                                            "d"}


U = None  # an unknown input


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("a", {"a": 1.0}, True),
    ("a", {"a": 0.0}, False),
    ("a", {"a": 2.5}, True),
    ("a", {"a": U}, None),
    ("not a", {"a": U}, None),
    ("not a", {"a": 0.0}, True),
    ("a or b", {"a": 1.0, "b": U}, True),
    ("a or b", {"a": 0.0, "b": U}, None),
    ("a or b", {"a": 0.0, "b": 0.0}, False),
    ("a and b", {"a": 0.0, "b": U}, False),
    ("a and b", {"a": 1.0, "b": U}, None),
    ("a and b", {"a": 1.0, "b": 1.0}, True),
    ("mode == 2", {"mode": 2.0}, True),
    ("mode == 2", {"mode": 3.0}, False),
    ("mode == 2", {"mode": U}, None),
    ("mode != 2", {"mode": 3.0}, True),
    ("load > 50", {"load": 50.0}, False),
    ("load >= 50", {"load": 50.0}, True),
    ("load < 50", {"load": 49.9}, True),
    ("load <= 50", {"load": 50.1}, False),
    ("0 < mode < 3", {"mode": 2.0}, True),
    ("0 < mode < 3", {"mode": 3.0}, False),
    ("a < b < 3", {"a": U, "b": 5.0}, False),  # unknown and false is false
    ("a < b < 3", {"a": U, "b": 1.0}, None),
    ("a < b", {"a": 1.0, "b": 2.0}, True),
    ("1", {}, True),
    ("false", {}, False),
])
def test_three_valued_evaluation(text: str, values: dict[str, float | None],
                                 expected: bool | None) -> None:
    assert evaluate(parse_condition(text), values) is expected


def _table(*rows: tuple[str | None, str], inputs: tuple[str, ...] = (
        "emergency_stop", "alarm_active", "program_running", "spindle_on", "mode")
        ) -> StateRulesSpec:
    return StateRulesSpec(inputs, tuple(
        StateRule(state, None if when is None else parse_condition(when), when or "")
        for when, state in rows))


CNC = _table(("emergency_stop", "unplanned_down"), ("alarm_active", "unplanned_down"),
             ("program_running and spindle_on", "producing"), ("mode == 2", "setup"),
             (None, "idle"))


@pytest.mark.parametrize(("values", "state"), [
    ({"emergency_stop": 1, "alarm_active": 0, "program_running": 1, "spindle_on": 1,
      "mode": 1}, "unplanned_down"),
    ({"emergency_stop": 0, "alarm_active": 1, "program_running": 1, "spindle_on": 1,
      "mode": 1}, "unplanned_down"),
    ({"emergency_stop": 0, "alarm_active": 0, "program_running": 1, "spindle_on": 1,
      "mode": 1}, "producing"),
    ({"emergency_stop": 0, "alarm_active": 0, "program_running": 1, "spindle_on": 0,
      "mode": 2}, "setup"),
    ({"emergency_stop": 0, "alarm_active": 0, "program_running": 0, "spindle_on": 0,
      "mode": 1}, "idle"),
    # an emergency stop decides even before the other inputs were read
    ({"emergency_stop": 1}, "unplanned_down"),
    # the first rule might hold: nothing later may decide
    ({"alarm_active": 1, "program_running": 1, "spindle_on": 1}, None),
    # a rule that is unknown stops the table, though a later one would hold
    ({"emergency_stop": 0, "alarm_active": 0, "program_running": 1, "mode": 2}, None),
    # a failing rule passes on: spindle off decides "not producing" without program_running
    ({"emergency_stop": 0, "alarm_active": 0, "spindle_on": 0, "mode": 2}, "setup"),
    ({"emergency_stop": 0, "alarm_active": 0, "spindle_on": 0}, None),
    ({}, None),
])
def test_first_rule_that_holds_decides(values: dict[str, float], state: str | None) -> None:
    deriver = RuleDeriver(CNC)
    for name, value in values.items():
        deriver.update(Sample(T0, "m1", name, value))
    assert deriver.state() == state


def test_bad_and_invalid_readings_make_their_input_unknown() -> None:
    deriver = RuleDeriver(_table(("stop", "unplanned_down"), (None, "idle"),
                                 inputs=("stop",)))
    assert deriver.update(Sample(T0, "m1", "stop", 0)) == ("idle", None, 0)
    assert deriver.update(Sample(T0, "m1", "stop", 0, "bad")) == (None, BAD, 0)
    assert deriver.update(Sample(T0, "m1", "stop", False)) == ("idle", None, 0)
    assert deriver.update(Sample(T0, "m1", "stop", "on")) == (None, INVALID, 0)
    assert deriver.update(Sample(T0, "m1", "stop", float("nan"))) == (None, INVALID, 0)
    assert deriver.update(Sample(T0, "m1", "stop", True)) == ("unplanned_down", None, 0)
    assert deriver.update(Sample(T0, "m1", "stop", 1, "uncertain"))[0] == "unplanned_down"
    deriver.reset()
    assert deriver.state() is None


def test_a_deriver_continues_from_its_checkpoint() -> None:
    first = RuleDeriver(CNC)
    for name, value in (("emergency_stop", 0), ("alarm_active", 0), ("spindle_on", 0),
                        ("mode", 2)):
        first.update(Sample(T0, "m1", name, value))
    second = RuleDeriver(CNC)
    second.load_json(json.loads(json.dumps(first.to_json())))
    assert second.values == first.values and second.state() == "setup"
    # names that are no longer inputs are dropped, damaged entries stay unknown
    third = RuleDeriver(_table((None, "idle"), inputs=("mode", "other")))
    third.load_json({"values": {"mode": 2.0, "spindle_on": 1.0, "other": "x"}})
    assert third.values == {"mode": 2.0, "other": None}
    third.load_json(None)
    assert third.values == {"mode": 2.0, "other": None}


@pytest.mark.parametrize(("table", "problems"), [
    (CNC, []),
    (_table(), [("state_rules", "the table is empty")]),
    (_table(("emergency_stop", "idle")), [("state_rules[0].when", "must leave out 'when'")]),
    (_table((None, "idle"), ("emergency_stop", "idle")),
     [("state_rules[0].when", "only the last rule"),
      ("state_rules[1].when", "must leave out 'when'")]),
    (_table(("spindle and emergency_stop", "producing"), (None, "idle")),
     [("state_rules[0].when", "'spindle' is not an input")]),
    (_table(("x or y", "producing"), (None, "idle")),
     [("state_rules[0].when", "'x', 'y' are not inputs")]),
    (_table(("mode == 1", "running"), (None, "idle")),
     [("state_rules[0].state", "'running' is not a machine state")]),
])
def test_table_problems_name_their_row(table: StateRulesSpec,
                                       problems: list[tuple[str, str]]) -> None:
    found = table.problems()
    assert [p for p, _ in found] == [p for p, _ in problems]
    for (_, msg), (_, part) in zip(found, problems, strict=True):
        assert part in msg


# ---------------------------------------------------------------- in the engine

RULES = _table(("estop", "unplanned_down"), ("run and spindle", "producing"),
               (None, "idle"), inputs=("estop", "run", "spindle"))


def _spec(table: StateRulesSpec = RULES) -> object:
    return one_machine(machines=(MachineSpec("m1", "L1", 45.0, state_from=table),))


def test_the_engine_books_the_derived_states() -> None:
    samples = [
        smp(T0, "m1", "estop", 0), smp(T0, "m1", "run", 1), smp(T0, "m1", "spindle", 1),
        smp(T0 + 20 * M, "m1", "spindle", 0),
        smp(T0 + 30 * M, "m1", "estop", 1),
        smp(T0 + 40 * M, "m1", "estop", 0), smp(T0 + 40 * M, "m1", "spindle", 1),
    ]
    rec = pick(run(_spec(), samples, T0 + H), window="1h")  # type: ignore[arg-type]
    assert rec.producing_time_s == 40 * 60
    assert rec.idle_time_s == 10 * 60
    assert rec.unplanned_down_time_s == 10 * 60
    assert rec.state_source is None and "incomplete" not in rec.flags


def test_unknown_inputs_leave_time_unknown_until_the_table_can_decide() -> None:
    samples = [
        smp(T0, "m1", "run", 1),  # estop unread: the first rule might hold
        smp(T0 + 10 * M, "m1", "estop", 0),  # spindle unread: rule 2 undecided
        smp(T0 + 15 * M, "m1", "spindle", 1),
        smp(T0 + 30 * M, "m1", "spindle", 1, "bad"),
        smp(T0 + 35 * M, "m1", "spindle", "fast"),
        smp(T0 + 40 * M, "m1", "spindle", 0),
    ]
    rec = pick(run(_spec(), samples, T0 + H), window="1h")  # type: ignore[arg-type]
    assert rec.producing_time_s == 15 * 60
    assert rec.idle_time_s == 20 * 60
    assert rec.planned_busy_time_s == 35 * 60
    assert {"incomplete", "bad_quality", "invalid_value"} <= set(rec.flags)


def test_inputs_arriving_out_of_order_are_applied_in_time_order() -> None:
    ordered = [smp(T0, "m1", "estop", 0), smp(T0, "m1", "spindle", 1),
               smp(T0 + 1 * S, "m1", "run", 1), smp(T0 + 3 * S, "m1", "estop", 1),
               smp(T0 + 4 * S, "m1", "run", 0), smp(T0 + 5 * S, "m1", "estop", 0)]
    arrival = [ordered[0], ordered[1], ordered[3], ordered[2], ordered[5], ordered[4]]

    def replay(samples: list[Sample]) -> list[dict[str, object]]:
        eng = KpiEngine(_spec())  # type: ignore[arg-type]
        for s in samples:
            eng.add(s)
        return [r.to_json_dict() for r in eng.finish(T0 + H).records]

    first = replay(ordered)
    assert first == replay(arrival)
    rec = first[0]
    assert rec["producing_time_s"] == 2.0 and rec["unplanned_down_time_s"] == 2.0


def test_an_observation_restart_makes_every_input_unknown() -> None:
    eng = KpiEngine(_spec())  # type: ignore[arg-type]
    eng.observe_from(T0)
    for s in (smp(T0, "m1", "estop", 0), smp(T0, "m1", "run", 0),
              smp(T0, "m1", "spindle", 0)):
        eng.add(s)
    eng.add(smp(T0 + 10 * M, "m1", "run", 1))  # the last sample before the agent stopped
    eng.observe_from(T0 + 30 * M)
    eng.add(smp(T0 + 30 * M, "m1", "spindle", 1))  # estop and run not read again yet
    eng.add(smp(T0 + 50 * M, "m1", "estop", 0))
    eng.add(smp(T0 + 50 * M, "m1", "run", 1))
    rec = pick(eng.finish(T0 + H).records, window="1h")
    assert rec.idle_time_s == 10 * 60 + 0.001  # until just after the last sample seen
    assert rec.producing_time_s == 10 * 60  # from when estop was read again
    assert rec.planned_busy_time_s == 20 * 60 + 0.001


def test_a_restored_engine_derives_as_the_uninterrupted_one() -> None:
    samples = [smp(T0 + i * 7 * S, "m1", ("estop", "run", "spindle")[i % 3], (i // 3) % 2)
               for i in range(600)]
    whole = KpiEngine(_spec())  # type: ignore[arg-type]
    first = KpiEngine(_spec())  # type: ignore[arg-type]
    out_whole, out_split = [], []
    for i, s in enumerate(samples):
        whole.add(s)
        out_whole += whole.collect().records
        if i == 300:
            state = json.loads(json.dumps(first.snapshot()))
            assert "derive" in state["machines"][0]
            first = KpiEngine.restore(_spec(), state)  # type: ignore[arg-type]
        first.add(s)
        out_split += first.collect().records
    out_whole += whole.finish().records
    out_split += first.finish().records
    assert [r.to_json_dict() for r in out_split] == [r.to_json_dict() for r in out_whole]


def test_a_table_the_engine_cannot_use_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        KpiEngine(_spec(_table(("ghost", "producing"), (None, "idle"),  # type: ignore[arg-type]
                               inputs=("estop",))))
    assert err.value.errors[0][0] == "machines[0] 'm1': state_rules[0].when"


def test_a_state_signal_of_a_derived_machine_is_not_used() -> None:
    eng = KpiEngine(_spec())  # type: ignore[arg-type]
    eng.add(smp(T0, "m1", "state", "producing"))
    eng.add(smp(T0, "m1", "estop", 1))
    rec = pick(eng.finish(T0 + H).records, window="1h")
    assert rec.producing_time_s == 0 and rec.unplanned_down_time_s == 3600
    assert eng.stats["ignored_unknown"] == 1
