"""Error responses of the HTTP edge: always ``{"error": {"code", "message"}}``.

``HttpError`` is raised by handlers and turned into a response in one place;
its status comes from the code's row in the wire-error table
(:data:`~icefloe.core.wire_errors.WIRE_ERRORS`), so a raise site names a
code and never a status. Internal details never reach the client (a 500
says only "internal error").
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from icefloe.core.wire_errors import ErrorCode, http_status
from icefloe.exceptions import IcefloeError

__all__ = ["HttpError", "error_response"]


class HttpError(IcefloeError):
    """A request (or WebSocket op) refused with a wire code.

    ``status`` is the code's HTTP status from the table; ``headers`` go on
    the HTTP response (e.g. ``Retry-After``).
    """

    def __init__(
        self, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.code = ErrorCode(code)
        self.status = http_status(self.code)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{self.status} {self.code.value}: {message}")

    def response(self) -> JSONResponse:
        """The HTTP response answering this error."""
        return error_response(self.code, self.message, self.headers)


def error_response(
    code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": {"code", "message"}}`` with the code's HTTP status."""
    return JSONResponse(
        {"error": {"code": code.value, "message": message}},
        status_code=http_status(code),
        headers=headers,
    )
