"""Starting runs over the edge: ``POST /v1/streams`` and the WebSocket ``start`` op.

:class:`RunStarter` checks the request (tenant, relay topic, idempotency
key), starts the run with the edge's history and window, answers an
admission refusal with its wire code, relays the run into the hub when it
names ``headers.topic`` (:func:`~icefloe.transport.relays.relay_tenant` says
under which tenant), and cancels it once nobody has read it for
``unread_timeout_s`` (a reader attached now, or one that left recently: a
long-poll between requests, an SSE client reconnecting).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from icefloe.core.messages import Headers, Message, new_id
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState, StreamError
from icefloe.runtime.flow import Flow
from icefloe.store.protocol import StoreUnavailable
from icefloe.transport.auth import Principal
from icefloe.transport.errors import HttpError
from icefloe.transport.idempotency import ExpiringMap, Started
from icefloe.transport.metrics import EdgeMetrics
from icefloe.transport.relays import StreamRelays, check_relay_topic, relay_tenant

if TYPE_CHECKING:
    from icefloe.backplane.idempotency import IdempotencyClaims


class TenantAdmission(Protocol):
    """Counts runs against their tenant's stream cap across gateways (the backplane)."""

    async def admit(self, tenant: str, stream_id: str) -> str | None:
        """Count the run; the refusal if the tenant is at its cap."""
        ...

    def refused(self, tenant: str, stream_id: str) -> None:
        """A counted run did not start."""
        ...


__all__ = ["MAX_KEY_LENGTH", "RunStarter"]

log = logging.getLogger("icefloe.edge")

#: longest tenant name and idempotency key, characters
MAX_KEY_LENGTH = 200


#: why a start with an idempotency key is refused while the backplane is down
BACKPLANE_DOWN = "the backplane is unreachable: idempotency keys cannot be checked; retry later"

#: why a run that needs the store (a durable level, or an idempotency key) is refused
STORE_DOWN = (
    "the stream store is unavailable: runs that need it (at_least_once, exactly_once,"
    " or an idempotency_key) cannot start until it answers again; retry later"
)


