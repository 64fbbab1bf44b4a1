"""Signing keys from an identity provider's JWKS URL: :class:`JwksKeys`.

Auth0, Keycloak, Cognito, Entra ID and Okta publish the public keys their
tokens are signed with as a JSON Web Key Set, and rotate them: a token
signed with a new ``kid`` appears before any cache expires. PyJWT's
:class:`jwt.PyJWKClient` fetches and parses the set (http(s) only, no
redirects, a timeout, signing keys only); this module decides *when*.

Why the cache lives here and not in ``PyJWKClient``: the client decides
inside a blocking call whether to fetch, and an authenticator runs on the
server's event loop, where one slow identity provider would stall every
connection. So the loop only ever reads :meth:`JwksKeys.key`, which does no
I/O, and :meth:`JwksKeys.load` (awaited by the edge before a request is
authenticated) runs the fetch in a worker thread when one is due:

* the set was never fetched, or is older than ``lifespan_s`` (300 s);
* the token names a ``kid`` the set lacks: key rotation.

At most one fetch runs at a time, and attempts are at least
``refresh_cooldown_s`` (30 s) apart, so tokens with made-up ``kid`` values
cannot turn the server into a fetch loop against the provider. A failed
fetch keeps the last good keys (an outage of the provider does not log
everyone out) and is retried after the cooldown. At most ``max_keys``
(100) keys are kept.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import jwt
from jwt import PyJWK, PyJWKClient

from icefloe.transport.principals import AuthError

__all__ = ["JwksKeys"]


class JwksKeys:
    """The signing keys published at ``url``, keyed by ``kid``.

    ``timeout_s`` bounds each fetch (default 5 s); ``lifespan_s``,
    ``refresh_cooldown_s`` and ``max_keys`` are described in the module
    docstring. ``clock`` is injectable for tests.

    :raises ValueError: for a URL that is not http(s), or a limit out of range.
    """

    __slots__ = (
        "_attempted_at",
        "_client",
        "_clock",
        "_cooldown",
        "_failure",
        "_fetched_at",
        "_keys",
        "_lifespan",
        "_lock",
        "_max_keys",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        lifespan_s: float = 300.0,
        refresh_cooldown_s: float = 30.0,
        max_keys: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value, low in (
            ("timeout_s", timeout_s, 0.0),
            ("lifespan_s", lifespan_s, 0.0),
        ):
            if isinstance(value, bool) or not (math.isfinite(value) and value > low):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(refresh_cooldown_s, bool) or not (
            math.isfinite(refresh_cooldown_s) and refresh_cooldown_s >= 0
        ):
            raise ValueError(f"refresh_cooldown_s must be >= 0, got {refresh_cooldown_s!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an int >= 1, got {max_keys!r}")
        try:
            # Our cache decides when to fetch, so the client's own is off.
            self._client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        except jwt.PyJWKClientError as exc:
            raise ValueError(str(exc)) from None
        self.url = url
        self._lifespan = float(lifespan_s)
        self._cooldown = float(refresh_cooldown_s)
        self._max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._failure: str | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JwksKeys({self.url!r}, keys={len(self._keys)})"

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every key held now."""
        return frozenset(self._keys)

    def fetch_due(self, kid: str | None) -> bool:
        """Whether :meth:`load` would fetch for a token naming ``kid``."""
        now = self._clock()
        if self._attempted_at is not None and now - self._attempted_at < self._cooldown:
            return False
        if self._fetched_at is None or now - self._fetched_at >= self._lifespan:
            return True
        return kid is not None and kid not in self._keys

    async def load(self, kid: str | None = None) -> None:
        """Fetch the set in a worker thread if :meth:`fetch_due`; never raises.

        A failure is kept and reported by :meth:`key` as a 401.
        """
        if not self.fetch_due(kid):
            return
        async with self._lock:
            # Another request may have fetched while this one waited.
            if not self.fetch_due(kid):
                return
            self._attempted_at = self._clock()
            try:
                keys = await asyncio.to_thread(self._client.get_signing_keys, True)
            except jwt.PyJWKClientConnectionError:
                self._failure = "the identity provider's JWKS endpoint could not be reached"
                return
            except (jwt.PyJWKClientError, jwt.PyJWKSetError):
                self._failure = "the identity provider's JWKS endpoint returned no usable keys"
                return
            # _attempted_at, not now: a fetch that took long is no fresher.
            self._fetched_at = self._attempted_at
            self._failure = None
            fresh: dict[str, PyJWK] = {}
            for key in keys:
                if key.key_id is not None and len(fresh) < self._max_keys:
                    fresh[key.key_id] = key
            self._keys = fresh

    def key(self, kid: object) -> PyJWK:
        """The key named ``kid``, from what is held now (no I/O).

        :raises AuthError: 401 if the token names no ``kid``, the key is not
            in the set, or no set could be fetched yet.
        """
        if not isinstance(kid, str) or not kid:
            raise AuthError.unauthorized("token header lacks a 'kid'")
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._failure is not None:
            raise AuthError.unauthorized(f"token signing key unavailable: {self._failure}")
        if self._fetched_at is None:
            raise AuthError.unauthorized("token signing keys are not loaded yet")
        raise AuthError.unauthorized("token signing key is not known")
