"""The scratch state of one decision, shared by the engine's modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retcon.api.run import Definition, DefinitionStep, StepStatus, WorkflowRunStatus
from retcon.engine.model import Action, Observed, RecordEvent, RunView


@dataclass
class Work:
    """Mutable scratch state for one decision; every change ends up in the Decision."""

    run: RunView
    observed: Observed
    now: datetime
    status: WorkflowRunStatus
    definition: Definition
    steps: dict[str, StepStatus]  # by name
    defs: dict[str, DefinitionStep]  # by name
    actions: list[Action] = field(default_factory=list)
    wakeups: list[datetime] = field(default_factory=list)
    #: Outputs kept by reference that this decision has just learnt, by step id.
    fresh_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Steps inserted by this decision: they start only once the new structure is written.
    inserted_now: set[str] = field(default_factory=set)

    def event(self, kind: str, reason: str, message: str) -> None:
        self.actions.append(RecordEvent("Warning" if kind == "Warning" else "Normal", reason, message))


def step_output(work_or_steps: Work, step: StepStatus) -> dict[str, Any] | None:
    if step.output is not None:
        return step.output
    if step.output_ref is not None:
        fresh = work_or_steps.fresh_outputs.get(step.id)
        return fresh if fresh is not None else work_or_steps.observed.outputs.get(step.id)
    return None
