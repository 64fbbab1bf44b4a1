"""Rules the source keeps, checked by reading it: no reaching into privates, small modules.

* No ``other._name``: an object's private attributes are read and written by
  its own methods only (``self._x``, ``cls._x``); another object gets a public
  method or property on the owner instead. ``getattr(other, "_x")`` and its
  siblings count too.
* No module over 800 lines (STYLE.md: aim for 600, 800 is the hard cap).

The third rule checked by reading the source, that ``icefloe.core`` imports no
asyncio, socket or clock, is tests/unit/core/test_sans_io.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import icefloe

SRC = Path(icefloe.__file__).parent
MODULES = sorted(SRC.rglob("*.py"))

#: the names an object may use for its own private attributes
OWNERS = frozenset({"self", "cls"})

#: ``module._name`` reads allowed by name: a private module of the package
#: reached as an attribute of the package (``icefloe._version``), not an object's
#: private state. Imports (``from icefloe._version import x``) are never
#: attribute accesses and need no entry here.
ALLOWED = frozenset({"icefloe._version"})

#: NamedTuple's public methods: underscored only so they cannot clash with a field
NAMEDTUPLE_API = frozenset({"_asdict", "_field_defaults", "_fields", "_make", "_replace"})

#: the builtins that reach an attribute by a name given as a string
BY_NAME = frozenset({"getattr", "setattr", "hasattr", "delattr"})

MAX_LINES = 800


def is_private(name: str) -> bool:
    """``_x`` and ``__x`` are private; ``__x__`` (a dunder) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_owner(node: ast.expr) -> bool:
    """``self``, ``cls``, or ``super()`` (the object's own attribute, one class up)."""
    if isinstance(node, ast.Name):
        return node.id in OWNERS
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "super"
        and not node.args
    )


def private_reaches(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """Every ``other._name`` in ``source``, as (line, expression), in source order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Attribute):
            if not is_private(node.attr) or node.attr in NAMEDTUPLE_API or is_owner(node.value):
                continue
            text = ast.unparse(node)
            if text in ALLOWED:
                continue
            found.append((node.lineno, text))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in BY_NAME
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and not is_owner(node.args[0])
        ):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def where(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


def test_the_walk_finds_the_package() -> None:
    names = {where(path) for path in MODULES}
    assert {"icefloe/__init__.py", "icefloe/core/framing.py", "icefloe/runtime/flow.py"} <= names


def test_no_module_reaches_into_another_objects_privates() -> None:
    offenders = [
        f"{where(path)}:{line}: {text}"
        for path in MODULES
        for line, text in private_reaches(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not offenders, (
        f"{len(offenders)} accesses to another object's private attribute "
        "(add a public method or property on its owner):\n" + "\n".join(offenders)
    )


def test_the_checker_catches_every_reach_and_nothing_else() -> None:
    source = """
import icefloe._version
from icefloe._version import __version__

class A:
    def __init__(self, other):
        self._x = 1                  # its own: fine
        self.__y = 2                 # its own, mangled: fine
        other._x = 3                 # reach (write)
        print(other._x.y)            # reach (read)
        print(other.__dict__)        # a dunder: fine
        print(self.b._c)             # reach: self.b is another object
        print(getattr(other, "_x"))  # reach by name
        print(getattr(self, "_x"))   # its own: fine
        print(super()._z)            # its own, one class up: fine
        print(icefloe._version)      # allowed by name
        print(other.__y)             # reach (mangled)
        print(other._replace(x=1))   # NamedTuple's public API: fine

    @classmethod
    def make(cls):
        return cls._registry         # its own: fine
"""
    assert private_reaches(source) == [
        (9, "other._x"),
        (10, "other._x"),
        (12, "self.b._c"),
        (13, "getattr(other, '_x')"),
        (17, "other.__y"),
    ]


def test_no_module_is_over_the_line_cap() -> None:
    over = {
        where(path): lines
        for path in MODULES
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not over, f"modules over {MAX_LINES} lines: {over}"
