"""Durable runs over a MemoryStore: visibility, checkpoints, resume, interrupted (issue 11)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from icefloe import (
    Context,
    ErrorCode,
    Headers,
    InvalidState,
    Message,
    Node,
    NodePolicy,
    StreamError,
    create,
)
from icefloe.runtime.durable import DEFAULT_MAX_BATCH
from icefloe.store import Checkpoint, MemoryStore, StoredChunk, StoreUnavailable
from icefloe.store.records import decode_chunk

H = Headers(tenant="acme")
WORDS = [f"w{i} " for i in range(12)]


class GatedStore(MemoryStore):
    """A MemoryStore whose appends wait for ``gate`` and record what readers may see."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.appends = 0

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        await self.gate.wait()
        self.appends += 1
        return await super().append(stream_id, chunks, checkpoint=checkpoint)


async def stored_texts(store: MemoryStore, sid: str) -> list[tuple[int, str]]:
    return [(c.seq, decode_chunk(c.record).text) for c in await store.read(sid, 0, 10_000)]


async def ended(store: MemoryStore, sid: str) -> Any:
    async with asyncio.timeout(5):
        while True:
            run = await store.get_run(sid)
            if run is not None and run.terminal is not None:
                return run
            await asyncio.sleep(0.005)


def words_node(
    level: str, *, stop_after: int | None = None, every: int = 2, calls: list[Any] | None = None
) -> Node:
    """Emits WORDS from its checkpoint on, checkpointing its position every ``every`` chunks;
    with ``stop_after``, hangs (a crash to come) after that many chunks of this call."""
    calls = [] if calls is None else calls

    async def words(msg: Message, ctx: Context) -> None:
        calls.append((ctx.restored_state, ctx.resumed_from))
        pos = 0 if ctx.restored_state is None else ctx.restored_state["pos"]
        emitted = 0
        while pos < len(WORDS):
            await ctx.emit_chunk(parent=msg, text=WORDS[pos])
            pos += 1
            emitted += 1
            if level == "exactly_once" and pos % every == 0:
                await ctx.checkpoint({"pos": pos})
            if stop_after is not None and emitted == stop_after:
                await asyncio.Event().wait()
        await ctx.emit_chunk(parent=msg, text="", done=True)

    return Node(words, name="words", policy=NodePolicy(reliability=level))


async def test_a_reader_sees_a_chunk_only_after_the_store_holds_it() -> None:
    store = GatedStore()
    store.gate.clear()
    flow = create(words_node("at_least_once").to(), store=store)
    async with asyncio.timeout(10), flow:
        sid = await flow.start(Message(payload=None, headers=H))
        reader = flow.subscribe(sid, 0)
        while (stats := flow.stats().durable) is None or stats.pending == 0:
            await asyncio.sleep(0.005)
        assert reader.held() == 0  # produced, waiting for the store: not visible
        assert await store.read(sid, 0, 100) == []
        store.gate.set()
        got = []
        async for chunk in reader:
            held = await store.read(sid, chunk.seq, 1)
            assert held
            assert held[0].seq == chunk.seq
            got.append(chunk.text)
        assert "".join(got) == "".join(WORDS)
        run = await ended(store, sid)
        assert run.terminal.phase == "done"
        stats = flow.stats().durable
        assert stats is not None
        assert stats.chunks_stored == len(WORDS) + 1
        assert stats.appends < len(WORDS) + 1  # batched


async def test_the_pending_buffer_is_bounded_and_holds_the_producer() -> None:
    store = GatedStore()
    store.gate.clear()
    many = [f"t{i}" for i in range(2000)]

    async def flood(msg: Message, ctx: Context) -> None:
        for text in many:
            await ctx.emit_chunk(parent=msg, text=text)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = create(
        Node(flood, name="flood", policy=NodePolicy(reliability="at_least_once")).to(),
        store=store,
    )
    async with asyncio.timeout(20), flow:
        sid = await flow.start(Message(payload=None, headers=H), window=100_000)
        reader = flow.subscribe(sid, 0)
        await asyncio.sleep(0.2)
        stats = flow.stats().durable
        assert stats is not None
        assert 0 < stats.pending <= 2 * DEFAULT_MAX_BATCH  # one batch in flight, one pending
        assert stats.producer_waits >= 1
        store.gate.set()
        texts = [c.text async for c in reader]
        assert texts[:-1] == many


async def test_flow_stream_of_a_durable_node_stores_too() -> None:
    store = MemoryStore()
    flow = create(words_node("at_least_once").to(), store=store)
    async with asyncio.timeout(10), flow:
        msg = Message(payload=None, headers=H)
        texts = [c.text async for c in flow.stream(msg)]
        assert "".join(texts) == "".join(WORDS)
        await ended(store, msg.trace_id)
        assert len(await stored_texts(store, msg.trace_id)) == len(WORDS) + 1


async def test_at_most_once_runs_touch_no_store() -> None:
    store = MemoryStore()
    flow = create(words_node("at_most_once").to(), store=store)
    async with asyncio.timeout(10), flow:
        texts = [c.text async for c in flow.stream(Message(payload=None, headers=H))]
        assert "".join(texts) == "".join(WORDS)
    assert store.statistics().runs_created == 0


