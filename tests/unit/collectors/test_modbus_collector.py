"""The Modbus collector through a fake link on virtual time: schedules, backoff, health,
logging, value maps, odd replies, decoding and merged reads, without a socket."""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Callable

import pytest
from fake_modbus import FakeModbusLink, Run, collect_until, run_virtual

from collectors.modbus import ModbusCollector, ModbusDeviceSpec, ModbusSourceSpec, RegisterPoint

LOGGER = "collectors.modbus"


def _source(*devices: ModbusDeviceSpec, **kw: object) -> ModbusSourceSpec:
    params: dict[str, object] = {"poll_interval_s": 1.0, "timeout_s": 0.5, "retries": 1,
                                 "backoff_min_s": 2.0, "backoff_max_s": 16.0}
    params.update(kw)
    return ModbusSourceSpec("gw", devices=devices, **params)  # type: ignore[arg-type]


def _meter(dev: str, unit: int, *points: RegisterPoint, **kw: object) -> ModbusDeviceSpec:
    points = points or (RegisterPoint(dev, "energy_kwh", "input", 0, "u32"),)
    return ModbusDeviceSpec(dev, unit, points, **kw)  # type: ignore[arg-type]


def _regs(fmt: str, value: float | int, word_order: str = "big",
          byte_order: str = "big") -> list[int]:
    raw = struct.pack(fmt, value)
    regs = [int.from_bytes(raw[i:i + 2], byte_order) for i in range(0, len(raw), 2)]  # type: ignore[arg-type]
    return regs if word_order == "big" else regs[::-1]


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _reads_at_least(link: FakeModbusLink, n: int) -> Callable[[], bool]:
    return lambda: len(link.reads) >= n


def _one_meter(link: FakeModbusLink, reads: int) -> tuple[ModbusCollector, Run]:
    """A source of one meter (unit 1) on ``link``, run until it sent ``reads`` requests."""
    collector = ModbusCollector(_source(_meter("m", 1)), link=link)
    return collector, run_virtual(collect_until(collector, link, _reads_at_least(link, reads)))


def test_a_failing_device_backs_off_with_jitter_and_its_neighbour_keeps_time() -> None:
    link = FakeModbusLink(dead={2})
    collector = ModbusCollector(_source(_meter("ok", 1), _meter("dead", 2)), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads_of(2)) >= 7))
    gaps = _gaps([r.at for r in link.reads_of(2)])
    caps = [min(16.0, 2.0 * 2 ** (n + 1)) for n in range(len(gaps))]
    assert all(2.0 <= g <= cap + 1e-9 for g, cap in zip(gaps, caps, strict=True)), gaps
    assert len({round(g, 9) for g in gaps}) == len(gaps)  # jittered, never in lock step
    assert sum(gaps) > 2.0 * len(gaps)  # slower than one poll a backoff minimum
    assert all(g == pytest.approx(1.0) for g in _gaps([r.at for r in link.reads_of(1)]))
    health = run.health
    assert health["ok"].connected and health["ok"].errors == 0
    assert not health["dead"].connected and health["dead"].samples == 0
    assert health["dead"].errors == 7 and "No response" in (health["dead"].last_error or "")


def test_a_fleet_does_not_come_back_in_step() -> None:
    first_retries = []
    for _ in range(5):
        link = FakeModbusLink(dead={1})
        collector = ModbusCollector(_source(_meter("m", 1)), link=link)
        run_virtual(collect_until(collector, link, _reads_at_least(link, 2)))
        first_retries.append(link.reads[1].at - link.reads[0].at)
    assert all(2.0 <= d <= 4.0 for d in first_retries)
    assert len(set(first_retries)) == len(first_retries)


def test_backoff_never_polls_faster_than_the_interval() -> None:
    link = FakeModbusLink(dead={1})
    spec = _source(_meter("m", 1), poll_interval_s=10.0, backoff_min_s=0.5, backoff_max_s=1.0)
    collector = ModbusCollector(spec, link=link)
    run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 4))
    assert all(g == pytest.approx(10.0) for g in _gaps([r.at for r in link.reads]))


def test_failure_and_recovery_are_logged_once_each_and_the_backoff_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link = FakeModbusLink(dead={1})
    collector = ModbusCollector(_source(_meter("m", 1)), link=link)

    def healed() -> bool:
        if len(link.reads) >= 5:
            link.dead.clear()
        return len(link.reads) >= 9

    run = run_virtual(collect_until(collector, link, healed))
    failing = [r for r in caplog.records if r.levelno >= logging.WARNING]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert [r.getMessage() for r in failing] == [
        "modbus gw: device m (unit 1) failing: input 0+2 unit 1: no valid reply: "
        "No response received after 1 retries"]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
    assert sum("still failing" in r.getMessage() for r in caplog.records) == 4
    assert len(run.samples) == 4 and all(s.quality == "good" for s in run.samples)
    health = run.health["m"]
    assert health.connected and health.failing_since_ms is None and health.errors == 5
    # after recovery the device is polled at its interval again, not at a backoff's pace
    assert all(g == pytest.approx(1.0) for g in _gaps([r.at for r in link.reads[5:]]))


