"""Dynamic step injection: steps inserted into a run by a rule or at run time, under guard rails.

Every insertion is explainable from the run object alone:

- only after a step listed in the Workflow's `injectionPoints` (checked when the
  Workflow is applied, and again here);
- a rule may name `allowedTenants`: a run of another tenant does not get the
  steps, and the audit says why;
- inserted steps get fresh ids, `injected: true`, and say after which step and
  by which rule (`<step>/dynamicInjection[<n>]`) or actor they came;
- steps that depended on the insertion point now depend on the inserted steps;
- the resolved structure is written to `status.definition` *before* any
  inserted step starts: a decision that inserts starts none of them;
- `step.dynamic_injection` and `step.added` audit entries carry the inserted
  steps (with function or image), the point, the condition and its value, and
  the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from retcon.api.run import DefinitionStep, StepPhase, StepStatus
from retcon.api.workflow import DynamicInjection, StepTemplate
from retcon.engine import cel
from retcon.engine.interventions import audit
from retcon.engine.model import ADD_STEP_ANNOTATION, INTENTS_ANNOTATION
from retcon.engine.naming import step_id
from retcon.engine.snapshot import next_step_number
from retcon.engine.validation import format_problems, validate_run_insertion
from retcon.engine.work import Work


def _describe(step: StepTemplate) -> dict[str, Any]:
    described: dict[str, Any] = {"name": step.name, "type": step.type.value}
    if step.function:
        described["function"] = step.function
    if step.image:
        described["image"] = step.image
    return described


def insert_steps(work: Work, after: str, templates: Sequence[StepTemplate], inserted_by: str) -> list[str]:
    """Insert `templates` after step `after`; rewire its dependents. Returns the new names."""
    definition = work.definition
    number = next_step_number(definition)
    group = {template.name for template in templates}
    new_steps: list[DefinitionStep] = []
    previous = after
    for offset, template in enumerate(templates):
        depends = list(template.depends_on) if template.depends_on is not None else [previous]
        new_steps.append(
            DefinitionStep.model_validate(
                {
                    **template.model_dump(exclude_none=True),
                    "id": step_id(number + offset),
                    "depends_on": depends,
                    "injected": True,
                    "inserted_after": after,
                    "inserted_by": inserted_by,
                }
            )
        )
        previous = template.name
    depended_on = {dep for step in new_steps for dep in step.depends_on or [] if dep in group}
    tail = [step.name for step in new_steps if step.name not in depended_on]
    for step in definition.steps:
        if step.name in group or after not in (step.depends_on or []):
            continue
        rewired = [dep for dep in step.depends_on or [] if dep != after] + tail
        step.depends_on = list(dict.fromkeys(rewired))
    # Right after the point: an earlier insertion there now follows this one, so the
    # definition's order agrees with its dependencies (and with how `state` is merged).
    position = next(i for i, step in enumerate(definition.steps) if step.name == after) + 1
    definition.steps[position:position] = new_steps
    for step in new_steps:
        status = StepStatus(id=step.id, name=step.name, type=step.type.value, message="inserted; starts next")
        work.status.steps.append(status)
        work.steps[step.name] = status
        work.defs[step.name] = step
        work.inserted_now.add(step.name)
    return [step.name for step in new_steps]


def started_after(work: Work, point: str) -> list[str]:
    """Steps that depend on `point` and have already started: inserting there would rewrite history."""
    return [
        step.name
        for step in work.definition.steps
        if point in (step.depends_on or []) and work.steps[step.name].phase is not StepPhase.PENDING
    ]


def _rule_label(step: str, index: int) -> str:
    return f"{step}/dynamicInjection[{index}]"


def evaluate_rules(work: Work, step: StepStatus, inputs: Mapping[str, Mapping[str, Any]]) -> bool:
    """Apply the dynamicInjection rules of a step that has just succeeded. False if one errored."""
    rules: list[DynamicInjection] = work.defs[step.name].dynamic_injection or []
    for index, rule in enumerate(rules):
        label = _rule_label(step.name, index)
        if any(s.inserted_by == label for s in work.definition.steps):
            continue  # already applied (the step ran again after a resume)
        try:
            holds = cel.evaluate(rule.condition, **inputs)
        except cel.ConditionError as error:
            step.phase = StepPhase.FAILED
            step.message = f"dynamicInjection condition {error.expression!r} failed: {error.problem}"
            work.event("Warning", "StepFailed", f"Step {step.name}: {step.message}")
            return False
        point = rule.insert_after or step.name
        base = {"rule": label, "insertAfter": point, "condition": rule.condition, "conditionValue": holds,
                "steps": [_describe(s) for s in rule.steps]}  # fmt: skip
        if not holds:
            continue
        tenant = work.run.tenant
        if rule.allowed_tenants is not None and tenant not in rule.allowed_tenants:
            allowed = ", ".join(rule.allowed_tenants)
            why = f"tenant {tenant!r} is not in allowedTenants ({allowed})" if tenant else (
                f"the run has no tenant; allowedTenants is ({allowed})"
            )  # fmt: skip
            audit(work, "step.dynamic_injection", "retcon-operator", step=step, reason=rule.reason,
                  details={**base, "inserted": False, "why": why})  # fmt: skip
            work.event("Normal", "DynamicInjectionSkipped", f"Rule {label} not applied: {why}")
            continue
        problems = validate_run_insertion(
            work.definition.steps, work.definition.injection_points, point, rule.steps
        )
        begun = started_after(work, point)
        if problems or begun:
            why = (
                format_problems(problems).replace("\n", "; ")
                if problems
                else f"steps after {point} have already started ({', '.join(begun)})"
            )
            audit(work, "step.dynamic_injection", "retcon-operator", step=step, reason=rule.reason,
                  details={**base, "inserted": False, "why": why})  # fmt: skip
            work.event("Warning", "DynamicInjectionRefused", f"Rule {label} refused: {why}")
            continue
        names = insert_steps(work, point, rule.steps, label)
        audit(work, "step.dynamic_injection", "retcon-operator", step=step, reason=rule.reason,
              details={**base, "inserted": True, "insertedSteps": names})  # fmt: skip
        work.event(
            "Normal", "StepsInserted", f"Inserted {', '.join(names)} after {point} ({label}: {rule.reason})"
        )
    return True


def add_step(work: Work, annotations: Mapping[str, str]) -> bool:
    """A step added at run time (`kubectl retcon run add-step`). True if the annotation is consumed."""
    raw = annotations.get(ADD_STEP_ANNOTATION)
    if not raw:
        return False
    actor = _add_step_actor(work, annotations, raw)
    try:
        request = json.loads(raw)
        after = str(request["after"])
        reason = str(request.get("reason") or "").strip()
        template = StepTemplate.model_validate(request["step"])
    except (ValueError, KeyError, TypeError, ValidationError) as error:
        work.event("Warning", "AddStepRefused", f"retcon.dev/add-step is not a valid request: {error}")
        return True
    if work.run.status.phase.value not in ("Paused",):
        work.event(
            "Warning",
            "AddStepRefused",
            f"steps can be added only to a Paused run; this one is {work.run.status.phase.value}",
        )
        return True
    if not reason:
        work.event("Warning", "AddStepRefused", "an added step needs a reason")
        return True
    by_id = {s.id: s.name for s in work.definition.steps}
    after = by_id.get(after, after)
    problems = validate_run_insertion(
        work.definition.steps, work.definition.injection_points, after, [template]
    )
    if problems:
        work.event("Warning", "AddStepRefused", format_problems(problems).replace("\n", "; "))
        return True
    begun = started_after(work, after)
    if begun:
        work.event(
            "Warning", "AddStepRefused", f"steps after {after} have already started ({', '.join(begun)})"
        )
        return True
    names = insert_steps(work, after, [template], actor)
    audit(work, "step.added", actor, step=work.steps[names[0]], reason=reason,
          details={"insertAfter": after, "steps": [_describe(template)], "insertedSteps": names})  # fmt: skip
    work.event("Normal", "StepAdded", f"Added step {template.name} after {after} ({actor}: {reason})")
    return True


def _add_step_actor(work: Work, annotations: Mapping[str, str], raw: str) -> str:
    """The authenticated user who set the add-step annotation (from the admission intents)."""
    try:
        intents = json.loads(annotations.get(INTENTS_ANNOTATION) or "[]")
    except ValueError:
        intents = []
    for item in reversed(intents if isinstance(intents, list) else []):
        if isinstance(item, dict) and item.get("type") == "add-step":
            return str(item.get("actor", "unknown"))
    return "unknown"
