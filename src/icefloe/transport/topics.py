"""The hub over HTTP: ``POST /v1/topics/{topic}`` and ``GET /v1/topics/{pattern}``.

Publishing answers ``201 {"topic", "offset"}``. Subscribing streams the
matching events of the principal's tenant as SSE (or NDJSON): one event per
message, ``id`` = the event's offset in its topic, ``event: event``, and
``data`` = ``{"op": "event", "topic", "offset", "data", "headers", "ts"}``.
Each event is encoded once (:meth:`HubEvent.encoded`) and the bytes shared by
every subscriber.

Query parameters of a subscription: ``filter`` (the hub's filter language,
at most 1,024 characters), ``from_offset`` (replay retained history first;
exact topic names only; ``Last-Event-ID: N`` means ``from_offset=N+1``),
``buffer`` (events held for this client, 1..4,096, default 256). A client
that falls behind loses the oldest events (``drop_oldest``), and the drops
are counted in the hub's statistics; a stream's tokens, which must not be
lost, go through ``/v1/streams`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from icefloe.core.codec import Format
from icefloe.core.filters import FilterError
from icefloe.core.topics import TopicError
from icefloe.exceptions import (
    ClosedResourceError,
    EncodeError,
    StreamError,
    WouldBlock,
)
from icefloe.hub import HubEvent, HubSubscription
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.encoding import WireFormat, parse_resume_point
from icefloe.transport.errors import HttpError
from icefloe.transport.shared import Taken

if TYPE_CHECKING:
    from icefloe.transport.app import _Edge

__all__ = ["publish_topic", "read_topic", "sse_event", "take_events"]

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
        raise HttpError(403, "forbidden", "tenant not allowed for this principal")
    return asked


async def publish_topic(edge: _Edge, request: Request, body: bytes) -> Response:
    principal = edge.principal(request, Scope.TOPICS_PUBLISH)
    try:
        item = _decode_publish(body or b"{}")
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise HttpError(400, "bad_request", f"invalid body: {exc}") from None
    tenant = _tenant(principal, item.tenant)
    topic = request.path_params["topic"]
    try:
        event = await edge.hub.publish(topic, item.data, tenant=tenant, headers=item.headers)
    except (TopicError, ValueError, EncodeError) as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    except WouldBlock as exc:
        raise HttpError(503, "overloaded", str(exc), {"Retry-After": "1"}) from None
    except StreamError as exc:
        raise HttpError(503, exc.code.value, exc.message, {"Retry-After": "1"}) from None
    except ClosedResourceError:
        raise HttpError(503, "unavailable", "the hub is closed", {"Retry-After": "1"}) from None
    return JSONResponse({"topic": event.topic, "offset": event.offset}, status_code=201)


def read_topic(edge: _Edge, request: Request) -> tuple[HubSubscription, WireFormat]:
    """Subscribe for ``GET /v1/topics/{pattern}``; the caller pumps it."""
    principal = edge.principal(request, Scope.TOPICS_READ)
    q = request.query_params
    tenant = _tenant(principal, q.get("tenant"))
    pattern = request.path_params["pattern"]
    try:
        from_offset: int | None = None
        if q.get("from_offset") is not None or request.headers.get("last-event-id"):
            from_offset = parse_resume_point(
                q.get("from_offset"), request.headers.get("last-event-id")
            )
        buffer = int(q.get("buffer", "256"))
    except ValueError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    if not 1 <= buffer <= MAX_TOPIC_BUFFER:
        raise HttpError(400, "bad_request", f"buffer must be 1..{MAX_TOPIC_BUFFER}")
    try:
        sub = edge.hub.subscribe(
            pattern, tenant=tenant, filter=q.get("filter"), buffer=buffer, from_offset=from_offset
        )
    except FilterError as exc:
        raise HttpError(400, "bad_request", f"bad filter: {exc}") from None
    except (TopicError, ValueError) as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    except StreamError as exc:
        status = 410 if exc.code.value == "history_gone" else 503
        raise HttpError(status, exc.code.value, exc.message) from None
    except ClosedResourceError:
        raise HttpError(503, "unavailable", "the hub is closed") from None
    return sub, WireFormat.negotiate(request.headers.get("accept"))
