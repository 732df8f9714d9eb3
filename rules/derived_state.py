"""A machine's state derived from several of its signals by an ordered rule table.

A controller that has no single state variable still says what it does through a few
booleans and numbers (emergency stop, alarm active, program running, spindle on, feed
hold, operating mode). The config names them as the machine's *inputs* and lists rules
in order; the first rule whose condition holds gives the state, and the last rule has
no condition (the state when no other rule holds)::

    emergency_stop                   -> unplanned_down
    alarm_active                     -> unplanned_down
    program_running and spindle_on   -> producing
    mode == 2                        -> setup
    (else)                           -> idle

The conditions are a deliberately small language, parsed once when the config is loaded
(Python's own parser, with every construct outside the language refused; nothing is
ever evaluated as Python):

* input names, numbers, ``true`` and ``false`` (1 and 0), parentheses;
* comparisons ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` between names and numbers,
  chained as in ``0 < mode <= 3``;
* ``not``, ``and``, ``or`` (in rising order of binding: ``or`` binds least); a bare name
  holds when its value is not 0.

Unknown inputs are handled explicitly, never guessed. An input is unknown before its
first reading, after a reading of quality ``bad`` (until the next good one), after a
value that is not a number (flag ``invalid_value``), and after an observation restart.
Conditions are then evaluated in three-valued (Kleene) logic: ``true or unknown`` is
true, ``false and unknown`` is false, anything else involving an unknown input is
unknown. Rules are tried in order: a rule that holds decides, a rule that fails passes
on to the next, and a rule whose condition is unknown makes the state unknown (the rule
might hold, so no later rule may decide). An emergency stop therefore puts a machine in
its rule's state even while an input of a later rule has not been read yet, and nothing
is decided past an input that could change the answer. Unknown state time is left out
of the planned busy time and flags the record ``incomplete``, as for a state signal.

The state changes at the time of the input reading that changes it. The engine applies
the readings of all inputs of a machine in time order (readings at the same instant in
the order they arrived) when it seals a slice, so the live agent and an offline replay
derive the same states from the same samples.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.types import MACHINE_STATES, Sample

__all__ = [
    "BAD",
    "INVALID",
    "RESERVED_NAMES",
    "And",
    "Compare",
    "Expr",
    "Name",
    "Not",
    "Number",
    "Or",
    "RuleDeriver",
    "StateRule",
    "StateRulesSpec",
    "evaluate",
    "input_number",
    "names_in",
    "parse_condition",
]

BAD = "bad"
"""What :meth:`RuleDeriver.update` reports for a reading of quality ``bad``."""
INVALID = "invalid"
"""What it reports for a reading whose value is not a finite number."""

RESERVED_NAMES = frozenset({"and", "or", "not", "true", "false", "True", "False", "None"})
"""Words of the condition language, which no input may be called."""

_COMPARISONS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}
_CONSTANTS = {"true": 1.0, "false": 0.0, "True": 1.0, "False": 0.0}


@dataclass(frozen=True, slots=True)
class Name:
    """An input's current value."""

    name: str


@dataclass(frozen=True, slots=True)
class Number:
    """A constant."""

    value: float


@dataclass(frozen=True, slots=True)
class Not:
    """Holds when ``operand`` does not."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    """Holds when every operand does."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Holds when any operand does."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """``first op0 rest[0] op1 rest[1] ...``: every adjacent pair compares true."""

    first: Name | Number
    ops: tuple[str, ...]
    rest: tuple[Name | Number, ...]


Expr = Name | Number | Not | And | Or | Compare
"""A parsed condition: plain frozen values, comparable and safe to keep in a spec."""


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return "" if col is None else f" (at column {col + 1})"


