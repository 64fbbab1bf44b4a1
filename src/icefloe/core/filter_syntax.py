"""The syntax of hub filters: tokens, the parser, the syntax tree and its printer.

:func:`parse` turns filter source into a tree of frozen dataclasses
(:class:`Compare`, :class:`Member`, :class:`Prefix`, :class:`Not`,
:class:`And`, :class:`Or`) and :func:`unparse` prints one back, such that
``parse(unparse(e)) == e``. The grammar, the limits and what a filter means
are in :mod:`icefloe.core.filters`, which compiles a tree to a predicate.

Parsing is linear in the source and bounded by :data:`MAX_SOURCE`,
:data:`MAX_DEPTH`, :data:`MAX_COMPARISONS` and :data:`MAX_LIST_ITEMS`; past
any of them :class:`FilterError` names the position.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias

from icefloe.exceptions import IcefloeError

__all__ = [
    "CMP_OPS",
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
    "FilterError",
    "Member",
    "Not",
    "Or",
    "Prefix",
    "Scalar",
    "is_number",
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

# A tuple, not ``int | float``: isinstance with a union builds it on every call.
_NUMBER_TYPES: Final = (int, float)


def is_number(value: object) -> bool:
    """Whether ``value`` is a JSON number (an int or float, not a bool)."""
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


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
            if op.text in _ORDERING and not is_number(value):
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
