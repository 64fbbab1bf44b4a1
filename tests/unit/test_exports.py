"""The public surface of ``icefloe``: complete, sorted, and light to import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import icefloe

#: the names the Python API promises (docs/python-api.md)
PROMISED_NAMES = [
    "Headers",
    "Message",
    "Node",
    "NodePolicy",
    "StreamChunk",
    "StreamClosedError",
    "StreamError",
    "create",
]

#: heavy or optional dependencies ``import icefloe`` must not load
HEAVY_MODULES = [
    "starlette",
    "uvicorn",
    "aiokafka",
    "redis",
    "nats",
    "websockets",
    "typer",
    "rich",
    "openai",
    "anthropic",
    "icefloe.llm",
]


def test_all_is_sorted_and_unique() -> None:
    assert icefloe.__all__ == sorted(icefloe.__all__)
    assert len(set(icefloe.__all__)) == len(icefloe.__all__)


@pytest.mark.parametrize("name", icefloe.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from icefloe import {name}", namespace)
    assert namespace[name] is getattr(icefloe, name)


@pytest.mark.parametrize("name", PROMISED_NAMES)
def test_design_md_api_names_are_exported(name: str) -> None:
    assert name in icefloe.__all__
    assert getattr(icefloe, name) is not None


def test_exported_classes_claim_the_package_as_their_module() -> None:
    for name in icefloe.__all__:
        obj = getattr(icefloe, name)
        if isinstance(obj, type) and obj.__module__.startswith("icefloe"):
            assert obj.__module__ == "icefloe", name


def test_exception_tree_is_rooted_in_icefloe_error() -> None:
    for name in ("StreamClosedError", "StreamError", "WouldBlock", "InvalidState"):
        assert issubclass(getattr(icefloe, name), icefloe.IcefloeError)
    assert issubclass(icefloe.StreamClosedError, icefloe.InvalidState)
    assert issubclass(icefloe.InvalidState, AssertionError)


def test_import_does_not_load_heavy_dependencies() -> None:
    script = (
        "import json, sys\n"
        "import icefloe\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []


def test_the_llm_package_does_not_load_a_provider_sdk() -> None:
    # The adapters are extras: only importing icefloe.llm.openai (or .anthropic) loads its SDK.
    script = (
        "import json, sys\n"
        "import icefloe.llm\n"
        "print(json.dumps([m for m in ('openai', 'anthropic') if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []


def test_chunks_emitted_without_meta_share_a_read_only_mapping() -> None:
    import pytest

    from icefloe.core.messages import NO_META

    with pytest.raises(TypeError, match="read-only"):
        NO_META["x"] = 1
    with pytest.raises(TypeError, match="read-only"):
        NO_META.update(x=1)
    assert NO_META == {}
