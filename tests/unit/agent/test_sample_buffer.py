"""The engine loop's input buffer: order, batches, the bound and back-pressure."""

from __future__ import annotations

import asyncio

import pytest

from agent.runtime import SampleBuffer
from collectors.base import NonBlockingSink
from rules.types import Sample


def _sample(i: int) -> Sample:
    return Sample(1_000 + i, "cnc-01", "power_kw", float(i))


def test_is_a_non_blocking_sink_and_keeps_order() -> None:
    buf = SampleBuffer(10)
    assert isinstance(buf, NonBlockingSink)
    for i in range(5):
        buf.put_nowait(_sample(i))
    assert len(buf) == 5 and not buf.empty()
    assert buf.take(3) == [_sample(i) for i in range(3)]
    assert buf.get_nowait() == _sample(3)
    assert buf.take(100) == [_sample(4)]
    assert buf.empty() and buf.take(100) == []
    with pytest.raises(asyncio.QueueEmpty):
        buf.get_nowait()


def test_bound() -> None:
    buf = SampleBuffer(2)
    buf.put_nowait(_sample(0))
    assert not buf.full()
    buf.put_nowait(_sample(1))
    assert buf.full()
    with pytest.raises(asyncio.QueueFull):
        buf.put_nowait(_sample(2))
    with pytest.raises(ValueError, match="positive"):
        SampleBuffer(0)


async def test_put_waits_for_room_then_delivers_in_order() -> None:
    buf = SampleBuffer(1)
    await buf.put(_sample(0))
    waiting = asyncio.create_task(buf.put(_sample(1)))
    await asyncio.sleep(0)
    assert not waiting.done() and len(buf) == 1
    assert buf.take(10) == [_sample(0)]
    await asyncio.wait_for(waiting, 5)
    assert buf.take(10) == [_sample(1)]
