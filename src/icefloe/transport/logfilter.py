"""Keep hostile clients from flooding the server's log.

Three floods, one module:

* uvicorn's WebSocket layer logs a text frame holding invalid UTF-8 at ERROR,
  with a full traceback, before it closes the connection with 1007. A client
  can send such frames in a loop, so each would cost a traceback in the log.
  The filter keeps the record (operators still see that it happened) as one
  INFO line without the traceback.
* A refused WebSocket handshake (bad Origin or Host, bad credentials, a limit)
  is an expected event a client can repeat at will. uvicorn's
  websockets-sansio layer logs ERROR "ASGI callable returned without
  completing handshake" after the app answers the handshake with an HTTP
  response (it never counts that response as completing it); the filter
  drops that line for handshakes the edge refused on purpose
  (:func:`mark_handshake_refused`), and :class:`RefusalLog` logs the
  refusals themselves at INFO, at most one line per interval with a count.
* A client cut for reading too slowly (an HTTP streaming response whose
  write outlived ``send_timeout_s``, a WebSocket whose send did) is an
  expected event too, and as easy to repeat: stall the socket. The HTTP cut
  returns from the app with the response unfinished, which uvicorn logs at
  ERROR ("ASGI callable returned without completing response"); the filter
  drops that line for responses cut on purpose (:func:`mark_response_cut`),
  and :data:`CUTS` logs the cuts of both kinds at INFO, aggregated like the
  refusals.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable

__all__ = [
    "CUTS",
    "RefusalLog",
    "install_protocol_log_filter",
    "mark_handshake_refused",
    "mark_response_cut",
]

#: the message uvicorn's websockets-sansio layer logs for a bad text frame
_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."
#: the message uvicorn logs when an app returns before accepting or closing
_NOT_COMPLETED = "ASGI callable returned without completing handshake."
#: the message uvicorn's HTTP layers log when an app returns mid-response
_RESPONSE_NOT_COMPLETED = "ASGI callable returned without completing response."

# Set in the connection's own task (uvicorn runs each connection's app call in
# a task of its own, and logs the line above from that task after the call),
# so it marks exactly the connection the edge refused.
_refused: contextvars.ContextVar[bool] = contextvars.ContextVar("icefloe_ws_refused", default=False)
# The same, for an HTTP response the edge cut (a slow client).
_cut: contextvars.ContextVar[bool] = contextvars.ContextVar("icefloe_http_cut", default=False)


def mark_handshake_refused() -> None:
    """The current connection's handshake was refused on purpose: uvicorn's
    "without completing handshake" ERROR for it is dropped."""
    _refused.set(True)


def mark_response_cut() -> None:
    """The current connection's response was cut on purpose (a slow client):
    uvicorn's "without completing response" ERROR for it is dropped. Call it
    from the task that runs the app (not from a task the app started).

    It installs the filter too: a streaming response served from a user's own
    app (:func:`icefloe.transport.sse.sse_response`) may never have called
    ``create_app``, and uvicorn logs the line only after the app returns."""
    install_protocol_log_filter()
    _cut.set(True)


class _ClientProtocolErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _INVALID_UTF8:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            record.msg = "WebSocket text frame with invalid UTF-8: closed 1007"
        elif record.msg == _NOT_COMPLETED and _refused.get():
            return False  # counted by RefusalLog instead
        elif record.msg == _RESPONSE_NOT_COMPLETED and _cut.get():
            return False  # counted by CUTS instead
        return True


_FILTER = _ClientProtocolErrors()


def install_protocol_log_filter(logger_name: str = "uvicorn.error") -> None:
    """Install the filter on ``logger_name`` (idempotent)."""
    logger = logging.getLogger(logger_name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


class RefusalLog:
    """Expected events a client can repeat at will (refusals, slow-client
    cuts) logged at INFO, aggregated: at most one line per ``interval_s``.

    The first refusal after a quiet interval is logged at once; those within
    the interval are counted and logged together (with the last reason) when
    it ends, from the running event loop, or with the next refusal after it.
    """

    def __init__(
        self,
        logger_name: str,
        what: str,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logging.getLogger(logger_name)
        self._what = what
        self._interval = interval_s
        self._clock = clock
        self._count = 0
        self._last_reason = ""
        self._logged_at = -float("inf")
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def refused(self, reason: str) -> None:
        """Count one refusal; log now if the last line is an interval old."""
        self._count += 1
        self._last_reason = reason
        now = self._clock()
        wait = self._logged_at + self._interval - now
        if wait <= 0:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next refusal after the interval logs these
        if self._flush_loop is not loop:  # none scheduled (or on a loop now gone)
            self._flush_loop = loop
            loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Log the refusals counted since the last line, if any."""
        self._flush_loop = None
        if self._count:
            self._logger.info("%s: %d (last: %s)", self._what, self._count, self._last_reason)
            self._count = 0
            self._logged_at = self._clock()


#: slow clients cut (HTTP ``slow_client``, WebSocket 1008 ``slow_consumer``),
#: logged at INFO at most once a second with a count (logger ``icefloe.edge``)
CUTS = RefusalLog("icefloe.edge", "slow clients cut")
