"""Hub topic names, subscription patterns, and an index from topics to subscribers.

A *topic* is a dot-separated name such as ``chat.room1.tokens``. A *pattern*
selects topics: it is a topic whose segments may also be wildcards:

* ``*`` stands for exactly one segment: ``chat.*.tokens`` matches
  ``chat.room1.tokens`` but not ``chat.tokens`` or ``chat.a.b.tokens``;
* ``>`` as the **last** segment stands for one or more remaining segments:
  ``chat.>`` matches ``chat.room1`` and ``chat.room1.tokens`` but not ``chat``;
  ``>`` alone matches every topic.

The wildcards are NATS subject wildcards, so a pattern maps one to one onto a
JetStream subject filter when NATS is the hub's backplane. In a URL path
``>`` must be percent-encoded (``%3E``); ``*`` need not be.

Grammar (ABNF)::

    topic    = segment *( "." segment )
    pattern  = [ psegment *( "." psegment ) "." ] ">" / psegment *( "." psegment )
    psegment = segment / "*"
    segment  = 1*( ALPHA / DIGIT / "_" / "-" / ":" )

Limits (a name past them is refused with :class:`TopicError`):

* :data:`MAX_LENGTH`: 256 characters, the whole name;
* :data:`MAX_SEGMENTS`: 32 segments.

Only ASCII is allowed, so a name's length in characters is its length in
bytes, and no two distinct names look alike.

:class:`Pattern` compiles a pattern once into the cheapest test that decides
it (string equality, a prefix test, or a comparison of fixed positions);
:class:`TopicIndex` finds every item whose pattern matches a topic with one
dict lookup for exact patterns and a walk of a segment trie for wildcard
ones, never by trying each pattern in turn.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from typing import Final, Generic, TypeVar

from icefloe.exceptions import IcefloeError

__all__ = [
    "MAX_LENGTH",
    "MAX_SEGMENTS",
    "REST",
    "SINGLE",
    "Pattern",
    "TopicError",
    "TopicIndex",
    "validate_topic",
]

#: the longest topic or pattern, in characters (= bytes: names are ASCII)
MAX_LENGTH: Final = 256
#: the most segments a topic or pattern may have
MAX_SEGMENTS: Final = 32
#: the wildcard for exactly one segment
SINGLE: Final = "*"
#: the wildcard, last segment only, for one or more remaining segments
REST: Final = ">"

_SEGMENT_CHARS = r"A-Za-z0-9_:\-"
_TOPIC_RE = re.compile(rf"[{_SEGMENT_CHARS}]+(?:\.[{_SEGMENT_CHARS}]+)*")
_SEGMENT_RE = re.compile(rf"[{_SEGMENT_CHARS}]+")

T = TypeVar("T", bound=Hashable)


class TopicError(IcefloeError, ValueError):
    """A topic name or pattern that breaks the grammar or a limit.

    ``value`` is the offending text (or object); the message says what is
    wrong and where.
    """

    def __init__(self, value: object, message: str) -> None:
        self.value = value
        super().__init__(message)


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name (no wildcards).

    :raises TopicError: if it is not a str, is empty, too long, has too many
        or empty segments, a wildcard, or a character outside the grammar.
    """
    if (
        isinstance(topic, str)
        and len(topic) <= MAX_LENGTH
        and _TOPIC_RE.fullmatch(topic) is not None
        and topic.count(".") < MAX_SEGMENTS
    ):
        return topic
    raise _diagnose(topic, "topic", wildcards=False)


