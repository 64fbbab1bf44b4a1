"""Keep hostile WebSocket frames from flooding the server's error log.

uvicorn's WebSocket layer logs a text frame holding invalid UTF-8 at ERROR,
with a full traceback, before it closes the connection with 1007. A client
can send such frames in a loop, so each would cost a traceback in the log: a
cheap way to flood it. The filter keeps the record (operators still see that
it happened) as one INFO line without the traceback.
"""

from __future__ import annotations

import logging

__all__ = ["install_protocol_log_filter"]

#: the message uvicorn's websockets-sansio layer logs for a bad text frame
_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class _ClientProtocolErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _INVALID_UTF8:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            record.msg = "WebSocket text frame with invalid UTF-8: closed 1007"
        return True


_FILTER = _ClientProtocolErrors()


def install_protocol_log_filter(logger_name: str = "uvicorn.error") -> None:
    """Install the filter on ``logger_name`` (idempotent)."""
    logger = logging.getLogger(logger_name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
