"""The sink's own AMQP 1.0 encoding reads back through rstream's decoder."""

from __future__ import annotations

import pytest

pytest.importorskip("rstream", reason="the rabbitmq extra is not installed")

from rstream import amqp_decoder

from icefloe.connectors.rabbitmq import encode_message, message_record
from icefloe.connectors.record import Record


@pytest.mark.parametrize(
    "record",
    [
        Record(b"stream-1", b"value", (("icefloe-seq", b"7"), ("icefloe-tenant", b"t1"))),
        Record(None, b"", ()),
        Record(b"k" * 300, b"v" * 70_000, (("n" * 300, b"\x00" * 300), ("x", b""))),
        Record("strøm".encode(), b"\xff\x00", (("é", b"1"),)),
    ],
)
def test_a_record_reads_back_unchanged(record: Record) -> None:
    assert message_record(amqp_decoder(encode_message(record))) == record


def test_what_rabbitmq_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="repeat a name"):
        encode_message(Record(b"k", b"", (("a", b"1"), ("a", b"2"))))
    with pytest.raises(ValueError, match="UTF-8"):
        encode_message(Record(b"\xff", b"", ()))
