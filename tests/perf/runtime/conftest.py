"""Fixtures of the runtime perf tests: the runtime unit tests' ``make_flow`` and ``flowkit``.

``flowkit`` and ``flowfixture`` (which holds ``make_flow``) stay in
tests/unit/runtime: this folder's tests import them from there, so the path
is added here (pytest adds it itself only when it collects the unit tests too).
"""

from __future__ import annotations

import sys
from pathlib import Path

_UNIT_RUNTIME = str(Path(__file__).resolve().parents[2] / "unit" / "runtime")
if _UNIT_RUNTIME not in sys.path:
    sys.path.append(_UNIT_RUNTIME)

from flowfixture import make_flow  # noqa: E402  (needs the path above)

__all__ = ["make_flow"]
