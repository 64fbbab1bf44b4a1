"""Argument checks shared by constructors: ints, finite numbers, fractions.

Each check raises ``ValueError`` naming the argument and showing the value it
got, and returns the value when it passes (as a ``float`` for the number
checks), so a constructor can check and store in one line. ``bool`` is
refused wherever an int or number is expected: ``True`` as a size or a rate
is a bug, not a 1.
"""

from __future__ import annotations

import math

__all__ = [
    "check_finite_non_negative",
    "check_fraction",
    "check_int",
    "check_number",
    "check_positive",
]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``.

    :raises ValueError: ``"<name> must be an int >= <minimum>, got <value!r>"``.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: object, minimum: float, *, strict: bool = False) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) ``>= minimum``.

    With ``strict``, ``value`` must be ``> minimum`` instead.

    :raises ValueError: ``"<name> must be a finite number >= <minimum>, got <value!r>"``
        (``>`` when ``strict``); ``minimum`` is shown as given, so pass ``0``
        rather than ``0.0`` to read "0".
    """
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or (value <= minimum if strict else value < minimum)
    ):
        sign = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {sign} {minimum}, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) ``> 0``.

    :raises ValueError: ``"<name> must be a finite number > 0, got <value!r>"``.
    """
    # Spelled out rather than delegated to check_number: some callers run it
    # once per item (DeficitRoundRobin.push checks each cost).
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_finite_non_negative(name: str, value: object) -> float:
    """``value`` as a float if it is a finite int or float (not a bool) ``>= 0``.

    :raises ValueError: ``"<name> must be a finite number >= 0, got <value!r>"``.
    """
    return check_number(name, value, 0)


def check_fraction(name: str, value: float) -> float:
    """``value`` if ``0 <= value <= 1`` (NaN is refused).

    Only the range is checked: a non-number fails the comparison with
    ``TypeError`` and ``bool`` passes, so use it where the type is already
    known to be a number.

    :raises ValueError: ``"<name> must be between 0 and 1, got <value!r>"``.
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value
