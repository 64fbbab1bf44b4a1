"""PushSource options and answers without a server (the endpoint over a socket is in
tests/integration/connectors/test_pubsub_push.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from icefloe.connectors import Inbound, Record, Source
from icefloe.connectors.pubsub_position import PubSubPosition
from icefloe.connectors.pubsub_push import PushAuth, PushSource


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_body_bytes": 1.0}, "max_body_bytes"),
        ({"ack_timeout_s": 0}, "ack_timeout_s"),
        ({"ack_timeout_s": float("inf")}, "ack_timeout_s"),
        ({"auth": PushAuth("aud", "a@b", jwks_url="ftp://keys")}, "http"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        PushSource(**options)


def test_it_is_a_source() -> None:
    source = PushSource("projects/p/subscriptions/s")
    assert isinstance(source, Source)
    assert source.name == "pubsub-push:projects/p/subscriptions/s"
    assert PushSource().name == "pubsub-push:*"


async def test_an_unknown_or_foreign_inbound_is_not_counted() -> None:
    source = PushSource()
    stranger = Inbound(Record(None, b""), "s", PubSubPosition("1", "push-99"))
    await source.ack(stranger)  # never held (or answered already): a no-op
    assert source.statistics().confirmed == 0
    with pytest.raises(ValueError, match="PubSubPosition"):
        await source.nack(Inbound(Record(None, b""), "s", 7), "x")


async def test_a_closed_source_ends_iteration() -> None:
    source = PushSource()
    async with source:
        pass
    with pytest.raises(StopAsyncIteration):
        await anext(aiter(source))


async def test_closing_stops_a_consumer_that_waits() -> None:
    source = PushSource()
    async with asyncio.timeout(5), source:
        waiting = asyncio.ensure_future(anext(aiter(source)))
        await asyncio.sleep(0)
        assert not waiting.done()
        await source.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