def test_a_second_episode_starts_from_the_shortest_backoff_again() -> None:
    link = FakeModbusLink(dead={1})
    collector = ModbusCollector(_source(_meter("m", 1)), link=link)

    def script() -> bool:
        n = len(link.reads)
        if n == 5:
            link.dead.clear()
        elif n == 7:
            link.dead.add(1)
        return n >= 9

    run_virtual(collect_until(collector, link, script))
    gaps = _gaps([r.at for r in link.reads])
    assert gaps[5] == pytest.approx(1.0)  # healthy: the interval
    assert 2.0 <= gaps[7] <= 4.0  # failing again: the first backoff step, not the fifth


def test_an_exception_response_marks_only_that_device_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = FakeModbusLink(exceptions={2: 2})
    link.set(1, "input", 0, [0, 42])
    collector = ModbusCollector(_source(_meter("m1", 1), _meter("m2", 2)), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads_of(2)) >= 3))
    h1, h2 = run.health["m1"], run.health["m2"]
    assert h2.last_error == "input 0+2 unit 2: exception response 2"
    assert not h2.connected and h2.failing_since_ms is not None and h2.errors == 3
    assert h1.connected and h1.errors == 0
    assert {s.device for s in run.samples} == {"m1"} and run.samples[0].value == 42
    assert sum("failing" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING) == 1


def test_a_short_reply_is_a_device_failure_not_a_sample() -> None:
    link = FakeModbusLink(short={1: 1})
    points = (RegisterPoint("m", "energy_kwh", "holding", 0, "u32"),
              RegisterPoint("m", "power_kw", "holding", 2, "u16"))
    collector = ModbusCollector(_source(_meter("m", 1, *points)), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 2))
    health = run.health["m"]
    assert run.samples == []
    assert health.last_error == "holding 0+3 unit 1: short reply (2 values)"
    assert not health.connected and health.errors == 2


def test_every_register_type_decodes_with_its_orders_scale_and_offset() -> None:
    cases: list[tuple[RegisterPoint, list[int], object]] = [
        (RegisterPoint("m", "u16", "holding", 0, "u16"), [65535], 65535),
        (RegisterPoint("m", "i16", "holding", 1, "i16"), [0xFFFE], -2),
        (RegisterPoint("m", "u32", "holding", 2, "u32"), _regs(">I", 70000), 70000),
        (RegisterPoint("m", "i32_cdab", "holding", 4, "i32", word_order="little"),
         _regs(">i", -70000, "little"), -70000),
        (RegisterPoint("m", "u64", "holding", 6, "u64"), _regs(">Q", 2**40 + 7), 2**40 + 7),
        (RegisterPoint("m", "i64_dcba", "holding", 10, "i64", word_order="little",
                       byte_order="little"), _regs(">q", -(2**40), "little", "little"),
         -(2**40)),
        (RegisterPoint("m", "f32_badc", "holding", 14, "f32", byte_order="little"),
         _regs(">f", 1.5, "big", "little"), 1.5),
        (RegisterPoint("m", "f64", "holding", 16, "f64"), _regs(">d", 12345.678), 12345.678),
        (RegisterPoint("m", "scaled", "holding", 20, "u16", scale=0.1, offset=-40.0),
         [655], pytest.approx(25.5)),
        (RegisterPoint("m", "name", "holding", 21, "string", length=3),
         list(struct.unpack(">3H", b"SDM6\x00\x00")), "SDM6"),
        (RegisterPoint("m", "alarm", "coil", 5, "u16", scale=10.0), [1], 1),
        (RegisterPoint("m", "door", "discrete", 9), [0], 0),
    ]
    link = FakeModbusLink()
    for point, regs, _ in cases:
        link.set(1, point.table, point.address, regs)
    dev = ModbusDeviceSpec("m", 1, tuple(point for point, _, _ in cases))
    collector = ModbusCollector(_source(dev), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 3))
    got = {s.signal: s for s in run.samples}
    assert {name: got[name].value for name in got} == {p.signal: want for p, _, want in cases}
    assert all(s.quality == "good" and s.ts_source == "receive" for s in run.samples)


