"""icefloe's own options in a service URL's query string, split from the client's.

The URLs of ``--store`` and ``--backplane`` carry two kinds of query
parameters: icefloe's (``prefix``, ``schema``, ``storage``...) and the
client library's (redis-py's, asyncpg's, nats-py's), which go on untouched.
One splitter decides the edge cases for every such URL: a blank value is kept
(``?prefix=`` reads as ``""``; each caller says what an empty option means), a
repeated option takes its last value, and the client's parameters keep their
order and their repeats.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["split_options"]


def split_options(url: str, ours: Collection[str]) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters named in ``ours``, and those parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {key: value for key, value in query if key in ours}
    rest = urlencode([(key, value) for key, value in query if key not in ours])
    return urlunsplit(parts._replace(query=rest)), options
