"""Which hub tenant a relayed run publishes under."""

from __future__ import annotations

from icefloe.transport.auth import Principal, Scope
from icefloe.transport.relays import relay_tenant


def test_with_auth_off_relays_share_the_callers_tenant() -> None:
    anyone = Principal.unrestricted()
    assert relay_tenant(anyone, "demo") == anyone.tenant == "*"


def test_with_auth_on_relays_publish_under_the_streams_tenant() -> None:
    user = Principal("u1", "acme", frozenset({Scope.TOPICS_PUBLISH}))
    admin = Principal("ops", "ops", frozenset({Scope.ADMIN}))
    assert relay_tenant(user, "acme") == "acme"
    # An admin starting a run for another tenant relays it to that tenant's watchers.
    assert relay_tenant(admin, "acme") == "acme"
