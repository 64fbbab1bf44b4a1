"""The topic routes, the hub over HTTP: ``POST /v1/topics/{topic}`` and
``GET /v1/topics/{pattern}``.

Publishing answers ``201 {"topic", "offset", "epoch"}``. Subscribing streams the
matching events of the principal's tenant as SSE (or NDJSON): one event per
message, ``id`` = the event's offset in its topic, ``event: event``, and
``data`` = ``{"op": "event", "topic", "offset", "epoch", "data", "headers", "ts"}``.
Each event is encoded once (:meth:`HubEvent.encoded`) and the bytes shared by
every subscriber.

Query parameters of a subscription: ``filter`` (the hub's filter language,
at most 1,024 characters), ``from_offset`` (replay retained history first;
exact topic names only; ``Last-Event-ID: N`` means ``from_offset=N+1``),
``epoch`` (the topic epoch that offset was read under: if the topic has been
re-created since, ``410 history_gone`` rather than a replay of its new numbering),
``buffer`` (events held for this client, 1..4,096, default 256). A client
that falls behind loses the oldest events (``drop_oldest``), and the drops
are counted in the hub's statistics; a stream's tokens, which must not be
lost, go through ``/v1/streams`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icefloe.core.codec import Format
from icefloe.core.filters import FilterError
from icefloe.core.topics import TopicError
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import (
    ClosedResourceError,
    EncodeError,
    StreamError,
    WouldBlock,
)
from icefloe.hub import HubEvent, HubSubscription
from icefloe.store.protocol import StoreUnavailable
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.edge import EdgeContext, PumpResponse, read_body
from icefloe.transport.encoding import WireFormat, parse_query_int, parse_resume_point
from icefloe.transport.errors import HttpError
from icefloe.transport.principals import ANY_TENANT
from icefloe.transport.shared import Taken
from icefloe.transport.streaming import StreamPump

__all__ = ["MAX_TOPIC_BUFFER", "TopicRoutes", "ndjson_event", "sse_event", "take_events"]

#: events one HTTP subscriber's buffer may hold at most
MAX_TOPIC_BUFFER = 4096


def sse_event(event: HubEvent) -> bytes:
    """One hub event as an SSE message (``id`` = its offset)."""
    return b"id: %d\nevent: event\ndata: %s\n\n" % (event.offset, event.encoded(Format.JSON))


def ndjson_event(event: HubEvent) -> bytes:
    return event.encoded(Format.JSON) + b"\n"


def take_events(
    encode: Callable[[HubEvent], bytes],
) -> Callable[[HubSubscription, int], Taken | None]:
    """A pump ``take`` for a hub subscription: its held events, up to a byte budget."""

    def take(sub: HubSubscription, max_bytes: int) -> Taken | None:
        held = sub.held()
        if not held:
            return None
        parts: list[bytes] = []
        size = 0
        first: HubEvent | None = None
        count = 0
        while count < held and (count == 0 or size < max_bytes):
            event = sub.receive_nowait()
            data = encode(event)
            parts.append(data)
            size += len(data)
            count += 1
            if first is None:
                first = event
        return Taken(parts[0] if count == 1 else b"".join(parts), count, first)

    return take


class _PublishIn(msgspec.Struct, forbid_unknown_fields=True):
    data: Any = None
    headers: dict[str, str | int | float | bool | None] | None = None
    #: another tenant's topic, for an admin principal (default: the principal's own)
    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


_decode_publish = msgspec.json.Decoder(_PublishIn).decode


def _tenant(principal: Principal, asked: str | None) -> str:
    # With auth off every caller is tenant "*": one shared namespace.
    if asked is None:
        return principal.tenant
    if not principal.can_access_tenant(asked):
        raise HttpError(ErrorCode.FORBIDDEN, "tenant not allowed for this principal")
    return asked


class TopicRoutes:
    """The handlers of ``/v1/topics``, over one :class:`EdgeContext`."""

    def __init__(self, edge: EdgeContext) -> None:
        self.edge = edge

    async def publish(self, request: Request) -> Response:
        """``POST /v1/topics/{topic}``: ``201 {"topic", "offset", "epoch"}``."""
        principal = self.edge.principal(request, Scope.TOPICS_PUBLISH)
        body = await read_body(request)
        try:
            item = _decode_publish(body or b"{}")
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, f"invalid body: {exc}") from None
        tenant = _tenant(principal, item.tenant)
        topic = request.path_params["topic"]
        retry = {"Retry-After": "1"}
        metered = self.edge.publish_budget.metered(None if tenant == ANY_TENANT else tenant)
        try:
            log = self.edge.topic_log
            if log is None:
                with metered:
                    event = await self.edge.hub.publish(
                        topic, item.data, tenant=tenant, headers=item.headers
                    )
                epoch, offset = event.epoch, event.offset
            else:
                # Numbered by the store or the backplane (issues 11, 12): the
                # check is loop time, the wait for the log is not.
                with metered:
                    kept = log.submit(topic, item.data, tenant=tenant, headers=item.headers)
                epoch, offset = await kept
        except (TopicError, ValueError, EncodeError) as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except WouldBlock as exc:
            raise HttpError(ErrorCode.OVERLOADED, str(exc), retry) from None
        except StreamError as exc:
            raise HttpError(exc.code, exc.message, retry) from None
        except ClosedResourceError:
            raise HttpError(ErrorCode.UNAVAILABLE, "the hub is closed", retry) from None
        except StoreUnavailable as exc:  # the store or the backplane did not keep it
            raise HttpError(ErrorCode.UNAVAILABLE, str(exc), retry) from None
        return JSONResponse({"topic": topic, "offset": offset, "epoch": epoch}, status_code=201)

    async def read(self, request: Request) -> Response:
        """``GET /v1/topics/{pattern}``: the matching events as SSE or NDJSON."""
        sub, fmt = self._subscribe(request)
        ended = self.edge.open_connection(request, sub.close)
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        encode = sse_event if fmt is WireFormat.SSE else ndjson_event
        pump = StreamPump(
            sub, fmt, self.edge.settings.pump, gzip=gzip, take=take_events(encode), on_end=ended
        )
        return PumpResponse(pump)

    def _subscribe(self, request: Request) -> tuple[HubSubscription, WireFormat]:
        principal = self.edge.principal(request, Scope.TOPICS_READ)
        q = request.query_params
        tenant = _tenant(principal, q.get("tenant"))
        pattern = request.path_params["pattern"]
        try:
            from_offset: int | None = None
            if q.get("from_offset") is not None or request.headers.get("last-event-id"):
                from_offset = parse_resume_point(
                    q.get("from_offset"), request.headers.get("last-event-id"), name="from_offset"
                )
            buffer = parse_query_int(q.get("buffer", "256"), "buffer")
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        if not 1 <= buffer <= MAX_TOPIC_BUFFER:
            raise HttpError(ErrorCode.BAD_REQUEST, f"buffer must be 1..{MAX_TOPIC_BUFFER}")
        try:
            sub = self.edge.hub.subscribe(
                pattern,
                tenant=tenant,
                filter=q.get("filter"),
                buffer=buffer,
                from_offset=from_offset,
                epoch=q.get("epoch"),
            )
        except FilterError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, f"bad filter: {exc}") from None
        except (TopicError, ValueError) as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except StreamError as exc:
            # history_gone (410) for a trimmed from_offset or a changed epoch,
            # overloaded (503, retry later) at a hub budget
            retry = {"Retry-After": "1"} if exc.code is ErrorCode.OVERLOADED else None
            raise HttpError(exc.code, exc.message, retry) from None
        except ClosedResourceError:
            raise HttpError(ErrorCode.UNAVAILABLE, "the hub is closed") from None
        return sub, WireFormat.negotiate(request.headers.get("accept"))
