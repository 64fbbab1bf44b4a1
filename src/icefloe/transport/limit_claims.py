"""A principal's own edge limits, read from a token's claims.

:func:`limits_from_claims` is the one place an authenticator turns a limits
claim (by default :data:`~icefloe.transport.limits.LIMITS_CLAIM`,
``icefloe_limits``) into :class:`~icefloe.transport.limits.PrincipalLimits`.
The claim has the shape of a key file's ``limits`` object, parsed by the same
:func:`~icefloe.transport.limits.parse_principal_limits`, so a token and a key
file mean the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icefloe.transport.limits import LIMITS_CLAIM, PrincipalLimits, parse_principal_limits
from icefloe.transport.principals import AuthError

__all__ = ["limits_from_claims"]


def limits_from_claims(
    claims: Mapping[str, Any], claim: str = LIMITS_CLAIM
) -> PrincipalLimits | None:
    """The limits in ``claims[claim]``, or ``None`` if the token carries none.

    :raises AuthError: 401 if the claim is present but malformed: a signed
        token that asks for limits it cannot have is refused, not quietly
        given the edge-wide ones.
    """
    raw = claims.get(claim)
    if raw is None:
        return None
    try:
        return parse_principal_limits(raw, f"token claim {claim!r}")
    except ValueError:
        # A fixed reason, as for every JWT failure: no token content in a 401.
        reason = f"token claim {claim!r} is not a valid limits object"
        raise AuthError.unauthorized(reason) from None
