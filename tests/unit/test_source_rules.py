"""Rules the source keeps, checked by reading it: no reaching into privates, small modules.

* No ``other._name``: an object's private attributes are read and written by
  its own methods only (``self._x``, ``cls._x``); another object gets a public
  method or property on the owner instead. ``getattr(other, "_x")`` and its
  siblings count too.
* No module over 800 lines (STYLE.md: aim for 600, 800 is the hard cap).
* The tests keep the first rule too: they assert behaviour through public
  APIs (statistics, properties, what a reader sees), so no test reads or
  patches a product object's private attribute, apart from the few listed
  with their reasons in ``TESTS_ALLOWED``.

The third rule checked by reading the source, that ``icefloe.core`` imports no
asyncio, socket or clock, is tests/unit/core/test_sans_io.py.
"""

from __future__ import annotations

import ast
import functools
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


# -- the tests keep the rule too ------------------------------------------------------

TESTS = Path(__file__).resolve().parents[1]
TEST_MODULES = sorted(TESTS.rglob("*.py"))

#: the ``monkeypatch`` methods that reach an attribute by a name given as a string
PATCH_BY_NAME = frozenset({"setattr", "delattr"})

#: Product privates the tests still reach, by (test module, expression), each
#: with why no public API serves. An entry that no longer occurs fails
#: test_the_tests_allow_list_is_current, so the list only shrinks.
TESTS_ALLOWED: dict[tuple[str, str], str] = {
    # The test cuts the CLI tail's HTTP response from the server side to
    # check that the tail resumes: it needs the server's own reader of the
    # stream, and no public API hands out another party's reader (on purpose).
    ("integration/test_cli_tail.py", "flow._registry"): "closes the server's reader",
    # Patches the module's encoder table to count encodings: "50 subscribers,
    # one encoding per format" is the behaviour under test, and an encoding
    # leaves no public trace but its bytes (whose sharing is asserted too).
    ("unit/hub/test_event.py", "event_module._ENCODERS"): "counts encodings",
    # White-box on purpose (the test says so): which subscriber leads a topic
    # and its ring's offered/accepted/would-block counters, to show the block
    # counters do not depend on the lead. Neither is public hub state.
    ("unit/hub/test_reliability.py", "subs['x']._s"): "finds the topic's lead",
    ("unit/hub/test_reliability.py", "sub._s"): "reads each subscriber's ring counters",
    # Waits until the reader parks in wait() before interrupting it. Needs a
    # public "a reader waits now" on Subscription (runtime/subscription.py,
    # changed by another branch of issue 10 at the time of writing).
    ("unit/runtime/test_batch_reads.py", "reader._waiter"): "needs Subscription.waiting",
    # Calls the flow's Budgets.recount() alone to show an unchanged stream
    # costs O(1), and reads the re-check interval backing off. flow.stats()
    # also recounts but counts every held chunk itself (held_bytes), so no
    # public path isolates the cost; recheck_s is not in the statistics.
    ("unit/runtime/test_budgets.py", "flow._budgets"): "isolates the recount's cost",
}


def product_private_names() -> frozenset[str]:
    """Every private name the package defines or uses as an attribute."""
    names: set[str] = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name):
                names.add(node.id)
    return frozenset(name for name in names if is_private(name))


def reached_name(text: str) -> str:
    """The private name of a reach: ``a.b._c`` -> ``_c``, ``getattr(a, '_c')`` -> ``_c``."""
    if text.endswith(")"):
        return text.split("'")[1]
    return text.rsplit(".", 1)[-1]


def patches_a_private(call: ast.Call, product: frozenset[str]) -> bool:
    """``monkeypatch.setattr(x, "_name", ...)`` or ``.setattr("pkg.mod._name", ...)``."""
    return (
        isinstance(call.func, ast.Attribute)
        and call.func.attr in PATCH_BY_NAME
        and any(
            isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and arg.value.rsplit(".", 1)[-1] in product
            for arg in call.args[:2]
        )
    )


def reaches_of_a_test(source: str, product: frozenset[str], filename: str = "<test>") -> list[str]:
    """Every reach of a test module into a product private, in source order:
    ``x._name`` and ``getattr(x, "_name")`` with a ``_name`` the package has,
    and ``monkeypatch.setattr(x, "_name", ...)`` or ``.setattr("pkg.mod._name", ...)``.

    A private name the package never uses belongs to the tests themselves (a
    fake's attribute, a helper): reaching it is not reaching into the product.
    """
    found = [
        (line, text)
        for line, text in private_reaches(source, filename)
        if reached_name(text) in product
    ]
    found.extend(
        (node.lineno, ast.unparse(node))
        for node in ast.walk(ast.parse(source, filename=filename))
        if isinstance(node, ast.Call) and patches_a_private(node, product)
    )
    return [text for _, text in sorted(found)]


@functools.cache
def reaches_of_the_tests() -> frozenset[tuple[str, str]]:
    """(test module, expression) of every reach into a product private under tests/."""
    product = product_private_names()
    return frozenset(
        (str(path.relative_to(TESTS)), text)
        for path in TEST_MODULES
        for text in reaches_of_a_test(path.read_text(encoding="utf-8"), product, str(path))
    )


def test_the_walk_finds_the_tests() -> None:
    names = {str(path.relative_to(TESTS)) for path in TEST_MODULES}
    assert {"unit/test_source_rules.py", "unit/runtime/test_stats.py", "conftest.py"} <= names


def test_no_test_reaches_into_a_product_objects_privates() -> None:
    offenders = sorted(
        f"{path}: {text}" for path, text in reaches_of_the_tests() - set(TESTS_ALLOWED)
    )
    assert not offenders, (
        f"{len(offenders)} reads or patches of a product object's private attribute "
        "in the tests (assert through a public API; add a statistic or property "
        "on the owner if users would want it too):\n" + "\n".join(offenders)
    )


def test_the_tests_allow_list_is_current() -> None:
    stale = sorted(set(TESTS_ALLOWED) - reaches_of_the_tests())
    assert not stale, f"allowed reaches that no test makes any more (remove them): {stale}"


def test_the_test_checker_tells_product_privates_from_the_tests_own() -> None:
    source = """
import icefloe.cli.app as cli

def test(flow, fake, monkeypatch):
    flow._registry.get("s")                      # product private: reach
    fake._calls                                  # the test's own fake: fine
    print(getattr(flow, "_budgets"))             # by name: reach
    monkeypatch.setattr(cli, "_run_server", 1)   # patches a product private: reach
    monkeypatch.setattr(cli, "app", 1)           # public: fine
    monkeypatch.setattr("icefloe.cli.app._run_server", 1)  # dotted: reach
    print(self._registry)                        # its own: fine
"""
    product = frozenset({"_registry", "_budgets", "_run_server"})
    assert reaches_of_a_test(source, product) == [
        "flow._registry",
        "getattr(flow, '_budgets')",
        "monkeypatch.setattr(cli, '_run_server', 1)",
        "monkeypatch.setattr('icefloe.cli.app._run_server', 1)",
    ]
