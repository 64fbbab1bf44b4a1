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

:func:`compile_filter` parses once and builds a tree of small closures (no
``eval``, no ``exec``). The resulting predicate never raises for an event
whose ``headers`` is a mapping (or ``None``): a filter cannot break a
publish.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, TypeAlias

import msgspec

from icefloe.exceptions import IcefloeError

__all__ = [
    "COMPARISON_COST",
    "LOGIC_COST",
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_SOURCE",
    "And",
    "Compare",
    "Expr",
    "Field",
    "Filter",
    "FilterError",
    "FilterTarget",
    "Member",
    "Not",
    "Or",
    "Prefix",
    "Scalar",
    "compile_filter",
    "filter_cost",
    "parse",
    "unparse",
]

#: the longest filter source, in characters
MAX_SOURCE: Final = 1024
#: the deepest nesting of ``(`` and ``not``
MAX_DEPTH: Final = 16
#: the most comparisons in one filter
MAX_COMPARISONS: Final = 64
#: the most values in one ``in`` list
MAX_LIST_ITEMS: Final = 256

#: the cost of one comparison, before its field's path (calls, a type check, a test)
COMPARISON_COST: Final = 4
#: the cost of each operand of ``not``, ``and`` and ``or`` (one call or one step of all/any)
LOGIC_COST: Final = 1

Scalar: TypeAlias = str | int | float | bool | None

#: the comparison operators; the ordering ones compare numbers only
CMP_OPS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_ORDERING: Final = frozenset({"<", "<=", ">", ">="})
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "prefix", "true", "false", "null"})
_CONSTANTS: Final[dict[str, Scalar]] = {"true": True, "false": False, "null": None}
_FIELD_HINT: Final = "topic, tenant, headers.<name> or data.<path>"


class FilterError(IcefloeError, ValueError):
    """A filter that cannot be compiled.

    ``position`` is the 0-based character offset the problem was found at,
    ``reason`` the message without it.
    """

    def __init__(self, reason: str, position: int) -> None:
        self.reason = reason
        self.position = position
        super().__init__(f"{reason} at {position}")


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


# -- the syntax tree ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """What a comparison reads: ``kind`` is topic, tenant, headers or data."""

    kind: str
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Compare:
    """``field <op> value``."""

    field: Field
    op: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class Member:
    """``field in [values...]``."""

    field: Field
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Prefix:
    """``field prefix "value"``."""

    field: Field
    value: str


@dataclass(frozen=True, slots=True)
class Not:
    """``not expr``."""

    expr: Expr


@dataclass(frozen=True, slots=True)
class And:
    """``a and b and ...`` (two or more items)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``a or b or ...`` (two or more items)."""

    items: tuple[Expr, ...]


Expr: TypeAlias = Compare | Member | Prefix | Not | And | Or


# -- tokens ------------------------------------------------------------------------


class _Token(NamedTuple):
    #: one of ( ) [ ] , op word string number end
    kind: str
    pos: int
    text: str
    value: Any = None


_SPACE = frozenset(" \t\r\n")
_PUNCT = frozenset("()[],")
_WORD_START = frozenset(string.ascii_letters + "_")
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_HEX = frozenset(string.hexdigits)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*")
_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(src)
    i = 0
    while True:
        while i < n and src[i] in _SPACE:
            i += 1
        if i >= n:
            tokens.append(_Token("end", n, ""))
            return tokens
        c = src[i]
        if c in _PUNCT:
            tokens.append(_Token(c, i, c))
            i += 1
        elif c == '"':
            value, end = _scan_string(src, i)
            tokens.append(_Token("string", i, src[i:end], value))
            i = end
        elif c == "-" or "0" <= c <= "9":
            tokens.append(_scan_number(src, i))
            i += len(tokens[-1].text)
        elif c in "=!<>":
            tokens.append(_scan_operator(src, i))
            i += len(tokens[-1].text)
        elif c in _WORD_START:
            match = _WORD.match(src, i)
            assert match is not None
            end = match.end()
            if end < n and src[end] == ".":
                raise FilterError(f"expected a name after {src[i : end + 1]!r}", end + 1)
            tokens.append(_Token("word", i, match.group()))
            i = end
        else:
            raise FilterError(f"unexpected character {c!r}", i)


def _scan_operator(src: str, i: int) -> _Token:
    two = src[i : i + 2]
    if two in CMP_OPS:
        return _Token("op", i, two)
    c = src[i]
    if c == "=":
        raise FilterError("use '==' to compare for equality", i)
    if c == "!":
        raise FilterError("'!' must be followed by '=' ('!='); use 'not' to negate", i)
    return _Token("op", i, c)


