"""Thresholds proposed from a recorded power log: levels found, thresholds in the gaps,
a snippet that loads as config and classifies the log it came from."""

from __future__ import annotations

import random
import tomllib

import pytest
from rules_helpers import T0, S

from agent.config.model import PowerStateSection
from rules.power_state import PowerDeriver, PowerStateSpec
from rules.power_thresholds import propose_thresholds, to_toml
from rules.types import Sample

LEVELS = {"off": 0.0, "idle": 3.0, "setup": 5.0, "break": 1.5, "producing": 24.0}


def _log(kinds: list[str], seed: int = 3, seconds: int = 3600, step_s: int = 1,
         jitter: float = 0.05) -> tuple[list[int], list[float], list[str]]:
    """Readings every ``step_s`` through random segments of the given ``kinds``."""
    rng = random.Random(seed)
    times: list[int] = []
    power: list[float] = []
    truth: list[str] = []
    t = 0
    while t < seconds:
        kind = rng.choice(kinds)
        for _ in range(rng.randint(10, 60) // step_s):
            times.append(T0 + t * S)
            power.append(LEVELS[kind] * (1 + rng.uniform(-jitter, jitter)))
            truth.append(kind)
            t += step_s
    return times, power, truth


def test_three_levels_give_thresholds_in_their_gaps() -> None:
    times, power, _ = _log(["off", "idle", "setup", "break", "producing", "producing"])
    pr = propose_thresholds(times, power)
    assert [lv.name for lv in pr.levels] == ["off", "idle", "producing"]
    assert 0.0 < pr.off_below_kw < 1.5 * 0.95  # below the lowest base load (a break)
    assert 5.0 * 1.05 < pr.producing_above_kw < 24.0 * 0.95
    assert 0 < pr.hysteresis_kw < pr.off_below_kw
    assert pr.min_dwell_s == 2.0
    assert pr.notes == ()
    assert abs(sum(lv.share for lv in pr.levels) - 1) < 1e-9


def test_the_snippet_is_valid_config_and_reads_the_log_back() -> None:
    times, power, truth = _log(["off", "idle", "producing"], seed=11)
    pr = propose_thresholds(times, power)
    text = to_toml(pr, machine="cnc-01", device="meter-01", source="samples.jsonl")
    table = tomllib.loads(text)["machines"]["power_state"]
    section = PowerStateSection.model_validate(table)
    assert section.meter == "meter-01"
    spec = PowerStateSpec("meter-01", section.off_below_kw, section.producing_above_kw,
                          section.hysteresis_kw, 0.0)
    deriver = PowerDeriver(spec)
    wrong = sum(deriver.update(Sample(t, "meter-01", "power_kw", p))[0] != kind
                for t, p, kind in zip(times, power, truth, strict=True))
    assert wrong == 0


def test_cycles_are_proposed_as_a_comment() -> None:
    times = [T0 + i * S for i in range(600)]
    power = [20.0 if i % 30 < 12 else 2.0 for i in range(600)]
    pr = propose_thresholds(times, power)
    assert pr.cycles is not None
    assert (pr.cycles.rises, pr.cycles.median_s) == (20, 12.0)
    assert (pr.cycles.min_s, pr.cycles.max_s) == (6.0, 24.0)
    text = to_toml(pr, machine="press-01", device="press-01", source="log")
    assert "# [machines.power_state.cycles]" in text and "meter =" not in text
    assert "cycles" not in tomllib.loads(text)["machines"]["power_state"]


def test_without_an_off_level_the_note_says_so() -> None:
    times, power, _ = _log(["idle", "producing"])
    pr = propose_thresholds(times, power)
    assert [lv.name for lv in pr.levels] == ["idle", "producing"]
    assert 0 < pr.off_below_kw < 3.0 * 0.95
    assert any("no off level" in n for n in pr.notes)


def test_without_an_idle_level_the_band_lies_in_the_gap() -> None:
    times, power, _ = _log(["off", "producing"])
    pr = propose_thresholds(times, power)
    assert [lv.name for lv in pr.levels] == ["off", "producing"]
    assert 0 < pr.off_below_kw < pr.producing_above_kw < 24.0 * 0.95
    assert any("no idle level" in n for n in pr.notes)


def test_a_gap_in_the_log_weighs_ten_intervals_at_most() -> None:
    # an hour producing at 1 s, then one idle reading and a day of silence, then idle
    times = [T0 + i * S for i in range(3600)] + [T0 + 3600 * S, T0 + 90_000 * S]
    times += [T0 + (90_001 + i) * S for i in range(600)]
    power = [24.0] * 3600 + [3.0, 3.0] + [3.0] * 600
    pr = propose_thresholds(times, power)
    shares = {lv.name: lv.share for lv in pr.levels}
    assert shares["producing"] > 0.8


@pytest.mark.parametrize(("power", "message"), [
    ([5.0] * 10, "at least 20"),
    ([5.0] * 100, "one power level"),
    ([5.0 + 0.01 * (i % 7) for i in range(100)], "one power level"),
])
def test_a_log_that_cannot_tell_levels_apart(power: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        propose_thresholds([T0 + i * S for i in range(len(power))], power)


def test_a_log_without_an_interval() -> None:
    with pytest.raises(ValueError, match="same time"):
        propose_thresholds([T0] * 30, [0.0] * 15 + [20.0] * 15)
