"""Fault injection for tests: a store that drops, delays, corrupts, fails or kills.

:class:`FaultyStore` wraps any :class:`~icefloe.store.protocol.Store` and
passes every call through, except at the *points* a test armed with
:meth:`FaultyStore.inject`. Each method ``m`` has two points: ``"m"``, just
before the inner call, and ``"after_m"``, just after it returned (the write
is committed, its answer not yet given). ``"*"`` arms every before-point at
once (an outage).

=========  ==============================================================
action     at ``"m"`` (before)                 at ``"after_m"`` (after)
=========  ==============================================================
drop       skip the inner call; answer as if   (refused: the call ran)
           it succeeded (a lost write, an
           empty read)
delay      wait ``delay_s``, then go on         wait, then answer
corrupt    flip one bit of every record the     flip one bit of every record
           call writes (append, create_run,     the call returns (read,
           put_session, put_position)           get_run, get_session...)
fail       raise ``error`` (StoreUnavailable)   raise it: the write happened,
                                                the caller never hears so
hang       wait until cancelled (a timeout)     same, after the write
kill       call ``on_kill`` (default: SIGKILL   same, after the write
           this process)
=========  ==============================================================

A fault fires on the hits of its point after the first ``skip`` ones, at
most ``times`` times (``None``: until cleared). :meth:`FaultyStore.hits`
counts the calls that reached a point, :meth:`FaultyStore.fired` those a
fault acted on.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from icefloe.store.protocol import Store, StoreUnavailable
from icefloe.store.types import Checkpoint, RunRecord, RunState, StoredChunk, Terminal

__all__ = ["POINTS", "Fault", "FaultAction", "FaultyStore", "flip_bit"]

_METHODS = (
    "open",
    "create_run",
    "get_run",
    "unfinished_runs",
    "end_run",
    "append",
    "read",
    "delete_runs",
    "put_session",
    "get_session",
    "delete_session",
    "put_position",
    "get_position",
    "positions",
)
#: every point a fault can be injected at ("*" arms all the before-points)
POINTS: frozenset[str] = frozenset(_METHODS) | {f"after_{m}" for m in _METHODS} | {"*"}


class FaultAction(enum.Enum):
    """What a :class:`Fault` does."""

    DROP = enum.auto()
    DELAY = enum.auto()
    CORRUPT = enum.auto()
    FAIL = enum.auto()
    HANG = enum.auto()
    KILL = enum.auto()


@dataclass
class Fault:
    """One armed fault (build it with the class methods)."""

    action: FaultAction
    #: fire at most this many times (None: until cleared)
    times: int | None = None
    #: let this many hits of the point pass first
    skip: int = 0
    #: for DELAY: seconds to wait
    delay_s: float = 0.0
    #: for FAIL: what to raise (default StoreUnavailable)
    error: BaseException | None = None
    #: for CORRUPT: which bit of each record (default: the middle one)
    bit: int | None = None

    @classmethod
    def drop(cls, *, times: int | None = None, skip: int = 0) -> Fault:
        return cls(FaultAction.DROP, times, skip)

    @classmethod
    def delay(cls, seconds: float, *, times: int | None = None, skip: int = 0) -> Fault:
        return cls(FaultAction.DELAY, times, skip, delay_s=seconds)

    @classmethod
    def corrupt(cls, *, bit: int | None = None, times: int | None = None, skip: int = 0) -> Fault:
        return cls(FaultAction.CORRUPT, times, skip, bit=bit)

    @classmethod
    def fail(
        cls, error: BaseException | None = None, *, times: int | None = None, skip: int = 0
    ) -> Fault:
        return cls(FaultAction.FAIL, times, skip, error=error)

    @classmethod
    def hang(cls, *, times: int | None = None, skip: int = 0) -> Fault:
        return cls(FaultAction.HANG, times, skip)

    @classmethod
    def kill(cls, *, times: int | None = None, skip: int = 0) -> Fault:
        return cls(FaultAction.KILL, times, skip)


def flip_bit(record: bytes, bit: int | None = None) -> bytes:
    """``record`` with one bit flipped (default: the middle bit); empty stays empty."""
    if not record:
        return record
    index = (len(record) * 8 // 2 if bit is None else bit) % (len(record) * 8)
    damaged = bytearray(record)
    damaged[index // 8] ^= 1 << (index % 8)
    return bytes(damaged)


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyStore:
    """A :class:`~icefloe.store.protocol.Store` wrapper that misbehaves on request.

    :param on_kill: what a KILL fault does (default: SIGKILL this process;
        in-process tests pass a function that raises instead).
    """

    def __init__(self, inner: Store, *, on_kill: Callable[[], None] = _sigkill) -> None:
        self._inner = inner
        self._on_kill = on_kill
        self._faults: dict[str, Fault] = {}
        self._hits: dict[str, int] = {}
        self._fired: dict[str, int] = {}

    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    def inject(self, point: str, fault: Fault) -> None:
        """Arm ``fault`` at ``point`` (replacing what was armed there).

        :raises ValueError: an unknown point, or an action that point cannot take.
        """
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; one of {sorted(POINTS)}")
        if point.startswith("after_") and fault.action is FaultAction.DROP:
            raise ValueError(f"cannot drop at {point!r}: the call already ran")
        self._faults[point] = fault

    def clear(self, point: str | None = None) -> None:
        """Disarm ``point``, or every point."""
        if point is None:
            self._faults.clear()
        else:
            self._faults.pop(point, None)

    def hits(self, point: str) -> int:
        """Calls that reached ``point``."""
        return self._hits.get(point, 0)

    def fired(self, point: str) -> int:
        """Times a fault acted at ``point``."""
        return self._fired.get(point, 0)

    def statistics(self) -> Any:
        """The inner store's statistics, when it keeps any."""
        stats = getattr(self._inner, "statistics", None)
        return stats() if callable(stats) else None

    async def _at(self, point: str) -> Fault | None:
        """The fault firing at this hit of ``point`` after its wait, fail or kill."""
        self._hits[point] = self._hits.get(point, 0) + 1
        fault = self._faults.get(point)
        if fault is None and not point.startswith("after_") and "*" in self._faults:
            point, fault = "*", self._faults["*"]
            self._hits["*"] = self._hits.get("*", 0) + 1
        if fault is None or self._hits[point] <= fault.skip:
            return None
        if fault.times is not None:
            if fault.times <= 0:
                return None
            fault.times -= 1
        self._fired[point] = self._fired.get(point, 0) + 1
        if fault.action is FaultAction.DELAY:
            await asyncio.sleep(fault.delay_s)
        elif fault.action is FaultAction.FAIL:
            raise fault.error or StoreUnavailable(f"injected failure at {point}")
        elif fault.action is FaultAction.HANG:
            await asyncio.Event().wait()
        elif fault.action is FaultAction.KILL:
            self._on_kill()
        return fault

    @staticmethod
    def _corrupts(fault: Fault | None) -> bool:
        return fault is not None and fault.action is FaultAction.CORRUPT

    @staticmethod
    def _drops(fault: Fault | None) -> bool:
        return fault is not None and fault.action is FaultAction.DROP

    # -- the Store methods ---------------------------------------------------------

    async def open(self) -> None:
        if not self._drops(await self._at("open")):
            await self._inner.open()
        await self._at("after_open")

    async def close(self) -> None:
        await self._inner.close()

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        fault = await self._at("create_run")
        if self._drops(fault):
            return run.stream_id
        if fault is not None and self._corrupts(fault):
            run = run._replace(message=flip_bit(run.message, fault.bit))
        result = await self._inner.create_run(
            run, idempotency_key=idempotency_key, key_ttl_s=key_ttl_s
        )
        await self._at("after_create_run")
        return result

    async def get_run(self, stream_id: str) -> RunState | None:
        if self._drops(await self._at("get_run")):
            return None
        state = await self._inner.get_run(stream_id)
        fault = await self._at("after_get_run")
        if state is not None and fault is not None and self._corrupts(fault):
            state = _corrupt_state(state, fault.bit)
        return state

    async def unfinished_runs(self) -> list[RunState]:
        if self._drops(await self._at("unfinished_runs")):
            return []
        states = await self._inner.unfinished_runs()
        fault = await self._at("after_unfinished_runs")
        if fault is not None and self._corrupts(fault):
            states = [_corrupt_state(s, fault.bit) for s in states]
        return states

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        if self._drops(await self._at("end_run")):
            return True
        result = await self._inner.end_run(stream_id, terminal)
        await self._at("after_end_run")
        return result

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        fault = await self._at("append")
        if self._drops(fault):
            return len(chunks)
        if fault is not None and self._corrupts(fault):
            chunks = [c._replace(record=flip_bit(c.record, fault.bit)) for c in chunks]
            if checkpoint is not None:
                checkpoint = checkpoint._replace(state=flip_bit(checkpoint.state, fault.bit))
        result = await self._inner.append(stream_id, chunks, checkpoint=checkpoint)
        await self._at("after_append")
        return result

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        if self._drops(await self._at("read")):
            return []
        got = await self._inner.read(stream_id, from_seq, limit)
        fault = await self._at("after_read")
        if fault is not None and self._corrupts(fault):
            got = [c._replace(record=flip_bit(c.record, fault.bit)) for c in got]
        return got

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        if self._drops(await self._at("delete_runs")):
            return 0
        result = await self._inner.delete_runs(ended_before, limit)
        await self._at("after_delete_runs")
        return result

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        fault = await self._at("put_session")
        if self._drops(fault):
            return
        if fault is not None and self._corrupts(fault):
            record = flip_bit(record, fault.bit)
        await self._inner.put_session(session_id, record, expires_at)
        await self._at("after_put_session")

    async def get_session(self, session_id: str) -> bytes | None:
        if self._drops(await self._at("get_session")):
            return None
        record = await self._inner.get_session(session_id)
        fault = await self._at("after_get_session")
        if record is not None and fault is not None and self._corrupts(fault):
            record = flip_bit(record, fault.bit)
        return record

    async def delete_session(self, session_id: str) -> None:
        if self._drops(await self._at("delete_session")):
            return
        await self._inner.delete_session(session_id)
        await self._at("after_delete_session")

    # -- connector positions --

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        fault = await self._at("put_position")
        if self._drops(fault):
            return
        if fault is not None and self._corrupts(fault):
            value = flip_bit(value, fault.bit)
        await self._inner.put_position(namespace, key, value)
        await self._at("after_put_position")

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        if self._drops(await self._at("get_position")):
            return None
        value = await self._inner.get_position(namespace, key)
        fault = await self._at("after_get_position")
        if value is not None and fault is not None and self._corrupts(fault):
            value = flip_bit(value, fault.bit)
        return value

    async def positions(self, namespace: str) -> dict[str, bytes]:
        if self._drops(await self._at("positions")):
            return {}
        found = await self._inner.positions(namespace)
        fault = await self._at("after_positions")
        if fault is not None and self._corrupts(fault):
            found = {key: flip_bit(value, fault.bit) for key, value in found.items()}
        return found


def _corrupt_state(state: RunState, bit: int | None) -> RunState:
    run = state.run._replace(message=flip_bit(state.run.message, bit))
    checkpoint = state.checkpoint
    if checkpoint is not None:
        checkpoint = checkpoint._replace(state=flip_bit(checkpoint.state, bit))
    return state._replace(run=run, checkpoint=checkpoint)
