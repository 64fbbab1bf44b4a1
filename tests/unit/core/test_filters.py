"""Tests for icefloe.core.filters: the filter language, its errors, limits and semantics."""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.filters import (
    COMPARISON_COST,
    LOGIC_COST,
    MAX_COMPARISONS,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_SOURCE,
    And,
    Compare,
    Expr,
    Field,
    Filter,
    FilterError,
    Member,
    Not,
    Or,
    Prefix,
    Scalar,
    compile_filter,
    filter_cost,
    parse,
    unparse,
)
from icefloe.exceptions import IcefloeError

PROPERTY = settings(max_examples=200, deadline=None)
HOSTILE = settings(max_examples=300, deadline=None)

#: generous: a 1 KiB filter parses in well under a millisecond
SLOW_PARSE_S = 0.05


@dataclass
class Event:
    topic: str = "chat.room1.tokens"
    tenant: str = "acme"
    headers: Mapping[str, Any] | None = field(default_factory=dict)
    data: Any = None


def selects(source: str, event: Event) -> bool:
    return compile_filter(source)(event)


# -- parsing -------------------------------------------------------------------------


def test_parse_builds_the_tree() -> None:
    expr = parse('data.x >= 1.5 and not (headers.lang in ["en", null, 1] or tenant prefix "ac")')
    assert expr == And(
        (
            Compare(Field("data", ("x",)), ">=", 1.5),
            Not(
                Or(
                    (
                        Member(Field("headers", ("lang",)), ("en", None, 1)),
                        Prefix(Field("tenant"), "ac"),
                    )
                )
            ),
        )
    )


def test_and_binds_tighter_than_or() -> None:
    assert parse("topic == 1 or topic == 2 and topic == 3") == Or(
        (
            Compare(Field("topic"), "==", 1),
            And((Compare(Field("topic"), "==", 2), Compare(Field("topic"), "==", 3))),
        )
    )


def test_whitespace_is_optional_and_flexible() -> None:
    assert parse('data.n>=2 and\ttopic=="x"') == parse('data.n >= 2 and topic == "x"')
    assert parse("(topic==1)or(topic==2)") == parse("topic == 1 or topic == 2")
    assert parse("(\r\ndata.a==1\n)") == parse("data.a == 1")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"a\\"b"', 'a"b'),
        ('"\\\\ \\/ \\b \\f \\n \\r \\t"', "\\ / \b \f \n \r \t"),
        ('"\\u00e9\\u00E9"', "\u00e9\u00e9"),
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ('"\\ud83d"', "\ud83d"),
        ('"caf\u00e9 \U0001f600"', "caf\u00e9 \U0001f600"),
        ("0", 0),
        ("-12", -12),
        ("1.25", 1.25),
        ("-0.5e-3", -0.0005),
        ("2E+2", 200.0),
        ("1" * 400, int("1" * 400)),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literals(literal: str, value: Scalar) -> None:
    expr = parse(f"data == {literal}")
    assert isinstance(expr, Compare)
    assert expr.value == value
    assert type(expr.value) is type(value)


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("", "empty filter", 0),
        ("   ", "empty filter", 0),
        ("data.x == ", "expected a value after '=='", 10),
        ("data.x == and", "expected a value after '=='", 10),
        ("x == 1", "unknown field 'x'", 0),
        ("and == 1", "expected a field", 0),
        ("data.x", "expected an operator", 6),
        ("data.x 1", "expected an operator", 7),
        ("data.x = 1", "use '==' to compare for equality", 7),
        ("data.x ! 1", "'!' must be followed by '='", 7),
        ('data.x < "a"', "'<' compares numbers", 9),
        ("data.x >= true", "'>=' compares numbers", 10),
        ("data.x prefix 1", "expected a string after 'prefix'", 14),
        ("data.x in 1", "expected '\\[' after 'in'", 10),
        ("data.x in [1 2]", "expected ',' or '\\]'", 13),
        ("data.x in [1,]", "expected a value after ','", 13),
        ("data.x in [1", "expected ',' or '\\]' in the 'in' list, found the end", 12),
        ("(data.x == 1", "expected '\\)' to close the '\\(' at 0", 12),
        ("data.x == 1)", "unmatched '\\)'", 11),
        ("data.x == 1 data.y == 2", "unexpected 'data.y'", 12),
        ('data.x == "abc', "unterminated string", 10),
        ('data.x == "a\\', "unterminated string", 10),
        ('data.x == "a\\q"', "invalid escape '\\\\q'", 12),
        ('data.x == "\\u12g4"', "4 hex digits", 11),
        ('data.x == "a\nb"', "control character", 12),
        ("data.x == 1e999", "out of range", 10),
        ("data.x == 01", "invalid number '01'", 10),
        ("data.x == 1.", "invalid number '1.'", 10),
        ("data.x == 1abc", "invalid number '1a'", 10),
        ("data.x == -", "expected a digit after '-'", 11),
        ("data.x == #", "unexpected character '#'", 10),
        ("data. == 1", "expected a name after 'data.'", 5),
        ("headers == 1", "name exactly one header", 0),
        ("headers.a.b == 1", "name exactly one header", 0),
        ("topic.x == 1", "'topic' has no sub-fields", 5),
        ("tenant.x == 1", "'tenant' has no sub-fields", 6),
        ("data.x == \u00e9", "unexpected character '\u00e9'", 10),
    ],
)
def test_errors_name_the_problem_and_its_position(source: str, message: str, position: int) -> None:
    with pytest.raises(FilterError, match=message) as info:
        compile_filter(source)
    assert info.value.position == position
    assert str(info.value).endswith(f" at {position}")