class RunStarter:
    """Starts the runs of one app and watches them for readers."""

    def __init__(
        self,
        flow: Flow,
        relays: StreamRelays,
        metrics: EdgeMetrics,
        *,
        history: int,
        window: int,
        unread_timeout_s: float | None,
        idempotency_ttl_s: float,
        idempotency_max: int,
    ) -> None:
        self._flow = flow
        self._relays = relays
        self._metrics = metrics
        self._history = history
        self._window = window
        self._unread_timeout_s = unread_timeout_s
        #: when each watched run was last seen read (monotonic), while it runs
        self._last_read: dict[str, float] = {}
        # -- backplane (issue 12): corrects a run's reader count (see EdgeBackplane) --
        self.readers_elsewhere: Callable[[str], int] | None = None
        # -- workers (issue 12): a ``--no-runs`` gateway queues starts for the workers --
        self.queue_start: Callable[[Message], Awaitable[None]] | None = None
        #: idempotency keys claimed across gateways (None: this process alone)
        self.claims: IdempotencyClaims | None = None
        #: each tenant's stream cap counted across gateways (None: this process alone)
        self.admission: TenantAdmission | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        self._seen: ExpiringMap[Started] = ExpiringMap(
            idempotency_ttl_s, idempotency_max, time.monotonic
        )

    async def start(
        self, principal: Principal, payload: Any, headers: Headers, idempotency_key: str | None
    ) -> tuple[Started, bool]:
        """Start a run for ``principal``.

        Returns the stream and whether it is new (False: the idempotency key
        named an earlier one).

        :raises HttpError: ``bad_request`` bad headers or key, ``forbidden``
            foreign tenant or relay without the scope, ``overloaded`` /
            ``limit_exceeded`` / ``unavailable`` refused admission.
        """
        tenant = headers.tenant
        if not tenant or len(tenant) > MAX_KEY_LENGTH:
            raise HttpError(ErrorCode.BAD_REQUEST, "headers.tenant must be 1-200 characters")
        if not principal.can_access_tenant(tenant):
            raise HttpError(ErrorCode.FORBIDDEN, "tenant not allowed for this principal")
        if headers.topic is not None:
            check_relay_topic(principal, headers.topic)
            if self.queue_start is not None:  # -- workers (issue 12) --
                raise HttpError(ErrorCode.BAD_REQUEST, "--no-runs gateways relay no stream")
        key = idempotency_key
        if key is not None:
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                raise HttpError(ErrorCode.BAD_REQUEST, "idempotency_key must be 1-200 characters")
            seen = self._seen.get(f"{tenant}\x00{key}")
            if seen is not None:
                return seen, False
        message = Message(payload=payload, headers=headers, trace_id=new_id())
        started = Started(message.trace_id, message.trace_id)
        # With a store the key is claimed there, atomically, so it holds across
        # concurrent requests and restarts (issue 11); without one, here.
        # A ``--no-runs`` gateway starts nothing in its store: the key is kept here.
        local = self._flow.store is None or self.queue_start is not None
        stored_key = None if key is None or local else f"{tenant}/{key}"
        if key is not None and self.claims is not None:  # -- backplane (issue 12) --
            # Claimed in Redis, atomically across every gateway (and this one's
            # concurrent requests); the winner's stream id for everyone else.
            held = await self._claim(self.claims, tenant, key, started.stream_id)
            if held is not None:
                return held, False
            if stored_key is None:
                self._seen.put(f"{tenant}\x00{key}", started)
        elif key is not None and stored_key is None:
            # Recorded before the await, so a concurrent retry finds it.
            self._seen.put(f"{tenant}\x00{key}", started)
        self._metrics.stream_started(started.stream_id)
        if self.admission is not None:  # -- backplane (issue 12): the tenant's cap everywhere --
            await self._admit(self.admission, tenant, key, started.stream_id)
        try:
            if self.queue_start is not None:  # -- workers (issue 12) --
                await self.queue_start(message)
                sid = started.stream_id
            else:
                sid = await self._flow.start(
                    message, history=self._history, window=self._window, idempotency_key=stored_key
                )
        except StoreUnavailable:
            self._forget(tenant, key, started.stream_id)
            raise HttpError(ErrorCode.UNAVAILABLE, STORE_DOWN, {"Retry-After": "1"}) from None
        except StreamError as exc:
            self._forget(tenant, key, started.stream_id)
            # The table tells a tenant over its own budget (429) from a flow
            # over its limits (503); both may retry.
            raise HttpError(exc.code, exc.message, {"Retry-After": "1"}) from None
        except InvalidState as exc:
            self._forget(tenant, key, started.stream_id)
            raise HttpError(ErrorCode.UNAVAILABLE, str(exc), {"Retry-After": "1"}) from None
        if stored_key is not None:
            # The store's winner: this request's run, or an earlier one (this
            # process's, or one from before a restart).
            winner = Started(sid, sid)
            self._seen.put(f"{tenant}\x00{key}", winner)
            if sid != started.stream_id:
                if self.admission is not None:  # -- backplane (issue 12) --
                    self.admission.refused(tenant, started.stream_id)
                if self.claims is not None and key is not None:
                    await self._settle(self.claims, tenant, key, sid)
                return winner, False
        if headers.topic is not None:
            self._relays.start(started.stream_id, headers.topic, relay_tenant(principal, tenant))
        if self._unread_timeout_s is not None:
            self._last_read[started.stream_id] = time.monotonic()
            self._watch_unread(started.stream_id)
        return started, True

    def mark_read(self, stream_id: str) -> None:
        """A reader of ``stream_id`` was attached until now (a long-poll
        answered, a streaming response ended).

        The unread timeout only sees readers attached when it checks; a
        client that polls, or reconnects, detaches in between, and must not
        have its run cancelled for it.
        """
        if stream_id in self._last_read:
            self._last_read[stream_id] = time.monotonic()

    def _forget(self, tenant: str, key: str | None, stream_id: str) -> None:
        """A start that was refused: nothing of it stays (its key, its metrics)."""
        self._metrics.stream_refused(stream_id)
        if self.admission is not None:  # -- backplane (issue 12) --
            self.admission.refused(tenant, stream_id)
        if key is not None:
            self._seen.pop(f"{tenant}\x00{key}")
            if self.claims is not None:  # -- backplane (issue 12) --
                release = asyncio.ensure_future(self.claims.release(tenant, key, stream_id))
                self._releasing.add(release)
                release.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The claim then expires with its TTL; a retry names the refused id meanwhile.
            log.warning("idempotency claim release failed: %r", task.exception())

    async def _admit(
        self, admission: TenantAdmission, tenant: str, key: str | None, stream_id: str
    ) -> None:
        """Count the run against its tenant's cap across gateways; while the
        backplane does not answer, the flow's own (per-process) cap alone holds.

        :raises HttpError: ``overloaded`` over the cap (nothing of the start stays).
        """
        try:
            refusal = await admission.admit(tenant, stream_id)
        except Exception as exc:
            log.warning("tenant stream count failed, the per-gateway cap holds: %r", exc)
            return
        if refusal is not None:
            self._forget(tenant, key, stream_id)
            raise HttpError(ErrorCode.OVERLOADED, refusal, {"Retry-After": "1"})

    async def _claim(
        self, claims: IdempotencyClaims, tenant: str, key: str, stream_id: str
    ) -> Started | None:
        """Claim ``key`` across gateways; the earlier start that holds it, if any."""
        try:
            held = await claims.claim(tenant, key, stream_id)
        except Exception as exc:
            log.warning("idempotency claim failed: %r", exc)
            raise HttpError(ErrorCode.UNAVAILABLE, BACKPLANE_DOWN, {"Retry-After": "1"}) from None
        if held is None:
            return None
        winner = Started(held, held)
        self._seen.put(f"{tenant}\x00{key}", winner)
        return winner

    async def _settle(
        self, claims: IdempotencyClaims, tenant: str, key: str, stream_id: str
    ) -> None:
        try:
            await claims.settle(tenant, key, stream_id)
        except Exception as exc:  # the claim then names a run that never started
            log.warning("idempotency claim update failed: %r", exc)

    def _watch_unread(self, stream_id: str) -> None:
        """Cancel the stream once it has had no reader for ``unread_timeout_s``.

        Checked on a timer, never per chunk: a reader that reconnects within
        the window (Last-Event-ID), or polls, keeps the run alive.
        """
        timeout = self._unread_timeout_s
        assert timeout is not None
        stats = self._flow.lookup(stream_id)
        if stats is None or stats.state != "running":
            self._last_read.pop(stream_id, None)
            return
        now = time.monotonic()
        subscribers = stats.subscribers
        if self.readers_elsewhere is not None:  # -- backplane (issue 12) --
            subscribers += self.readers_elsewhere(stream_id)
        if self._relays.is_read(stream_id, subscribers):
            self._last_read[stream_id] = now
        last_read = self._last_read[stream_id]
        if now - last_read >= timeout:
            self._last_read.pop(stream_id, None)
            self._flow.cancel(stream_id)
            self._metrics.unread_cancelled.inc()
            return
        asyncio.get_running_loop().call_later(
            timeout - (now - last_read), self._watch_unread, stream_id
        )
