"""CEL conditions over a run: compile once, evaluate against `input`, `steps` and `state`.

cel-expr-python returns an error *value* instead of raising when evaluation
fails (a missing key, a type mismatch); this module turns that into
`ConditionError`, so a bad condition can never read as "false".
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cel_expr_python import cel

VARIABLES = ("input", "steps", "state")


class ConditionError(Exception):
    """A condition that does not compile, errors at run time, or is not a boolean."""

    def __init__(self, expression: str, problem: str) -> None:
        super().__init__(f"condition {expression!r}: {problem}")
        self.expression = expression
        self.problem = problem


@lru_cache(maxsize=1)
def _env() -> Any:
    return cel.NewEnv(variables={name: cel.Type.DYN for name in VARIABLES})


@lru_cache(maxsize=1024)
def compile_condition(expression: str) -> Any:
    """Compile (and cache) an expression; raises ConditionError with the parser's message."""
    try:
        return _env().compile(expression)
    except RuntimeError as error:
        # The message is "INVALID_ARGUMENT: ERROR: <input>:1:15: Syntax error: ...\n | expr\n | ..^"
        text = str(error).removeprefix("INVALID_ARGUMENT: ").replace("ERROR: <input>:", "at ")
        raise ConditionError(expression, " ".join(text.split())) from None


def evaluate(
    expression: str, *, input: Mapping[str, Any], steps: Mapping[str, Any], state: Mapping[str, Any]
) -> bool:
    """Evaluate a condition to a boolean, or raise ConditionError saying why not."""
    compiled = compile_condition(expression)
    value = compiled.eval(data={"input": dict(input), "steps": dict(steps), "state": dict(state)})
    kind = value.type().name()
    if kind == "ERROR":
        raise ConditionError(expression, str(value.value()))
    if kind != "BOOL":
        raise ConditionError(expression, f"evaluated to a {kind.lower()}, not a boolean")
    return bool(value.value())