def test_the_example_message_from_the_docs() -> None:
    with pytest.raises(FilterError) as info:
        parse("data.score ==")
    assert str(info.value) == "expected a value after '==' at 13"
    assert info.value.reason == "expected a value after '=='"


def test_filter_error_is_a_value_error_in_the_tree() -> None:
    assert issubclass(FilterError, ValueError)
    assert issubclass(FilterError, IcefloeError)


def test_non_str_source_is_a_filter_error() -> None:
    with pytest.raises(FilterError, match="must be a str, got bytes"):
        parse(b"topic == 1")  # type: ignore[arg-type]


# -- limits --------------------------------------------------------------------------


def test_source_length_limit() -> None:
    ok = "data.x == " + '"' + "a" * (MAX_SOURCE - 12) + '"'
    assert len(ok) == MAX_SOURCE
    parse(ok)
    with pytest.raises(FilterError, match="1025 characters long; the limit is 1024") as info:
        parse(ok + " ")
    assert info.value.position == MAX_SOURCE


def test_nesting_limit_counts_parentheses_and_not() -> None:
    parse("(" * MAX_DEPTH + "topic == 1" + ")" * MAX_DEPTH)
    parse("not " * MAX_DEPTH + "topic == 1")
    with pytest.raises(FilterError, match="deeper than 16") as info:
        parse("(" * (MAX_DEPTH + 1) + "topic == 1" + ")" * (MAX_DEPTH + 1))
    assert info.value.position == MAX_DEPTH
    with pytest.raises(FilterError, match="deeper than 16"):
        parse("not (" * 9 + "topic == 1" + ")" * 9)


def test_comparison_limit() -> None:
    parse(" or ".join(["topic == 1"] * MAX_COMPARISONS))
    too_many = " or ".join(["topic == 1"] * (MAX_COMPARISONS + 1))
    with pytest.raises(FilterError, match="at most 64 comparisons") as info:
        parse(too_many)
    assert info.value.position == too_many.rindex("topic")


def test_list_limit() -> None:
    parse("data in [" + ",".join("1" * MAX_LIST_ITEMS) + "]")
    with pytest.raises(FilterError, match="at most 256 values") as info:
        parse("data in [" + ",".join("1" * (MAX_LIST_ITEMS + 1)) + "]")
    assert info.value.position == 9 + 2 * MAX_LIST_ITEMS


def test_empty_in_list_selects_nothing() -> None:
    assert not selects("data in []", Event(data=None))


