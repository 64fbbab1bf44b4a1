"""The registry of a flow's streams: admission, lookup, and clean-up.

Admission is where the flow's :class:`~icefloe.runtime.limits.Limits` apply:
a stream past ``max_streams``, ``max_streams_per_tenant`` or ``max_bytes`` is
refused at once with ``overloaded``. The tenant's own limit is checked first,
so a tenant at its cap hears about its cap; a flow-wide refusal says only
:data:`AT_CAPACITY`, never a count of other tenants' streams or bytes.
Clean-up is exact: a stream leaves the registry as soon as it has ended and
nobody reads it any more (after ``linger_s`` if nobody ever read its
terminal), so start/cancel cycles leave nothing behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

from icefloe.core.fairshare import TenantShares
from icefloe.core.messages import Headers
from icefloe.exceptions import ErrorCode, InvalidState, StreamClosedError, StreamError
from icefloe.runtime.limits import Limits
from icefloe.runtime.stream import StreamPhase, StreamState

__all__ = ["FinishedStream", "RegistryStatistics", "StreamRegistry"]

#: ids of removed streams remembered, so a late emit is refused, not reborn
FINISHED_IDS = 65_536
#: the refusal of a flow-wide limit: it says no more, so it reveals no one's load
AT_CAPACITY = "the server is at capacity; retry later"


class FinishedStream(NamedTuple):
    """What the registry remembers of a removed stream."""

    #: the seq after its last chunk
    next_seq: int
    #: its tenant
    tenant: str
    #: how it ended: ``done``, ``failed`` or ``cancelled``
    state: str
    #: its terminal code, if it ended abnormally
    code: str | None


class RegistryStatistics(NamedTuple):
    """Totals over every stream of a flow."""

    #: streams running now
    active: int
    #: streams registered (running, or ended and still read or lingering)
    registered: int
    #: bytes held in all streams, as counted by ``chunk_size``
    bytes_in_flight: int
    #: streams admitted since start
    admitted: int
    #: streams refused with ``overloaded`` since start
    refused: int
    #: chunks released into streams since start
    emitted: int
    #: chunks handed to readers since start
    delivered: int
    #: tenants with a running stream
    tenants: int = 0
    #: runs (traces) with a registered stream
    traces: int = 0
    #: running streams whose producer waits for its readers
    producers_waiting: int = 0


class StreamRegistry:
    """Every stream of one flow, by id and by trace."""

    def __init__(self, limits: Limits, on_abandon: Callable[[str], object]) -> None:
        self.limits = limits
        self._on_abandon = on_abandon
        self._streams: dict[str, StreamState] = {}
        self._by_trace: dict[str, list[StreamState]] = {}
        #: running streams per tenant, and who is over their fair share under load
        self.shares = TenantShares()
        # Finished and removed streams: id -> the seq after their last chunk,
        # so a late emit is refused and a late reader told "ended" (bounded).
        self._finished: OrderedDict[str, FinishedStream] = OrderedDict()
        self.active = 0
        self.admitted = 0
        self.refused = 0
        #: of ``refused``, those refused by load shedding
        self.shed = 0
        #: called once per stream that ends (issue 11: the store records terminals)
        self.on_ended: Callable[[StreamState], None] | None = None
        #: ``(headers, reliability) -> refusal reason or None``: load shedding (Flow sets it)
        self.shedder: Callable[[Headers, str], str | None] | None = None
        self._emitted_done = 0
        self._delivered_done = 0

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[StreamState]:
        return iter(list(self._streams.values()))

    def get(self, stream_id: str) -> StreamState | None:
        return self._streams.get(stream_id)

    def by_trace(self, trace_id: str) -> list[StreamState]:
        return list(self._by_trace.get(trace_id, ()))

    # -- admission -------------------------------------------------------------

    def admit(
        self,
        stream_id: str,
        trace_id: str,
        headers: Headers,
        *,
        history: int | None = None,
        window: int | None = None,
        reliability: str = "at_most_once",
        start_seq: int = 0,
    ) -> StreamState:
        """Register a new running stream (``history`` and ``window`` override
        ``Limits.stream_history`` and ``Limits.stream_buffer``).

        :raises StreamError: ``overloaded`` when a limit (or load shedding) refuses it.
        :raises InvalidState: a stream with this id is registered already.
        :raises StreamClosedError: a stream with this id finished recently.
        """
        if stream_id in self._streams:
            raise InvalidState(f"stream {stream_id!r} already exists")
        if stream_id in self._finished:
            raise StreamClosedError(stream_id)
        why = self._refusal(headers.tenant)
        if why is None and self.shedder is not None:
            why = self.shedder(headers, reliability)
            if why is not None:
                self.shed += 1
        if why is not None:
            self.refused += 1
            raise StreamError(ErrorCode.OVERLOADED, why, stream_id)
        limits = self.limits
        state = StreamState(
            self,
            stream_id,
            trace_id,
            headers,
            window=limits.stream_buffer if window is None else window,
            max_bytes=limits.stream_max_bytes,
            history=limits.stream_history if history is None else history,
            reorder_limit=limits.reorder_limit,
            start_seq=start_seq,  # issue 11: a resumed durable run continues its seqs
        )
        self._streams[stream_id] = state
        self._by_trace.setdefault(trace_id, []).append(state)
        tenant = headers.tenant
        self.shares.add(tenant)
        self.active += 1
        self.admitted += 1
        return state

    def producers_waiting(self) -> int:
        """Running streams whose producer waits for its readers (O(streams))."""
        return sum(1 for state in self._streams.values() if state.producers_waiting)

    def _refusal(self, tenant: str) -> str | None:
        # A refusal names the caller's own limit at most: never how many
        # streams (or bytes) the whole flow holds, which is other tenants' load.
        limits = self.limits
        per_tenant = limits.max_streams_per_tenant
        if per_tenant is not None and self.shares.count(tenant) >= per_tenant:
            return f"tenant {tenant!r} has reached its stream limit ({per_tenant}); retry later"
        if limits.max_streams is not None and self.active >= limits.max_streams:
            return AT_CAPACITY
        if limits.max_bytes is not None and self._over_bytes(limits.max_bytes):
            return AT_CAPACITY
        return None

    def set_limits(self, limits: Limits) -> None:
        """Apply ``limits`` to admissions from now on (streams admitted stay)."""
        self.limits = limits

    def _over_bytes(self, limit: int) -> bool:
        # Streams keep an upper bound of their bytes (exact counting is off the
        # per-chunk path); count exactly only when the cheap sum says "over".
        states = self._streams.values()
        if sum(s.bytes_bound for s in states) < limit:
            return False
        return self.bytes_in_flight() >= limit

    def bytes_in_flight(self) -> int:
        """Bytes held in all streams, counted exactly (O(chunks held))."""
        return sum(s.held_bytes() for s in self._streams.values())

    def set_deadline(self, state: StreamState, deadline_s: float) -> None:
        """End ``state`` with ``timeout`` at wall-clock time ``deadline_s``."""
        loop = asyncio.get_running_loop()
        delay = deadline_s - time.time()
        if delay <= 0:
            loop.call_soon(self.expire, state.trace_id)
            return
        state.deadline_handle = loop.call_at(loop.time() + delay, self.expire, state.trace_id)

    # -- ending ----------------------------------------------------------------

    def cancel_trace(self, trace_id: str, code: ErrorCode, message: str = "") -> int:
        """End every stream of ``trace_id`` with ``code``; how many it ended."""
        ended = 0
        for state in self.by_trace(trace_id):
            ended += state.cancel(code, message)
        return ended

    def fail_trace(self, trace_id: str, code: ErrorCode, message: str) -> int:
        """Fail every running stream of ``trace_id``; readers drain first."""
        ended = 0
        for state in self.by_trace(trace_id):
            ended += state.fail(code, message)
        return ended

    def expire(self, trace_id: str) -> None:
        """A deadline passed: the streams end with ``timeout``, the run stops."""
        if self.cancel_trace(trace_id, ErrorCode.TIMEOUT, "deadline passed"):
            self._on_abandon(trace_id)

    def cancel_all(self, code: ErrorCode, message: str) -> None:
        for state in list(self._streams.values()):
            state.cancel(code, message)

    # -- callbacks from StreamState (the StreamHost protocol) --------------------

    def stream_abandoned(self, state: StreamState) -> None:
        """The owning reader left early: cancel the stream and its run."""
        state.cancel(ErrorCode.CANCELLED, "the reader left")
        self._on_abandon(state.trace_id)

    def stream_ended(self, state: StreamState) -> None:
        """``state`` reached its terminal phase: it is no longer active."""
        if self.on_ended is not None:  # issue 11: durable terminals
            self.on_ended(state)
        self.active -= 1
        tenant = state.headers.tenant
        self.shares.remove(tenant)
        if not state.subscribers:
            self.stream_unread(state)

    def stream_unread(self, state: StreamState) -> None:
        """The last reader left: an ended stream goes now, or after ``linger_s``."""
        if not state.phase:
            return
        # Keep a finished stream for linger_s when someone may still resume it:
        # it was never read to its end, or it retains history for resumption.
        done_with = state.terminal_seen or state.phase is StreamPhase.CANCELLED
        if (done_with and not state.history) or not self.limits.linger_s:
            self._remove(state)
        elif state.linger_handle is None:
            loop = asyncio.get_running_loop()
            state.linger_handle = loop.call_later(self.limits.linger_s, self._linger_over, state)

    def _linger_over(self, state: StreamState) -> None:
        state.linger_handle = None
        if not state.subscribers:
            self._remove(state)

    def _remove(self, state: StreamState) -> None:
        if self._streams.get(state.stream_id) is not state:
            return
        del self._streams[state.stream_id]
        siblings = self._by_trace[state.trace_id]
        siblings.remove(state)
        if not siblings:
            del self._by_trace[state.trace_id]
        if state.linger_handle is not None:
            state.linger_handle.cancel()
            state.linger_handle = None
        state.release()
        finished = self._finished
        finished[state.stream_id] = FinishedStream(
            state.next_seq,
            state.headers.tenant,
            state.phase.label,
            state.code.value if state.code is not None else None,
        )
        if len(finished) > FINISHED_IDS:
            finished.popitem(last=False)
        self._emitted_done += state.next_seq - state.start_seq
        self._delivered_done += state.delivered_total()

    def statistics(self) -> RegistryStatistics:
        emitted = self._emitted_done
        delivered = self._delivered_done
        for state in self._streams.values():
            emitted += state.next_seq - state.start_seq
            delivered += state.delivered_total()
        return RegistryStatistics(
            self.active,
            len(self._streams),
            self.bytes_in_flight(),
            self.admitted,
            self.refused,
            emitted,
            delivered,
            self.shares.tenants,
            len(self._by_trace),
            self.producers_waiting(),
        )

    def finished(self, stream_id: str) -> FinishedStream | None:
        """What is remembered of a stream that ended and was removed."""
        return self._finished.get(stream_id)
