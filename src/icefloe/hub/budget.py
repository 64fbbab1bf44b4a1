"""The arithmetic of the hub's budgets: a tenant's own limit and its fair share.

Internal to the hub; pure functions, no state. The registry
(:mod:`icefloe.hub.registry`) asks them whether to admit a tenant's new
topic or subscriber, after evicting what idle topics it can. The policy
(see :mod:`icefloe.hub.limits`):

* a tenant at its own limit is refused, whatever the others hold (for
  bytes: with less than one largest event of its budget left);
* at a global limit, only a tenant holding at least its *fair share* (the
  global limit divided by the tenants present) is refused. By pigeonhole,
  whenever the hub is at a global limit at least one tenant holds its fair
  share, so a full hub always has someone to refuse, and that someone is
  never a tenant below its share.
"""

from __future__ import annotations

__all__ = ["fair_share", "no_room", "over_limit", "over_share"]


def over_limit(held: int, limit: int | None) -> bool:
    """Whether ``held`` has reached ``limit`` (None: no limit)."""
    return limit is not None and held >= limit


def no_room(held: int, limit: int | None, unit: int) -> bool:
    """Whether ``held`` leaves less than ``unit`` of ``limit`` (None: no limit).

    A tenant's histories are trimmed to its byte budget, so they rarely
    reach it exactly: the budget is spent when not one more largest event
    fits.
    """
    return limit is not None and held + unit > limit


def fair_share(limit: int, tenants: int) -> int:
    """A tenant's fair share of ``limit`` among ``tenants`` (at least 1 each)."""
    return max(1, limit // max(1, tenants))


def over_share(held: int, total: int, limit: int | None, tenants: int) -> bool:
    """Whether a tenant holding ``held`` of ``total`` is refused at a global ``limit``.

    Only when the hub is at the limit, and only a tenant at or past its fair share.
    """
    return limit is not None and total >= limit and held >= fair_share(limit, tenants)
