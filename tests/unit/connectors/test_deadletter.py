"""Dead letters: the record unchanged, the reason, source and position added."""

from __future__ import annotations

from memkit import MemorySink

from icefloe.connectors import Inbound, Record
from icefloe.connectors.deadletter import (
    DEAD_POSITION_HEADER,
    DEAD_REASON_HEADER,
    DEAD_SOURCE_HEADER,
    DeadLetters,
    dead_record,
)


def test_a_dead_record_keeps_key_value_and_headers_and_cuts_a_long_reason() -> None:
    record = Record(b"k", b"v", (("a", b"1"),))
    dead = dead_record(record, "x" * 2000, source="redis:s", position=b"1-0")
    assert (dead.key, dead.value, dead.headers[0]) == (b"k", b"v", ("a", b"1"))
    assert len(dead.header(DEAD_REASON_HEADER) or b"") == 500
    assert dead.header(DEAD_SOURCE_HEADER) == b"redis:s"
    assert dead.header(DEAD_POSITION_HEADER) == b"1-0"


async def test_dead_letters_are_flushed_before_send_returns() -> None:
    sink = MemorySink()
    dead = DeadLetters(sink)
    await dead.send(Inbound(Record(None, b"?"), "p", 4), "no good", source="m")
    assert [r.value for r in sink.flushed] == [b"?"]
    assert dead.statistics() == (1, "no good")
