"""The real client address behind trusted proxies: ``Forwarded`` and ``X-Forwarded-For``.

Per-address limits (auth off, failed logins) key on the client address. Behind
a reverse proxy every request arrives from the proxy, so the edge reads the
address the proxy recorded, but only when the peer is one of the proxies it
was told to trust (``--forwarded-allow-ips``, as uvicorn spells it): from
anyone else the headers are ignored, since any client can write them.

:class:`TrustedProxies` holds that list and :meth:`TrustedProxies.client_host`
picks the address. It reads RFC 7239 ``Forwarded`` (its ``for=`` parameters)
when present, else ``X-Forwarded-For``, and walks the chain from the right
(the hop nearest this server) past every trusted proxy: the first address not
trusted is the client. A chain of only trusted proxies names its leftmost hop.
A malformed header from a trusted proxy is ignored (the peer address is used),
never guessed at.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies", "forwarded_chain"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose forwarding headers are believed.

    :param entries: addresses (``127.0.0.1``, ``::1``), networks in CIDR
        notation (``10.0.0.0/8``), or ``*`` for every peer (only when nothing
        but the proxy can reach the server). Empty: trust nobody.
    :raises ValueError: for an entry that is none of these.
    """

    __slots__ = ("_any", "_networks")

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._any = False
        networks: list[_Network] = []
        for raw in entries:
            entry = raw.strip()
            if entry == "*":
                self._any = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded-allow-ips: {entry!r} is not an IP address, a CIDR network or '*'"
                ) from None
        self._networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From a comma-separated list, as the command line takes it."""
        return cls(part for part in text.split(",") if part.strip())

    def __repr__(self) -> str:
        shown = ["*"] if self._any else []
        return f"TrustedProxies({shown + [str(n) for n in self._networks]})"

    def __bool__(self) -> bool:
        return self._any or bool(self._networks)

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (an address as a string) is a trusted proxy."""
        if self._any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def client_host(
        self, peer: str | None, forwarded: str | None, x_forwarded_for: str | None
    ) -> str | None:
        """The client's address: ``peer`` itself unless it is a trusted proxy
        that says (in ``forwarded`` or ``x_forwarded_for``) who it forwards for."""
        if peer is None or not self.trusts(peer):
            return peer
        chain = forwarded_chain(forwarded, x_forwarded_for)
        if not chain:
            return peer
        for hop in reversed(chain):
            if not self.trusts(hop):
                return hop
        return chain[0]


def forwarded_chain(forwarded: str | None, x_forwarded_for: str | None) -> list[str] | None:
    """The addresses a request passed through, client first; ``None`` if the
    headers are absent or malformed. ``Forwarded`` wins over ``X-Forwarded-For``."""
    if forwarded is not None:
        return _rfc7239_chain(forwarded)
    if x_forwarded_for is not None:
        hops = [_normal(part.strip()) for part in x_forwarded_for.split(",")]
        return None if any(hop is None for hop in hops) else [h for h in hops if h is not None]
    return None


def _rfc7239_chain(header: str) -> list[str] | None:
    chain: list[str] = []
    for element in header.split(","):
        hop: str | None = None
        for pair in element.split(";"):
            name, sep, value = pair.strip().partition("=")
            if not sep:
                if pair.strip():
                    return None
                continue
            if name.strip().lower() == "for":
                hop = _node(value.strip())
                if hop is None:
                    return None
        if hop is None:
            return None  # an element without for= hides a hop: trust none of it
        chain.append(hop)
    return chain


def _node(value: str) -> str | None:
    """An RFC 7239 node (``for=`` value): an address, maybe quoted, with a port,
    or ``unknown`` / an obfuscated ``_name``, kept as they are."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (end + 1 < len(value) and value[end + 1] != ":"):
            return None
        return _normal(value[1:end])
    host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    if host == "unknown" or (host.startswith("_") and len(host) > 1):
        return host
    return _normal(host)


def _normal(host: str) -> str | None:
    """``host`` as a canonical address string (so one client is one key), or None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
