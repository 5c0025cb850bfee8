"""What the admission webhook decides for interventions: pure functions of the request.

The actor of every intervention is taken here, from the authenticated user in
the admission request, and stored where no client can forge it:

- on a WorkflowRun, each change of a Retcon annotation appends an *intent*
  (sequence, type, actor, time) to the `retcon.dev/intents` annotation, which
  only this webhook writes (a client's value is replaced);
- on a PauseRequest or an Injection, `retcon.dev/created-by` is stamped at
  creation and kept as it was on every update; a PauseRequest's deleter is
  stamped as `retcon.dev/deleted-by` just before its deletion goes ahead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from retcon.api.run import Definition
from retcon.api.workflow import StepTemplate
from retcon.engine.model import (
    ADD_STEP_ANNOTATION,
    CANCEL_ANNOTATION,
    INTENTS_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_FROM_ANNOTATION,
    SIGNAL_PREFIX,
)
from retcon.engine.validation import format_problems, validate_run_insertion

CREATED_BY = "retcon.dev/created-by"
DELETED_BY = "retcon.dev/deleted-by"
RELEASE_FINALIZER = "retcon.dev/release-audit"
#: Intents kept on a run; older ones have long been folded into its audit trail.
MAX_INTENTS = 50


def actor_of(userinfo: Mapping[str, Any]) -> str:
    return str(userinfo.get("username") or "unknown")


def read_intents(annotations: Mapping[str, str]) -> list[dict[str, Any]]:
    try:
        value = json.loads(annotations.get(INTENTS_ANNOTATION) or "[]")
    except ValueError:
        return []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def derive_intents(old: Mapping[str, str], new: Mapping[str, str]) -> list[dict[str, Any]]:
    """The interventions an annotation change amounts to (without actor, time and sequence)."""
    found: list[dict[str, Any]] = []
    if new.get(PAUSE_ANNOTATION) == "true" and old.get(PAUSE_ANNOTATION) != "true":
        found.append({"type": "pause", "data": {}})
    resume_from = new.get(RESUME_FROM_ANNOTATION)
    if old.get(PAUSE_ANNOTATION) == "true" and PAUSE_ANNOTATION not in new:
        found.append({"type": "resume", "data": {"fromStep": resume_from} if resume_from else {}})
    elif resume_from and resume_from != old.get(RESUME_FROM_ANNOTATION):
        found.append({"type": "resume", "data": {"fromStep": resume_from}})
    if new.get(CANCEL_ANNOTATION) == "true" and old.get(CANCEL_ANNOTATION) != "true":
        found.append({"type": "cancel", "data": {}})
    for key, value in new.items():
        if key.startswith(SIGNAL_PREFIX) and old.get(key) != value:
            try:
                data = json.loads(value)
            except ValueError:
                data = None
            found.append({"type": "signal", "data": {"step": key.removeprefix(SIGNAL_PREFIX), "data": data}})
    if new.get(ADD_STEP_ANNOTATION) and new.get(ADD_STEP_ANNOTATION) != old.get(ADD_STEP_ANNOTATION):
        try:
            request = json.loads(new[ADD_STEP_ANNOTATION])
        except ValueError:
            request = None
        found.append({"type": "add-step", "data": {"request": request}})
    return found


def run_intents_value(
    old: Mapping[str, str] | None, new: Mapping[str, str], *, actor: str, now: datetime, operator_user: str
) -> str | None:
    """The `retcon.dev/intents` value this request must leave, or None if it must not be touched.

    Whatever the client sent for the annotation is ignored: the old value, plus what this
    change amounts to. The operator's own changes (removing consumed annotations) add nothing.
    """
    previous = read_intents(old or {})
    added = [] if (actor == operator_user or old is None) else derive_intents(old, new)
    seq = max((int(item.get("seq", 0)) for item in previous), default=0)
    stamped = [
        {**item, "seq": seq + index, "actor": actor, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for index, item in enumerate(added, start=1)
    ]
    intents = (previous + stamped)[-MAX_INTENTS:]
    value = json.dumps(intents, separators=(",", ":")) if intents else None
    if value == new.get(INTENTS_ANNOTATION):
        return None
    return value if value is not None else ""


def step_names(run: Mapping[str, Any]) -> dict[str, str]:
    """id -> name and name -> name, for a run's known steps."""
    status = run.get("status") or {}
    names: dict[str, str] = {}
    for step in ((status.get("definition") or {}).get("steps") or []) + (status.get("steps") or []):
        names[str(step.get("id"))] = str(step.get("name"))
        names[str(step.get("name"))] = str(step.get("name"))
    return names