def _scan_number(src: str, i: int) -> _Token:
    match = _NUMBER.match(src, i)
    if match is None:
        raise FilterError("expected a digit after '-'", i + 1)
    text = match.group()
    end = match.end()
    if end < len(src) and (src[end] in _NAME_CHARS or src[end] == "."):
        raise FilterError(f"invalid number {src[i : end + 1]!r}", i)
    if "." in text or "e" in text or "E" in text:
        value: int | float = float(text)
        if not math.isfinite(value):
            raise FilterError(f"number {text!r} is out of range", i)
    else:
        value = int(text)
    return _Token("number", i, text, value)


def _scan_string(src: str, start: int) -> tuple[str, int]:
    """Decode the JSON string starting at ``start``; return it and the index past it."""
    parts: list[str] = []
    n = len(src)
    i = start + 1
    run = i
    while i < n:
        c = src[i]
        if c == '"':
            parts.append(src[run:i])
            return "".join(parts), i + 1
        if c == "\\":
            parts.append(src[run:i])
            escape = src[i + 1 : i + 2]
            if escape == "u":
                char, i = _scan_unicode_escape(src, i)
                parts.append(char)
            elif escape in _ESCAPES:
                parts.append(_ESCAPES[escape])
                i += 2
            elif not escape:
                break
            else:
                raise FilterError(f"invalid escape '\\{escape}' in a string", i)
            run = i
            continue
        if c < " ":
            raise FilterError(
                "a control character inside a string must be escaped (\\n, \\t, \\u0000)", i
            )
        i += 1
    raise FilterError("unterminated string (a '\"' opened here is never closed)", start)


def _hex4(src: str, i: int) -> int | None:
    digits = src[i : i + 4]
    if len(digits) == 4 and all(d in _HEX for d in digits):
        return int(digits, 16)
    return None


def _scan_unicode_escape(src: str, i: int) -> tuple[str, int]:
    code = _hex4(src, i + 2)
    if code is None:
        raise FilterError("'\\u' must be followed by 4 hex digits", i)
    if 0xD800 <= code <= 0xDBFF and src[i + 6 : i + 8] == "\\u":
        low = _hex4(src, i + 8)
        if low is not None and 0xDC00 <= low <= 0xDFFF:
            # A JSON surrogate pair spells one character beyond the BMP.
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), i + 12
    return chr(code), i + 6


# -- parsing -----------------------------------------------------------------------


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


