"""The rules of each verb, as pure functions: check a request against a run, build the change.

Nothing here talks to the API server. `AsyncClient` reads the objects, calls
these to decide whether a request is allowed and what to send, then sends it;
so every rule exists once, and the unit tests exercise it without a cluster.
A check raises a `RetconError` with one actionable line, before anything changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from retcon.api import (
    API_VERSION,
    MAX_OUTPUT_BYTES,
    DefinitionStep,
    PauseReason,
    RunPhase,
    Step,
    StepPhase,
    StepStatus,
    StepTemplate,
    WorkflowRunStatus,
    WorkflowSpec,
)
from retcon.api.meta import DNS_SUBDOMAIN
from retcon.client._errors import (
    InjectionRejected,
    InvalidInput,
    NotPaused,
    RunHeld,
    StepNotFound,
)
from retcon.client._models import (
    AUDIT_TYPES,
    AuditRecord,
    ExecutionPath,
    JsonObject,
    PathStep,
    PausedState,
    PausedStep,
    PauseOutcome,
    RunDetail,
    RunStructure,
    RunSummary,
    StepInfo,
    StructureStep,
)
from retcon.engine.graph import resolve_dependencies, topological_order
from retcon.engine.model import (
    ADD_STEP_ANNOTATION,
    CANCEL_ANNOTATION,
    PAUSE_ANNOTATION,
    RESUME_FROM_ANNOTATION,
)
from retcon.engine.model import SIGNAL_PREFIX as SIGNAL_ANNOTATION_PREFIX

TRUE = "true"
#: Kubernetes limits all of an object's annotations together to 256 KiB.
MAX_ANNOTATION_BYTES = 128 * 1024
MAX_REASON_LENGTH = 1024
_LISTED = 20


def compact(value: Any) -> str:
    """Compact JSON, as annotations carry it and the CLI prints previous outputs."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


# --- reading a run ---------------------------------------------------------------------------------


def parse_status(obj: Mapping[str, Any]) -> WorkflowRunStatus:
    return WorkflowRunStatus.model_validate(obj.get("status") or {})


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _created(obj: Mapping[str, Any]) -> datetime | None:
    stamp = _meta(obj).get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def build_summary(obj: Mapping[str, Any]) -> RunSummary:
    status = parse_status(obj)
    spec = obj.get("spec") or {}
    return RunSummary(
        name=_meta(obj).get("name", ""),
        namespace=_meta(obj).get("namespace", ""),
        workflow=(spec.get("workflowRef") or {}).get("name", ""),
        phase=status.phase.value,
        pause_reason=status.pause_reason.value if status.pause_reason else None,
        next_step_hint=status.next_step_hint,
        current_step=status.current_step,
        progress=status.progress,
        tenant=spec.get("tenant"),
        message=status.message,
        created_at=_created(obj),
    )


def output_refs(status: WorkflowRunStatus) -> dict[str, str]:
    """Step id -> the StepResult holding its output, for outputs kept by reference."""
    return {
        step.id: step.output_ref.name
        for step in status.steps
        if step.output is None and step.output_ref is not None and step.output_ref.kind == "StepResult"
    }


def _step_info(step: StepStatus, outputs: Mapping[str, JsonObject]) -> StepInfo:
    return StepInfo(
        id=step.id,
        name=step.name,
        type=step.type,
        phase=step.phase.value,
        injected=step.injected,
        output=step.output if step.output is not None else outputs.get(step.id),
        output_ref=step.output_ref.name if step.output_ref else None,
        attempts=len(step.attempts),
        started_at=step.started_at,
        finished_at=step.finished_at,
        message=step.message,
        route=step.route,
    )


def build_detail(obj: Mapping[str, Any], outputs: Mapping[str, JsonObject] | None = None) -> RunDetail:
    """The run as `get` shows it; `outputs` are those loaded from StepResults, by step id."""
    status = parse_status(obj)
    summary = build_summary(obj)
    return RunDetail(
        **{name: getattr(summary, name) for name in RunSummary.__dataclass_fields__},
        input=dict((obj.get("spec") or {}).get("input") or {}),
        started_at=status.started_at,
        finished_at=status.finished_at,
        pause_requested=annotations_of(obj).get(PAUSE_ANNOTATION) == TRUE,
        steps=tuple(_step_info(step, outputs or {}) for step in status.steps),
    )


def watch_is_over(detail: RunDetail) -> bool:
    """A watch ends when the run ends or pauses."""
    return detail.ended or detail.phase == RunPhase.PAUSED.value


# --- checking a request ----------------------------------------------------------------------------


def check_json_object(value: Any, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {_kind_of(value)}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"{what} is not serialisable as JSON: {error}") from None
    return value


