"""Provider failures as stream terminal codes.

An adapter ends its stream by raising :class:`~icefloe.StreamError` with one
of these codes (the runner makes it the stream's terminal code). The codes say
what a client can do about it:

=================  ==============================================================
code               provider outcome
=================  ==============================================================
``rate_limited``   HTTP 429, or a rate-limit error event mid-stream: retry later
``unavailable``    HTTP 5xx (Anthropic's 529 ``overloaded`` included), an
                   overloaded or server error event mid-stream, the connection
                   lost, or a stream that ended before its finish: retry
``timeout``        HTTP 408, or the SDK client's timeout expired
``failed``         any other 4xx (bad request, bad key, unknown model), an error
                   event of another kind, or a malformed stream: a retry will not help
``too_large``      the reply passed the adapter's ``max_reply_chars``
=================  ==============================================================

Messages name the provider and the HTTP status or error kind only: the
provider's own error text (which may carry account details) is logged, never
sent to readers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Final

from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

__all__ = [
    "code_for_kind",
    "code_for_status",
    "connection_lost",
    "error_event",
    "http_error",
    "malformed",
    "no_answer",
    "sdk_errors",
    "truncated",
]

log = logging.getLogger("icefloe.llm")

#: error kinds (OpenAI ``code``/``type``, Anthropic ``error.type``) by code
_KINDS: Final[dict[str, ErrorCode]] = {
    "rate_limit_error": ErrorCode.RATE_LIMITED,
    "rate_limit_exceeded": ErrorCode.RATE_LIMITED,
    "overloaded_error": ErrorCode.UNAVAILABLE,
    "api_error": ErrorCode.UNAVAILABLE,
    "server_error": ErrorCode.UNAVAILABLE,
    "timeout_error": ErrorCode.TIMEOUT,
}


def code_for_status(status: int) -> ErrorCode:
    if status == 429:
        return ErrorCode.RATE_LIMITED
    if status == 408:
        return ErrorCode.TIMEOUT
    if status >= 500:
        return ErrorCode.UNAVAILABLE
    return ErrorCode.FAILED


def code_for_kind(kind: str | None) -> ErrorCode:
    return _KINDS.get(kind or "", ErrorCode.FAILED)


def http_error(provider: str, status: int, detail: object) -> StreamError:
    log.warning("%s answered HTTP %d: %s", provider, status, detail)
    return StreamError(code_for_status(status), f"{provider} answered HTTP {status}")


def error_event(provider: str, kind: str | None, detail: object) -> StreamError:
    log.warning("%s stream error %s: %s", provider, kind, detail)
    return StreamError(code_for_kind(kind), f"{provider} stream error: {kind or 'unknown'}")


def connection_lost(provider: str) -> StreamError:
    return StreamError(ErrorCode.UNAVAILABLE, f"{provider}: connection lost")


def no_answer(provider: str) -> StreamError:
    return StreamError(ErrorCode.TIMEOUT, f"{provider}: no answer within the client's timeout")


def malformed(provider: str) -> StreamError:
    return StreamError(ErrorCode.FAILED, f"{provider}: malformed stream")


def truncated(provider: str) -> StreamError:
    return StreamError(ErrorCode.UNAVAILABLE, f"{provider}: the stream ended before its finish")


@contextmanager
def sdk_errors(
    provider: str, sdk: ModuleType, error_kind: Callable[[object], str | None]
) -> Iterator[None]:
    """The exceptions of a provider SDK as :class:`StreamError` codes.

    ``sdk`` is the SDK module the adapter imported (``openai``, ``anthropic``):
    both SDKs are generated alike and raise the same exception classes, so
    this module names none of them and imports no SDK. An error that arrives
    inside a 200 stream is an ``APIStatusError`` with that status (Anthropic)
    or a bare ``APIError`` (OpenAI); ``error_kind`` reads its kind from the
    error body, whose shape is the provider's own.
    """
    try:
        yield
    except sdk.APITimeoutError as exc:
        raise no_answer(provider) from exc
    except sdk.APIConnectionError as exc:
        raise connection_lost(provider) from exc
    except sdk.APIStatusError as exc:
        if exc.status_code >= 400:
            raise http_error(provider, exc.status_code, exc.message) from exc
        raise error_event(provider, error_kind(exc.body), exc.message) from exc
    except sdk.APIError as exc:
        raise error_event(provider, error_kind(exc.body), exc.message) from exc
    except json.JSONDecodeError as exc:
        raise malformed(provider) from exc