class _Parser:
    __slots__ = ("_comparisons", "_depth", "_i", "_tokens")

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._depth = 0
        self._comparisons = 0

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        if token.kind != "end":
            self._i += 1
        return token

    def _is_word(self, text: str) -> bool:
        token = self._tokens[self._i]
        return token.kind == "word" and token.text == text

    def parse(self) -> Expr:
        if self._peek().kind == "end":
            raise FilterError('empty filter; write a comparison such as topic == "a.b"', 0)
        expr = self._or()
        token = self._peek()
        if token.kind != "end":
            hint = "unmatched ')'" if token.kind == ")" else f"unexpected {_describe(token)}"
            raise FilterError(f"{hint}; expected 'and', 'or' or the end", token.pos)
        return expr

    def _or(self) -> Expr:
        items = [self._and()]
        while self._is_word("or"):
            self._next()
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Expr:
        items = [self._unary()]
        while self._is_word("and"):
            self._next()
            items.append(self._unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise FilterError(f"nesting is deeper than {MAX_DEPTH} levels", token.pos)

    def _unary(self) -> Expr:
        token = self._peek()
        if token.kind == "word" and token.text == "not":
            self._enter(token)
            self._next()
            inner: Expr = Not(self._unary())
            self._depth -= 1
            return inner
        if token.kind == "(":
            self._enter(token)
            self._next()
            inner = self._or()
            close = self._next()
            if close.kind != ")":
                raise FilterError(
                    f"expected ')' to close the '(' at {token.pos}, found {_describe(close)}",
                    close.pos,
                )
            self._depth -= 1
            return inner
        return self._comparison()

    def _comparison(self) -> Expr:
        token = self._next()
        field = self._field(token)
        self._comparisons += 1
        if self._comparisons > MAX_COMPARISONS:
            raise FilterError(f"a filter holds at most {MAX_COMPARISONS} comparisons", token.pos)
        op = self._next()
        if op.kind == "op":
            value = self._value(op)
            if op.text in _ORDERING and not _is_number(value):
                raise FilterError(
                    f"{op.text!r} compares numbers; expected a number after it",
                    self._tokens[self._i - 1].pos,
                )
            return Compare(field, op.text, value)
        if op.kind == "word" and op.text == "in":
            return Member(field, self._list())
        if op.kind == "word" and op.text == "prefix":
            text = self._next()
            if text.kind != "string":
                raise FilterError("expected a string after 'prefix'", text.pos)
            return Prefix(field, text.value)
        raise FilterError(
            f"expected an operator (==, !=, <, <=, >, >=, in, prefix) after {token.text!r}",
            op.pos,
        )

    def _field(self, token: _Token) -> Field:
        if token.kind != "word" or token.text in _KEYWORDS:
            raise FilterError(
                f"expected a field ({_FIELD_HINT}), found {_describe(token)}", token.pos
            )
        head, _, rest = token.text.partition(".")
        path = tuple(rest.split(".")) if rest else ()
        if head in ("topic", "tenant"):
            if path:
                raise FilterError(f"{head!r} has no sub-fields", token.pos + len(head))
            return Field(head)
        if head == "headers":
            if len(path) != 1:
                raise FilterError("name exactly one header: headers.<name>", token.pos)
            return Field(head, path)
        if head == "data":
            return Field(head, path)
        raise FilterError(f"unknown field {head!r}; expected {_FIELD_HINT}", token.pos)

    def _value(self, after: _Token) -> Scalar:
        token = self._next()
        if token.kind in ("string", "number"):
            value: Scalar = token.value
            return value
        if token.kind == "word" and token.text in _CONSTANTS:
            return _CONSTANTS[token.text]
        raise FilterError(f"expected a value after {after.text!r}", token.pos)

    def _list(self) -> tuple[Scalar, ...]:
        opening = self._next()
        if opening.kind != "[":
            raise FilterError("expected '[' after 'in'", opening.pos)
        values: list[Scalar] = []
        if self._peek().kind == "]":
            self._next()
            return ()
        previous = opening
        while True:
            if len(values) >= MAX_LIST_ITEMS:
                raise FilterError(
                    f"an 'in' list holds at most {MAX_LIST_ITEMS} values", self._peek().pos
                )
            values.append(self._value(previous))
            previous = self._next()
            if previous.kind == "]":
                return tuple(values)
            if previous.kind != ",":
                raise FilterError(
                    f"expected ',' or ']' in the 'in' list, found {_describe(previous)}",
                    previous.pos,
                )


def parse(source: str) -> Expr:
    """Parse filter ``source`` into its syntax tree.

    :raises FilterError: if ``source`` is not a str, is over a limit, or is
        not a valid filter; the error names the position.
    """
    if not isinstance(source, str):
        raise FilterError(f"a filter must be a str, got {type(source).__name__}", 0)
    if len(source) > MAX_SOURCE:
        raise FilterError(
            f"the filter is {len(source)} characters long; the limit is {MAX_SOURCE}", MAX_SOURCE
        )
    return _Parser(_tokenize(source)).parse()


# -- printing ----------------------------------------------------------------------


def _quote(text: str) -> str:
    out = ['"']
    for c in text:
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c < " " or "\ud800" <= c <= "\udfff":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _literal(value: Scalar) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no filter literal")
        return repr(value)
    return str(value)


def _field_text(field: Field) -> str:
    return ".".join((field.kind, *field.path))


def unparse(expr: Expr) -> str:
    """Filter source for ``expr``, such that ``parse(unparse(expr)) == expr``."""
    if isinstance(expr, Compare):
        return f"{_field_text(expr.field)} {expr.op} {_literal(expr.value)}"
    if isinstance(expr, Member):
        values = ", ".join(_literal(v) for v in expr.values)
        return f"{_field_text(expr.field)} in [{values}]"
    if isinstance(expr, Prefix):
        return f"{_field_text(expr.field)} prefix {_quote(expr.value)}"
    if isinstance(expr, Not):
        return f"not {_wrapped(expr.expr, (And, Or))}"
    if isinstance(expr, And):
        return " and ".join(_wrapped(item, (And, Or)) for item in expr.items)
    return " or ".join(_wrapped(item, (Or,)) for item in expr.items)


def _wrapped(expr: Expr, grouped: tuple[type, ...]) -> str:
    # Parenthesise a child that would otherwise merge into its parent.
    text = unparse(expr)
    return f"({text})" if isinstance(expr, grouped) else text


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


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


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
    return lambda x: _is_number(x) and x == value


def _ordering(op: str, bound: int | float) -> _Test:
    if op == "<":
        return lambda x: _is_number(x) and x < bound
    if op == "<=":
        return lambda x: _is_number(x) and x <= bound
    if op == ">":
        return lambda x: _is_number(x) and x > bound
    return lambda x: _is_number(x) and x >= bound


def _member(values: tuple[Scalar, ...]) -> _Test:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if _is_number(v))
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