def _steps_listing(run: Mapping[str, Any]) -> str:
    steps = ((run.get("status") or {}).get("definition") or {}).get("steps") or []
    return ", ".join(f"{s.get('id')} ({s.get('name')})" for s in steps) or "none yet"


def validate_run_annotations(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """A one-line refusal for an annotation a user got wrong, or None."""
    before = ((old or {}).get("metadata") or {}).get("annotations") or {}
    after = (new.get("metadata") or {}).get("annotations") or {}
    name = new.get("metadata", {}).get("name", "")
    for key, meaning in ((PAUSE_ANNOTATION, "pause"), (CANCEL_ANNOTATION, "cancel")):
        if key in after and after[key] != before.get(key) and after[key] != "true":
            hint = " remove it (retcon.dev/pause-) to resume" if key == PAUSE_ANNOTATION else ""
            return f'{key} must be "true" to {meaning} the run;{hint}'.rstrip(";")
    names = step_names(new)
    resume_from = after.get(RESUME_FROM_ANNOTATION)
    if resume_from and resume_from != before.get(RESUME_FROM_ANNOTATION) and resume_from not in names:
        return f"run {name} has no step {resume_from!r} to resume from; its steps: {_steps_listing(new)}"
    definition = {
        s.get("name"): s for s in ((new.get("status") or {}).get("definition") or {}).get("steps") or []
    }
    for key, value in after.items():
        if not key.startswith(SIGNAL_PREFIX) or before.get(key) == value:
            continue
        step = key.removeprefix(SIGNAL_PREFIX)
        try:
            data = json.loads(value)
        except ValueError as error:
            return f"{key}: the signal's data is not JSON ({error}); give a JSON object"
        if not isinstance(data, dict):
            return f"{key}: the signal's data must be a JSON object, not {type(data).__name__}"
        if definition and step not in definition:
            return f"run {name} has no step {step!r} to signal; its steps: {_steps_listing(new)}"
        if definition and definition[step].get("type") != "Wait":
            kind = definition[step].get("type", "Standard")
            return f"step {step} of run {name} is a {kind} step; only Wait steps take a signal"
    added = after.get(ADD_STEP_ANNOTATION)
    if added and added != before.get(ADD_STEP_ANNOTATION):
        return validate_add_step(new, added)
    return None


def validate_add_step(run: Mapping[str, Any], raw: str) -> str | None:
    """Refuse, at annotate time, a step that could not be added to this run."""
    status = run.get("status") or {}
    name = run.get("metadata", {}).get("name", "")
    try:
        request = json.loads(raw)
        after, template = str(request["after"]), StepTemplate.model_validate(request["step"])
    except (ValueError, KeyError, TypeError) as error:
        return f"{ADD_STEP_ANNOTATION} must be a JSON object with after, step and reason ({error})"
    if not str(request.get("reason") or "").strip():
        return f"{ADD_STEP_ANNOTATION}: give a reason for adding step {template.name}"
    if status.get("phase") != "Paused":
        phase = status.get("phase") or "not started"
        return f"steps can be added only to a Paused run; run {name} is {phase}: pause it first"
    definition = Definition.model_validate(status.get("definition") or {})
    after = next((s.name for s in definition.steps if s.id == after), after)
    problems = validate_run_insertion(definition.steps, definition.injection_points, after, [template])
    phases = {str(s.get("name")): s.get("phase") for s in status.get("steps") or []}
    begun = [
        s.name for s in definition.steps if after in (s.depends_on or []) and phases.get(s.name) != "Pending"
    ]
    if begun and not problems:
        started = ", ".join(begun)
        return f"cannot add step {template.name} to run {name}: steps after {after} have started ({started})"
    return (
        f"cannot add step {template.name} to run {name}: " + format_problems(problems).replace("\n", "; ")
        if problems
        else None
    )


def validate_injection(spec: Mapping[str, Any], run: Mapping[str, Any] | None, namespace: str) -> str | None:
    """Early, friendly refusals for an Injection; the operator still decides when it applies."""
    run_name = spec.get("runName", "")
    if run is None:
        return f"there is no WorkflowRun {run_name} in namespace {namespace}"
    status = run.get("status") or {}
    if not status.get("definition"):
        return f"run {run_name} has not started yet: there is no step output to replace"
    ref = str(spec.get("step", ""))
    names = step_names(run)
    if ref not in names:
        return f"run {run_name} has no step {ref!r}; its steps: {_steps_listing(run)}"
    output = spec.get("output")
    if not isinstance(output, dict):
        return "spec.output must be a JSON object"
    phase = status.get("phase")
    if phase in ("Succeeded", "Cancelled"):
        return f"run {run_name} is {phase}: only a Paused or Failed run can be injected into"
    return None
