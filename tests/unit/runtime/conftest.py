"""Fixtures shared by the runtime tests."""

from __future__ import annotations

from flowfixture import make_flow

__all__ = ["make_flow"]
