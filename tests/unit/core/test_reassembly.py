"""The reassembler: many interleaved, shuffled, repeated streams out in order, once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from icefloe.core.reassembly import Reassembler, ReassemblyFull, StreamGap
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Streams with their lengths, and every (stream, seq) at least once, shuffled."""
    lengths = draw(st.dictionaries(st.text(min_size=1, max_size=4), st.integers(1, 30), max_size=6))
    items = [(sid, seq) for sid, n in lengths.items() for seq in range(n)]
    repeats = draw(st.lists(st.sampled_from(items), max_size=40)) if items else []
    return lengths, draw(st.permutations(items + repeats))


@given(deliveries())
def test_shuffled_streams_with_duplicates_come_out_exactly_in_order(
    case: tuple[dict[str, int], list[tuple[str, int]]],
) -> None:
    lengths, order = case
    r: Reassembler[tuple[str, int]] = Reassembler(Clock(), max_pending=100)
    out: dict[str, list[int]] = {sid: [] for sid in lengths}
    ended = set()
    for sid, seq in order:
        pushed = r.push(sid, seq, (sid, seq), done=seq == lengths[sid] - 1)
        out[sid].extend(s for _, s in pushed.released)
        if pushed.ended:
            ended.add(sid)
    assert out == {sid: list(range(n)) for sid, n in lengths.items()}
    assert ended == set(lengths)
    stats = r.statistics()
    assert stats.duplicates == len(order) - sum(lengths.values())
    assert (stats.streams, stats.held, stats.completed) == (0, 0, len(lengths))


@given(st.permutations(range(20)), st.integers(0, 13))
def test_a_missing_seq_fails_the_stream_at_the_pending_limit(order: list[int], lost: int) -> None:
    r: Reassembler[int] = Reassembler(Clock(), max_pending=5)
    got: list[int] = []

    def deliver() -> None:
        for seq in order:
            if seq != lost:
                got.extend(r.push("s", seq, seq, done=seq == 19).released)

    with pytest.raises(StreamGap) as info:
        deliver()
    assert info.value.code is ErrorCode.HISTORY_GONE
    # released is always an unbroken prefix; the gap is at or before the lost seq
    # (a shuffle may fill the buffer while an earlier seq is merely late)
    assert info.value.next_seq <= lost
    assert got == list(range(info.value.next_seq))
    assert list(info.value.dropped) == sorted(info.value.dropped)
    assert r.statistics().gaps == 1
    # the stream has ended: a late record of it is a duplicate, not a new stream
    assert r.push("s", info.value.next_seq, lost).duplicate


def test_a_gap_left_open_past_its_timeout_is_reported_by_expire() -> None:
    clock = Clock()
    r: Reassembler[int] = Reassembler(clock, gap_timeout_s=5, idle_timeout_s=100)
    assert r.push("s", 0, 0).released == [0]
    assert r.push("s", 2, 2).released == []
    clock.now = 4.9
    assert r.expire() == []
    clock.now = 5.0
    (gap,) = r.expire()
    assert (gap.stream_id, gap.next_seq, gap.dropped) == ("s", 1, (2,))
    assert "gap_timeout_s=5" in gap.message
    assert r.statistics().streams == 0


def test_a_gap_that_moves_on_restarts_its_clock() -> None:
    clock = Clock()
    r: Reassembler[int] = Reassembler(clock, gap_timeout_s=5)
    r.push("s", 1, 1)
    r.push("s", 3, 3)
    clock.now = 4
    assert r.push("s", 0, 0).released == [0, 1]  # the gap is now at seq 2
    clock.now = 8
    assert r.expire() == []
    clock.now = 9
    assert [g.next_seq for g in r.expire()] == [2]


def test_an_idle_stream_is_forgotten_and_its_late_records_dropped() -> None:
    clock = Clock()
    r: Reassembler[int] = Reassembler(clock, idle_timeout_s=10)
    r.push("s", 0, 0)
    clock.now = 10
    assert r.expire() == []
    stats = r.statistics()
    assert (stats.streams, stats.idle_evicted) == (0, 1)
    assert r.push("s", 1, 1).duplicate


def test_a_new_stream_past_max_streams_is_refused_and_nothing_changes() -> None:
    r: Reassembler[int] = Reassembler(Clock(), max_streams=2)
    r.push("a", 0, 0)
    r.push("b", 0, 0)
    with pytest.raises(ReassemblyFull, match="max_streams=2") as info:
        r.push("c", 0, 0)
    assert info.value.code is ErrorCode.OVERLOADED
    assert r.statistics().refused == 1
    assert r.push("a", 1, 1, done=True).ended  # a slot frees when a stream ends
    assert r.push("c", 0, 0).released == [0]


def test_items_held_past_the_done_seq_are_not_released() -> None:
    r: Reassembler[int] = Reassembler(Clock())
    r.push("s", 2, 2)
    assert r.push("s", 1, 1, done=True).released == []
    pushed = r.push("s", 0, 0)
    assert (pushed.released, pushed.ended) == ([0, 1], True)


@pytest.mark.parametrize("kwargs", [{"max_streams": 0}, {"max_pending": -1}, {"gap_timeout_s": 0}])
def test_limits_out_of_range_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Reassembler(Clock(), **kwargs)  # type: ignore[arg-type]


class ReassemblerModel(RuleBasedStateMachine):
    """Random pushes, clock moves and expiries against what must always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.r: Reassembler[tuple[str, int]] = Reassembler(
            self.clock, max_streams=3, max_pending=4, gap_timeout_s=5, idle_timeout_s=20
        )
        self.released: dict[str, list[int]] = {}
        self.ended: set[str] = set()

    @rule(sid=st.sampled_from("abcde"), seq=st.integers(0, 12), done=st.booleans())
    def push(self, sid: str, seq: int, done: bool) -> None:
        failure: StreamError | None = None
        try:
            pushed = self.r.push(sid, seq, (sid, seq), done=done)
        except (StreamGap, ReassemblyFull) as exc:
            failure = exc
        if isinstance(failure, StreamGap):
            assert failure.code is ErrorCode.HISTORY_GONE
            self.ended.add(sid)
            return
        if failure is not None:
            assert self.r.statistics().streams == 3
            return
        if sid in self.ended:
            assert pushed.duplicate
            assert not pushed.released
        got = self.released.setdefault(sid, [])
        for item_sid, item_seq in pushed.released:
            assert item_sid == sid
            assert item_seq == len(got)  # exactly the next seq, never twice
            got.append(item_seq)
        if pushed.ended:
            self.ended.add(sid)

    @rule(seconds=st.floats(0, 10))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def expire(self) -> None:
        for gap in self.r.expire():
            assert gap.stream_id is not None
            self.ended.add(gap.stream_id)
        for sid in self.released:
            if self.r.next_seq(sid) is None:
                self.ended.add(sid)  # idle-evicted streams have ended too

    @invariant()
    def bounded(self) -> None:
        stats = self.r.statistics()
        assert stats.streams <= 3
        assert stats.held <= 3 * 4


TestReassemblerModel = ReassemblerModel.TestCase


def test_reorder_buffer_drain_held_hands_back_the_held_items_in_order() -> None:
    from icefloe.core.sequencer import ReorderBuffer

    buffer: ReorderBuffer[str] = ReorderBuffer()
    for seq in (3, 1, 2):
        buffer.push(seq, f"x{seq}")
    assert buffer.drain_held() == ["x1", "x2", "x3"]
    assert (buffer.pending, buffer.next_seq) == (0, 0)
