"""The one splitter of icefloe's options from a service URL's query string."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from icefloe.core.url_options import split_options

OURS = ("prefix", "schema")
keys = st.sampled_from(["prefix", "schema", "password", "db", "x"])
values = st.text(alphabet="ab:_-/=&% ", max_size=6)


def test_blank_values_are_kept_and_the_last_repeat_wins() -> None:
    rest, ours = split_options("redis://h:1/0?prefix=&x=1&schema=a&schema=b&x=2", OURS)
    assert ours == {"prefix": "", "schema": "b"}
    assert rest == "redis://h:1/0?x=1&x=2"


def test_a_url_without_a_query_is_left_alone() -> None:
    assert split_options("postgresql://u:p@h:5432/db", OURS) == ("postgresql://u:p@h:5432/db", {})


@given(st.lists(st.tuples(keys, values), max_size=8))
def test_every_parameter_lands_on_exactly_one_side(query: list[tuple[str, str]]) -> None:
    url = f"nats://u:p@h:4222/path?{urlencode(query)}"
    rest, ours = split_options(url, OURS)
    parts = urlsplit(rest)
    assert (parts.scheme, parts.netloc, parts.path) == ("nats", "u:p@h:4222", "/path")
    assert parse_qsl(parts.query, keep_blank_values=True) == [
        (k, v) for k, v in query if k not in OURS
    ]
    assert ours == {k: v for k, v in query if k in OURS}
