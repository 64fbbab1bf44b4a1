"""Tests for icefloe.core.topics: topic names, patterns and the topic index."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.topics import (
    MAX_LENGTH,
    MAX_SEGMENTS,
    Pattern,
    TopicError,
    TopicIndex,
    validate_topic,
)
from icefloe.exceptions import IcefloeError

PROPERTY = settings(max_examples=300, deadline=None)

ALLOWED = frozenset(string.ascii_letters + string.digits + "_-:")


def reference_match(pattern: str, topic: str) -> bool:
    """The obvious recursive matcher the compiled one must agree with."""
    p, t = pattern.split("."), topic.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(t)
        if p[i] == ">":
            return j < len(t)
        if j == len(t):
            return False
        return p[i] in ("*", t[j]) and go(i + 1, j + 1)

    return go(0, 0)


def reference_valid(text: str, *, pattern: bool) -> bool:
    if not 0 < len(text) <= MAX_LENGTH:
        return False
    segments = text.split(".")
    if len(segments) > MAX_SEGMENTS:
        return False
    for i, segment in enumerate(segments):
        if pattern and (segment == "*" or (segment == ">" and i == len(segments) - 1)):
            continue
        if not segment or not set(segment) <= ALLOWED:
            return False
    return True


# -- topic names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic", ["a", "chat.room1.tokens", "A-b_c:d.e", "x" * MAX_LENGTH, ".".join("a" * 32)]
)
def test_valid_topics_are_returned(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "cannot be empty"),
        ("x" * (MAX_LENGTH + 1), "257 characters long; the limit is 256"),
        (".".join("a" * 33), "has 33 segments; the limit is 32"),
        ("a..b", "empty segment at 2"),
        (".a", "empty segment at 0"),
        ("a.", "empty segment at 2"),
        ("chat.*.tokens", "cannot contain the wildcard '\\*' \\(at 5\\)"),
        ("chat.>", "cannot contain the wildcard '>'"),
        ("a.b c", "invalid character ' ' at 3"),
        ("caf\u00e9", "invalid character '\u00e9' at 3"),
        (42, "must be a str, got int"),
        (None, "must be a str, got NoneType"),
    ],
)
def test_invalid_topics_say_why(topic: object, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        validate_topic(topic)


def test_topic_error_is_a_value_error_in_the_tree() -> None:
    assert issubclass(TopicError, ValueError)
    assert issubclass(TopicError, IcefloeError)
    with pytest.raises(TopicError) as info:
        validate_topic("a..b")
    assert info.value.value == "a..b"


@PROPERTY
@given(st.text(alphabet=st.sampled_from("ab.:_-*> \u00e9"), max_size=12) | st.text(max_size=300))
def test_topic_validation_agrees_with_the_reference(text: str) -> None:
    expected = reference_valid(text, pattern=False)
    try:
        validate_topic(text)
    except TopicError:
        assert not expected
    else:
        assert expected


# -- patterns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("chat.*.tokens", "chat.room1.tokens", True),
        ("chat.*.tokens", "chat.tokens", False),
        ("chat.*.tokens", "chat.a.b.tokens", False),
        ("chat.>", "chat.room1", True),
        ("chat.>", "chat.room1.tokens", True),
        ("chat.>", "chat", False),
        ("chat.>", "chatroom.x", False),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("*.b.>", "a.b.c.d", True),
        ("*.b.>", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
    ],
)
def test_pattern_matching(pattern: str, topic: str, expected: bool) -> None:
    assert Pattern(pattern).matches(topic) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a.>.b", "'>' must be the last segment"),
        ("a*", "a wildcard must be a whole segment: 'a\\*'"),
        ("a.b>", "whole segment"),
        ("", "cannot be empty"),
        ("a..*", "empty segment at 2"),
        ("a.*.", "empty segment"),
        ("a/b", "invalid character '/' at 1"),
        (">" * 2, "whole segment"),
        (3, "must be a str"),
    ],
)
def test_invalid_patterns_say_why(pattern: object, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        Pattern(pattern)  # type: ignore[arg-type]


def test_pattern_properties_equality_and_hash() -> None:
    p = Pattern("chat.*.tokens")
    assert p.source == "chat.*.tokens"
    assert p.segments == ("chat", "*", "tokens")
    assert not p.is_exact
    assert Pattern("a.b").is_exact
    assert not Pattern("a.>").is_exact
    assert p == Pattern("chat.*.tokens")
    assert hash(p) == hash(Pattern("chat.*.tokens"))
    assert p != Pattern("chat.>")
    assert p != "chat.*.tokens"
    assert repr(p) == "Pattern('chat.*.tokens')"


SEGMENTS = st.sampled_from(["a", "b", "c"])
TOPICS = st.lists(SEGMENTS, min_size=1, max_size=5).map(".".join)
PATTERN_SEGMENTS = st.sampled_from(["a", "b", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(PATTERN_SEGMENTS, max_size=5))
    if draw(st.booleans()) or not segments:
        segments.append(">")
    return ".".join(segments)


@PROPERTY
@given(patterns(), TOPICS)
def test_compiled_matcher_agrees_with_the_reference(pattern: str, topic: str) -> None:
    assert Pattern(pattern).matches(topic) == reference_match(pattern, topic)


@PROPERTY
@given(st.text(alphabet=st.sampled_from("ab.*>:"), max_size=10) | st.text(max_size=40))
def test_pattern_validation_agrees_with_the_reference(text: str) -> None:
    expected = reference_valid(text, pattern=True)
    try:
        Pattern(text)
    except TopicError:
        assert not expected
    else:
        assert expected


# -- the index -----------------------------------------------------------------------


def test_index_routes_exact_and_wildcard_patterns() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add(Pattern("chat.room1.tokens"), "exact")
    index.add(Pattern("chat.*.tokens"), "star")
    index.add(Pattern("chat.>"), "rest")
    index.add(Pattern(">"), "all")
    index.add(Pattern("news.*"), "news")
    assert sorted(index.match("chat.room1.tokens")) == ["all", "exact", "rest", "star"]
    assert sorted(index.match("chat.room2.tokens")) == ["all", "rest", "star"]
    assert sorted(index.match("chat")) == ["all"]
    assert sorted(index.match("news.today")) == ["all", "news"]
    assert sorted(index.match("news.today.late")) == ["all"]
    assert len(index) == 5
    assert sorted(index) == ["all", "exact", "news", "rest", "star"]


def test_index_add_twice_and_discard_absent() -> None:
    index: TopicIndex[int] = TopicIndex()
    assert index.add(Pattern("a.*"), 1)
    assert not index.add(Pattern("a.*"), 1)
    assert index.add(Pattern("a.*"), 2)
    assert len(index) == 2
    assert not index.discard(Pattern("a.b"), 1)
    assert not index.discard(Pattern("a.*.c"), 1)
    assert not index.discard(Pattern("b.>"), 1)
    assert not index.discard(Pattern("a.*"), 3)
    assert index.discard(Pattern("a.*"), 1)
    assert index.match("a.x") == [2]


def test_an_item_under_two_matching_patterns_is_returned_per_pattern() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add(Pattern("a.*"), "x")
    index.add(Pattern("a.>"), "x")
    assert index.match("a.b") == ["x", "x"]


def test_discarding_everything_prunes_the_trie() -> None:
    index: TopicIndex[int] = TopicIndex()
    patterns_ = [Pattern(p) for p in ("a.*.c", "a.*.>", "a.b.c", "*.*", ">", "a.b.*.d")]
    for i, p in enumerate(patterns_):
        index.add(p, i)
    assert index.branches > 0
    for i, p in enumerate(patterns_):
        assert index.discard(p, i)
    assert len(index) == 0
    assert index.branches == 0
    assert index.match("a.b.c") == []


OPS = st.lists(st.tuples(st.booleans(), patterns(), st.integers(0, 3)), max_size=30)


@PROPERTY
@given(OPS, st.lists(TOPICS, min_size=1, max_size=5))
def test_index_agrees_with_a_scan_of_every_pattern(
    ops: list[tuple[bool, str, int]], topics: list[str]
) -> None:
    index: TopicIndex[int] = TopicIndex()
    model: set[tuple[str, int]] = set()
    for add, source, item in ops:
        pattern = Pattern(source)
        if add:
            assert index.add(pattern, item) == ((source, item) not in model)
            model.add((source, item))
        else:
            assert index.discard(pattern, item) == ((source, item) in model)
            model.discard((source, item))
        assert len(index) == len(model)
    for topic in topics:
        expected = sorted(item for source, item in model if reference_match(source, topic))
        assert sorted(index.match(topic)) == expected
    for source, item in list(model):
        index.discard(Pattern(source), item)
    assert index.branches == 0
