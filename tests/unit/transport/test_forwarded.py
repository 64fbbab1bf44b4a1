"""Tests for icefloe.transport.forwarded: the client address behind trusted proxies."""

from __future__ import annotations

import pytest

from icefloe.transport.forwarded import TrustedProxies, forwarded_chain

LOCAL = TrustedProxies(["127.0.0.1"])


def test_nobody_trusted_means_the_peer_is_the_client() -> None:
    proxies = TrustedProxies()
    assert not proxies
    assert proxies.client_host("127.0.0.1", None, "203.0.113.9") == "127.0.0.1"
    assert proxies.client_host("127.0.0.1", "for=203.0.113.9", None) == "127.0.0.1"


def test_a_trusted_peer_forwards_for_the_client() -> None:
    assert LOCAL.client_host("127.0.0.1", None, "203.0.113.9") == "203.0.113.9"
    assert LOCAL.client_host("127.0.0.1", 'for="203.0.113.9:4711"', None) == "203.0.113.9"


def test_an_untrusted_peer_cannot_forge_its_address() -> None:
    assert LOCAL.client_host("198.51.100.7", None, "203.0.113.9") == "198.51.100.7"
    assert LOCAL.client_host("198.51.100.7", "for=203.0.113.9", None) == "198.51.100.7"


def test_the_chain_is_walked_from_the_right_past_trusted_proxies() -> None:
    proxies = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")
    # The client put a forged 1.1.1.1 first; the edge proxy appended the real one.
    xff = "1.1.1.1, 203.0.113.9, 10.1.2.3"
    assert proxies.client_host("127.0.0.1", None, xff) == "203.0.113.9"
    # Every hop trusted: the leftmost is the client.
    assert proxies.client_host("127.0.0.1", None, "10.0.0.5, 10.0.0.6") == "10.0.0.5"


def test_star_trusts_every_peer_and_takes_the_leftmost() -> None:
    proxies = TrustedProxies.parse("*")
    assert proxies.client_host("192.0.2.1", None, "203.0.113.9, 198.51.100.1") == "203.0.113.9"


def test_forwarded_wins_over_x_forwarded_for_and_handles_ipv6() -> None:
    header = 'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"'
    assert forwarded_chain(header, "9.9.9.9") == ["192.0.2.60", "2001:db8:cafe::17"]
    proxies = TrustedProxies.parse("127.0.0.1,2001:db8:cafe::/48")
    assert proxies.client_host("127.0.0.1", header, None) == "192.0.2.60"


def test_addresses_are_canonical_so_one_client_is_one_key() -> None:
    assert LOCAL.client_host("127.0.0.1", None, "2001:DB8:0:0::1") == "2001:db8::1"


@pytest.mark.parametrize(
    ("forwarded", "xff"),
    [
        (None, "not-an-address"),
        (None, "203.0.113.9, "),
        ("for=", None),
        ("proto=https", None),
        ('for="[2001:db8::1"', None),
        ("garbage", None),
    ],
)
def test_a_malformed_header_falls_back_to_the_peer(forwarded: str | None, xff: str | None) -> None:
    assert LOCAL.client_host("127.0.0.1", forwarded, xff) == "127.0.0.1"


def test_unknown_and_obfuscated_nodes_are_kept_as_names() -> None:
    assert LOCAL.client_host("127.0.0.1", "for=unknown", None) == "unknown"
    assert LOCAL.client_host("127.0.0.1", "for=_hidden", None) == "_hidden"


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3"])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="forwarded-allow-ips"):
        TrustedProxies([entry])


def test_cidr_and_ipv6_entries() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8,::1")
    assert proxies.trusts("10.200.0.1")
    assert proxies.trusts("::1")
    assert not proxies.trusts("11.0.0.1")
    assert not proxies.trusts("not an ip")