def _operand(node: ast.expr) -> Name | Number:
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return Number(_CONSTANTS[node.id])
        if node.id == "None":
            raise ValueError(f"None is not a value{_where(node)}")
        return Name(node.id)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return Number(1.0 if value else 0.0)
        if isinstance(value, int | float) and math.isfinite(value):
            return Number(float(value))
        raise ValueError(f"{value!r} is not a number{_where(node)}; conditions compare "
                         "inputs with numbers")
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant)):
        inner = _operand(node.operand)
        assert isinstance(inner, Number)
        return Number(-inner.value if isinstance(node.op, ast.USub) else inner.value)
    raise ValueError(f"{_describe(node)} is not allowed{_where(node)}: a comparison takes "
                     "an input name or a number on each side")


def _describe(node: ast.AST) -> str:
    text = {ast.BinOp: "arithmetic", ast.Call: "a function call", ast.Attribute: "'.'",
            ast.Subscript: "indexing", ast.IfExp: "'if ... else'", ast.Lambda: "lambda",
            ast.Compare: "a comparison", ast.BoolOp: "'and'/'or'"}.get(type(node))
    return text or type(node).__name__


def _convert(node: ast.expr) -> Expr:
    if isinstance(node, ast.BoolOp):
        items = tuple(_convert(v) for v in node.values)
        return And(items) if isinstance(node.op, ast.And) else Or(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Not(_convert(node.operand))
    if isinstance(node, ast.Compare):
        ops = []
        for op in node.ops:
            symbol = _COMPARISONS.get(type(op))
            if symbol is None:
                raise ValueError(f"{type(op).__name__} is not a comparison of this language"
                                 f"{_where(node)}; use ==, !=, <, <=, >, >=")
            ops.append(symbol)
        return Compare(_operand(node.left), tuple(ops),
                       tuple(_operand(c) for c in node.comparators))
    return _operand(node)


def parse_condition(text: str) -> Expr:
    """The condition ``text`` as an expression tree; ValueError saying what is wrong.

    Only the language of the module doc is accepted; Python's parser reads it, and every
    node outside the language (arithmetic, calls, attributes, strings, ...) is refused.
    """
    if not text.strip():
        raise ValueError("the condition is empty")
    if "\n" in text or "\r" in text:
        raise ValueError("a condition is one line")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        col = f" at column {err.offset}" if err.offset else ""
        raise ValueError(f"syntax error{col}: {text.strip()!r}") from None
    return _convert(tree.body)


def names_in(expr: Expr) -> frozenset[str]:
    """The input names a condition reads."""
    if isinstance(expr, Name):
        return frozenset({expr.name})
    if isinstance(expr, Number):
        return frozenset()
    if isinstance(expr, Not):
        return names_in(expr.operand)
    if isinstance(expr, And | Or):
        return frozenset().union(*(names_in(e) for e in expr.operands))
    return frozenset().union(*(names_in(e) for e in (expr.first, *expr.rest)))


def _value(operand: Name | Number, values: Mapping[str, float | None]) -> float | None:
    if isinstance(operand, Number):
        return operand.value
    return values.get(operand.name)


def _compare(a: float, op: str, b: float) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def evaluate(expr: Expr, values: Mapping[str, float | None]) -> bool | None:
    """The condition's truth for the inputs' current ``values`` (None: unknown), in
    three-valued logic: None when the answer depends on an unknown input."""
    if isinstance(expr, Name | Number):
        value = _value(expr, values)
        return None if value is None else value != 0
    if isinstance(expr, Not):
        inner = evaluate(expr.operand, values)
        return None if inner is None else not inner
    if isinstance(expr, And):
        unknown = False
        for item in expr.operands:
            got = evaluate(item, values)
            if got is False:
                return False
            unknown = unknown or got is None
        return None if unknown else True
    if isinstance(expr, Or):
        unknown = False
        for item in expr.operands:
            got = evaluate(item, values)
            if got is True:
                return True
            unknown = unknown or got is None
        return None if unknown else False
    left = _value(expr.first, values)
    unknown = left is None
    for op, operand in zip(expr.ops, expr.rest, strict=True):
        right = _value(operand, values)
        if right is None:
            unknown = True
        elif left is not None and not _compare(left, op, right):
            return False
        left = right
    return None if unknown else True


@dataclass(frozen=True, slots=True)
class StateRule:
    """One row of the table: ``state`` when ``when`` holds (``None``: always)."""

    state: str
    when: Expr | None = None
    text: str = ""
    """The condition as written, for messages."""


@dataclass(frozen=True, slots=True)
class StateRulesSpec:
    """A machine's state rule table over its ``inputs`` (signal names of the machine).

    :meth:`problems` lists what makes a table unusable; the agent's config validation
    reports them by config place before an engine is ever built.
    """

    inputs: tuple[str, ...]
    rules: tuple[StateRule, ...]

    def problems(self) -> list[tuple[str, str]]:
        """``(place, message)`` for every defect, places relative to the machine
        (``state_rules[2].when``)."""
        out: list[tuple[str, str]] = []
        if not self.rules:
            return [("state_rules", "the table is empty: give at least a final rule "
                                    "without 'when'")]
        known = set(self.inputs)
        for i, rule in enumerate(self.rules):
            where = f"state_rules[{i}]"
            if rule.state not in MACHINE_STATES:
                out.append((f"{where}.state", f"{rule.state!r} is not a machine state "
                            f"({', '.join(sorted(MACHINE_STATES))})"))
            last = i == len(self.rules) - 1
            if rule.when is None and not last:
                out.append((f"{where}.when", "only the last rule may leave out 'when' (it "
                            "decides when no other rule holds, so rules after it never "
                            "would)"))
            if rule.when is not None:
                unknown = sorted(names_in(rule.when) - known)
                if unknown:
                    have = ", ".join(self.inputs) if self.inputs else "none"
                    out.append((f"{where}.when", f"{', '.join(map(repr, unknown))} "
                                f"{'is not an input' if len(unknown) == 1 else 'are not inputs'}"
                                f" of the machine (inputs: {have})"))
                if last:
                    out.append((f"{where}.when", "the last rule must leave out 'when': it "
                                "gives the state when no other rule holds (e.g. "
                                "state = \"idle\")"))
        return out


def input_number(value: object) -> float | None:
    """An input reading as a number (booleans as 1/0), or None when it is not one."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


class RuleDeriver:
    """The rule table applied to one machine's input readings, in time order.

    Holds each input's last value (None: unknown); :meth:`update` applies one reading
    and says the state from then on. Pure and small, so it is part of the engine's
    checkpoint (:meth:`to_json`).
    """

    __slots__ = ("spec", "values")

    def __init__(self, spec: StateRulesSpec) -> None:
        self.spec = spec
        self.values: dict[str, float | None] = dict.fromkeys(spec.inputs)

    def state(self) -> str | None:
        """The state the current values give (None: unknown)."""
        for rule in self.spec.rules:
            if rule.when is None:
                return rule.state
            holds = evaluate(rule.when, self.values)
            if holds is None:
                return None
            if holds:
                return rule.state
        return None

    def update(self, sample: Sample) -> tuple[str | None, str | None, int]:
        """Apply one reading: ``(state from now on, problem, parts)``; ``problem`` is
        :data:`BAD` or :data:`INVALID` when the reading made its input unknown; a rule
        table counts no parts."""
        if sample.signal not in self.values:
            return self.state(), None, 0
        problem = None
        if sample.quality == "bad":
            number = None
            problem = BAD
        else:
            number = input_number(sample.value)
            if number is None:
                problem = INVALID
        self.values[sample.signal] = number
        return self.state(), problem, 0

    def reset(self) -> None:
        """Observation restarts: every input is unknown until read again."""
        for name in self.values:
            self.values[name] = None

    def to_json(self) -> dict[str, Any]:
        """The inputs' last values, for a checkpoint."""
        return {"values": dict(self.values)}

    def load_json(self, data: Mapping[str, Any] | None) -> None:
        """Continue from :meth:`to_json` output; names no longer inputs are dropped, and
        anything unreadable leaves the input unknown."""
        if not isinstance(data, Mapping):
            return
        saved = data.get("values")
        if not isinstance(saved, Mapping):
            return
        for name in self.values:
            self.values[name] = input_number(saved.get(name))
