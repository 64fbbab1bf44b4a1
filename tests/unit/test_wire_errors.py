"""The one wire-error table: documented everywhere, used at every raise site.

``icefloe.core.wire_errors.WIRE_ERRORS`` gives each :class:`ErrorCode` its
HTTP status and WebSocket close. These tests hold it to docs/wire-protocol.md
(the "Error codes" table: code, status, close), to docs/websocket.md (its
close codes), and to the source: no code is spelled as a string literal
outside the table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from icefloe.core.wire_errors import (
    WIRE_ERRORS,
    CloseCode,
    CloseReason,
    ErrorCode,
    close_frame,
    http_status,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "icefloe"
WIRE_PROTOCOL_MD = ROOT / "docs" / "wire-protocol.md"
WEBSOCKET_MD = ROOT / "docs" / "websocket.md"

#: ``| `code` | status | close | meaning |`` rows of docs/wire-protocol.md
_ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}) \| (\d{4}|-) \|", re.MULTILINE)

#: string literals that equal a wire code but are not one, by file (relative
#: to src/icefloe) and value; every entry must still match (no stale excuses)
NOT_WIRE_CODES: dict[tuple[str, str], str] = {
    # CongestionState.OVERLOADED names a load state (readyz, metrics label).
    ("core/congestion.py", "overloaded"): "a congestion state, not an error code",
    # Flow.cancel_trace's message text, not its code (ErrorCode.CANCELLED).
    ("runtime/flow.py", "cancelled"): "a message text",
    # RouteState.FAILED names a bridge route's state (GET /v1/routes).
    ("gateway/route.py", "failed"): "a route state, not an error code",
}
#: files whose literal codes are still to be replaced with the table (none now);
#: an entry must name its reason and is dropped once the file is converted
PENDING: dict[str, str] = {}


def _documented_rows() -> dict[str, tuple[int, str]]:
    text = WIRE_PROTOCOL_MD.read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[int, str]] = {}
    for code, status, close in _ROW.findall(section):
        assert code not in rows, f"{code} is listed twice"
        rows[code] = (int(status), close)
    return rows


def test_every_code_has_a_row_in_the_table() -> None:
    assert set(WIRE_ERRORS) == set(ErrorCode)
    for code, wire in WIRE_ERRORS.items():
        assert http_status(code) == wire.status
        assert 400 <= wire.status <= 599, code


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_wire_protocol_md_documents_the_code_its_status_and_close(code: ErrorCode) -> None:
    rows = _documented_rows()
    assert code.value in rows, f"docs/wire-protocol.md 'Error codes' lacks `{code.value}`"
    status, close = rows[code.value]
    wire = WIRE_ERRORS[code]
    assert status == wire.status, f"{code.value}: documented {status}, table {wire.status}"
    expected_close = "-" if wire.ws_close is None else str(int(wire.ws_close))
    assert close == expected_close, f"{code.value}: documented close {close}"


def test_wire_protocol_md_lists_no_code_the_table_lacks() -> None:
    assert set(_documented_rows()) <= {c.value for c in ErrorCode}


def _websocket_close_codes() -> set[int]:
    text = WEBSOCKET_MD.read_text(encoding="utf-8")
    section = text.split("### Close codes", 1)[1].split("\n#", 1)[0]
    return {int(n) for n in re.findall(r"^\| (\d{4})\b", section, re.MULTILINE)}


def test_websocket_md_documents_every_close_code_the_server_sends() -> None:
    documented = _websocket_close_codes()
    sent = {int(w.ws_close) for w in WIRE_ERRORS.values() if w.ws_close is not None}
    sent |= {close_frame(reason)[0] for reason in CloseReason}
    assert sent <= documented, sorted(sent - documented)
    assert sent <= {int(c) for c in CloseCode}


def test_websocket_md_names_only_codes_of_the_table() -> None:
    text = WEBSOCKET_MD.read_text(encoding="utf-8")
    section = text.split("### Error codes", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert named, "docs/websocket.md has no error-code table"
    assert named <= {c.value for c in ErrorCode}, sorted(named - {c.value for c in ErrorCode})


def test_websocket_md_names_every_code() -> None:
    text = WEBSOCKET_MD.read_text(encoding="utf-8")
    missing = [c.value for c in ErrorCode if f"`{c.value}`" not in text]
    assert not missing, missing


def _docstring_nodes(tree: ast.Module) -> set[int]:
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                nodes.add(id(first.value))
    return nodes


def _code_literals() -> dict[tuple[str, str], list[int]]:
    """Every string constant of src/icefloe equal to a wire code, outside docstrings."""
    codes = {c.value for c in ErrorCode}
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "core/wire_errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in codes
                and id(node) not in docstrings
            ):
                found.setdefault((rel, node.value), []).append(node.lineno)
    return found


def test_no_wire_code_is_a_string_literal_outside_the_table() -> None:
    found = _code_literals()
    offenders = {
        f"{rel}:{lines} {value!r}"
        for (rel, value), lines in found.items()
        if (rel, value) not in NOT_WIRE_CODES and rel not in PENDING
    }
    assert not offenders, f"use ErrorCode members: {sorted(offenders)}"


def test_the_literal_allowlists_hold_no_stale_entry() -> None:
    found = _code_literals()
    for key in NOT_WIRE_CODES:
        assert key in found, f"{key} no longer occurs: drop it from NOT_WIRE_CODES"
    files = {rel for rel, _ in found}
    for rel in PENDING:
        assert rel in files, f"{rel} no longer spells codes: drop it from PENDING"


def test_the_scan_finds_a_literal_code() -> None:
    # The scan itself must be able to fail: a literal outside a docstring is found.
    tree = ast.parse('"""doc: "bad_request"."""\nx = "bad_request"\n')
    docstrings = _docstring_nodes(tree)
    hits = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value == "bad_request" and id(n) not in docstrings
    ]
    assert [n.lineno for n in hits] == [2]


def test_every_close_in_the_code_table_is_one_the_server_sends() -> None:
    # WIRE_ERRORS.ws_close and close_frame's reasons are two views of one fact:
    # a code that ends a connection must end it with a close the server sends.
    from icefloe.core.wire_errors import WIRE_ERRORS, CloseReason, close_frame

    sent = {close_frame(reason)[0] for reason in CloseReason}
    for code, wire in WIRE_ERRORS.items():
        if wire.ws_close is not None:
            assert int(wire.ws_close) in sent, (code, wire.ws_close)
    assert close_frame(CloseReason.TOO_BIG)[0] == WIRE_ERRORS[ErrorCode.TOO_LARGE].ws_close
    assert close_frame(CloseReason.INTERNAL)[0] == WIRE_ERRORS[ErrorCode.INTERNAL].ws_close
