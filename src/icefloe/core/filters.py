"""A small declarative language that selects hub events, compiled once to a predicate.

Examples::

    topic prefix "chat." and data.score >= 0.5
    headers.lang in ["en", "fr"] and not (data.kind == "ping" or data.final == true)

Grammar (EBNF; keywords are lower case, whitespace is space, tab, CR, LF)::

    filter     = or_expr ;
    or_expr    = and_expr , { "or" , and_expr } ;
    and_expr   = unary , { "and" , unary } ;
    unary      = "not" , unary | "(" , or_expr , ")" | comparison ;
    comparison = field , ( cmp_op , value
                         | "in" , "[" , [ value , { "," , value } ] , "]"
                         | "prefix" , string ) ;
    cmp_op     = "==" | "!=" | "<" | "<=" | ">" | ">=" ;
    field      = "topic" | "tenant" | "headers" , "." , name
               | "data" , { "." , name } ;
    name       = ( letter | digit | "_" | "-" ) , { letter | digit | "_" | "-" } ;
    value      = string | number | "true" | "false" | "null" ;
    string     = ? a JSON string in double quotes, with JSON escapes ? ;
    number     = ? a JSON number ? ;

Meaning:

* ``topic`` and ``tenant`` are the event's; ``headers.<name>`` reads one
  header; ``data`` is the payload and ``data.a.b`` walks into it through
  dicts (and msgspec Struct fields). A field that is missing anywhere along
  the way reads as ``null``.
* ``==`` and ``!=`` compare as JSON values: ``1 == 1.0`` holds, ``1 == true``
  and ``"1" == 1`` do not; ``!=`` is exactly ``not ==``.
* ``<``, ``<=``, ``>``, ``>=`` compare numbers; the literal must be a number,
  and a field that is not a number (a string, a bool, null, missing) makes the
  comparison false, never an error.
* ``in [...]`` holds when the field ``==`` one of the values;
  ``prefix "s"`` holds when the field is a string starting with ``s``.

Limits (past them :class:`FilterError`): :data:`MAX_SOURCE` characters of
source, :data:`MAX_DEPTH` levels of nesting (each ``(`` and ``not``),
:data:`MAX_COMPARISONS` comparisons, :data:`MAX_LIST_ITEMS` values per
``in`` list. Together they bound parsing time and the size of the compiled
predicate; parsing is linear in the source.

Cost (:attr:`Filter.cost`, :func:`filter_cost`): what evaluating the filter
once may take, in units of about one dict step along a ``data`` path, known
when it is compiled. A comparison costs :data:`COMPARISON_COST` plus one per
name in its field's path (``data.a.b == 1`` costs 6; ``topic == "x"`` costs
4); each ``not``, ``and`` and ``or`` costs :data:`LOGIC_COST` per operand.
The cost bounds the work whatever the event holds: short-circuiting only
makes an evaluation cheaper, an ``in`` list is a set lookup, and a path walk
stops at the first missing name. The hub keeps each tenant's filters within
a budget of these units (see docs/hub.md), so that no tenant's filters can
make one publish take long.

The syntax (tokens, parser, tree, printer) is in :mod:`icefloe.core.filter_syntax`;
:func:`compile_filter` parses once and builds a tree of small closures (no
``eval``, no ``exec``). The resulting predicate never raises for an event
whose ``headers`` is a mapping (or ``None``): a filter cannot break a
publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypeAlias

import msgspec

from icefloe.core import filter_syntax
from icefloe.core.filter_syntax import *  # noqa: F403  (re-exported: see __all__)
from icefloe.core.filter_syntax import (
    COMPARISON_COST,
    LOGIC_COST,
    And,
    Compare,
    Expr,
    Field,
    Member,
    Not,
    Prefix,
    Scalar,
    is_number,
    parse,
)

# This module's own names, then every public name of filter_syntax (the tree,
# the limits, the parser), so that the two lists cannot drift apart.
__all__ = ["Filter", "FilterTarget", "compile_filter", "filter_cost"]
__all__ += filter_syntax.__all__


class FilterTarget(Protocol):
    """What a filter reads from an event."""

    @property
    def topic(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, Any] | None: ...
    @property
    def data(self) -> Any: ...


# -- cost --------------------------------------------------------------------------


def filter_cost(expr: Expr) -> int:
    """The most work one evaluation of ``expr`` can take, in cost units (see the module doc).

    Weights were measured (``bench/filter_cost.py``): a unit is about the
    time of one step along a ``data`` path, so evaluation time grows in
    proportion to the cost whatever the filter's shape.
    """
    if isinstance(expr, Compare | Member | Prefix):
        return COMPARISON_COST + len(expr.field.path)
    if isinstance(expr, Not):
        return LOGIC_COST + filter_cost(expr.expr)
    return sum(LOGIC_COST + filter_cost(item) for item in expr.items)


# -- compiling ---------------------------------------------------------------------

Predicate: TypeAlias = Callable[[Any], bool]
_Getter: TypeAlias = Callable[[Any], Any]
_Test: TypeAlias = Callable[[Any], bool]

# A tuple, not ``int | float``: isinstance with a union builds it on every call.
_NUMBER_TYPES: Final = (int, float)


def _get_topic(event: Any) -> Any:
    return event.topic


def _get_tenant(event: Any) -> Any:
    return event.tenant


def _getter(field: Field) -> _Getter:
    if field.kind == "topic":
        return _get_topic
    if field.kind == "tenant":
        return _get_tenant
    if field.kind == "headers":
        name = field.path[0]

        def get_header(event: Any) -> Any:
            headers = event.headers
            return headers.get(name) if headers else None

        return get_header
    path = field.path

    def get_data(event: Any) -> Any:
        value = event.data
        for key in path:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, msgspec.Struct) and key in value.__struct_fields__:
                value = getattr(value, key)
            else:
                return None
        return value

    return get_data


def _equals(value: Scalar) -> _Test:
    if value is None:
        return lambda x: x is None
    if isinstance(value, bool):
        return lambda x: x is value
    if isinstance(value, str):
        return lambda x: isinstance(x, str) and x == value
    return lambda x: is_number(x) and x == value


def _ordering(op: str, bound: int | float) -> _Test:
    if op == "<":
        return lambda x: is_number(x) and x < bound
    if op == "<=":
        return lambda x: is_number(x) and x <= bound
    if op == ">":
        return lambda x: is_number(x) and x > bound
    return lambda x: is_number(x) and x >= bound


def _member(values: tuple[Scalar, ...]) -> _Test:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if is_number(v))
    flags = frozenset(v for v in values if v is None or isinstance(v, bool))
    # Bools and null are matched by identity: in a set, True would equal 1.
    has_true, has_false, has_null = True in flags, False in flags, None in flags

    def test(x: Any) -> bool:
        if isinstance(x, str):
            return x in strings
        if isinstance(x, bool):
            return has_true if x else has_false
        if isinstance(x, _NUMBER_TYPES):
            return x in numbers
        return x is None and has_null

    return test


def _test(expr: Compare | Member | Prefix) -> _Test:
    if isinstance(expr, Member):
        return _member(expr.values)
    if isinstance(expr, Prefix):
        start = expr.value
        return lambda x: isinstance(x, str) and x.startswith(start)
    op, value = expr.op, expr.value
    if op == "==":
        return _equals(value)
    if op == "!=":
        equal = _equals(value)
        return lambda x: not equal(x)
    assert isinstance(value, int | float)
    return _ordering(op, value)


def _compile(expr: Expr) -> Predicate:
    if isinstance(expr, Compare | Member | Prefix):
        get, test = _getter(expr.field), _test(expr)
        return lambda event: test(get(event))
    if isinstance(expr, Not):
        inner = _compile(expr.expr)
        return lambda event: not inner(event)
    parts = tuple(_compile(item) for item in expr.items)
    if isinstance(expr, And):
        if len(parts) == 2:
            first, second = parts
            return lambda event: first(event) and second(event)
        return lambda event: all(part(event) for part in parts)
    if len(parts) == 2:
        first, second = parts
        return lambda event: first(event) or second(event)
    return lambda event: any(part(event) for part in parts)


class Filter:
    """A compiled filter: call it with an event to know whether it is selected.

    Build it with :func:`compile_filter`. ``predicate`` is the bare callable,
    for hot paths that want to skip one call.
    """

    __slots__ = ("_cost", "_expr", "_predicate", "_source")

    def __init__(self, source: str, expr: Expr) -> None:
        self._source = source
        self._expr = expr
        self._predicate = _compile(expr)
        self._cost = filter_cost(expr)

    @property
    def source(self) -> str:
        """The text the filter was compiled from."""
        return self._source

    @property
    def expr(self) -> Expr:
        """The syntax tree."""
        return self._expr

    @property
    def cost(self) -> int:
        """The most work one evaluation takes, in cost units (:func:`filter_cost`)."""
        return self._cost

    @property
    def predicate(self) -> Predicate:
        """``event -> bool``; never raises for a well-formed event."""
        return self._predicate

    def __call__(self, event: FilterTarget) -> bool:
        return self._predicate(event)

    def __repr__(self) -> str:
        return f"Filter({self._source!r})"


def compile_filter(source: str) -> Filter:
    """Parse and compile ``source`` once.

    :raises FilterError: if ``source`` is not a valid filter (see the module
        docstring for the grammar and limits).
    """
    return Filter(source, parse(source))