def _diagnose(value: object, kind: str, *, wildcards: bool) -> TopicError:
    """Why ``value`` is not a valid ``kind``; only called once it is known to fail."""
    if not isinstance(value, str):
        return TopicError(value, f"a {kind} must be a str, got {type(value).__name__}")
    if not value:
        return TopicError(value, f"a {kind} cannot be empty")
    if len(value) > MAX_LENGTH:
        return TopicError(
            value, f"{kind} is {len(value)} characters long; the limit is {MAX_LENGTH}"
        )
    segments = value.split(".")
    if len(segments) > MAX_SEGMENTS:
        return TopicError(
            value, f"{kind} {value!r} has {len(segments)} segments; the limit is {MAX_SEGMENTS}"
        )
    at = 0
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if not segment:
            return TopicError(value, f"{kind} {value!r} has an empty segment at {at}")
        if segment in (SINGLE, REST) or SINGLE in segment or REST in segment:
            if not wildcards:
                return TopicError(
                    value,
                    f"a topic cannot contain the wildcard {segment!r} (at {at}); "
                    "wildcards belong in subscription patterns",
                )
            if segment == REST and not last:
                return TopicError(
                    value, f"'>' must be the last segment of pattern {value!r} (at {at})"
                )
            if segment not in (SINGLE, REST):
                return TopicError(
                    value,
                    f"a wildcard must be a whole segment: {segment!r} at {at} in {value!r}",
                )
        elif _SEGMENT_RE.fullmatch(segment) is None:
            offset = next(i for i, c in enumerate(segment) if _SEGMENT_RE.fullmatch(c) is None)
            char = segment[offset]
            return TopicError(
                value,
                f"invalid character {char!r} at {at + offset} in {kind} {value!r}; "
                "allowed are ASCII letters, digits, '_', '-' and ':'",
            )
        at += len(segment) + 1
    raise AssertionError(f"{value!r} was refused but no rule explains why")  # pragma: no cover


class Pattern:
    """A compiled subscription pattern.

    Build it once (it validates) and call :meth:`matches` per topic. Two
    patterns are equal when their source text is.

    :raises TopicError: if ``source`` is not a valid pattern.
    """

    __slots__ = ("_checks", "_exact", "_length", "_prefix", "_rest", "_segments", "_source")

    def __init__(self, source: str) -> None:
        if not (
            isinstance(source, str)
            and 0 < len(source) <= MAX_LENGTH
            and source.count(".") < MAX_SEGMENTS
        ):
            raise _diagnose(source, "pattern", wildcards=True)
        segments = tuple(source.split("."))
        rest = segments[-1] == REST
        fixed = segments[:-1] if rest else segments
        for segment in fixed:
            if segment != SINGLE and _SEGMENT_RE.fullmatch(segment) is None:
                raise _diagnose(source, "pattern", wildcards=True)
        self._source = source
        self._segments = segments
        self._rest = rest
        self._length = len(fixed)
        self._exact = not rest and SINGLE not in fixed
        # Positions holding a literal segment: all a ``*`` pattern must check.
        self._checks = tuple((i, s) for i, s in enumerate(fixed) if s != SINGLE)
        # A pattern with only a trailing ``>`` is a prefix test on the text.
        self._prefix = "".join(s + "." for s in fixed) if rest and SINGLE not in fixed else None

    @property
    def source(self) -> str:
        """The pattern's text."""
        return self._source

    @property
    def segments(self) -> tuple[str, ...]:
        """The pattern split at dots, wildcards included."""
        return self._segments

    @property
    def is_exact(self) -> bool:
        """Whether the pattern has no wildcard (it matches one topic, itself)."""
        return self._exact

    def matches(self, topic: str) -> bool:
        """Whether the valid topic name ``topic`` is selected by this pattern."""
        if self._exact:
            return topic == self._source
        prefix = self._prefix
        if prefix is not None:
            return topic.startswith(prefix)
        parts = topic.split(".")
        if self._rest:
            if len(parts) <= self._length:
                return False
        elif len(parts) != self._length:
            return False
        return all(parts[i] == s for i, s in self._checks)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pattern):
            return self._source == other.source
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._source)

    def __repr__(self) -> str:
        return f"Pattern({self._source!r})"