async def test_exactly_once_resumes_from_its_checkpoint_after_a_restart() -> None:
    store = MemoryStore()
    first_calls: list[Any] = []
    first = words_node("exactly_once", stop_after=5, calls=first_calls)
    flow = create(first.to(), store=store)
    async with asyncio.timeout(10), flow:
        sid = await flow.start(Message(payload={"q": 1}, headers=H))
        reader = flow.subscribe(sid, 0)
        seen = [await reader.__anext__() for _ in range(5)]
        assert [c.seq for c in seen] == [0, 1, 2, 3, 4]
    # The "crash": the flow stopped with the run unfinished.
    assert first_calls == [(None, -1)]
    before = await store.get_run(sid)
    assert before is not None
    assert before.terminal is None
    assert before.last_seq == 4
    assert before.checkpoint is not None
    assert before.checkpoint.seq == 3

    again_calls: list[Any] = []
    again = words_node("exactly_once", calls=again_calls)
    flow2 = create(again.to(), store=store)
    async with asyncio.timeout(10), flow2:
        run = await ended(store, sid)
        assert run.terminal.phase == "done"
        assert again_calls == [({"pos": 4}, 4)]
        stats = flow2.stats().durable
        assert stats is not None
        assert stats.resumed == 1
        assert stats.duplicates_dropped == 1  # seq 4 re-emitted: the stored one won
    texts = await stored_texts(store, sid)
    assert [seq for seq, _ in texts] == list(range(len(WORDS) + 1))
    assert [t for _, t in texts[:-1]] == WORDS


async def test_at_least_once_ends_interrupted_after_a_restart_and_keeps_its_prefix() -> None:
    store = MemoryStore()
    flow = create(words_node("at_least_once", stop_after=3).to(), store=store)
    async with asyncio.timeout(10), flow:
        sid = await flow.start(Message(payload=None, headers=H))
        reader = flow.subscribe(sid, 0)
        for _ in range(3):
            await reader.__anext__()
    flow2 = create(words_node("at_least_once").to(), store=store)
    async with asyncio.timeout(10), flow2:
        run = await ended(store, sid)
        assert run.terminal.code == "interrupted"
        stats = flow2.stats().durable
        assert stats is not None
        assert stats.interrupted == 1
        assert stats.resumed == 0
    assert [t for _, t in await stored_texts(store, sid)] == WORDS[:3]


async def test_checkpoint_needs_an_exactly_once_run() -> None:
    errors: list[BaseException] = []

    async def eager(msg: Message, ctx: Context) -> None:
        try:
            await ctx.checkpoint({"x": 1})
        except InvalidState as exc:
            errors.append(exc)
        assert ctx.restored_state is None
        assert ctx.resumed_from == -1
        await ctx.emit_chunk(parent=msg, text="", done=True)

    node = Node(eager, name="eager", policy=NodePolicy(reliability="at_least_once"))
    flow = create(node.to(), store=MemoryStore())
    async with asyncio.timeout(10), flow:
        [c async for c in flow.stream(Message(payload=None, headers=H))]
    assert len(errors) == 1
    assert "exactly_once" in str(errors[0])


async def test_an_idempotency_key_claims_one_run_in_the_store() -> None:
    store = MemoryStore()
    flow = create(words_node("at_most_once").to(), store=store)
    async with asyncio.timeout(10), flow:
        a = await flow.start(Message(payload=None, headers=H), idempotency_key="acme/k1")
        b = await flow.start(Message(payload=None, headers=H), idempotency_key="acme/k1")
        assert a == b
        reader = flow.subscribe(a, 0)
        assert "".join([c.text async for c in reader]) == "".join(WORDS)
        run = await ended(store, a)
        assert run.terminal.phase == "done"
    assert store.statistics().runs_created == 1


class FailingStore(MemoryStore):
    """Appends fail once ``fail`` is set, as an unreachable backend's would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        if self.fail:
            raise StoreUnavailable("the store stopped answering")
        return await super().append(stream_id, chunks, checkpoint=checkpoint)


async def test_a_failing_store_ends_the_stream_unavailable_and_at_most_once_goes_on() -> None:
    store = FailingStore()
    store.fail = True
    durable = words_node("at_least_once")
    plain = Node(words_node("at_most_once").func, name="plain")
    flow = create(durable.to(), plain.to(), store=store)
    async with asyncio.timeout(10), flow:
        with pytest.raises(StreamError) as failed:
            [c async for c in flow.stream(Message(payload=None, headers=H), to=durable)]
        assert failed.value.code == ErrorCode.UNAVAILABLE
        texts = [c.text async for c in flow.stream(Message(payload=None, headers=H), to=plain)]
        assert "".join(texts) == "".join(WORDS)
        stats = flow.stats().durable
        assert stats is not None
        assert stats.failures == 1
        assert stats.pending == 0


class UnopenableStore(MemoryStore):
    async def open(self) -> None:
        raise StoreUnavailable("no such server")


async def test_a_store_that_cannot_open_fails_durable_runs_at_once() -> None:
    flow = create(words_node("at_least_once").to(), store=UnopenableStore())
    async with asyncio.timeout(10), flow:
        with pytest.raises(StoreUnavailable):
            await flow.store_ready()
        with pytest.raises(StoreUnavailable):
            await flow.start(Message(payload=None, headers=H))
        with pytest.raises(StreamError) as failed:
            [c async for c in flow.stream(Message(payload=None, headers=H))]
        assert failed.value.code == ErrorCode.UNAVAILABLE
