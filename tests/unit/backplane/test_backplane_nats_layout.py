"""The NATS backplane's URL, names, consumer start points and reader positions."""

from __future__ import annotations

import pytest

from icefloe.backplane.engines import check_url, engine_for
from icefloe.backplane.nats.layout import DEFAULT_PREFIX, Layout, parse_nats_url, token
from icefloe.backplane.nats.metastore import Marks
from icefloe.backplane.nats.producer import Positions
from icefloe.backplane.publisher import STALE_MS


def test_the_url_gives_the_server_prefix_and_limits() -> None:
    options = parse_nats_url("nats://u:p@h:4222?prefix=a-b_1&storage=file&max_bytes=10&x=1")
    assert options.server == "nats://u:p@h:4222?x=1"
    assert (options.prefix, options.storage, options.max_bytes) == ("a-b_1", "file", 10)
    assert parse_nats_url("nats://h:4222").prefix == DEFAULT_PREFIX
    for bad in ["nats://h?prefix=a.b", "nats://h?storage=disk", "nats://h?max_bytes=x"]:
        with pytest.raises(ValueError):
            parse_nats_url(bad)


def test_the_scheme_picks_the_engine() -> None:
    check_url("redis://h:6379/0")
    check_url("nats://h:4222")
    with pytest.raises(ValueError, match="--backplane"):
        check_url("kafka://h:9092")
    engine = engine_for("nats://h:4222?prefix=p", history=8, window=4, on_cancel=print)
    assert (engine.history, engine.healthy) == (8, False)


def test_a_stream_id_becomes_one_subject_token() -> None:
    layout = Layout("p")
    assert layout.chunks("run-1_A") == "p.c.run-1_A"
    assert token("a.b") == "=" + b"a.b".hex()
    assert token("a.b") != token("a_b")
    assert layout.positions("s") == "p.p.s"
    assert (layout.chunk_stream, layout.meta_bucket, layout.chunk_subjects) == (
        "p_chunks",
        "p_meta",
        "p.c.>",
    )


def test_a_consumer_starts_at_or_before_the_chunk_wanted() -> None:
    # Chunks 0..9 of this stream at JetStream sequences 100, 102, ... (interleaved).
    marks = Marks(js0=100, last_seq=9, js_last=118)
    assert marks.start_for(10) == 119  # past the last one written: exact
    assert marks.start_for(4) == 104  # at or before chunk 4's sequence (108)
    assert marks.start_for(0) == 100
    assert Marks(0, -1, 0).start_for(5) == 1  # nothing written yet: the subject's first


def test_the_slowest_fresh_position_holds_the_producer() -> None:
    positions = Positions()
    now = 1_000_000
    positions.report(f"a 40 {now}".encode())
    positions.report(f"b 10 {now - STALE_MS - 1}".encode())  # stale: a crashed gateway
    positions.report(f"c 25 {now - 10}".encode())
    positions.report(b"garbage")
    assert positions.slowest(now) == 25
    positions.report(f"c -1 {now}".encode())  # c stopped reading
    assert positions.slowest(now) == 40
