"""Argument checks of the hub's public calls: names, ranges, headers, reliability.

Each raises ``ValueError`` naming the argument and what it should be; the
hub runs them before it changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from icefloe.core.messages import NO_META
from icefloe.core.reliability import Reliability
from icefloe.hub.limits import HubLimits

__all__ = [
    "MAX_ID_LENGTH",
    "check_headers",
    "check_name",
    "check_range",
    "check_reliability",
    "refuse_size",
]

#: the longest subscriber id or tenant name accepted
MAX_ID_LENGTH = 256

# A tuple, not a union: isinstance with ``a | b`` builds the union on every call.
_HEADER_TYPES = (str, int, float, bool)


def check_name(what: str, value: object) -> None:
    """``value`` must be a non-empty str of at most :data:`MAX_ID_LENGTH` characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{what} must be a non-empty str of at most {MAX_ID_LENGTH} characters, got {value!r}"
        )


def check_range(what: str, value: object, low: int, high: int | None) -> None:
    """``value`` must be an int (not a bool) from ``low`` to ``high`` (None: no bound)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{what} must be an int {bound}, got {value!r}")


def refuse_size(size: int, limits: HubLimits) -> NoReturn:
    """Refuse an event of ``size`` bytes, over ``max_event_bytes``."""
    raise ValueError(f"an event of {size} bytes exceeds max_event_bytes ({limits.max_event_bytes})")


def check_reliability(value: object) -> Reliability:
    """``value`` as a :class:`Reliability`; it may be given as its string value."""
    return Reliability.parse(value)


def check_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``headers`` (the shared empty dict if none): str names, scalar values."""
    if headers is None:
        return NO_META
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must be a mapping, got {type(headers).__name__}")
    if not headers:
        return NO_META
    clean: dict[str, Any] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ValueError(f"header names must be str, got {name!r}")
        if value is not None and not isinstance(value, _HEADER_TYPES):
            raise ValueError(
                f"header {name!r} must be a str, number, bool or None, got {type(value).__name__}"
            )
        clean[name] = value
    return clean
