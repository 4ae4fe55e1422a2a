"""`$ref` resolution in OpenAPI 3.x / Swagger 2.0 documents.

Local references (`#/components/schemas/Pet`, `#/definitions/Pet`, `#/components/x-amazon-apigateway-
integrations/get`) and references into other files relative to the document (`common.yaml#/Pet`) are
followed. Schemas (models) are never expanded in place: a model may refer to itself through others
(`Person -> House -> Person`), so models stay separate, referring to each other by name, and only
their targets are checked. Objects that must be read (path items, operations, parameters, request
bodies, integrations) are dereferenced, with a chain of references that loops back reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..config.loader import ConfigError, Problem, load_document


def _pointer(doc: Any, pointer: str) -> tuple[bool, Any]:
    if pointer in ("", "/"):
        return True, doc
    if not pointer.startswith("/"):
        return False, None
    node = doc
    for raw in pointer[1:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


class Refs:
    def __init__(self, root: Any, source: str):
        self.root = root
        self.source = source
        self.base = Path(source).resolve().parent
        self.files: dict[str, Any] = {}  # other documents, by resolved path
        self.problems: list[Problem] = []

    def _document(self, name: str, where: str) -> Any:
        try:
            path = str((self.base / name).resolve())
        except (OSError, ValueError) as exc:  # a name no file system can hold (NUL, a lone surrogate)
            self.problems.append(Problem(where, f"$ref to {name!r}: not a file name ({exc})"))
            return None
        if path not in self.files:
            try:
                self.files[path] = load_document(path).data
            except ConfigError as exc:
                self.problems.append(Problem(where, f"$ref to '{name}': {exc.problems[0].message}"))
                self.files[path] = None
        return self.files[path]

    def target(self, ref: Any, where: str) -> tuple[bool, Any]:
        """The object a `$ref` names; (False, None) with a problem recorded when it names nothing."""
        if not isinstance(ref, str):
            self.problems.append(Problem(where, "$ref must be a string"))
            return False, None
        name, _, pointer = ref.partition("#")
        doc = self.root if not name else self._document(name, where)
        if doc is None:
            return False, None
        found, value = _pointer(doc, pointer)
        if not found:
            self.problems.append(Problem(where, f"$ref '{ref}' points to nothing in "
                                         f"{name or 'this document'}"))
        return found, value

    def deref(self, value: Any, where: str) -> Any:
        """Follow `$ref` until a real object; a chain that loops back is a problem (returns None)."""
        seen: list[str] = []
        while isinstance(value, dict) and "$ref" in value:
            ref = value["$ref"]
            if ref in seen:
                self.problems.append(Problem(where, f"circular $ref: {' -> '.join([*seen, ref])}"))
                return None
            seen.append(ref)
            found, value = self.target(ref, where)
            if not found:
                return None
        return value

    def check_all(self, value: Any, where: str = "") -> None:
        """Every `$ref` anywhere in the document must name something (models included)."""
        if isinstance(value, dict):
            ref = value.get("$ref")
            if ref is not None:
                self.target(ref, f"{where}.$ref" if where else "$ref")
            for key, child in value.items():
                if key != "$ref":
                    self.check_all(child, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                self.check_all(child, f"{where}[{i}]")


def model_name(ref: str) -> str | None:
    """'#/definitions/Pet' or '#/components/schemas/Pet' -> 'Pet' (AWS's model names)."""
    for prefix in ("#/definitions/", "#/components/schemas/"):
        if ref.startswith(prefix):
            return unquote(ref[len(prefix):]).replace("~1", "/").replace("~0", "~")
    return None
