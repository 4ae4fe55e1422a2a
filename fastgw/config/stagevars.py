"""Stage variables: `${stageVariables.NAME}` substituted into a config string at compile time."""

from __future__ import annotations

import re

from .loader import Problem
from .model import Stage

STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
NO_VARIABLE = "has no variable"  # the problem's wording: awsCompat turns it into a 500 at run time


def substitute_stage_variables(text: str, stage: Stage, where: str, problems: list[Problem],
                               variables: dict[str, str] | None = None) -> str | None:
    """`${stageVariables.NAME}` replaced; None (problems recorded) when a variable or value is missing."""
    values = stage.variables if variables is None else variables
    missing: list[str] = []

    def stage_variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return ""
        return values[name]

    result = STAGE_VARIABLE.sub(stage_variable, text)
    for name in missing:
        problems.append(Problem(where, f"stage '{stage.name}' {NO_VARIABLE} '{name}'"))
    if missing:
        return None
    unknown = PLACEHOLDER.search(result)
    if unknown is not None:
        name = unknown.group(1)
        if re.match(r"^[A-Za-z_][\w:.-]*$", name) and not name.startswith(("env:", "context.", "stageVariables.")):
            problems.append(Problem(where, f"'{text}' needs the value of '{name}': give it with --param "
                                    f"{name}=VALUE (or parameters: in the config)"))
        else:
            problems.append(Problem(where, f"unknown reference in '{text}' (only ${{stageVariables.NAME}} and route "
                                    "parameters like {id} are substituted)"))
        return None
    return result
