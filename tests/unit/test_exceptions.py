"""The exception tree: one root, drawn completely in ``icefloe.exceptions``.

Every exception class defined under src/icefloe derives from
:class:`IcefloeError` and sits in the tree of the module docstring under its
real parent, with the builtins it also inherits written ``(+ Builtin)``.
Private exceptions (``_Name``) are control flow inside one module: they are
left out of the tree, and the test checks that no other module names them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import icefloe
import icefloe.exceptions
from icefloe.exceptions import IcefloeError, StreamNotFound

SRC = Path(icefloe.__file__).resolve().parent

#: a tree line: box-drawing indent, ``├── `` or ``└── ``, the class, its builtins
_NODE = re.compile(
    r"^(?P<indent>(?:│   |    )*)[├└]── (?P<name>\w+)(?: \(\+ (?P<extra>[\w, ]+)\))?"
)


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the icefloe package."""
    found: dict[str, type[BaseException]] = {}
    names = ["icefloe"] + [m.name for m in pkgutil.walk_packages(icefloe.__path__, "icefloe.")]
    for module_name in names:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            # The root's exports claim ``icefloe`` as their module (test_exports).
            home = obj.__module__ if inspect.isclass(obj) else None
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and home in (module_name, "icefloe")
            ):
                assert name not in found or found[name] is obj, f"two exceptions named {name}"
                found[name] = obj
    return found


def _drawn_tree() -> dict[str, tuple[str, frozenset[str]]]:
    """``name -> (parent, builtins)`` as drawn in the exceptions docstring."""
    doc = icefloe.exceptions.__doc__ or ""
    lines = doc.split("    IcefloeError\n", 1)[1].split("\n\n", 1)[0].splitlines()
    tree: dict[str, tuple[str, frozenset[str]]] = {}
    parents = ["IcefloeError"]
    for line in lines:
        match = _NODE.match(line.removeprefix("    "))
        assert match is not None, f"not a tree line: {line!r}"
        depth = len(match["indent"]) // 4
        name = match["name"]
        extra = frozenset(e.strip() for e in (match["extra"] or "").split(",") if e.strip())
        assert name not in tree, f"{name} is drawn twice"
        tree[name] = (parents[depth], extra)
        del parents[depth + 1 :]
        parents.append(name)
    return tree


def _public() -> dict[str, type[BaseException]]:
    return {n: c for n, c in _exception_classes().items() if not n.startswith("_")}


def test_the_scan_sees_exceptions_outside_the_exceptions_module() -> None:
    # Guards the walk itself: these live in core and transport.
    classes = _exception_classes()
    for name in ("FilterError", "SessionExpired", "HttpError", "AuthError"):
        assert name in classes


@pytest.mark.parametrize("name", sorted(_public()))
def test_every_public_exception_is_rooted_in_icefloe_error(name: str) -> None:
    assert issubclass(_public()[name], IcefloeError)


@pytest.mark.parametrize("name", sorted(_public()))
def test_every_public_exception_is_drawn_under_its_real_parent(name: str) -> None:
    cls = _public()[name]
    tree = _drawn_tree()
    if cls is IcefloeError:
        return
    assert name in tree, f"{name} ({cls.__module__}) is missing from the exceptions docstring"
    parent, extra = tree[name]
    icefloe_bases = [b.__name__ for b in cls.__bases__ if issubclass(b, IcefloeError)]
    builtin_bases = {b.__name__ for b in cls.__bases__ if not issubclass(b, IcefloeError)}
    assert icefloe_bases == [parent], (name, icefloe_bases, parent)
    assert builtin_bases == set(extra), (name, builtin_bases, extra)


def test_the_tree_draws_no_class_that_does_not_exist() -> None:
    assert set(_drawn_tree()) <= set(_public())


def test_private_exceptions_stay_in_their_module() -> None:
    for name, cls in _exception_classes().items():
        if not name.startswith("_"):
            continue
        home = Path(inspect.getfile(cls)).resolve()
        for path in SRC.rglob("*.py"):
            if path.resolve() != home:
                text = path.read_text(encoding="utf-8")
                assert not re.search(rf"\b{name}\b", text), f"{name} escapes into {path}"


def test_stream_not_found_is_a_key_error_naming_the_stream() -> None:
    exc = StreamNotFound("s1")
    assert isinstance(exc, KeyError)
    assert isinstance(exc, IcefloeError)
    assert exc.stream_id == "s1"
    assert str(exc) == "no stream 's1'"
    with pytest.raises(KeyError):
        raise exc
