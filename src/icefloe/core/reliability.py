"""The delivery guarantee a stream or a hub event asks for, and its one ranking.

``Reliability`` is a :class:`~enum.StrEnum`: its values are the strings of
the wire and of the configuration (``"at_most_once"``...), so a plain string
compares equal to its member. Its order of strength is :attr:`Reliability.rank`
(0, 1, 2), the only ranking in the code base: the runtime picks the
strongest guarantee of the nodes a run enters, load shedding sheds the
weakest first (:func:`~icefloe.core.congestion.shed_order`), and the hub
never drops an event ranked above ``at_most_once``.

String order is not strength order (``"at_least_once" < "at_most_once"``),
so compare :attr:`~Reliability.rank`, never the members themselves.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["Reliability"]


class Reliability(enum.StrEnum):
    """How hard a stream tries not to lose chunks (see docs/python-api.md)."""

    #: may be dropped under pressure (shed, or lost at a full buffer)
    AT_MOST_ONCE = "at_most_once"
    #: never dropped: producers wait for room instead; a retry may repeat it
    AT_LEAST_ONCE = "at_least_once"
    #: never dropped, and never delivered twice
    EXACTLY_ONCE = "exactly_once"

    @property
    def rank(self) -> int:
        """0, 1, 2 from weakest to strongest: compare guarantees with this."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: object) -> Reliability:
        """``value`` (a member or its string value) as a member.

        :raises ValueError: ``value`` is not one of the values.
        """
        member = _BY_VALUE.get(value) if isinstance(value, str) else None
        if member is None:
            allowed = ", ".join(repr(r.value) for r in cls)
            raise ValueError(f"reliability must be one of {allowed}, got {value!r}")
        return member


# Declaration order is strength order.
_RANK: Final[dict[Reliability, int]] = {level: i for i, level in enumerate(Reliability)}
_BY_VALUE: Final[dict[str, Reliability]] = {level.value: level for level in Reliability}
