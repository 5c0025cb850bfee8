"""The run's definition snapshot: the Workflow resolved once, when the run starts.

Dependencies are made explicit and every step gets an id, so the run can be
explained from its own object even after the Workflow is edited or deleted.
"""

from __future__ import annotations

from retcon.api.run import Definition, DefinitionStep, SourceRef, StepStatus
from retcon.api.workflow import StepDefaults, WorkflowSpec
from retcon.engine.graph import resolve_dependencies
from retcon.engine.naming import step_id


def build_definition(spec: WorkflowSpec, source: SourceRef) -> Definition:
    dependencies = resolve_dependencies(spec.steps)
    steps = [
        DefinitionStep.model_validate(
            {
                **step.model_dump(exclude_none=True),
                "id": step_id(index),
                "depends_on": list(dependencies[step.name]),
            }
        )
        for index, step in enumerate(spec.steps, start=1)
    ]
    return Definition(
        source=source,
        steps=steps,
        pause_behavior=spec.pause_behavior,
        injection_points=list(spec.injection_points or []),
        defaults=spec.defaults.model_copy(deep=True) if spec.defaults else StepDefaults(),
    )


def initial_steps(definition: Definition) -> list[StepStatus]:
    return [StepStatus(id=step.id, name=step.name, type=step.type.value) for step in definition.steps]


def next_step_number(definition: Definition) -> int:
    return max(int(step.id.removeprefix("step_")) for step in definition.steps) + 1