# -- semantics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "event", "expected"),
    [
        ('topic == "chat.room1.tokens"', Event(), True),
        ('topic prefix "chat."', Event(), True),
        ('topic prefix "news."', Event(), False),
        ('tenant != "acme"', Event(), False),
        ('headers.lang == "en"', Event(headers={"lang": "en"}), True),
        ("headers.lang == null", Event(headers={}), True),
        ("headers.lang == null", Event(headers=None), True),
        ('headers.lang != "en"', Event(headers={}), True),
        ("headers.n > 2", Event(headers={"n": 3}), True),
        ("data.a.b == 1", Event(data={"a": {"b": 1}}), True),
        ("data.a.b == 1.0", Event(data={"a": {"b": 1}}), True),
        ("data.a.b == true", Event(data={"a": {"b": 1}}), False),
        ("data.a.b == 1", Event(data={"a": {"b": True}}), False),
        ('data.a.b == "1"', Event(data={"a": {"b": 1}}), False),
        ("data.a.b == null", Event(data={"a": 5}), True),
        ("data.a.b == null", Event(data=[1, 2]), True),
        ("data == 5", Event(data=5), True),
        ('data prefix "tok"', Event(data="token"), True),
        ("data.n < 3", Event(data={"n": 2.5}), True),
        ("data.n < 3", Event(data={"n": "2"}), False),
        ("data.n < 3", Event(data={"n": True}), False),
        ("data.n < 3", Event(data={"n": None}), False),
        ("data.n < 3", Event(data={}), False),
        ("data.n >= 3", Event(data={"n": float("nan")}), False),
        ("data.n <= 3", Event(data={"n": 3}), True),
        ("data.n > 1e300", Event(data={"n": 10**400}), True),
        ('data.k in ["a", 1, true]', Event(data={"k": "a"}), True),
        ('data.k in ["a", 1, true]', Event(data={"k": 1.0}), True),
        ('data.k in ["a", 1, true]', Event(data={"k": True}), True),
        ('data.k in ["a", 1]', Event(data={"k": True}), False),
        ("data.k in [false, null]", Event(data={}), True),
        ("data.k in [false]", Event(data={"k": 0}), False),
        ("data.k in [1]", Event(data={"k": [1]}), False),
        ("data.k in [1]", Event(data={"k": {"a": 1}}), False),
        ("data.k == 1", Event(data={"k": [1]}), False),
        ('data.k prefix ""', Event(data={"k": 1}), False),
        ("not data.k == 1 and data.j == 2", Event(data={"k": 3, "j": 2}), True),
        ("data.k == 1 or data.j == 2 or data.i == 3", Event(data={"i": 3}), True),
        ("data.k == 1 and data.j == 2 and data.i == 3", Event(data={"i": 3}), False),
    ],
)
def test_semantics(source: str, event: Event, expected: bool) -> None:
    assert selects(source, event) is expected


class Token(msgspec.Struct):
    text: str
    seq: int


def test_data_paths_read_msgspec_struct_fields() -> None:
    assert selects('data.text prefix "He"', Event(data=Token("Hello", 0)))
    assert selects("data.seq == 0", Event(data=Token("Hello", 0)))
    assert selects("data.missing == null", Event(data=Token("Hello", 0)))


def test_filter_object() -> None:
    f = compile_filter("data.n > 1")
    assert isinstance(f, Filter)
    assert f.source == "data.n > 1"
    assert f.expr == Compare(Field("data", ("n",)), ">", 1)
    assert f.predicate(Event(data={"n": 2}))
    assert repr(f) == "Filter('data.n > 1')"


# -- hostile input -------------------------------------------------------------------


