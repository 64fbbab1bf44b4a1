"""Handout: at most max_in_flight unacked, nacked records first, close wakes everyone."""

from __future__ import annotations

import asyncio

import pytest

from icefloe.connectors.handout import Handout
from icefloe.connectors.protocol import Inbound
from icefloe.connectors.record import Record


def _inbound(position: int, partition: str = "p") -> Inbound:
    return Inbound(Record(None, b"%d" % position), partition, position)


async def test_a_reader_waits_for_room_and_an_ack_makes_it() -> None:
    async with asyncio.timeout(5):
        handout: Handout[int] = Handout(max_in_flight=2)
        assert await handout.put(_inbound(0))
        assert await handout.put(_inbound(1))
        third = asyncio.create_task(handout.put(_inbound(2)))
        await asyncio.sleep(0)
        assert not third.done()  # two unacked: the reader waits
        records = handout.records()
        first = await anext(records)
        assert await handout.ack(first) == 0
        assert await third
        assert handout.statistics(reconnects=0).in_flight == 2


async def test_a_nacked_record_comes_back_before_newer_ones() -> None:
    async with asyncio.timeout(5):
        handout: Handout[int] = Handout(max_in_flight=10)
        for position in range(3):
            await handout.put(_inbound(position))
        records = handout.records()
        zero = await anext(records)
        await handout.nack(zero)
        again = await anext(records)
        assert again.position == 0
        assert again.deliveries == 2
        assert (await anext(records)).position == 1
        assert await handout.ack(_inbound(1)) is None  # 0 is still unacked
        assert await handout.ack(again) == 1
        assert handout.waiting("p") == 1
        stats = handout.statistics(reconnects=3)
        assert (stats.records, stats.confirmed, stats.failed, stats.reconnects) == (3, 2, 1, 3)


async def test_an_unwanted_record_is_not_handed_out() -> None:
    async with asyncio.timeout(5):
        handout: Handout[int] = Handout(max_in_flight=10)
        assert not await handout.put(_inbound(0), lambda: False)
        assert handout.statistics(reconnects=0).records == 0
        with pytest.raises(ValueError, match="not awaiting an ack"):
            await handout.ack(_inbound(0))


async def test_close_ends_the_records_and_refuses_more() -> None:
    async with asyncio.timeout(5):
        handout: Handout[int] = Handout(max_in_flight=1)
        await handout.put(_inbound(0))
        waiting = asyncio.create_task(handout.put(_inbound(1)))
        await asyncio.sleep(0)
        assert await handout.close()
        assert not await handout.close()
        assert not await waiting
        assert handout.closed
        assert [inbound async for inbound in handout.records()] == []
