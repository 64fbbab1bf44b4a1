"""Provider outcomes to stream codes (icefloe.llm.errors): the table of its docstring."""

from __future__ import annotations

import pytest

from icefloe import ErrorCode
from icefloe.llm import errors


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, ErrorCode.RATE_LIMITED),
        (408, ErrorCode.TIMEOUT),
        (500, ErrorCode.UNAVAILABLE),
        (503, ErrorCode.UNAVAILABLE),
        (529, ErrorCode.UNAVAILABLE),
        (400, ErrorCode.FAILED),
        (401, ErrorCode.FAILED),
        (403, ErrorCode.FAILED),
        (404, ErrorCode.FAILED),
        (422, ErrorCode.FAILED),
    ],
)
def test_http_statuses(status: int, code: ErrorCode) -> None:
    assert errors.code_for_status(status) is code
    error = errors.http_error("openai", status, "the provider's own text")
    assert error.code is code
    assert error.message == f"openai answered HTTP {status}"


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("rate_limit_error", ErrorCode.RATE_LIMITED),
        ("rate_limit_exceeded", ErrorCode.RATE_LIMITED),
        ("overloaded_error", ErrorCode.UNAVAILABLE),
        ("api_error", ErrorCode.UNAVAILABLE),
        ("server_error", ErrorCode.UNAVAILABLE),
        ("timeout_error", ErrorCode.TIMEOUT),
        ("invalid_request_error", ErrorCode.FAILED),
        (None, ErrorCode.FAILED),
    ],
)
def test_error_event_kinds(kind: str | None, code: ErrorCode) -> None:
    error = errors.error_event("anthropic", kind, "secret account detail")
    assert error.code is code
    assert "secret" not in error.message
    assert error.message == f"anthropic stream error: {kind or 'unknown'}"


def test_transport_outcomes() -> None:
    assert errors.connection_lost("openai").code is ErrorCode.UNAVAILABLE
    assert errors.truncated("openai").code is ErrorCode.UNAVAILABLE
    assert errors.no_answer("openai").code is ErrorCode.TIMEOUT
    assert errors.malformed("openai").code is ErrorCode.FAILED