class _Node(Generic[T]):
    """One segment position of the wildcard trie."""

    __slots__ = ("children", "ends", "rest", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.star: _Node[T] | None = None
        # items whose pattern ends exactly here
        self.ends: dict[T, None] = {}
        # items whose pattern continues with ``>`` here
        self.rest: dict[T, None] = {}

    def empty(self) -> bool:
        return not (self.children or self.star or self.ends or self.rest)


class TopicIndex(Generic[T]):
    """Which items are subscribed to a topic, by pattern.

    Items are hashable (subscriptions, ids). Exact patterns live in a dict
    keyed by topic; wildcard patterns live in a trie of segments, with ``*``
    as one extra branch per node. :meth:`match` costs one dict lookup plus,
    when wildcard patterns exist, a walk over the topic's segments that
    visits only trie branches the topic can still follow. Emptied branches
    are pruned on removal, so memory follows the live patterns.

    An item added under several patterns that match a topic is returned once
    per pattern.
    """

    __slots__ = ("_exact", "_root", "_size")

    def __init__(self) -> None:
        self._exact: dict[str, dict[T, None]] = {}
        self._root: _Node[T] = _Node()
        self._size = 0

    def __len__(self) -> int:
        """How many (pattern, item) entries the index holds."""
        return self._size

    @property
    def branches(self) -> int:
        """Exact topics plus wildcard trie nodes held (its memory): 0 once
        every entry is discarded, as emptied branches are pruned."""
        count = len(self._exact)
        nodes = [self._root]
        while nodes:
            node = nodes.pop()
            if node is not self._root or not node.empty():
                count += 1
            nodes.extend(node.children.values())
            if node.star is not None:
                nodes.append(node.star)
        return count

    def add(self, pattern: Pattern, item: T) -> bool:
        """Subscribe ``item`` with ``pattern``; False if that entry already existed."""
        if pattern.is_exact:
            bucket = self._exact.setdefault(pattern.source, {})
        else:
            node = self._root
            segments = pattern.segments
            last = len(segments) - 1
            for i, segment in enumerate(segments):
                if i == last and segment == REST:
                    bucket = node.rest
                    break
                if segment == SINGLE:
                    if node.star is None:
                        node.star = _Node()
                    node = node.star
                else:
                    node = node.children.setdefault(segment, _Node())
            else:
                bucket = node.ends
        if item in bucket:
            return False
        bucket[item] = None
        self._size += 1
        return True

    def discard(self, pattern: Pattern, item: T) -> bool:
        """Remove the entry (``pattern``, ``item``); False if it was absent."""
        if pattern.is_exact:
            bucket = self._exact.get(pattern.source)
            if bucket is None or item not in bucket:
                return False
            del bucket[item]
            if not bucket:
                del self._exact[pattern.source]
            self._size -= 1
            return True
        return self._discard_wild(pattern, item)

    def _discard_wild(self, pattern: Pattern, item: T) -> bool:
        path: list[tuple[_Node[T], str]] = []
        node: _Node[T] | None = self._root
        segments = pattern.segments
        last = len(segments) - 1
        bucket: dict[T, None] | None = None
        for i, segment in enumerate(segments):
            assert node is not None
            if i == last and segment == REST:
                bucket = node.rest
                break
            parent = node
            node = node.star if segment == SINGLE else node.children.get(segment)
            if node is None:
                return False
            path.append((parent, segment))
        else:
            assert node is not None
            bucket = node.ends
        if item not in bucket:
            return False
        del bucket[item]
        self._size -= 1
        # Prune the branch bottom-up while it holds nothing.
        child = node
        for parent, segment in reversed(path):
            assert child is not None
            if not child.empty():
                break
            if segment == SINGLE:
                parent.star = None
            else:
                del parent.children[segment]
            child = parent
        return True

    def match(self, topic: str) -> list[T]:
        """Every item whose pattern matches the valid topic name ``topic``."""
        bucket = self._exact.get(topic)
        found: list[T] = list(bucket) if bucket else []
        root = self._root
        if root.empty():
            return found
        nodes = [root]
        for segment in topic.split("."):
            following: list[_Node[T]] = []
            for node in nodes:
                if node.rest:
                    # ``>`` here: the current segment is at least one more.
                    found.extend(node.rest)
                child = node.children.get(segment)
                if child is not None:
                    following.append(child)
                if node.star is not None:
                    following.append(node.star)
            if not following:
                return found
            nodes = following
        for node in nodes:
            if node.ends:
                found.extend(node.ends)
        return found

    def __iter__(self) -> Iterator[T]:
        """Every item held, once per pattern it was added with."""
        for bucket in self._exact.values():
            yield from bucket
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.ends
            yield from node.rest
            stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)
