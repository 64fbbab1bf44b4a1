"""The backplane URL, key layout and meta rows."""

from __future__ import annotations

import pytest

from icefloe.backplane.keys import DEFAULT_PREFIX, Keys, entry_id, parse_url
from icefloe.backplane.meta import StreamMeta
from icefloe.backplane.publisher import STALE_MS, slowest


def test_the_prefix_comes_from_the_url() -> None:
    assert parse_url("redis://h:1/0") == ("redis://h:1/0", DEFAULT_PREFIX)
    assert parse_url("redis://h:1/0?prefix=a:&x=1") == ("redis://h:1/0?x=1", "a:")
    with pytest.raises(ValueError, match="--backplane"):
        parse_url("nats://h:4222")


def test_keys_and_entry_ids() -> None:
    keys = Keys("p:")
    assert keys.log("s1") == "p:s:s1:log"
    assert keys.meta("s1") == "p:s:s1:meta"
    assert keys.readers("s1") == "p:s:s1:readers"
    assert (keys.streams, keys.control) == ("p:streams", "p:control")
    assert entry_id(0) == "0-1"


def test_meta_reads_a_hash_and_refuses_a_broken_one() -> None:
    meta = StreamMeta.from_hash("s", {b"tenant": b"t", b"state": b"done", b"last_seq": b"4"})
    assert meta is not None
    assert meta.to_json(2) == {
        "stream_id": "s",
        "tenant": "t",
        "state": "done",
        "last_seq": 4,
        "subscribers": 2,
        "code": None,
    }
    assert StreamMeta.from_hash("s", {}) is None
    assert StreamMeta.from_hash("s", {b"state": b"done"}) is None
    assert StreamMeta.from_hash("s", {b"tenant": b"t", b"last_seq": b"x"}) is None


def test_the_slowest_fresh_reader_sets_the_floor() -> None:
    now = 1_000_000
    raw = {
        b"a": f"40 {now}".encode(),
        b"b": f"10 {now - STALE_MS - 1}".encode(),  # stale: a crashed gateway
        b"c": f"25 {now - 10}".encode(),
        b"d": b"garbage",
    }
    assert slowest(raw, now) == 25
    assert slowest({}, now) is None
