"""Stream a :class:`~icefloe.Subscription` from your own Starlette or FastAPI route.

What sse-starlette users look for, with the edge's own pump
(:class:`~icefloe.transport.streaming.StreamPump`) underneath, so a route of
yours behaves as ``GET /v1/streams/{id}`` does: ``id:`` lines and the
``retry:`` hint, events ``chunk`` / ``end`` / ``error``, heartbeats while no
token flows, a client that does not drain cut after the send timeout, the
reader closed when the client goes away (an owner reader, from
``flow.stream``, cancels its run then)::

    @app.get("/chat/{stream_id}")
    async def chat(request: Request, stream_id: str) -> Response:
        return sse_response(request, flow.subscribe(stream_id, resume_point(request)))

:func:`resume_point` reads the resume headers (``Last-Event-ID``, or
``?from_seq=``) as the edge does. docs/embedding.md has the whole recipe.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from icefloe.runtime.subscription import Subscription
from icefloe.transport.edge import PumpResponse
from icefloe.transport.encoding import WireFormat, parse_resume_point
from icefloe.transport.streaming import PumpSettings, StreamPump

__all__ = ["PumpSettings", "WireFormat", "resume_point", "sse_response", "stream_response"]


def resume_point(request: Request) -> int:
    """The first seq the client wants: ``?from_seq=N``, else ``Last-Event-ID: N`` + 1, else 0.

    Pass it to ``flow.subscribe(stream_id, from_seq)``; a browser's
    EventSource sends ``Last-Event-ID`` itself when it reconnects.

    :raises HTTPException: 400 for a value that is not a non-negative integer.
    """
    try:
        return parse_resume_point(
            request.query_params.get("from_seq"), request.headers.get("last-event-id")
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def stream_response(
    request: Request,
    subscription: Subscription,
    *,
    fmt: WireFormat | None = None,
    settings: PumpSettings | None = None,
) -> Response:
    """A response streaming ``subscription`` as SSE or NDJSON.

    ``fmt`` None negotiates from ``Accept`` (NDJSON when asked for, else
    SSE); ``Accept-Encoding: gzip`` is honoured. ``settings`` sets the
    heartbeat, the send timeout, the ``retry:`` hint and a bytes/s cap
    (defaults: :class:`PumpSettings`). The response owns the subscription
    from here: it closes it when the stream ends or the client leaves.
    """
    if fmt is None:
        fmt = WireFormat.negotiate(request.headers.get("accept"))
    gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    return PumpResponse(StreamPump(subscription, fmt, settings or PumpSettings(), gzip=gzip))


def sse_response(
    request: Request, subscription: Subscription, *, settings: PumpSettings | None = None
) -> Response:
    """:func:`stream_response` as Server-Sent Events, whatever ``Accept`` says."""
    return stream_response(request, subscription, fmt=WireFormat.SSE, settings=settings)
