"""The input document (``$RETCON_INPUT``) and the ``StepContext`` built from it.

``parse_input_document`` checks the document's shape and builds the two things
a step function receives: the read-only ``state`` and its ``StepContext``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from retcon_runner._state import ReadOnlyState

SUCCEEDED = "Succeeded"
STEP_LOGGER_PREFIX = "retcon.step"

# What run_step assumes for the parts a hand-written test document leaves out.
_LOCAL_RUN = {"name": "local", "namespace": "default", "uid": ""}
_LOCAL_STEP = {"id": "step_000", "name": "local", "attempt": 1}


class InvalidInputError(ValueError):
    """The input document does not have the shape the operator writes."""


@dataclass(frozen=True)
class StepContext:
    """Everything about the current attempt that is not the run state.

    ``input`` is the run's input; ``steps`` maps each step name to a read-only
    ``{output, phase}`` (``context.steps["fetch"].phase``); ``outputs`` maps the
    names of the steps that succeeded to their outputs; ``logger`` writes to
    the step's log (stderr in the pod).
    """

    run_name: str
    run_uid: str
    namespace: str
    step_id: str
    step_name: str
    attempt: int
    input: ReadOnlyState = field(default_factory=lambda: ReadOnlyState({}, "input"))
    steps: ReadOnlyState = field(default_factory=lambda: ReadOnlyState({}, "steps"))
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger(f"{STEP_LOGGER_PREFIX}.local"))

    @property
    def outputs(self) -> ReadOnlyState:
        """Step name → output, for the steps that succeeded."""
        succeeded = {
            name: record.get("output") or {}
            for name, record in self.steps.items()
            if record.get("phase") == SUCCEEDED
        }
        return ReadOnlyState(succeeded, "outputs")


def parse_input_document(document: object) -> tuple[ReadOnlyState, StepContext]:
    """The read-only state and the context for ``document``.

    Missing ``run`` and ``step`` parts take local defaults, missing ``input``
    and ``steps`` are empty, and a missing ``state`` is the input, so a test can
    pass just ``{"state": {...}}``.
    """
    doc = _object(document, "the input document")
    run = {**_LOCAL_RUN, **_object(doc.get("run", {}), "run")}
    step = {**_LOCAL_STEP, **_object(doc.get("step", {}), "step")}
    run_input = _object(doc.get("input", {}), "input")
    state = _object(doc.get("state", run_input), "state")
    steps = _object(doc.get("steps", {}), "steps")
    for name, record in steps.items():
        entry = _object(record, f"steps[{name!r}]")
        if entry.get("output") is not None:
            _object(entry["output"], f"steps[{name!r}].output")
    step_name = _text(step, "name", "step")
    context = StepContext(
        run_name=_text(run, "name", "run"),
        run_uid=_text(run, "uid", "run"),
        namespace=_text(run, "namespace", "run"),
        step_id=_text(step, "id", "step"),
        step_name=step_name,
        attempt=_attempt(step.get("attempt")),
        input=ReadOnlyState(run_input, "input"),
        steps=ReadOnlyState({name: _step_record(record) for name, record in steps.items()}, "steps"),
        logger=logging.getLogger(f"{STEP_LOGGER_PREFIX}.{step_name}"),
    )
    return ReadOnlyState(state, "state"), context


def _step_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"output": record.get("output"), "phase": record.get("phase")}


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _text(part: Mapping[str, Any], key: str, what: str) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}.{key} must be a string, got {type(value).__name__}")
    return value


def _attempt(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInputError(f"step.attempt must be an integer, got {type(value).__name__}")
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"step.attempt must be an integer, got {value!r}") from None