def check_reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("a reason is required: say why, it goes into the audit trail")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"the reason is {len(reason)} characters long; the limit is {MAX_REASON_LENGTH}")
    return reason


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 253 or not re.match(DNS_SUBDOMAIN, value):
        raise InvalidInput(
            f"{what} {value!r} is not a valid Kubernetes name: use lower-case letters, digits, '-' and '.'"
        )
    return value


def _describe(step: StepStatus | DefinitionStep) -> str:
    return f"{step.id} ({step.name})"


def find_step(run: str, status: WorkflowRunStatus, ref: str) -> StepStatus:
    """The step a user named by id (`step_002`) or name, or StepNotFound listing the valid ones."""
    for step in status.steps:
        if ref in (step.id, step.name):
            return step
    if not status.steps:
        raise StepNotFound(
            f"run {run} has no steps yet (it is {status.phase.value}): wait until it starts", step=ref
        )
    valid = tuple(_describe(step) for step in status.steps)
    listed = ", ".join(valid[:_LISTED]) + (", ..." if len(valid) > _LISTED else "")
    raise StepNotFound(f"step {ref!r} not found in run {run}; valid steps: {listed}", step=ref, valid=valid)


def _not_editable(run: str, phase: RunPhase, verb: str) -> NotPaused:
    if phase is RunPhase.PAUSING:
        return NotPaused(
            f"run {run} is Pausing: its running steps are still finishing; {verb} once it is Paused",
            phase=phase.value,
        )
    if phase in (RunPhase.PENDING, RunPhase.RUNNING):
        return NotPaused(
            f"run {run} is {phase.value}: pause it first, then {verb} once it is Paused", phase=phase.value
        )
    return NotPaused(
        f"run {run} is {phase.value}: a finished run's history cannot be edited; start a new run instead",
        phase=phase.value,
    )


def check_paused_state(run: str, status: WorkflowRunStatus) -> None:
    if status.phase not in (RunPhase.PAUSED, RunPhase.PAUSING, RunPhase.FAILED):
        if status.phase.terminal:
            raise NotPaused(
                f"run {run} is {status.phase.value}, not paused: see its steps with `get` instead",
                phase=status.phase.value,
            )
        raise NotPaused(
            f"run {run} is {status.phase.value}, not paused: pause it first", phase=status.phase.value
        )


def check_injectable(run: str, status: WorkflowRunStatus, ref: str, output: JsonObject) -> StepStatus:
    """The step to inject into, if an injection is allowed: a finished step of a Paused or Failed run."""
    if status.phase not in (RunPhase.PAUSED, RunPhase.FAILED):
        raise _not_editable(run, status.phase, "inject")
    step = find_step(run, status, ref)
    why = {
        StepPhase.PENDING: "it has not run yet, so it has no output to replace",
        StepPhase.RUNNING: "wait until it finishes, then inject",
        StepPhase.WAITING: "it waits for a signal; signal it instead",
        StepPhase.SKIPPED: "its route was not taken, so it has no output to replace",
    }
    if step.phase in why:
        raise InvalidInput(
            f"step {_describe(step)} is {step.phase.value}: only a Succeeded or Failed step can be injected"
            f" into; {why[step.phase]}"
        )
    size = len(compact(output).encode())
    if size > MAX_OUTPUT_BYTES:
        raise InvalidInput(f"the output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES} (1 MiB)")
    return step


def check_pausable(run: str, status: WorkflowRunStatus) -> None:
    if status.phase is RunPhase.FAILED:
        raise InvalidInput(
            f"run {run} is Failed: it is already stopped; inject into the failed step, then resume it"
        )
    if status.phase.terminal:
        raise InvalidInput(f"run {run} is {status.phase.value}: a finished run cannot be paused")


def pause_outcome(status: WorkflowRunStatus, annotations: Mapping[str, str]) -> PauseOutcome:
    paused = status.phase is RunPhase.PAUSED and status.pause_reason is PauseReason.INJECTION
    return "paused" if paused and annotations.get(PAUSE_ANNOTATION) == TRUE else "pause_requested"


def check_resumable(run: str, status: WorkflowRunStatus, annotations: Mapping[str, str]) -> None:
    if status.phase not in (RunPhase.PAUSED, RunPhase.PAUSING, RunPhase.FAILED):
        if status.phase in (RunPhase.PENDING, RunPhase.RUNNING):
            raise NotPaused(
                f"run {run} is {status.phase.value}: there is nothing to resume", phase=status.phase.value
            )
        raise NotPaused(
            f"run {run} is {status.phase.value}: a finished run cannot be resumed; start a new run instead",
            phase=status.phase.value,
        )
    requested = annotations.get(PAUSE_ANNOTATION) == TRUE
    if status.phase is RunPhase.PAUSED and not requested and status.pause_reason is PauseReason.SLEEP:
        raise NotPaused(
            f"run {run} is Paused by its Sleep step {status.next_step_hint}, not by a pause request:"
            " it goes on by itself when the sleep ends",
            phase=status.phase.value,
        )
    if status.phase is RunPhase.PAUSED and not requested and status.pause_reason is PauseReason.WAIT:
        raise NotPaused(
            f"run {run} is Paused by its Wait step {status.next_step_hint}, not by a pause request:"
            " signal that step to go on",
            phase=status.phase.value,
        )


