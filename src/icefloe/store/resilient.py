"""Timeouts, retries and a circuit breaker around any store.

:class:`ResilientStore` wraps a :class:`~icefloe.store.protocol.Store` and
keeps its rules; what it adds:

* **Timeouts.** Every call is bounded by ``timeout_s``; one that takes
  longer is cancelled and counts as a :class:`StoreUnavailable` failure.
* **Retries.** A call that failed with ``StoreUnavailable`` (or timed out)
  is tried again, up to ``RetryPolicy.attempts`` tries in all, after an
  exponential backoff with full jitter (a random wait in
  ``[0, min(max_delay_s, base_delay_s * 2**n))``). Retries draw from a
  *retry budget*, a :class:`~icefloe.core.token_bucket.TokenBucket` of
  ``budget_per_s`` retries per second (burst ``budget_burst``), shared by all
  calls: during an outage the store sees at most that many extra calls, not a
  multiple of the load. Caller errors (``ValueError``, ``StreamNotFound``)
  are answers, never retried.
* **A circuit breaker** (:class:`~icefloe.core.breaker.CircuitBreaker`):
  after ``failure_threshold`` failed calls in a row it opens and every call
  fails at once with ``StoreUnavailable`` saying why and when the next try
  is; after ``reset_after_s`` one probe call decides whether it closes.
  :meth:`ResilientStore.unavailable_reason` says the same for ``/readyz``.

Retrying writes is safe because the store's rules make them idempotent:
``append`` skips seqs stored already, ``end_run`` keeps the first terminal
(a retry of a call that did commit answers False), ``create_run`` with an
idempotency key returns the winner, and one without a key that turns out to
have committed before its timeout is recognised (the stored run is the same)
instead of failing with "exists already".
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from icefloe.core.breaker import BreakerPolicy, BreakerState, BreakerStatistics, CircuitBreaker
from icefloe.core.token_bucket import TokenBucket
from icefloe.store.protocol import Store, StoreUnavailable
from icefloe.store.types import Checkpoint, RunRecord, RunState, StoredChunk, Terminal

__all__ = [
    "DEFAULT_BREAKER",
    "DEFAULT_RETRY",
    "ResilienceStatistics",
    "ResilientStore",
    "RetryPolicy",
]

T = TypeVar("T")


class RetryPolicy(NamedTuple):
    """How a :class:`ResilientStore` retries transient failures."""

    #: tries per call, the first included (1: never retry)
    attempts: int = 3
    #: the first backoff's upper bound, in seconds
    base_delay_s: float = 0.05
    #: the largest backoff, in seconds
    max_delay_s: float = 1.0
    #: retries per second all calls may make together, sustained
    budget_per_s: float = 10.0
    #: retries that may be made at once before the rate applies
    budget_burst: float = 20.0

    def check(self) -> RetryPolicy:
        """This policy, validated.

        :raises ValueError: naming the field out of range.
        """
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        for name in ("base_delay_s", "max_delay_s", "budget_per_s", "budget_burst"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        return self


#: the retries a :class:`ResilientStore` makes unless told otherwise
DEFAULT_RETRY = RetryPolicy()
#: the breaker a :class:`ResilientStore` uses unless told otherwise
DEFAULT_BREAKER = BreakerPolicy()


class ResilienceStatistics(NamedTuple):
    """A snapshot of a :class:`ResilientStore`'s counters."""

    #: calls made through it
    calls: int
    #: tries that failed (StoreUnavailable or a timeout)
    failures: int
    #: tries that timed out (also counted in failures)
    timeouts: int
    #: retries made
    retries: int
    #: retries not made because the budget was empty
    budget_exhausted: int
    #: calls refused at once because the breaker was open
    rejected: int
    #: the breaker's own snapshot
    breaker: BreakerStatistics
    #: the inner store's statistics, when it keeps any
    inner: Any


@dataclass
class _Counts:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    retries: int = 0
    budget_exhausted: int = 0
    rejected: int = 0


