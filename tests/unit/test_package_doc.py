"""The package docstring names only parts of icefloe that exist."""

from __future__ import annotations

import importlib
import re

import icefloe


def test_every_module_the_package_docstring_names_exists() -> None:
    doc = icefloe.__doc__
    assert doc is not None
    named = re.findall(r":mod:`(icefloe(?:\.\w+)*)`", doc)
    assert {"icefloe.hub", "icefloe.transport", "icefloe.cli"} <= set(named)
    for name in named:
        importlib.import_module(name)


def test_the_package_docstring_promises_no_broker_connectors() -> None:
    # There is no connector package: the docstring once said there were.
    doc = icefloe.__doc__
    assert doc is not None
    assert "connector" not in doc.lower()