def compile_time(source: str) -> float:
    """Seconds to compile ``source``, best of three (a loaded machine adds pauses)."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        try:
            compile_filter(source)
        except FilterError:
            pass
        best = min(best, time.perf_counter() - started)
        if best < SLOW_PARSE_S:
            break
    return best


def only_filter_errors(source: str) -> None:
    position = 0
    try:
        compile_filter(source)
    except FilterError as exc:
        position = exc.position
    assert 0 <= position <= max(len(source), MAX_SOURCE)
    assert compile_time(source) < SLOW_PARSE_S


FRAGMENTS = st.sampled_from(
    [
        "(",
        ")",
        "[",
        "]",
        ",",
        " ",
        "not ",
        " and ",
        " or ",
        " in ",
        " prefix ",
        "==",
        "!=",
        "<",
        ">=",
        "=",
        "!",
        "topic",
        "tenant",
        "headers.",
        "headers.x",
        "data",
        "data.a",
        ".",
        '"',
        '"abc"',
        "\\",
        "\\u",
        "\\ud800",
        "1",
        "-",
        "1e",
        "9" * 50,
        "1e400",
        "0.",
        "true",
        "null",
        "\x00",
        "\u00e9",
    ]
)


@HOSTILE
@given(st.text(max_size=MAX_SOURCE + 20))
def test_random_text_raises_only_filter_errors(source: str) -> None:
    only_filter_errors(source)


@HOSTILE
@given(st.lists(FRAGMENTS, max_size=80).map("".join))
def test_near_miss_filters_raise_only_filter_errors(source: str) -> None:
    only_filter_errors(source)


@HOSTILE
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_random_bytes_decoded_raise_only_filter_errors(raw: bytes, encoding: str) -> None:
    errors = "surrogateescape" if encoding == "utf-8" else "replace"
    only_filter_errors(raw.decode(encoding, errors=errors))


@pytest.mark.parametrize(
    "source",
    [
        "(" * 600,
        "(" * 500 + "topic == 1" + ")" * 500,
        "not " * 250,
        "data == 1e" + "9" * 1000,
        "data == -" + "0" * 1000,
        'data == "' + "\\" * 1000,
        'data == "' + "\\u" * 500,
        "data in [" + "1," * 500,
        " or ".join(["topic == 1"] * 100)[:MAX_SOURCE],
        "data." + "a." * 500,
        "\x00" * MAX_SOURCE,
    ],
)
def test_pathological_inputs_fail_fast(source: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(source)
    assert compile_time(source) < SLOW_PARSE_S


def test_huge_integers_are_exact() -> None:
    huge = "9" * 1000
    assert selects(f"data < {huge}", Event(data=1e308))
    assert not selects(f"data < {huge}", Event(data=10**1000))
    assert selects(f"data == {huge}", Event(data=int(huge)))


# -- round trips against a slow reference ------------------------------------------------

NAMES = st.sampled_from(["a", "b", "x-1", "0"])
STRINGS = st.sampled_from(["", "a", "ab", "b", "caf\u00e9", 'q"t', "\\", "\n", "\ud83d"])
NUMBERS = st.integers(-3, 3) | st.sampled_from([0.5, -1.5, 1e300, 2.0, -0.0, 10**30])
SCALARS: st.SearchStrategy[Scalar] = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
FIELDS = st.one_of(
    st.just(Field("topic")),
    st.just(Field("tenant")),
    NAMES.map(lambda n: Field("headers", (n,))),
    st.lists(NAMES, max_size=3).map(lambda p: Field("data", tuple(p))),
)


@st.composite
def comparisons(draw: st.DrawFn) -> Expr:
    target = draw(FIELDS)
    kind = draw(st.sampled_from(["eq", "order", "in", "prefix"]))
    if kind == "eq":
        return Compare(target, draw(st.sampled_from(["==", "!="])), draw(SCALARS))
    if kind == "order":
        return Compare(target, draw(st.sampled_from(["<", "<=", ">", ">="])), draw(NUMBERS))
    if kind == "in":
        return Member(target, tuple(draw(st.lists(SCALARS, max_size=4))))
    return Prefix(target, draw(STRINGS))


def trees(leaf: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.recursive(
        leaf,
        lambda sub: st.one_of(
            sub.map(Not),
            st.lists(sub, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(sub, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        ),
        max_leaves=8,
    )


JSON = st.recursive(
    SCALARS | st.floats(allow_nan=True),
    lambda sub: st.lists(sub, max_size=2) | st.dictionaries(NAMES, sub, max_size=3),
    max_leaves=6,
)
EVENTS = st.builds(
    Event,
    topic=st.sampled_from(["", "a", "ab", "b"]),
    tenant=st.sampled_from(["a", "b"]),
    headers=st.none() | st.dictionaries(NAMES, SCALARS, max_size=3),
    data=JSON,
)

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def json_equal(x: object, literal: Scalar) -> bool:
    if literal is None:
        return x is None
    if isinstance(literal, bool):
        return isinstance(x, bool) and x == literal
    if isinstance(literal, str):
        return isinstance(x, str) and x == literal
    return is_number(x) and x == literal


def lookup(target: Field, event: Event) -> Any:
    if target.kind == "topic":
        return event.topic
    if target.kind == "tenant":
        return event.tenant
    if target.kind == "headers":
        return (event.headers or {}).get(target.path[0])
    value = event.data
    for key in target.path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def reference(expr: Expr, event: Event) -> bool:
    """A slow, direct reading of the semantics in the module docstring."""
    if isinstance(expr, Compare):
        x = lookup(expr.field, event)
        if expr.op == "==":
            return json_equal(x, expr.value)
        if expr.op == "!=":
            return not json_equal(x, expr.value)
        return is_number(x) and _ORDERING[expr.op](x, expr.value)
    if isinstance(expr, Member):
        x = lookup(expr.field, event)
        return any(json_equal(x, v) for v in expr.values)
    if isinstance(expr, Prefix):
        x = lookup(expr.field, event)
        return isinstance(x, str) and x.startswith(expr.value)
    if isinstance(expr, Not):
        return not reference(expr.expr, event)
    if isinstance(expr, And):
        return all(reference(item, event) for item in expr.items)
    return any(reference(item, event) for item in expr.items)


@PROPERTY
@given(trees(comparisons()), st.lists(EVENTS, min_size=1, max_size=5))
def test_printed_trees_parse_back_and_agree_with_the_reference(
    expr: Expr, events: list[Event]
) -> None:
    source = unparse(expr)
    parsed = parse(source)
    assert unparse(parsed) == source
    compiled = compile_filter(source)
    for event in events:
        assert compiled(event) is reference(expr, event), (source, event)


@PROPERTY
@given(trees(comparisons()), EVENTS)
def test_compiled_filters_never_raise(expr: Expr, event: Event) -> None:
    assert compile_filter(unparse(expr))(event) in (True, False)


def test_unparse_refuses_a_non_finite_number() -> None:
    with pytest.raises(ValueError, match="no filter literal"):
        unparse(Compare(Field("data"), "==", math.inf))


# -- cost ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "cost"),
    [
        ('topic == "x"', 4),
        ("data == 1", 4),
        ("data.final == true", 5),
        ('headers.lang in ["en", "fr", "de"]', 5),
        ('data.a.b.c prefix "x"', 7),
        ("not data.x == 1", 6),
        ("data.x == 1 and data.y == 2", 12),
        ('data.x == 1 and data.y == 2 and tenant == "t"', 17),
        ("(data.x == 1 or data.y == 2) and not data.z == 3", 20),
    ],
)
def test_cost_examples(source: str, cost: int) -> None:
    assert compile_filter(source).cost == cost == filter_cost(parse(source))


def test_the_issue_15_filter_costs_442() -> None:
    path = "data." + ".".join(["a"] * 8)
    source = " or ".join(f"{path} == {i}" for i in range(34))
    assert compile_filter(source).cost == 34 * (COMPARISON_COST + 8 + LOGIC_COST)


class CountingDict(dict[str, Any]):
    """A dict that counts the lookups a filter makes in it."""

    steps = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.steps += 1
        return super().get(key, default)


def counting(value: Any) -> Any:
    if isinstance(value, dict):
        return CountingDict({k: counting(v) for k, v in value.items()})
    if isinstance(value, list):
        return [counting(v) for v in value]
    return value


def comparisons_in(expr: Expr) -> int:
    if isinstance(expr, Compare | Member | Prefix):
        return 1
    if isinstance(expr, Not):
        return comparisons_in(expr.expr)
    return sum(comparisons_in(item) for item in expr.items)


@PROPERTY
@given(trees(comparisons()), EVENTS)
def test_the_cost_bounds_the_work_of_an_evaluation(expr: Expr, event: Event) -> None:
    """Path steps taken plus comparisons made never exceed the cost, whatever the event."""
    flt = compile_filter(unparse(expr))
    assert flt.cost == filter_cost(expr) >= COMPARISON_COST * comparisons_in(expr)
    event.data = counting(event.data)
    CountingDict.steps = 0
    flt(event)
    assert CountingDict.steps + comparisons_in(expr) <= flt.cost