def test_nearby_points_share_one_read_and_far_ones_do_not() -> None:
    points = (
        RegisterPoint("m", "a", "input", 0, "f32"),
        RegisterPoint("m", "b", "input", 4, "f32"),  # 2 unused registers between: merged
        RegisterPoint("m", "c", "input", 40, "u16"),  # beyond max_gap: its own read
        RegisterPoint("m", "d", "holding", 1, "u16"),  # another table: its own read
        RegisterPoint("m", "e", "coil", 3),
        RegisterPoint("m", "f", "coil", 7),
    )
    link = FakeModbusLink()
    collector = ModbusCollector(_source(_meter("m", 1, *points), max_gap=8), link=link)
    run = run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 4))
    assert [(r.table, r.address, r.count) for r in link.reads[:4]] == [
        ("coil", 3, 5), ("holding", 1, 1), ("input", 0, 6), ("input", 40, 1)]
    assert sorted(s.signal for s in run.samples) == ["a", "b", "c", "d", "e", "f"]


def test_a_device_reads_with_its_own_timeout_and_retries() -> None:
    link = FakeModbusLink()
    slow = _meter("slow", 2, timeout_s=3.0, retries=0)
    collector = ModbusCollector(_source(_meter("m", 1), slow), link=link)
    run_virtual(collect_until(collector, link, lambda: len(link.reads) >= 2))
    limits = {r.unit: (r.timeout_s, r.retries) for r in link.reads}
    assert limits == {1: (0.5, 1), 2: (3.0, 0)}


def test_a_value_map_names_codes_and_an_unknown_code_is_bad_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = RegisterPoint("m", "state", "holding", 10, "u16",
                          value_map={"1": "idle", "2": "producing"})
    link = FakeModbusLink()
    link.set(1, "holding", 10, [2])
    collector = ModbusCollector(_source(_meter("m", 1, state)), link=link)

    def script() -> bool:
        n = len(link.reads)
        link.set(1, "holding", 10, [9] if 2 <= n < 5 else [2])
        return n >= 6

    run = run_virtual(collect_until(collector, link, script))
    assert [(s.value, s.quality) for s in run.samples] == [
        ("producing", "good"), ("producing", "good"), ("9", "bad"), ("9", "bad"),
        ("9", "bad"), ("producing", "good")]
    unmapped = [r for r in caplog.records if "not in value_map" in r.getMessage()]
    assert len(unmapped) == 1 and unmapped[0].levelno == logging.WARNING
    health = run.health["m"]
    assert health.errors == 3 and health.connected  # the device answered every time


def test_an_undecodable_value_is_a_bad_sample_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    points = (RegisterPoint("m", "energy_kwh", "input", 0, "f32"),
              RegisterPoint("m", "power_kw", "input", 2, "f32"))
    link = FakeModbusLink()
    link.set(1, "input", 0, [0x7FC0, 0, *_regs(">f", 2.5)])  # NaN: "not available"

    def script() -> bool:
        if len(link.reads) >= 3:
            link.set(1, "input", 0, _regs(">f", 100.0))
        return len(link.reads) >= 4

    collector = ModbusCollector(_source(_meter("m", 1, *points)), link=link)
    run = run_virtual(collect_until(collector, link, script))
    energy = [(s.value, s.quality) for s in run.samples if s.signal == "energy_kwh"]
    assert energy == [(None, "bad")] * 3 + [(100.0, "good")]
    assert all(s.value == 2.5 for s in run.samples if s.signal == "power_kw")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("does not decode" in m for m in messages) == 1
    assert sum("decodes again" in m for m in messages) == 1


def test_a_refused_link_backs_off_logs_once_and_counts_the_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    link = FakeModbusLink(refuse_connects=4)
    collector, run = _one_meter(link, reads=2)
    gaps = _gaps(link.connects)
    assert len(link.connects) == 5 and all(g >= 2.0 for g in gaps)
    assert len(set(gaps)) == len(gaps)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "cannot connect" in m] == [
        "modbus gw: cannot connect to fake:502: connection refused",
        "modbus gw: device m (unit 1) failing: cannot connect to fake:502: connection refused"]
    assert messages.count("modbus gw: connected to 127.0.0.1:502 again") == 1
    assert len(run.samples) == 2 and run.stats.connects == 1
    assert link.closed == 1 and not collector.stats.connected  # closed when stopped


def test_a_dropped_link_is_reported_once_and_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    _, run = _one_meter(FakeModbusLink(drop_after_reads=2), reads=4)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "lost" in m] == [
        "modbus gw: link to 127.0.0.1:502 lost: connection closed"]
    assert messages.count("modbus gw: connected to 127.0.0.1:502 again") == 1
    stats = run.stats
    assert (stats.connects, stats.reconnects) == (2, 1)
    assert run.health["m"].errors == 0  # the reply before the drop still counted
