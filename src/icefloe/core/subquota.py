"""Each tenant's subscriber slots and filter-cost budget: :class:`SubscriberQuota`.

Sans-I/O: the hub's registry asks it before it attaches a subscriber and
tells it when one ends; nothing here waits or reads a clock.

Why a budget of filter cost, and why per distinct filter. A publish
evaluates, for each of the topic's subscribers, that subscriber's filter:
the matching work of one publish is the sum of their costs
(:attr:`~icefloe.core.filters.Filter.cost`, units of roughly 45 ns). Topics
belong to one tenant, so the subscribers a publish can reach are all of that
tenant; bounding the cost of each tenant's filters bounds the matching work
of every publish, and one tenant's filters cannot hold the event loop
against the others. Identical filters of one tenant are evaluated once per
event (the hub shares one compiled filter between them), so they are
charged once: a thousand browsers with the same ``data.final == true`` cost
5 units, not 5,000. A cap on the tenant's subscribers bounds the rest of
the work (one dict lookup per subscriber) and the slots it holds.

Why not only make evaluation cheaper (a per-event cache of ``data`` paths,
say): that divides the work of some filters but bounds nothing, since a
tenant can write distinct filters on distinct paths. The budget bounds the
work whatever the filters; sharing identical ones keeps the common case (many
clients running the same code) far below it.

The state, per tenant:

* ``subscribers``: live subscribers, at most ``max_subscribers``;
* ``filters``: each distinct filter source held, with the shared compiled
  :class:`~icefloe.core.filters.Filter` and how many subscribers use it;
* ``cost``: the sum of the costs of those distinct filters, at most
  ``max_filter_cost``.

Invariants (checked by the property tests): ``cost`` is the sum of the
costs of ``filters``; every filter has at least one user; ``subscribers``
is at least the users of all filters; a tenant with no subscriber is
forgotten. :meth:`SubscriberQuota.admit` either changes nothing and raises,
or takes one slot.

Refusals are :class:`~icefloe.exceptions.StreamError` with code
``limit_exceeded`` and a message naming the tenant's own limit and use,
never another tenant's or the hub's totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icefloe.core.filters import Filter
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import InvalidState, StreamError

__all__ = ["SubscriberQuota", "TenantQuota"]


@dataclass(slots=True)
class _Shared:
    """One distinct filter of a tenant and its subscribers."""

    filter: Filter
    users: int = 0


@dataclass(slots=True)
class TenantQuota:
    """A snapshot of one tenant's use (:meth:`SubscriberQuota.usage`)."""

    #: live subscribers
    subscribers: int = 0
    #: the summed cost of the distinct filters they hold
    cost: int = 0
    #: distinct filters held
    filters: int = 0


@dataclass(slots=True)
class _Tenant:
    subscribers: int = 0
    cost: int = 0
    filters: dict[str, _Shared] = field(default_factory=dict)


class SubscriberQuota:
    """Subscribers and filter cost per tenant, each within its limit.

    :param max_subscribers: live subscribers per tenant (None: no limit).
    :param max_filter_cost: summed cost of a tenant's distinct filters
        (None: no limit).
    """

    __slots__ = ("_tenants", "max_filter_cost", "max_subscribers")

    def __init__(self, max_subscribers: int | None, max_filter_cost: int | None) -> None:
        for name, value in (
            ("max_subscribers", max_subscribers),
            ("max_filter_cost", max_filter_cost),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
        self.max_subscribers = max_subscribers
        self.max_filter_cost = max_filter_cost
        self._tenants: dict[str, _Tenant] = {}

    def check(self, tenant: str, flt: Filter | None) -> None:
        """Raise as :meth:`admit` would, changing nothing.

        :raises StreamError: ``limit_exceeded``: the tenant holds its limit
            of subscribers, or ``flt`` would take its filters past their budget.
        """
        state = self._tenants.get(tenant)
        held = 0 if state is None else state.subscribers
        cap = self.max_subscribers
        if cap is not None and held >= cap:
            raise StreamError(
                ErrorCode.LIMIT_EXCEEDED,
                f"tenant {tenant!r} has its limit of {cap} subscribers "
                "(max_subscribers_per_tenant); close one first",
            )
        budget = self.max_filter_cost
        if flt is None or budget is None:
            return
        if state is not None and flt.source in state.filters:
            return  # shared: evaluated once for all its users, charged once
        spent = 0 if state is None else state.cost
        if spent + flt.cost > budget:
            raise StreamError(
                ErrorCode.LIMIT_EXCEEDED,
                f"this filter costs {flt.cost} units and tenant {tenant!r}'s filters already "
                f"cost {spent} of their budget of {budget} (max_filter_cost_per_tenant); "
                "use a simpler filter, or one the tenant's other subscribers use",
            )

    def admit(self, tenant: str, flt: Filter | None) -> Filter | None:
        """Take a slot for a subscriber of ``tenant`` with filter ``flt``.

        Returns the filter to evaluate: the tenant's shared copy of a filter
        of the same source if it holds one (so a publish evaluates it once),
        else ``flt``.

        :raises StreamError: ``limit_exceeded``, as :meth:`check`; nothing changes.
        """
        self.check(tenant, flt)
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        state.subscribers += 1
        if flt is None:
            return None
        shared = state.filters.get(flt.source)
        if shared is None:
            shared = state.filters[flt.source] = _Shared(flt)
            state.cost += flt.cost
        shared.users += 1
        return shared.filter

    def release(self, tenant: str, source: str | None) -> None:
        """Give back the slot of a subscriber of ``tenant`` whose filter's source is ``source``.

        :raises InvalidState: nothing of that kind was admitted (a bug in the caller).
        """
        state = self._tenants.get(tenant)
        shared = None if state is None or source is None else state.filters.get(source)
        if state is None or state.subscribers == 0 or (source is not None and shared is None):
            raise InvalidState(f"tenant {tenant!r} holds no such subscriber")
        state.subscribers -= 1
        if shared is not None and source is not None:
            shared.users -= 1
            if not shared.users:
                del state.filters[source]
                state.cost -= shared.filter.cost
        if not state.subscribers:
            del self._tenants[tenant]

    def usage(self, tenant: str) -> TenantQuota:
        """What ``tenant`` holds now."""
        state = self._tenants.get(tenant)
        if state is None:
            return TenantQuota()
        return TenantQuota(state.subscribers, state.cost, len(state.filters))

    def __len__(self) -> int:
        """Tenants holding at least one subscriber."""
        return len(self._tenants)
