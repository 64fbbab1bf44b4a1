"""StreamLog against a simple model: a list of chunks and each reader's position.

Hypothesis drives appends (in order, early, duplicate), readers attaching,
taking, peeking, skipping and leaving, producers asking for room, and
cancellation; after every step the log's invariants (module docstring of
icefloe.core.streamlog) are checked against the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from icefloe.core.messages import NO_META, StreamChunk
from icefloe.core.streamlog import Cursor, LogState, StreamLog, chunk_size
from icefloe.exceptions import InvalidState, ReorderOverflow


@dataclass
class Reader:
    cursor: Cursor
    lag_limit: int | None
    pos: int  # the model's position: the seq it reads next
    taken: list[int] = field(default_factory=list)
    cut: bool = False  # overrun (lag-tolerant only)


def _chunk(seq: int, size: int, done: bool = False) -> StreamChunk:
    return StreamChunk("s", seq, "x" * size, done, NO_META, None)


class StreamLogModel(RuleBasedStateMachine):
    @initialize(
        start=st.integers(0, 3),
        window=st.integers(1, 6),
        max_bytes=st.sampled_from([5, 20, 10_000]),
        history=st.integers(0, 5),
        reorder_limit=st.integers(0, 4),
    )
    def setup(
        self, start: int, window: int, max_bytes: int, history: int, reorder_limit: int
    ) -> None:
        self.rooms = 0
        self.log = StreamLog(
            start,
            window=window,
            max_bytes=max_bytes,
            history=history,
            reorder_limit=reorder_limit,
            on_room=self._on_room,
        )
        self.start = start
        self.history = history
        self.window = window
        self.max_bytes = max_bytes
        self.chunks: dict[int, StreamChunk] = {}  # every chunk ever appended, by seq
        self.early: dict[int, StreamChunk] = {}  # sent ahead of their turn
        self.readers: list[Reader] = []
        self.waiting = False
        self.discarded_to = start  # seqs below this were dropped by discard()
        self.last_base = start  # the log's base at the last history check

    def _on_room(self) -> None:
        self.rooms += 1

    @property
    def head(self) -> int:
        return self.log.next_seq

    # -- producing -------------------------------------------------------------

    @precondition(lambda self: not self.log.state)
    @rule(size=st.integers(0, 6), last=st.integers(0, 15))
    def append_next(self, size: int, last: int) -> None:
        seq = self.head  # early chunks are always beyond the head
        done = last == 0
        chunk = _chunk(seq, size, done)
        self.log.append(chunk)
        self.chunks[seq] = chunk
        expected = seq + 1
        if done:
            assert self.log.state is LogState.CLOSED
            self.early.clear()
        else:
            # It releases every early chunk right after it.
            while expected in self.early:
                self.chunks[expected] = self.early.pop(expected)
                expected += 1
        assert self.head == expected
        assert self.log.reorder_pending == len(self.early)

    @precondition(lambda self: not self.log.state)
    @rule(ahead=st.integers(1, 3), size=st.integers(0, 6))
    def append_early(self, ahead: int, size: int) -> None:
        seq = self.head + ahead
        chunk = _chunk(seq, size)
        held = self.log.reorder_pending
        try:
            self.log.append(chunk)
        except ReorderOverflow:
            assert self.log.reorder_pending == held
            return
        if seq in self.early:
            assert self.log.duplicates > 0
        else:
            self.early[seq] = chunk
        assert self.log.reorder_pending == len(self.early)

    @precondition(lambda self: self.head > self.start)
    @rule(back=st.integers(1, 4))
    def append_duplicate(self, back: int) -> None:
        seq = max(self.start, self.head - back)
        before = self.log.duplicates
        head = self.head
        self.log.append(_chunk(seq, 1))
        assert self.log.duplicates == before + 1
        assert self.head == head

    @precondition(lambda self: self.log.state)
    @rule()
    def append_after_close_is_refused(self) -> None:
        try:
            self.log.append(_chunk(self.head, 1))
        except InvalidState:
            return
        raise AssertionError("a CLOSED log took a new chunk")

    @precondition(lambda self: not self.log.state)
    @rule(count=st.integers(1, 80), size=st.integers(0, 3))
    def append_run(self, count: int, size: int) -> None:
        for _ in range(count):
            if self.early:
                break
            self.chunks[self.head] = chunk = _chunk(self.head, size)
            self.log.append(chunk)

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        reader = data.draw(st.sampled_from(self.readers))
        while not reader.cut and reader.pos < self.head:
            self.take_one(reader)

    @precondition(lambda self: not self.log.state)
    @rule()
    def producer_waits(self) -> None:
        if not self.log.has_room():
            self.log.want_room()
            self.waiting = True
            self.rooms = 0

    # -- readers ---------------------------------------------------------------

    @rule(data=st.data(), lag=st.none() | st.integers(1, 4))
    def attach(self, data: st.DataObject, lag: int | None) -> None:
        if len(self.readers) >= 4:
            return
        base = self.log.base
        from_seq = data.draw(st.none() | st.integers(base, self.head))
        cursor = self.log.attach(from_seq, lag)
        pos = self.head if from_seq is None else from_seq
        assert cursor.pos == pos
        self.readers.append(Reader(cursor, lag, pos))

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        self.take_one(data.draw(st.sampled_from(self.readers)))

    def take_one(self, reader: Reader) -> None:
        lost = reader.cursor.lost()
        chunk = reader.cursor.take()
        if chunk is None:
            if reader.pos < self.head:
                # Only an overrun lag-tolerant reader sees nothing with chunks ahead.
                assert lost
                assert reader.lag_limit is not None
                reader.cut = True
            return
        assert not lost
        self._delivered(reader, [chunk])
        self._check_told()

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def skip(self, data: st.DataObject) -> None:
        reader = data.draw(st.sampled_from(self.readers))
        available = reader.cursor.available()
        if not available:
            return
        if reader.cursor.lost():
            assert reader.lag_limit is not None
            reader.cut = True
            return
        count = data.draw(st.integers(1, available))
        peeked = [reader.cursor.peek(i) for i in range(count)]
        last = reader.cursor.skip(count)
        assert last is peeked[-1]
        self._delivered(reader, peeked)
        self._check_told()

    def _delivered(self, reader: Reader, chunks: list[StreamChunk]) -> None:
        assert not reader.cut
        for chunk in chunks:
            # In order, none lost, none twice, and the very chunk appended.
            assert chunk.seq == reader.pos, (chunk.seq, reader.pos)
            assert chunk is self.chunks[chunk.seq]
            reader.taken.append(chunk.seq)
            reader.pos += 1
        assert reader.cursor.pos == reader.pos

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        reader = data.draw(st.sampled_from(self.readers))
        self.readers.remove(reader)
        assert self.log.detach(reader.cursor)
        assert not self.log.detach(reader.cursor)
        assert reader.cursor.take() is None
        self._check_told()

    @precondition(lambda self: self.readers)
    @rule()
    def drain_all(self) -> None:
        for reader in self.readers:
            while not reader.cut and reader.pos < self.head:
                self.take_one(reader)

    # -- ending ----------------------------------------------------------------

    @rule()
    def close(self) -> None:
        self.log.close()
        self.early.clear()
        assert self.log.state is LogState.CLOSED
        assert self.log.credit() == 0

    @rule()
    def discard(self) -> None:
        self.log.discard()
        self.early.clear()
        self.discarded_to = self.head
        for reader in self.readers:
            reader.pos = self.head
            reader.cut = False
        assert self.log.held == 0

    # -- invariants ------------------------------------------------------------

    def _check_told(self) -> None:
        # After each reader move, from the model only (the log's own room
        # checks would refresh the floor and call on_room themselves).
        log = self.log
        if log.state:
            self.waiting = False  # a CLOSED log has no producer
        if not (self.waiting and self.readers):
            return
        held = sum(chunk_size(self.chunks[s]) for s in range(log.base, self.head))
        if self.head - self._pace() < self.window and held < self.max_bytes:
            assert self.rooms >= 1, "room appeared, on_room was not called"
            self.waiting = False

    def _pace(self) -> int:
        blocking = [r.pos for r in self.readers if r.lag_limit is None]
        tolerant = [r.pos for r in self.readers if r.lag_limit is not None]
        if not self.readers:
            return self.log.base
        floor = min(blocking, default=self.head)
        if tolerant:
            floor = min(floor, max(tolerant))
        return floor

    @invariant()
    def contents_are_the_appended_chunks(self) -> None:
        log = self.log
        assert self.start <= log.base <= self.head
        assert log.held == self.head - log.base
        exact = sum(chunk_size(self.chunks[s]) for s in range(log.base, self.head))
        assert log.byte_count.bound >= exact
        assert log.held_bytes() == exact

    @invariant()
    def cursors_stay_in_range(self) -> None:
        for reader in self.readers:
            assert reader.cursor.start <= reader.cursor.pos <= self.head
            if reader.lag_limit is None:
                assert reader.pos >= self.log.base  # a blocking reader is never overrun
            assert reader.cursor.lost() == (reader.pos < self.log.base)

    @invariant()
    def floor_is_conservative_then_exact(self) -> None:
        log = self.log
        if self.readers:
            assert log.floor <= self._pace()
        fast = log.has_room_fast()
        exact = log.has_room()
        # (An overrun lag-tolerant pace below the log is out of its reach.)
        assert exact or not fast or log.floor < log.base, "the O(1) check said yes wrongly"
        assert log.floor == self._pace()

    @invariant()
    def history_is_retained(self) -> None:
        log = self.log
        log.refresh()
        if not self.readers or self.max_bytes < 10_000:
            return  # byte pressure may trim history (only the big limit is never reached)
        keep = self.head - self.history
        for reader in self.readers:
            if reader.lag_limit is None:
                keep = min(keep, reader.pos - self.history)
            else:
                keep = min(keep, max(reader.pos, self.head - reader.lag_limit))
        # A reader attached at the oldest seq held cannot bring back history
        # trimmed before it came: compare with where the log started then.
        assert log.base <= max(keep, self.discarded_to, self.start, self.last_base)
        self.last_base = log.base

    @invariant()
    def unread_bytes_are_exact(self) -> None:
        log = self.log
        unread = log.unread_bytes()
        floor = max(log.floor, log.base)
        assert unread == sum(chunk_size(self.chunks[s]) for s in range(floor, self.head))
        assert log.unread_bytes() == unread  # the cached count agrees

    @invariant()
    def delivered_counts_add_up(self) -> None:
        stats = self.log.statistics()
        assert stats.readers == len(self.readers)
        assert stats.next_seq == self.head


StreamLogModel.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestStreamLogModel = StreamLogModel.TestCase
