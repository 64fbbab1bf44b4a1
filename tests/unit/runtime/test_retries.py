"""Tests for retries, the seq rewind rule, node timeouts and NodePolicy validation."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from flowkit import MakeFlow, read_all

from icefloe import (
    Context,
    ErrorCode,
    Headers,
    Limits,
    Message,
    Node,
    NodePolicy,
    Reliability,
    StreamChunk,
    StreamError,
)

H = Headers(tenant="acme")
RETRY_ONCE = NodePolicy(max_retries=1, backoff_s=0)


class Flaky:
    """Emits ``n`` chunks and done; the first attempt raises after ``k`` chunks.

    Deterministic: every attempt emits the same texts with automatic seqs.
    ``gate``, if given, is awaited before the first attempt raises.
    """

    def __init__(self, n: int, k: int, gate: asyncio.Event | None = None) -> None:
        self.n = n
        self.k = k
        self.gate = gate
        self.attempts = 0

    async def __call__(self, msg: Message, ctx: Context) -> None:
        self.attempts += 1
        for i in range(self.n):
            if i == self.k and self.attempts == 1:
                if self.gate is not None:
                    await self.gate.wait()
                raise RuntimeError("transient")
            await ctx.emit_chunk(parent=msg, text=f"c{i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)


def check_complete(chunks: list[StreamChunk], n: int) -> None:
    assert [c.seq for c in chunks] == list(range(n + 1))
    assert [c.text for c in chunks] == [f"c{i}" for i in range(n)] + [""]
    assert [c.done for c in chunks] == [False] * n + [True]


# -- deterministic retries ---------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 5, 9])
async def test_deterministic_retry_delivers_each_seq_once(make_flow: MakeFlow, k: int) -> None:
    n = 10
    node = Flaky(n, k)
    flow = make_flow(Node(node, name="flaky", policy=RETRY_ONCE).to())
    duplicates: list[int] = []
    chunks: list[StreamChunk] = []
    async with asyncio.timeout(10):
        async for chunk in flow.stream(Message(payload=None, headers=H)):
            chunks.append(chunk)
            if chunk.seq == n - 1:  # the retry has re-emitted its first k chunks by now
                duplicates.append(flow.streams()[0].duplicates)
    check_complete(chunks, n)
    assert node.attempts == 2
    assert duplicates == [k]
    stats = flow.stats().nodes[0]
    assert (stats.invocations, stats.retries, stats.failures) == (1, 1, 0)


async def test_retry_after_the_reader_consumed_the_first_attempt(make_flow: MakeFlow) -> None:
    n, k = 8, 4
    gate = asyncio.Event()
    node = Flaky(n, k, gate)
    flow = make_flow(Node(node, name="flaky", policy=RETRY_ONCE).to())
    async with asyncio.timeout(10):
        sub = flow.stream(Message(payload=None, headers=H))
        first = [await anext(sub) for _ in range(k)]  # read everything before the failure
        gate.set()
        rest = [c async for c in sub]
    check_complete(first + rest, n)
    assert flow.stats().streams.registered == 0


async def test_retry_under_backpressure(make_flow: MakeFlow) -> None:
    n, k = 40, 25
    node = Flaky(n, k)
    flow = make_flow(
        Node(node, name="flaky", policy=RETRY_ONCE).to(), limits=Limits(stream_buffer=2)
    )
    async with asyncio.timeout(10):
        chunks = [c async for c in flow.stream(Message(payload=None, headers=H))]
    check_complete(chunks, n)


async def test_retry_of_a_later_message_rewinds_to_its_own_start(make_flow: MakeFlow) -> None:
    # One node invoked once per incoming chunk, numbering its output automatically:
    # a retry of the invocation for chunk 2 must restart at the seqs it started at.
    failed_once = False

    async def doubler(msg: Message, ctx: Context) -> None:
        nonlocal failed_once
        ch = msg.payload
        if ch.done:
            await ctx.emit_chunk(parent=msg, stream_id=ch.stream_id, text="", done=True)
            return
        await ctx.emit_chunk(parent=msg, stream_id=ch.stream_id, text=ch.text + "a")
        if ch.seq == 2 and not failed_once:
            failed_once = True
            raise RuntimeError("transient")
        await ctx.emit_chunk(parent=msg, stream_id=ch.stream_id, text=ch.text + "b")

    async def source(msg: Message, ctx: Context) -> None:
        for i in range(4):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    src, dbl = Node(source, name="src"), Node(doubler, name="dbl", policy=RETRY_ONCE)
    flow = make_flow(src.to(dbl), dbl.to())
    async with asyncio.timeout(10):
        chunks = [c async for c in flow.stream(Message(payload=None, headers=H))]
    assert [c.seq for c in chunks] == list(range(9))
    assert [c.text for c in chunks] == ["0a", "0b", "1a", "1b", "2a", "2b", "3a", "3b", ""]
    assert failed_once


async def test_retry_in_the_middle_of_a_pipeline(make_flow: MakeFlow) -> None:
    n = 30
    failures = {7: 1, 19: 2}  # seq -> attempts that fail

    async def source(msg: Message, ctx: Context) -> None:
        for i in range(n):
            await ctx.emit_chunk(parent=msg, text=f"c{i}")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    async def shaky(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        if failures.get(ch.seq, 0):
            failures[ch.seq] -= 1
            raise RuntimeError("transient")
        await ctx.emit_chunk(
            parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=ch.text, done=ch.done
        )

    async def sink(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        await ctx.emit_chunk(
            parent=msg, stream_id=ch.stream_id, seq=ch.seq, text=ch.text, done=ch.done
        )

    a = Node(source, name="a")
    b = Node(shaky, name="b", policy=NodePolicy(max_retries=2, backoff_s=0))
    c = Node(sink, name="c")
    flow = make_flow(a.to(b), b.to(c), c.to(), queue_maxsize=2)
    async with asyncio.timeout(10):
        chunks = [ch async for ch in flow.stream(Message(payload=None, headers=H))]
    check_complete(chunks, n)
    assert flow.stats().nodes[1].retries == 3


# -- non-deterministic retries -----------------------------------------------------------


async def test_non_deterministic_retry_continues_from_stream_progress(
    make_flow: MakeFlow,
) -> None:
    n, k = 10, 4
    progress: list[int | None] = []

    async def improviser(msg: Message, ctx: Context) -> None:
        start = ctx.stream_progress(msg.trace_id)
        progress.append(start)
        assert start is not None
        attempt = len(progress)
        for seq in range(start, n):
            if attempt == 1 and seq == k:
                raise RuntimeError("transient")
            await ctx.emit_chunk(parent=msg, seq=seq, text=f"a{attempt}:{seq}")
        await ctx.emit_chunk(parent=msg, seq=n, text="", done=True)

    flow = make_flow(Node(improviser, name="imp", policy=RETRY_ONCE).to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        chunks = [c async for c in flow.stream(message)]
    assert progress == [0, k]
    assert [c.seq for c in chunks] == list(range(n + 1))
    texts = [f"a1:{i}" for i in range(k)] + [f"a2:{i}" for i in range(k, n)] + [""]
    assert [c.text for c in chunks] == texts


async def test_stream_progress_of_an_unknown_stream_is_none(make_flow: MakeFlow) -> None:
    seen: list[int | None] = []

    async def look(msg: Message, ctx: Context) -> None:
        seen.append(ctx.stream_progress("no-such-stream"))
        await ctx.emit_chunk(parent=msg, text="x")
        seen.append(ctx.stream_progress(msg.trace_id))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = make_flow(Node(look, name="look").to())
    async with asyncio.timeout(10):
        assert [c.seq async for c in flow.stream(Message(payload=None, headers=H))] == [0, 1]
    assert seen == [None, 1]


# -- giving up ---------------------------------------------------------------------------


async def test_exhausted_retries_fail_the_stream(make_flow: MakeFlow) -> None:
    attempts = 0

    async def hopeless(msg: Message, ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        await ctx.emit_chunk(parent=msg, text="a")
        await ctx.emit_chunk(parent=msg, text="b")
        raise RuntimeError("permanent")

    policy = NodePolicy(max_retries=2, backoff_s=0)
    flow = make_flow(Node(hopeless, name="hopeless", policy=policy).to())
    message = Message(payload=None, headers=H)
    async with asyncio.timeout(10):
        chunks, error = await read_all(flow.stream(message))
    assert [c.text for c in chunks] == ["a", "b"]  # drained once, no retry duplicates
    assert error is not None
    assert error.code is ErrorCode.FAILED
    assert error.stream_id == message.trace_id
    assert attempts == 3
    stats = flow.stats().nodes[0]
    assert (stats.invocations, stats.retries, stats.failures) == (1, 2, 1)
    assert flow.stats().streams.registered == 0


async def test_node_timeout_ends_the_stream_with_timeout(make_flow: MakeFlow) -> None:
    attempts = 0

    async def stuck(msg: Message, ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        await ctx.emit_chunk(parent=msg, text="before")
        await asyncio.Event().wait()

    policy = NodePolicy(timeout_s=0.05, max_retries=1, backoff_s=0)
    flow = make_flow(Node(stuck, name="stuck", policy=policy).to())
    async with asyncio.timeout(10):
        chunks, error = await read_all(flow.stream(Message(payload=None, headers=H)))
    assert error is not None
    assert error.code is ErrorCode.TIMEOUT
    assert [c.text for c in chunks] == ["before"]
    assert attempts == 2
    stats = flow.stats().nodes[0]
    assert (stats.retries, stats.failures, stats.running) == (1, 1, 0)


async def test_an_attempt_that_times_out_can_succeed_on_retry(make_flow: MakeFlow) -> None:
    attempts = 0

    async def slow_start(msg: Message, ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        await ctx.emit_chunk(parent=msg, text="x")
        if attempts == 1:
            await asyncio.Event().wait()
        await ctx.emit_chunk(parent=msg, text="", done=True)

    policy = NodePolicy(timeout_s=0.05, max_retries=1, backoff_s=0)
    flow = make_flow(Node(slow_start, name="slow", policy=policy).to())
    async with asyncio.timeout(10):
        chunks = [c async for c in flow.stream(Message(payload=None, headers=H))]
    assert [(c.seq, c.text) for c in chunks] == [(0, "x"), (1, "")]
    assert attempts == 2


@pytest.mark.parametrize(
    "policy", [NodePolicy(), NodePolicy(max_retries=1, backoff_s=0)], ids=["plain", "retried"]
)
async def test_a_node_raising_stream_error_chooses_the_terminal_code(
    make_flow: MakeFlow, policy: NodePolicy
) -> None:
    # How an LLM adapter reports a provider's 429: not as a plain failure.
    async def busy(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text="a")
        raise StreamError(ErrorCode.RATE_LIMITED, "the provider answered 429")

    flow = make_flow(Node(busy, name="llm", policy=policy).to())
    async with asyncio.timeout(10):
        chunks, error = await read_all(flow.stream(Message(payload=None, headers=H)))
    assert [c.text for c in chunks] == ["a"]
    assert error is not None
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.message == "node 'llm' failed: the provider answered 429"
    assert flow.stats().nodes[0].failures == 1


async def test_node_exception_without_a_timeout_is_failed_not_timeout(
    make_flow: MakeFlow,
) -> None:
    async def raises_timeout_error(msg: Message, ctx: Context) -> None:
        raise TimeoutError("an upstream API timed out")  # not the node's own timeout

    policy = NodePolicy(timeout_s=5, max_retries=0)
    flow = make_flow(Node(raises_timeout_error, name="api", policy=policy).to())
    async with asyncio.timeout(10):
        with pytest.raises(StreamError) as info:
            async for _ in flow.stream(Message(payload=None, headers=H)):
                pass
    assert info.value.code is ErrorCode.FAILED


# -- NodePolicy --------------------------------------------------------------------------


def test_node_policy_defaults() -> None:
    policy = NodePolicy()
    assert policy.timeout_s is None
    assert policy.max_retries == 0
    assert policy.max_concurrency == 1
    assert policy.queue_maxsize is None
    assert policy.reliability is Reliability.AT_MOST_ONCE
    assert NodePolicy(reliability="exactly_once").reliability is Reliability.EXACTLY_ONCE  # type: ignore[arg-type]


def test_backoff_grows_geometrically_up_to_its_cap() -> None:
    policy = NodePolicy(backoff_s=0.1, backoff_factor=2.0, backoff_max_s=0.5)
    assert [policy.backoff(k) for k in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert NodePolicy(backoff_s=0).backoff(10) == 0.0
    assert NodePolicy(backoff_s=0.3, backoff_factor=1).backoff(7) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"timeout_s": math.nan},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"backoff_s": -0.1},
        {"backoff_factor": 0.5},
        {"backoff_factor": 0},
        {"backoff_max_s": -1},
        {"max_concurrency": 0},
        {"max_concurrency": 2.0},
        {"queue_maxsize": 0},
        {"queue_maxsize": 1.5},
        {"reliability": "sometimes"},
    ],
)
def test_bad_node_policy_values_are_value_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # the message varies per field
        NodePolicy(**kwargs)


@pytest.mark.parametrize("field", ["backoff_s", "backoff_factor", "backoff_max_s"])
def test_nan_backoff_is_value_error(field: str) -> None:
    kwargs: dict[str, Any] = {field: math.nan}
    with pytest.raises(ValueError):
        NodePolicy(**kwargs)


def test_node_policy_is_frozen() -> None:
    policy = NodePolicy()
    with pytest.raises(AttributeError):
        policy.max_retries = 3  # type: ignore[misc]


def test_node_requires_an_async_function() -> None:
    def sync(msg: Message, ctx: Context) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        Node(sync)  # type: ignore[arg-type]
