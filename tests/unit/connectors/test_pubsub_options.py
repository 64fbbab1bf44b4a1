"""PubSubSink / PubSubSource options: bad values are refused naming the option
(the behaviour over a socket is in tests/integration/connectors/test_pubsub.py)."""

from __future__ import annotations

from typing import Any

import pytest

from icefloe.connectors import Record, Sink, Source
from icefloe.connectors.pubsub import PubSubSink, PubSubSource

TOPIC = "projects/p/topics/t"
SUBSCRIPTION = "projects/p/subscriptions/s"


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1.5}, "max_in_flight"),
        ({"max_batch_messages": True}, "max_batch_messages"),
        ({"max_batch_bytes": -1}, "max_batch_bytes"),
        ({"max_latency_s": float("nan")}, "max_latency_s"),
        ({"insecure": True}, "endpoint"),
    ],
)
def test_the_sink_refuses_bad_options(options: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        PubSubSink(TOPIC, **options)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_lease_s": 0}, "max_lease_s"),
        ({"insecure": True}, "endpoint"),
    ],
)
def test_the_source_refuses_bad_options(options: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        PubSubSource(SUBSCRIPTION, **options)


def test_both_follow_the_protocols_and_name_what_they_use() -> None:
    sink = PubSubSink(TOPIC, endpoint="127.0.0.1:1", insecure=True)
    source = PubSubSource(SUBSCRIPTION, endpoint="127.0.0.1:1", insecure=True)
    assert isinstance(sink, Sink)
    assert isinstance(source, Source)
    assert (sink.name, source.name) == (f"pubsub:{TOPIC}", f"pubsub:{SUBSCRIPTION}")


async def test_a_sink_that_is_not_open_says_so() -> None:
    sink = PubSubSink(TOPIC, endpoint="127.0.0.1:1", insecure=True)
    with pytest.raises(RuntimeError, match="not open"):
        await sink.send(Record(b"k", b"v"))
