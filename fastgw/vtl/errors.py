"""The two errors of the VTL engine: one at compile time (with a position), one at render time."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template that does not parse. ``str(e)`` names the place: ``... (line L, column C)``."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.line = line
        self.column = column


class RenderError(Exception):
    """A failure while rendering (bad JSON given to $util.parseJson, a bad JSONPath, a Java exception in a
    method such as substring out of range). The gateway answers it with a 500."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