class ResilientStore:
    """A :class:`~icefloe.store.protocol.Store` with timeouts, retries and a breaker.

    :param inner: the store to protect.
    :param timeout_s: the bound on each try, in seconds.
    :param clock: monotonic seconds, for the breaker and the retry budget.
    :param rng: the jitter's random source (seeded in tests).
    :param sleep: how to wait between tries (tests pass a recorder).
    :raises ValueError: a policy or ``timeout_s`` out of range.
    """

    def __init__(
        self,
        inner: Store,
        *,
        timeout_s: float = 2.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: BreakerPolicy = DEFAULT_BREAKER,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        self._inner = inner
        self._timeout = timeout_s
        self._retry = retry.check()
        self._breaker = CircuitBreaker(breaker, clock)
        self._budget = TokenBucket(retry.budget_per_s, retry.budget_burst, clock)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._counts = _Counts()

    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    def unavailable_reason(self) -> str | None:
        """Why calls fail fast now (the breaker is open), or None when they may go ahead."""
        if self._breaker.state is not BreakerState.OPEN:
            return None
        stats = self._breaker.statistics()
        return (
            f"store {self.name} is unavailable: {stats.consecutive_failures} calls failed in a row"
            f" (last: {stats.last_failure or 'no detail'}); next try in"
            f" {self._breaker.retry_after():.1f} s"
        )

    def statistics(self) -> ResilienceStatistics:
        """Its counters, its breaker's and the inner store's."""
        c = self._counts
        inner_stats = getattr(self._inner, "statistics", None)
        return ResilienceStatistics(
            c.calls,
            c.failures,
            c.timeouts,
            c.retries,
            c.budget_exhausted,
            c.rejected,
            self._breaker.statistics(),
            inner_stats() if callable(inner_stats) else None,
        )

    def _backoff(self, retry: int) -> float:
        ceiling = min(self._retry.max_delay_s, self._retry.base_delay_s * 2**retry)
        return self._rng.uniform(0.0, ceiling)

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        self._counts.calls += 1
        if not self._breaker.allow():
            self._counts.rejected += 1
            raise StoreUnavailable(self.unavailable_reason() or f"store {self.name} is unavailable")
        attempt = 0
        while True:
            failure = await self._try(what, fn)
            if not isinstance(failure, StoreUnavailable):
                return failure
            attempt += 1
            if attempt >= self._retry.attempts:
                raise failure
            if not self._budget.try_take(1.0):
                self._counts.budget_exhausted += 1
                raise failure
            if not self._breaker.allow():
                self._counts.rejected += 1
                raise failure
            self._counts.retries += 1
            await self._sleep(self._backoff(attempt - 1))

    async def _try(self, what: str, fn: Callable[[], Awaitable[T]]) -> T | StoreUnavailable:
        """One try: its result, or the StoreUnavailable that ended it (other errors raise)."""
        try:
            result = await asyncio.wait_for(fn(), self._timeout)
        except TimeoutError:
            self._counts.timeouts += 1
            failure = StoreUnavailable(f"{what} on store {self.name} took over {self._timeout} s")
        except StoreUnavailable as exc:
            failure = exc
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        except BaseException:
            # The store answered (a ValueError, StreamNotFound...): it is up.
            self._breaker.record_success()
            raise
        else:
            self._breaker.record_success()
            return result
        self._counts.failures += 1
        self._breaker.record_failure(str(failure))
        return failure

    # -- the Store methods -------------------------------------------------------------

    async def open(self) -> None:
        await self._call("open", self._inner.open)

    async def close(self) -> None:
        await self._inner.close()

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        tries = 0

        async def once() -> str:
            nonlocal tries
            tries += 1
            try:
                return await self._inner.create_run(
                    run, idempotency_key=idempotency_key, key_ttl_s=key_ttl_s
                )
            except ValueError:
                # A retry of a call that committed before its timeout finds its own run.
                if tries > 1:
                    held = await self._inner.get_run(run.stream_id)
                    if held is not None and held.run == run:
                        return run.stream_id
                raise

        return await self._call("create_run", once)

    async def get_run(self, stream_id: str) -> RunState | None:
        return await self._call("get_run", lambda: self._inner.get_run(stream_id))

    async def unfinished_runs(self) -> list[RunState]:
        return await self._call("unfinished_runs", self._inner.unfinished_runs)

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        return await self._call("end_run", lambda: self._inner.end_run(stream_id, terminal))

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        return await self._call(
            "append", lambda: self._inner.append(stream_id, chunks, checkpoint=checkpoint)
        )

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        return await self._call("read", lambda: self._inner.read(stream_id, from_seq, limit))

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        return await self._call("delete_runs", lambda: self._inner.delete_runs(ended_before, limit))

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        await self._call(
            "put_session", lambda: self._inner.put_session(session_id, record, expires_at)
        )

    async def get_session(self, session_id: str) -> bytes | None:
        return await self._call("get_session", lambda: self._inner.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._call("delete_session", lambda: self._inner.delete_session(session_id))

    # -- connector positions: a put replaces, so a retry is safe --

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        await self._call("put_position", lambda: self._inner.put_position(namespace, key, value))

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        return await self._call("get_position", lambda: self._inner.get_position(namespace, key))

    async def positions(self, namespace: str) -> dict[str, bytes]:
        return await self._call("positions", lambda: self._inner.positions(namespace))
