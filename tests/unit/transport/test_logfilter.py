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


def test_the_handshake_error_is_dropped_only_for_a_refused_connection() -> None:
    import contextvars

    from icefloe.transport.logfilter import mark_handshake_refused

    logger = logging.getLogger("icefloe.test.uvicorn.handshake")
    keep = Keep()
    logger.addHandler(keep)
    install_protocol_log_filter(logger.name)
    message = "ASGI callable returned without completing handshake."

    def refused_connection() -> None:
        mark_handshake_refused()
        logger.error(message)

    try:
        # each connection runs in a context of its own, as uvicorn's tasks do
        contextvars.copy_context().run(refused_connection)
        contextvars.copy_context().run(logger.error, message)  # an app bug: kept
    finally:
        logger.removeHandler(keep)
    assert [(r.levelno, r.getMessage()) for r in keep.records] == [(logging.ERROR, message)]


def test_refusals_are_aggregated_to_one_line_per_interval() -> None:
    from icefloe.transport.logfilter import RefusalLog

    logger = logging.getLogger("icefloe.test.refusals")
    logger.setLevel(logging.INFO)
    keep = Keep()
    logger.addHandler(keep)
    now = [100.0]
    refusals = RefusalLog(logger.name, "refused", interval_s=1.0, clock=lambda: now[0])
    try:
        refusals.refused("403 a")  # the first after a quiet interval: logged at once
        for i in range(50):
            now[0] += 0.01
            refusals.refused(f"403 b{i}")
        now[0] += 1.0
        refusals.refused("400 c")  # an interval later: the 51 since the first line
        refusals.flush()  # nothing counted since
    finally:
        logger.removeHandler(keep)
    assert [(r.levelno, r.getMessage()) for r in keep.records] == [
        (logging.INFO, "refused: 1 (last: 403 a)"),
        (logging.INFO, "refused: 51 (last: 400 c)"),
    ]


def test_the_unfinished_response_error_is_dropped_only_for_a_cut_response() -> None:
    import contextvars

    from icefloe.transport.logfilter import mark_response_cut

    logger = logging.getLogger("icefloe.test.uvicorn.response")
    keep = Keep()
    logger.addHandler(keep)
    install_protocol_log_filter(logger.name)
    message = "ASGI callable returned without completing response."

    def cut_response() -> None:
        mark_response_cut()
        logger.error(message)

    try:
        contextvars.copy_context().run(cut_response)  # a slow client the edge cut
        contextvars.copy_context().run(logger.error, message)  # an app bug: kept
    finally:
        logger.removeHandler(keep)
    assert [(r.levelno, r.getMessage()) for r in keep.records] == [(logging.ERROR, message)]


def test_slow_client_cuts_share_one_aggregated_info_logger() -> None:
    from icefloe.transport.logfilter import CUTS

    logger = logging.getLogger("icefloe.edge")
    level = logger.level
    logger.setLevel(logging.INFO)
    keep = Keep()
    logger.addHandler(keep)
    CUTS.flush()  # cuts of earlier tests are not this test's
    keep.records.clear()
    try:
        for _ in range(100):
            CUTS.refused("HTTP write over 1 s (slow_client)")
        CUTS.flush()
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    # no loop running: the first may be logged at once, the rest at the flush
    assert 1 <= len(keep.records) <= 2
    assert all(r.levelno == logging.INFO for r in keep.records)
    counts = [int(r.getMessage().split(": ")[1].split(" ")[0]) for r in keep.records]
    assert sum(counts) == 100
    assert keep.records[-1].getMessage().endswith("(last: HTTP write over 1 s (slow_client))")
