"""Value types shared by both renderers (the compiled one and its pure-Python twin).

They live apart from render.py so that the compiled module and the twin see the same classes.
"""

from __future__ import annotations

from typing import Any


class JavaList(list):  # type: ignore[type-arg]
    """A list made by the template (``[1, 2]``, ``[1..3]``, ``$map.keySet()``, ``$s.split(",")``): it
    prints as Java's ArrayList does (``[1, 2]``). A plain ``list`` is an array that came from JSON
    ($input.path, $util.parseJson), which AWS prints as compact JSON (``[{"c":5}]``); keeping the two
    apart by type spares a walk over every parsed payload."""

    __slots__ = ()


class Entry:
    """One element of ``$map.entrySet()``: ``.key``/``.value`` and ``getKey()``/``getValue()``."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value

    def getKey(self) -> Any:  # noqa: N802 - Java name
        return self.key

    def getValue(self) -> Any:  # noqa: N802 - Java name
        return self.value
