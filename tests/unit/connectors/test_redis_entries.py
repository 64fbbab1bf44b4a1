"""A record's Redis stream entry fields, and back (no server needed)."""

from __future__ import annotations

import pytest

from icefloe.connectors import Record

pytest.importorskip("redis", reason="the redis extra is not installed")
from icefloe.connectors.redis_streams import entry_fields, entry_record


@pytest.mark.parametrize(
    "record",
    [Record(b"k", b"v", (("icefloe-seq", b"3"),)), Record(None, b"", ()), Record(b"", b"\x00", ())],
)
def test_a_record_round_trips_through_its_entry_fields(record: Record) -> None:
    flat = entry_fields(record)
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert entry_record(fields) == record


def test_an_entry_without_a_value_is_no_record() -> None:
    assert entry_record({b"junk": b"1"}) is None


def test_repeated_header_names_survive_and_a_bad_header_field_is_no_record() -> None:
    record = Record(b"k", b"v", (("a", b"1"), ("a", b"2")))
    flat = entry_fields(record)
    assert len(flat) == 2  # one field, however many headers
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert entry_record(fields) == record
    assert entry_record({b"r": b"\xc1"}) is None
    assert entry_record({b"r": b"\x93\xc0\x90\x01"}) is None  # value not bytes
    assert entry_record({b"v": b"x"}) is None