def holding_pause_requests(run: str, requests: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Names of the PauseRequests that hold this run: every one naming it that is not being deleted."""
    return tuple(
        sorted(
            _meta(request).get("name", "")
            for request in requests
            if (request.get("spec") or {}).get("runName") == run
            and not _meta(request).get("deletionTimestamp")
        )
    )


def check_not_held(run: str, holders: Sequence[str]) -> None:
    if holders:
        raise RunHeld(
            f"run {run} is held by PauseRequest(s) {', '.join(holders)}; delete them to resume",
            holders=tuple(holders),
        )


def check_cancellable(run: str, status: WorkflowRunStatus) -> None:
    if status.phase.terminal:
        raise InvalidInput(f"run {run} is already {status.phase.value}: there is nothing to cancel")


def check_signallable(run: str, status: WorkflowRunStatus, ref: str, data: JsonObject) -> StepStatus:
    if status.phase.terminal:
        raise InvalidInput(f"run {run} is {status.phase.value}: a finished run takes no signal")
    step = find_step(run, status, ref)
    if step.type != "Wait":
        raise InvalidInput(f"step {_describe(step)} is a {step.type} step: only a Wait step takes a signal")
    if step.phase.terminal:
        raise InvalidInput(
            f"step {_describe(step)} is already {step.phase.value}: a signal only completes a waiting step"
        )
    size = len(compact(data).encode())
    if size > MAX_ANNOTATION_BYTES:
        raise InvalidInput(f"the signal data is {size} bytes of JSON; the limit is {MAX_ANNOTATION_BYTES}")
    return step


def check_audit_type(type: str | None) -> None:
    if type is not None and type not in AUDIT_TYPES:
        raise InvalidInput(f"unknown audit entry type {type!r}; use one of {', '.join(AUDIT_TYPES)}")


def check_add_step(
    run: str, status: WorkflowRunStatus, annotations: Mapping[str, str], after: str, step: JsonObject
) -> tuple[StepStatus, StepTemplate]:
    """The step to insert after, and the new step, if a step may be added to the run now."""
    if status.phase.terminal:
        raise InvalidInput(f"run {run} is {status.phase.value}: steps cannot be added to a finished run")
    if ADD_STEP_ANNOTATION in annotations:
        raise InvalidInput(
            f"run {run} has an add-step request the operator has not taken yet; wait for it, then retry"
        )
    anchor = find_step(run, status, after)
    try:
        template = StepTemplate.model_validate(step)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "step"
        raise InvalidInput(f"the new step is invalid: {where}: {first['msg']}") from None
    if any(template.name == existing.name for existing in status.steps):
        raise InvalidInput(f"run {run} already has a step named {template.name}; choose another name")
    points = status.definition.injection_points if status.definition else []
    if anchor.name not in points:
        allowed = ", ".join(points) if points else "none"
        raise InvalidInput(
            f"step {anchor.name} is not an injection point of run {run} (its workflow's"
            f" spec.injectionPoints: {allowed}); steps can only be added after one of those"
        )
    return anchor, template


# --- building a change -----------------------------------------------------------------------------


def _annotations_patch(annotations: Mapping[str, str | None]) -> JsonObject:
    return {"metadata": {"annotations": dict(annotations)}}


def build_pause_patch() -> JsonObject:
    return _annotations_patch({PAUSE_ANNOTATION: TRUE})


def build_resume_patch(from_step: str | None = None) -> JsonObject:
    """One merge patch: remove the pause request, and name the step to re-run from, if any."""
    change: dict[str, str | None] = {PAUSE_ANNOTATION: None}
    if from_step is not None:
        change[RESUME_FROM_ANNOTATION] = from_step
    return _annotations_patch(change)


def build_cancel_patch() -> JsonObject:
    return _annotations_patch({CANCEL_ANNOTATION: TRUE})


def build_signal_patch(step_name: str, data: JsonObject) -> JsonObject:
    return _annotations_patch({SIGNAL_ANNOTATION_PREFIX + step_name: compact(data)})


def build_add_step_patch(after: str, step: JsonObject, reason: str) -> JsonObject:
    return _annotations_patch(
        {ADD_STEP_ANNOTATION: compact({"after": after, "step": step, "reason": reason})}
    )


def build_injection(run: str, namespace: str, step: str, output: JsonObject, reason: str) -> JsonObject:
    return {
        "apiVersion": API_VERSION,
        "kind": "Injection",
        "metadata": {"generateName": f"{run}-inject-", "namespace": namespace},
        "spec": {"runName": run, "step": step, "output": output, "reason": reason},
    }


def build_run(
    workflow: str, input: JsonObject, namespace: str, *, name: str | None = None, tenant: str | None = None
) -> JsonObject:
    metadata: JsonObject = {"namespace": namespace}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{workflow}-"
    spec: JsonObject = {"workflowRef": {"name": workflow}, "input": input}
    if tenant is not None:
        spec["tenant"] = tenant
    return {"apiVersion": API_VERSION, "kind": "WorkflowRun", "metadata": metadata, "spec": spec}


def decide_injection(obj: Mapping[str, Any]) -> tuple[bool, JsonObject | None]:
    """(done, previous output) for an Injection; raises InjectionRejected when the operator refused it."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase == "Applied":
        return True, status.get("previousOutput")
    if phase == "Rejected":
        name = _meta(obj).get("name", "")
        message = status.get("message") or "no reason given"
        raise InjectionRejected(f"injection {name} was rejected: {message}", injection=name)
    return False, None


# --- views -----------------------------------------------------------------------------------------


def build_paused_state(run: str, status: WorkflowRunStatus, outputs: Mapping[str, JsonObject]) -> PausedState:
    finished = (StepPhase.SUCCEEDED, StepPhase.FAILED)
    return PausedState(
        run=run,
        phase=status.phase.value,
        pause_reason=status.pause_reason.value if status.pause_reason else None,
        next_step_hint=status.next_step_hint,
        steps=tuple(
            PausedStep(
                id=step.id,
                name=step.name,
                phase=step.phase.value,
                injected=step.injected,
                output=step.output if step.output is not None else outputs.get(step.id),
            )
            for step in status.steps
            if step.phase in finished
        ),
    )


def build_audit(status: WorkflowRunStatus, type: str | None = None) -> tuple[AuditRecord, ...]:
    # AuditRecord has exactly AuditEntry's fields, under the same names.
    return tuple(
        AuditRecord(**entry.model_dump()) for entry in status.audit if type is None or entry.type == type
    )


def _work(step: Step | DefinitionStep) -> str:
    if step.function:
        return f"function {step.function}"
    if step.image:
        return f"image {step.image}"
    return ""


def build_structure(
    run: str, workflow: str, status: WorkflowRunStatus, workflow_spec: Mapping[str, Any] | None = None
) -> RunStructure:
    """Definition steps, steps inserted at run time, and the order they run in.

    The run's definition snapshot is the truth (editing the Workflow never changes
    a run); `workflow_spec` is used only while the run has no snapshot yet.
    """
    phases = {step.name: step.phase.value for step in status.steps}
    steps: Sequence[Step | DefinitionStep]
    if status.definition is not None:
        steps = status.definition.steps
    elif workflow_spec is not None:
        steps = WorkflowSpec.model_validate(workflow_spec).steps
    else:
        steps = []
    dependencies = resolve_dependencies(steps)

    def view(step: Step | DefinitionStep) -> StructureStep:
        definition = step if isinstance(step, DefinitionStep) else None
        return StructureStep(
            id=definition.id if definition else None,
            name=step.name,
            type=step.type.value,
            work=_work(step),
            depends_on=dependencies[step.name],
            injected=bool(definition and definition.injected),
            inserted_after=definition.inserted_after if definition else None,
            inserted_by=definition.inserted_by if definition else None,
            phase=phases.get(step.name),
        )

    views = {step.name: view(step) for step in steps}
    return RunStructure(
        run=run,
        workflow=workflow,
        from_snapshot=status.definition is not None,
        definition=tuple(v for v in views.values() if not v.injected),
        inserted=tuple(v for v in views.values() if v.injected),
        execution_order=tuple(views[name] for name in topological_order(dependencies)),
    )


def build_path(run: str, status: WorkflowRunStatus) -> ExecutionPath:
    """The steps that started, in the order they started (definition order breaks ties)."""
    inserted = (
        {step.name for step in status.definition.steps if step.injected} if status.definition else set()
    )
    started = [(step.started_at, index, step) for index, step in enumerate(status.steps) if step.started_at]
    return ExecutionPath(
        run=run,
        steps=tuple(
            PathStep(
                id=step.id,
                name=step.name,
                type=step.type,
                phase=step.phase.value,
                started_at=started_at,
                finished_at=step.finished_at,
                injected=step.name in inserted,
                output_injected=step.injected,
                attempts=len(step.attempts),
            )
            for started_at, _, step in sorted(started, key=lambda item: (item[0], item[1]))
        ),
    )
