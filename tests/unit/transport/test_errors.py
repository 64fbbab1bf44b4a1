"""``HttpError`` and ``error_response``: a code in, the table's status out."""

from __future__ import annotations

import json

import pytest

from icefloe.core.wire_errors import WIRE_ERRORS, ErrorCode
from icefloe.transport.auth import AuthError
from icefloe.transport.errors import HttpError, error_response


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_http_error_takes_its_status_from_the_table(code: ErrorCode) -> None:
    exc = HttpError(code, "why")
    assert (exc.status, exc.code, exc.message, exc.headers) == (
        WIRE_ERRORS[code].status,
        code,
        "why",
        {},
    )


def test_http_error_response_is_the_json_error_body_with_headers() -> None:
    response = HttpError(ErrorCode.RATE_LIMITED, "slow down", {"Retry-After": "3"}).response()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert json.loads(bytes(response.body)) == {
        "error": {"code": "rate_limited", "message": "slow down"}
    }


def test_http_error_accepts_a_code_string_only_if_the_table_has_it() -> None:
    assert HttpError(ErrorCode("conflict"), "x").status == 409
    with pytest.raises(ValueError):
        HttpError("too_many_connections", "x")  # type: ignore[arg-type]


def test_error_response_status_follows_the_code() -> None:
    response = error_response(ErrorCode.HISTORY_GONE, "gone")
    assert response.status_code == 410
    assert json.loads(bytes(response.body))["error"]["code"] == "history_gone"


def test_auth_errors_carry_table_codes() -> None:
    assert AuthError.unauthorized("x").code is ErrorCode.UNAUTHORIZED
    assert AuthError.forbidden("x").code is ErrorCode.FORBIDDEN
    assert WIRE_ERRORS[AuthError.unauthorized("x").code].status == 401
