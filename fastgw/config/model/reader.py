"""Reading plain data into the config model: `_Reader` records a Problem, with its location, for each
mistake instead of stopping at the first, and `_join` builds those locations. Shared by every module of
this package."""

from __future__ import annotations

import difflib
import re
from typing import Any

from ..loader import Problem

# Route keys, "GET /items/{id}": a route's own key (api.py) and a usage plan's per-method throttle key
# (usage.py).
ROUTE_KEY = re.compile(r"^([A-Z]+) (/\S*)$")


class _Reader:
    """Reads typed fields out of plain data and records a Problem for each mistake."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or not key:
                # YAML gives null (the loader makes it ''), numbers or booleans as keys (`&x: 1`, `1: a`):
                # the problem names the mapping, since the key names nothing.
                self.error(path or "(the document)", f"a key must be a name, not {_kind(key) if key else 'empty'} "
                           f"({key!r})")
                continue
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.error(_join(path, key), f"unknown field{hint}")
        return value

    def string(self, obj: dict[str, Any], key: str, path: str, default: str | None = None,
               required: bool = False, choices: tuple[str, ...] | None = None) -> str | None:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.error(where, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(where, f"must be a string, not {_kind(value)}")
            return default
        value = str(value)
        if choices is not None and value not in choices:
            self.error(where, f"must be one of {', '.join(choices)}; got '{value}'")
            return default
        return value

    def integer(self, obj: dict[str, Any], key: str, path: str, default: int,
                low: int | None = None, high: int | None = None) -> int:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # from ${env:...}
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"must be a whole number, not {_kind(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            self.error(where, f"must be between {low} and {high}; got {value}")
            return default
        return value

    def number(self, obj: dict[str, Any], key: str, path: str, default: float, low: float = 0.0) -> float:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            self.error(where, f"must be a number >= {low}")
            return default
        return float(value)

    def boolean(self, obj: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(_join(path, key), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def string_map(self, obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(where, f"must be a mapping, not {_kind(value)}")
            return {}
        result = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                self.error(_join(where, k), f"must be a string, not {_kind(v)}")
                continue
            result[str(k)] = str(v)
        return result


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _read_name_list(r: _Reader, obj: dict[str, Any], key: str, path: str) -> list[str]:
    value = obj.get(key)
    where = _join(path, key)
    if value is None:
        return []
    if not isinstance(value, list):
        r.error(where, f"must be a list, not {_kind(value)}")
        return []
    result = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item):
            r.error(_join(where, i), f"must be a name, not {_kind(item)}")
            continue
        result.append(str(item))
    return result
