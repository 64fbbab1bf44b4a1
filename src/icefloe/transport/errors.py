"""Error responses of the HTTP edge: always ``{"error": {"code", "message"}}``.

``HttpError`` is raised by handlers and turned into a response in one place;
internal details never reach the client (a 500 says only "internal error").
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from icefloe.core.wire_errors import ErrorCode, http_status
from icefloe.exceptions import IcefloeError

__all__ = ["HttpError", "error_response"]


class HttpError(IcefloeError):
    """A request that gets a 4xx/5xx answer with a wire code; the status is the code's
    (:data:`~icefloe.core.wire_errors.WIRE_ERRORS`)."""

    def __init__(
        self, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = http_status(code)
        self.code = code
        self.message = message
        self.headers: Mapping[str, str] = headers or {}
        super().__init__(f"{self.status} {code.value}: {message}")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )
