"""The drain's bookkeeping and its wire bytes (issue 12, lifecycle).

The end-to-end behaviour (SIGTERM of a real gateway under load) is
tests/integration/backplane/test_drain.py.
"""

from __future__ import annotations

import json

from icefloe.core.sse import SseParser
from icefloe.core.wire_errors import CloseCode, CloseReason, close_frame
from icefloe.transport.drain import (
    RECONNECT_MAX_MS,
    RECONNECT_MIN_MS,
    Drain,
    reconnect_delay_ms,
)
from icefloe.transport.encoding import ndjson_reconnect, sse_reconnect


class Conn:
    def __init__(self) -> None:
        self.handed_off = 0

    def hand_off(self) -> None:
        self.handed_off += 1


def test_with_a_backplane_the_drain_hands_everyone_off_at_once() -> None:
    drain = Drain(hand_off_at_once=True)
    a, b = Conn(), Conn()
    drain.enlist(a)
    drain.enlist(b)
    assert not drain.draining
    assert drain.open_connections() == 2
    drain.begin()
    assert drain.draining
    assert (a.handed_off, b.handed_off) == (1, 1)
    assert drain.open_connections() == 0
    assert drain.pending() == 2  # still writing their last bytes
    drain.leave(a)
    assert drain.pending() == 1
    late = Conn()
    drain.enlist(late)  # a connection that opens on a draining gateway
    assert late.handed_off == 1
    drain.begin()  # idempotent: nobody is handed off twice
    assert (a.handed_off, b.handed_off, late.handed_off) == (1, 1, 1)
    assert drain.handed_off == 3


def test_without_a_backplane_readers_stay_until_the_runs_end() -> None:
    drain = Drain(hand_off_at_once=False)
    reader = Conn()
    drain.enlist(reader)
    drain.begin()
    assert drain.draining
    assert reader.handed_off == 0
    newcomer = Conn()
    drain.enlist(newcomer)
    assert newcomer.handed_off == 0
    drain.hand_off_all()
    assert (reader.handed_off, newcomer.handed_off) == (1, 1)


def test_the_reconnect_hints_spread_over_a_second() -> None:
    assert reconnect_delay_ms(lambda: 0.0) == RECONNECT_MIN_MS
    assert reconnect_delay_ms(lambda: 0.999999) == RECONNECT_MAX_MS - 1
    assert all(RECONNECT_MIN_MS <= reconnect_delay_ms() < RECONNECT_MAX_MS for _ in range(100))


def test_the_sse_hand_off_is_a_retry_hint_and_an_event_without_an_id() -> None:
    parser = SseParser()
    parser.feed_data(sse_reconnect(730))
    events = parser.events_received()
    assert parser.retry_ms == 730
    assert [(e.event, e.id) for e in events] == [("reconnect", None)]
    assert json.loads(events[0].data) == {"reason": "draining", "retry_ms": 730}
    quiet = SseParser()
    quiet.feed_data(sse_reconnect(500, event=False))
    assert quiet.events_received() == []  # a comment only
    assert (quiet.retry_ms, quiet.comments) == (500, 1)


def test_the_ndjson_hand_off_is_one_line() -> None:
    line = ndjson_reconnect(400)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"reconnect": {"reason": "draining", "retry_ms": 400}}


def test_the_drain_close_is_4001_with_a_fixed_reason() -> None:
    assert close_frame(CloseReason.DRAINING) == (
        int(CloseCode.RECONNECT),
        "draining: reconnect and resume",
    )
    assert int(CloseCode.RECONNECT) == 4001
