"""Pub/Sub push: :class:`PushSource`, a Source fed by ``POST /v1/pubsub/push``.

A push subscription makes Pub/Sub POST each message to an HTTPS endpoint,
so a serverless deployment (Cloud Run) receives without holding a streaming
pull. The endpoint (:meth:`PushSource.endpoint`, registered by
``create_app(flow, pubsub_push=source)``) takes the push envelope::

    {"message": {"data": "<base64>", "attributes": {...}, "messageId": "...",
                 "orderingKey": "...", "publishTime": "..."},
     "subscription": "projects/P/subscriptions/S", "deliveryAttempt": 1}

turns it into an :class:`~icefloe.connectors.protocol.Inbound` (the same
mapping as :mod:`icefloe.connectors.pubsub`: ``orderingKey`` is the record
key, attributes the headers in name order) and holds the request open until
the consumer acks it (``204``: Pub/Sub counts any 2xx as an ack) or nacks it
(``503 unavailable``: Pub/Sub redelivers after its backoff). The same 503
answers when ``max_in_flight`` messages are already held (Pub/Sub slows its
push rate on it), when the consumer has not answered within
``ack_timeout_s``, and while the source is not open.

**Authentication** (:class:`PushAuth`, recommended): Pub/Sub signs each push
with a Google OIDC token for the subscription's service account. The token
is checked against Google's keys (fetched by
:class:`~icefloe.transport.jwks.JwksKeys`, off the event loop), for
signature, expiry, issuer and ``audience``; a missing or invalid token is a
401, a valid token of another service account (``email``) or with
``email_verified`` false a 403. A body that is not a push envelope is a 400,
one over ``max_body_bytes`` a 413. Bodies are in the wire error format.

Needs the ``server`` extra (Starlette, PyJWT), not google-cloud-pubsub.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import jwt
from starlette.requests import Request
from starlette.responses import Response

from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.pubsub_position import PubSubPosition
from icefloe.connectors.record import Record
from icefloe.core.wire_errors import ErrorCode
from icefloe.transport.errors import error_response
from icefloe.transport.jwks import JwksKeys
from icefloe.transport.principals import AuthError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "GOOGLE_ISSUERS",
    "GOOGLE_JWKS_URL",
    "PUSH_PATH",
    "PushAuth",
    "PushSource",
]

#: the route the push endpoint is served at
PUSH_PATH: Final = "/v1/pubsub/push"
#: where Google publishes the keys its OIDC tokens are signed with
GOOGLE_JWKS_URL: Final = "https://www.googleapis.com/oauth2/v3/certs"
#: the ``iss`` values of Google OIDC tokens
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")
#: a 10 MB message in base64 plus its envelope fits
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PushAuth:
    """Who may push: tokens for ``audience`` signed by Google for ``service_account``.

    ``audience`` is what the push subscription sets (by default its endpoint
    URL); ``service_account`` the email of the account it pushes as.
    ``jwks_url`` and ``issuers`` default to Google's (tests point them at a
    local identity provider).
    """

    audience: str
    service_account: str
    jwks_url: str = GOOGLE_JWKS_URL
    issuers: tuple[str, ...] = GOOGLE_ISSUERS


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Held(NamedTuple):
    inbound: Inbound
    #: True: acked, False: nacked (with the reason in the tuple's second item)
    answer: asyncio.Future[tuple[bool, str]]


class PushSource:
    """Messages pushed to :data:`PUSH_PATH`, as a :class:`~icefloe.connectors.protocol.Source`.

    ``subscription``, when given, is the only subscription accepted (403 for
    another). ``auth=None`` accepts unauthenticated pushes: only behind a
    private ingress.

    :raises ValueError: for a limit out of range or a JWKS URL that is not http(s).
    """

    def __init__(
        self,
        subscription: str | None = None,
        *,
        auth: PushAuth | None = None,
        max_in_flight: int = 1000,
        ack_timeout_s: float = 60.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        for name, value in (("max_in_flight", max_in_flight), ("max_body_bytes", max_body_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(ack_timeout_s, bool) or not (
            math.isfinite(ack_timeout_s) and ack_timeout_s > 0
        ):
            raise ValueError(f"ack_timeout_s must be a number > 0, got {ack_timeout_s!r}")
        self._subscription = subscription
        self._auth = None if auth is None else (auth, JwksKeys(auth.jwks_url))
        self._max_in_flight = max_in_flight
        self._ack_timeout = float(ack_timeout_s)
        self._max_body = max_body_bytes
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue(max_in_flight)
        self._held: dict[str, _Held] = {}
        self._ids = itertools.count(1)
        self._open = False
        #: set by close(), so that a consumer waiting in __anext__ stops
        self._closed = asyncio.Event()
        self._received = self._acked = self._nacked = 0

    @property
    def name(self) -> str:
        return f"pubsub-push:{self._subscription or '*'}"

    async def __aenter__(self) -> PushSource:
        self._open = True
        self._closed.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting pushes; held ones are answered 503 (Pub/Sub redelivers)."""
        self._open = False
        self._closed.set()
        for held in list(self._held.values()):
            if not held.answer.done():
                held.answer.set_result((False, "the push source closed"))
        self._held.clear()

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self

    async def __anext__(self) -> Inbound:
        if not self._open:
            raise StopAsyncIteration
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((getter, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        raise StopAsyncIteration

    async def ack(self, inbound: Inbound) -> None:
        """Answer the push 204: Pub/Sub takes it as acked. A no-op once it timed out."""
        if self._answer(inbound, (True, "")):
            self._acked += 1

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Answer the push 503 with ``reason``: Pub/Sub redelivers it."""
        if self._answer(inbound, (False, reason)):
            self._nacked += 1

    def _answer(self, inbound: Inbound, answer: tuple[bool, str]) -> bool:
        if not isinstance(inbound.position, PubSubPosition):
            raise ValueError("inbound.position is not a PubSubPosition from this source")
        held = self._held.pop(inbound.position.ack_id, None)
        if held is None or held.answer.done():
            return False  # answered already, or the push request gave up
        held.answer.set_result(answer)
        return True

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(self._received, self._acked, self._nacked, len(self._held), 0)

    # -- the endpoint ----------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """``POST /v1/pubsub/push`` (see the module docstring)."""
        try:
            if self._auth is not None:
                await _authenticate(*self._auth, request.headers.get("authorization"))
            inbound = _inbound(await self._body(request), next(self._ids))
        except AuthError as exc:
            return error_response(exc.code, exc.message)
        except _Refused as exc:
            return error_response(exc.code, exc.message)
        if self._subscription is not None and inbound.partition != self._subscription:
            return error_response(
                ErrorCode.FORBIDDEN, "the envelope's subscription is not the one configured"
            )
        if not self._open:
            return error_response(ErrorCode.UNAVAILABLE, "the push source is not running")
        if len(self._held) >= self._max_in_flight:
            return error_response(
                ErrorCode.UNAVAILABLE, f"max_in_flight ({self._max_in_flight}) messages are held"
            )
        held = _Held(inbound, asyncio.get_running_loop().create_future())
        try:
            # Full only with entries whose push gave up and the consumer has not read yet.
            self._queue.put_nowait(inbound)
        except asyncio.QueueFull:
            return error_response(
                ErrorCode.UNAVAILABLE, f"max_in_flight ({self._max_in_flight}) messages are queued"
            )
        self._held[inbound.position.ack_id] = held
        self._received += 1
        try:
            acked, reason = await asyncio.wait_for(asyncio.shield(held.answer), self._ack_timeout)
        except TimeoutError:
            return error_response(
                ErrorCode.UNAVAILABLE, f"not acked within ack_timeout_s ({self._ack_timeout:g})"
            )
        finally:
            # Gave up (timeout, or the client left): a late ack is a no-op.
            if not held.answer.done():
                held.answer.cancel()
            self._held.pop(inbound.position.ack_id, None)
        if acked:
            return Response(status_code=204)
        return error_response(ErrorCode.UNAVAILABLE, f"nacked: {reason}")

    async def _body(self, request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise _Refused(ErrorCode.TOO_LARGE, f"body over max_body_bytes ({self._max_body})")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > self._max_body:
                raise _Refused(ErrorCode.TOO_LARGE, f"body over max_body_bytes ({self._max_body})")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Refused(ErrorCode.BAD_REQUEST, "body is not JSON") from None


async def _authenticate(auth: PushAuth, keys: JwksKeys, header: str | None) -> None:
    """Check a push's OIDC token; ``AuthError`` 401 / 403 (see the module docstring)."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError.unauthorized("push needs an 'Authorization: Bearer' OIDC token")
    token = token.strip()
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        raise AuthError.unauthorized("push token is not a JWT") from None
    await keys.load(kid if isinstance(kid, str) else None)
    key = keys.key(kid)
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=auth.audience,
            issuer=list(auth.issuers),
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise AuthError.unauthorized(f"push token refused: {exc}") from None
    if claims.get("email") != auth.service_account:
        raise AuthError.forbidden("push token is not for the configured service_account")
    if claims.get("email_verified") is not True:
        raise AuthError.forbidden("push token's email is not verified")


def _inbound(envelope: Any, local_id: int) -> Inbound:
    """The Inbound a push envelope carries; ``_Refused`` 400 naming what is wrong."""
    if not isinstance(envelope, Mapping):
        raise _bad("the body must be a JSON object")
    message = envelope.get("message")
    subscription = envelope.get("subscription")
    if not isinstance(message, Mapping):
        raise _bad("'message' must be an object")
    if not isinstance(subscription, str) or not subscription:
        raise _bad("'subscription' must be a non-empty string")
    message_id = message.get("messageId", message.get("message_id"))
    if not isinstance(message_id, str) or not message_id:
        raise _bad("'message.messageId' must be a non-empty string")
    data = message.get("data", "")
    if not isinstance(data, str):
        raise _bad("'message.data' must be a base64 string")
    try:
        value = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise _bad("'message.data' is not valid base64") from None
    attributes = message.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise _bad("'message.attributes' must map strings to strings")
    key = message.get("orderingKey", "")
    if not isinstance(key, str):
        raise _bad("'message.orderingKey' must be a string")
    attempt = envelope.get("deliveryAttempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise _bad("'deliveryAttempt' must be an int >= 1")
    record = Record(
        key.encode() if key else None,
        value,
        tuple((name, attributes[name].encode()) for name in sorted(attributes)),
    )
    return Inbound(record, subscription, PubSubPosition(message_id, f"push-{local_id}"), attempt)


def _bad(message: str) -> _Refused:
    return _Refused(ErrorCode.BAD_REQUEST, f"not a Pub/Sub push envelope: {message}")
