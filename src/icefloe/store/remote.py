"""What the network stores (Postgres, Redis) share: their URLs and their failures.

A store configured by URL refuses a malformed one when it is built, not at
its first connect, and never echoes the URL's password in the message. Its
query string mixes the store's own options with the client library's; the
store takes its own and hands the rest on. Every error its client raises for
a lost or refused connection becomes :class:`StoreUnavailable`, naming the
store and the operation, so callers retry one exception whatever the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import SplitResult, urlsplit

from icefloe.core.url_options import split_options
from icefloe.store.protocol import StoreUnavailable

__all__ = ["as_unavailable", "check_url", "split_options"]


def check_url(url: str, kind: str, schemes: tuple[str, ...]) -> SplitResult:
    """``url`` split, once its port is a number and its scheme one of ``schemes``.

    :raises ValueError: naming the host part (never the password) or the scheme.
    """
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]  # never echo a password
    try:
        parts.port  # noqa: B018  (parsing it is the check)
    except ValueError:
        raise ValueError(f"the port in the store URL's {where!r} is not a number") from None
    if parts.scheme not in schemes:
        starts = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"a {kind} store URL starts {starts}, not {parts.scheme}://")
    return parts


@contextmanager
def as_unavailable(
    store: str, operation: str, errors: tuple[type[BaseException], ...]
) -> Iterator[None]:
    """Turn ``errors`` raised inside into :class:`StoreUnavailable` naming ``operation``."""
    try:
        yield
    except errors as exc:
        raise StoreUnavailable(f"{store}: {operation} failed: {exc}") from exc
