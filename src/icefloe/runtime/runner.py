"""Running one node: its workers, retries, timeouts and targeted cancellation.

Each node has ``max_concurrency`` worker tasks reading its bounded inbox. A
worker runs invocations inline (no task per message). Cancelling a trace
cancels exactly the invocations handling it: the worker is interrupted, the
interruption is absorbed (``Task.uncancel``) and the worker takes the next
message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from icefloe.core.latency import LatencyBudgetStatistics
from icefloe.exceptions import EndOfStream, ErrorCode, StreamClosedError, StreamError
from icefloe.runtime.channel import EMPTY, Channel, ChannelStatistics
from icefloe.runtime.context import Context
from icefloe.runtime.durable import DurableRun, enter_run, leave_run
from icefloe.runtime.node import Node

if TYPE_CHECKING:
    from icefloe.core.messages import Message
    from icefloe.runtime.registry import StreamRegistry

__all__ = ["NodeRunner", "NodeStatistics"]

log = logging.getLogger("icefloe.runtime")


class NodeStatistics(NamedTuple):
    """A snapshot of one node."""

    #: the node's name
    name: str
    #: its inbox
    queue: ChannelStatistics
    #: invocations running now
    running: int
    #: worker tasks alive
    workers: int
    #: invocations finished (any outcome) since start
    invocations: int
    #: attempts that were retried
    retries: int
    #: invocations that failed for good
    failures: int
    #: invocations interrupted by cancellation
    cancelled: int
    #: chunk latency against ``NodePolicy.latency_budget_ms`` (None: no budget)
    latency: LatencyBudgetStatistics | None = None


class _Failure(Exception):
    """An invocation failed for good; carries the terminal code."""

    def __init__(self, code: ErrorCode, cause: BaseException) -> None:
        self.code = code
        self.cause = cause
        super().__init__(f"{type(cause).__name__}: {cause}")


class NodeRunner:
    """Owns one node's inbox and worker tasks."""

    def __init__(
        self,
        node: Node,
        inbox: Channel[Message],
        ctx: Context,
        registry: StreamRegistry,
    ) -> None:
        self.node = node
        self.inbox = inbox
        self.ctx = ctx
        self._registry = registry
        n = node.policy.max_concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._current: list[Message | None] = [None] * n
        self._interrupt: list[Message | None] = [None] * n
        self.invocations = 0
        self.retries = 0
        self.failures = 0
        self.cancelled = 0
        #: trace id -> its durable run (issue 11; None: the flow has no store)
        self.durable_lookup: Callable[[str], DurableRun | None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        name = self.node.name
        self._tasks = [
            loop.create_task(self._work(i), name=f"icefloe:{name}:{i}")
            for i in range(self.node.policy.max_concurrency)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._current = [None] * len(self._current)
        self._interrupt = [None] * len(self._interrupt)

    def cancel_trace(self, trace_id: str) -> int:
        """Drop queued messages of ``trace_id`` and interrupt its running invocations."""
        hit = self.inbox.discard(lambda m: m.trace_id == trace_id)
        for i, msg in enumerate(self._current):
            if msg is not None and msg.trace_id == trace_id and self._interrupt[i] is None:
                self._interrupt[i] = msg
                self._tasks[i].cancel()
                hit += 1
        return hit

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            self.node.name,
            self.inbox.statistics(),
            sum(m is not None for m in self._current),
            sum(not t.done() for t in self._tasks),
            self.invocations,
            self.retries,
            self.failures,
            self.cancelled,
            self.ctx.latency(),
        )

    async def _work(self, index: int) -> None:
        inbox = self.inbox
        take = inbox.take
        func = self.node.func
        ctx = self.ctx
        policy = self.node.policy
        plain = policy.timeout_s is None and policy.max_retries == 0
        current = self._current
        task = asyncio.current_task()
        assert task is not None
        while True:
            msg = take()
            if msg is EMPTY:
                try:
                    msg = await inbox.receive()
                except EndOfStream:
                    return
            if msg.deadline_s is not None and msg.deadline_s <= time.time():
                self._registry.expire(msg.trace_id)
                continue
            current[index] = msg
            lookup = self.durable_lookup  # issue 11: ctx.checkpoint and restored_state
            token = None if lookup is None else enter_run(lookup(msg.trace_id))
            try:
                if plain:
                    await func(msg, ctx)
                else:
                    await self._attempts(msg)
            except StreamClosedError:
                pass  # the stream ended under the node (cancelled, timed out)
            except _Failure as failure:
                self._fail(msg, failure.code, failure.cause)
            except asyncio.CancelledError:
                if self._interrupt[index] is not msg:
                    raise
                self.cancelled += 1
            except Exception as exc:
                self._fail(msg, _code_of(exc, ErrorCode.FAILED), exc)
            finally:
                if token is not None:
                    leave_run(token)
                current[index] = None
                self.invocations += 1
            if self._interrupt[index] is not None:
                # Our targeted cancel landed (or the node swallowed it):
                # absorb it so this worker goes on with the next message.
                self._interrupt[index] = None
                if task.uncancel():
                    # A second cancel (flow.stop) was folded into ours: honour it.
                    raise asyncio.CancelledError

    async def _attempts(self, msg: Message) -> None:
        policy = self.node.policy
        func = self.node.func
        attempt = 0
        while True:
            try:
                if policy.timeout_s is None:
                    await func(msg, self.ctx)
                    return
                async with asyncio.timeout(policy.timeout_s) as scope:
                    await func(msg, self.ctx)
                return
            except (StreamClosedError, asyncio.CancelledError):
                raise
            except Exception as exc:
                timed_out = policy.timeout_s is not None and scope.expired()
                if attempt >= policy.max_retries:
                    code = ErrorCode.TIMEOUT if timed_out else _code_of(exc, ErrorCode.FAILED)
                    raise _Failure(code, exc) from exc
                self.retries += 1
                log.info(
                    "node %r attempt %d failed (%s); retrying",
                    self.node.name,
                    attempt + 1,
                    type(exc).__name__,
                )
                self.ctx.rewind(msg)
                await asyncio.sleep(policy.backoff(attempt))
                attempt += 1

    def _fail(self, msg: Message, code: ErrorCode, exc: BaseException) -> None:
        self.failures += 1
        log.warning(
            "node %r failed on trace %s: %s: %s",
            self.node.name,
            msg.trace_id,
            type(exc).__name__,
            exc,
            exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
        )
        why = exc.message if isinstance(exc, StreamError) else type(exc).__name__
        self._registry.fail_trace(msg.trace_id, code, f"node {self.node.name!r} failed: {why}")


def _code_of(exc: BaseException, default: ErrorCode) -> ErrorCode:
    # A node that raises a StreamError chooses its stream's terminal code (an
    # LLM adapter reports a provider's 429 as rate_limited, not as failed).
    return exc.code if isinstance(exc, StreamError) else default
