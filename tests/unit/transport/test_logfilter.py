"""A bad text frame costs one INFO line in the log, not an ERROR with a traceback."""

from __future__ import annotations

import logging

from icefloe.transport.logfilter import install_protocol_log_filter


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_invalid_utf8_is_one_info_line_and_other_errors_are_untouched() -> None:
    logger = logging.getLogger("icefloe.test.uvicorn.error")
    keep = Keep()
    logger.addHandler(keep)
    install_protocol_log_filter(logger.name)
    install_protocol_log_filter(logger.name)  # idempotent
    try:
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            logger.exception("Invalid UTF-8 sequence received from client.")
            logger.exception("something else broke")
    finally:
        logger.removeHandler(keep)
    assert len(logger.filters) == 1
    bad, other = keep.records
    assert (bad.levelno, bad.exc_info, bad.getMessage()) == (
        logging.INFO,
        None,
        "WebSocket text frame with invalid UTF-8: closed 1007",
    )
    assert other.levelno == logging.ERROR
    assert other.exc_info is not None
