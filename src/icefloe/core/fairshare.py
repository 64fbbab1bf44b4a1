"""Fair admission between tenants under load: who is over their fair share.

:class:`TenantShares` counts the runs each tenant has in flight (admitted and
not ended, including runs admitted but still waiting to start) and answers
the one question admission asks under load: is this tenant over its fair
share? The fair share is an equal split of what is in flight between the
tenants that have something in flight, counting the asking tenant::

    over_share(t)  <=>  in_flight(t) * tenants >= total

where ``tenants`` counts ``t`` even when it has nothing in flight yet. With
nothing in flight at all, every tenant is "at" its share (0 of 0): nobody
else is causing the load, so the flow's usual response applies to everyone. So,
while the flow is ``congested`` or ``overloaded``, a tenant whose burst
caused the load is at or above its share and is refused (or throttled)
first, while a quiet tenant is still admitted. The test is exact integer
arithmetic, so it cannot flap on rounding.

Properties (tested with hypothesis):

* a tenant with nothing in flight is below its share exactly when something
  is in flight;
* the busiest tenant is always over its share, so admitting only tenants
  that are not never makes the busiest tenant's count grow;
* ``over_share`` is monotone: more in flight never makes a tenant "under".

It is a pure value: no clock, no I/O. The stream registry keeps one and
counts every admission and end through it.
"""

from __future__ import annotations

from collections.abc import Iterator

from icefloe.exceptions import InvalidState

__all__ = ["TenantShares", "over_fair_share"]


def over_fair_share(own: int, total: int, tenants: int) -> bool:
    """Whether a tenant with ``own`` of ``total`` runs in flight, among
    ``tenants`` tenants (itself included), is at or over an equal share."""
    return own * max(tenants, 1) >= total


class TenantShares:
    """Runs in flight per tenant, and the fair-share test (see the module docs)."""

    __slots__ = ("_counts", "_total")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._total = 0

    def __repr__(self) -> str:
        return f"TenantShares(total={self._total}, tenants={len(self._counts)})"

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(list(self._counts.items()))

    @property
    def total(self) -> int:
        """Runs in flight, all tenants."""
        return self._total

    @property
    def tenants(self) -> int:
        """Tenants with at least one run in flight."""
        return len(self._counts)

    def count(self, tenant: str) -> int:
        """Runs ``tenant`` has in flight."""
        return self._counts.get(tenant, 0)

    def add(self, tenant: str) -> None:
        """One more run of ``tenant`` in flight."""
        self._counts[tenant] = self._counts.get(tenant, 0) + 1
        self._total += 1

    def remove(self, tenant: str) -> None:
        """One run of ``tenant`` ended.

        :raises InvalidState: ``tenant`` has nothing in flight.
        """
        left = self._counts.get(tenant, 0) - 1
        if left < 0:
            raise InvalidState(f"tenant {tenant!r} has no run in flight")
        if left:
            self._counts[tenant] = left
        else:
            del self._counts[tenant]
        self._total -= 1

    def over_share(self, tenant: str) -> bool:
        """Whether ``tenant`` is at or over its fair share of the runs in flight."""
        own = self._counts.get(tenant, 0)
        tenants = len(self._counts) + (0 if own else 1)
        return over_fair_share(own, self._total, tenants)
