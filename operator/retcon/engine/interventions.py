"""History editing: interventions folded into a decision, each recorded in the audit trail.

Who asked comes from authentication only: the admission webhook writes the
actor of each annotation change into the run's intents, and of each Injection
and PauseRequest into the object itself. Nothing here trusts a name a client
wrote.

- intents (pause, resume, cancel, signal) become audit entries, once each;
- PauseRequests hold the run while they exist; their creation and deletion
  are audited, and `Release` after an injection lets existing ones go;
- Injections replace a Succeeded or Failed step's output in a Paused or
  Failed run (a Failed step becomes Succeeded, `injected: true`);
- signals complete Wait steps;
- `resume-from-step` re-runs a step and everything downstream of it,
  keeping the earlier attempts in the history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from retcon.api.run import AuditEntry, ObjectRef, RunPhase, StepPhase, StepStatus
from retcon.api.workflow import PauseBehavior, StepType
from retcon.engine.graph import downstream
from retcon.engine.model import (
    INLINE_OUTPUT_LIMIT,
    PAUSE_ANNOTATION,
    SIGNAL_PREFIX,
    InjectionRequest,
    InjectionResult,
    PauseRequestResult,
)
from retcon.engine.work import Work, step_output

TRUE = "true"
#: Steps whose output can be replaced.
INJECTABLE_STEPS = (StepPhase.SUCCEEDED, StepPhase.FAILED)
#: Runs whose steps can be injected into.
INJECTABLE_RUNS = (RunPhase.PAUSED, RunPhase.FAILED)


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())


def audit(
    work: Work,
    type: str,
    actor: str,
    *,
    time: datetime | None = None,
    step: StepStatus | None = None,
    reason: str | None = None,
    previous: Any = None,
    new: Any = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        type=type,
        time=time or work.now,
        actor=actor or "unknown",
        step_id=step.id if step else None,
        step_name=step.name if step else None,
        reason=reason,
        previous_output=previous if previous is None or _size(previous) <= INLINE_OUTPUT_LIMIT else None,
        new_output=new if new is None or _size(new) <= INLINE_OUTPUT_LIMIT else None,
        details=dict(details) if details else None,
    )
    work.status.audit.append(entry)
    return entry


def find_step(work: Work, ref: str) -> StepStatus | None:
    """A step by id (`step_002`) or name."""
    for step in work.steps.values():
        if ref in (step.id, step.name):
            return step
    return None


def _audited(work: Work, key: str, value: str) -> bool:
    return any((entry.details or {}).get(key) == value for entry in work.status.audit)


# --- intents ---------------------------------------------------------------------------------------


def record_intents(work: Work) -> None:
    """Audit every intervention admitted since the last decision, with its actor."""
    last = work.status.last_intent
    for intent in sorted(work.run.intents, key=lambda i: i.seq):
        if intent.seq <= last:
            continue
        data = dict(intent.data)
        if intent.type == "pause":
            audit(
                work,
                "run.pause_requested",
                intent.actor,
                time=intent.time,
                reason=data.get("reason"),
                details={"via": "annotation"},
            )
        elif intent.type == "resume":
            details = {"via": "annotation"}
            if data.get("fromStep"):
                details["fromStep"] = str(data["fromStep"])
            audit(work, "run.resumed", intent.actor, time=intent.time, details=details)
        elif intent.type == "cancel":
            audit(work, "run.cancel_requested", intent.actor, time=intent.time)
        elif intent.type == "signal":
            step = find_step(work, str(data.get("step", "")))
            audit(
                work,
                "step.signalled",
                intent.actor,
                time=intent.time,
                step=step,
                new=data.get("data"),
                details={"step": str(data.get("step", ""))},
            )
        work.status.last_intent = max(work.status.last_intent, intent.seq)


# --- pause requests --------------------------------------------------------------------------------


def holding(work: Work) -> list[str]:
    """PauseRequests that hold the run now: existing, not being deleted, not released."""
    released = work.status.released_at
    known = {hold.name for hold in work.run.holds}
    names = [
        hold.name
        for hold in work.run.holds
        if hold.deleted_by is None and (released is None or hold.created > released)
    ]
    # Names given without details (no creation time to compare with a release) hold as they are.
    return names + [name for name in work.run.pause_requests if name not in known]


def track_pause_requests(work: Work) -> tuple[list[PauseRequestResult], list[str]]:
    """Audit new and deleted PauseRequests; say for each whether it holds."""
    results: list[PauseRequestResult] = []
    finalize: list[str] = []
    holds_now = set(holding(work))
    for hold in work.run.holds:
        if not _audited(work, "pauseRequest", hold.uid):
            audit(
                work,
                "run.pause_requested",
                hold.actor,
                time=hold.created,
                reason=hold.reason,
                details={"via": "PauseRequest", "pauseRequest": hold.uid, "name": hold.name},
            )
        if hold.deleted_by is not None:
            if not _audited(work, "releasedPauseRequest", hold.uid):
                audit(
                    work,
                    "run.resumed",
                    hold.deleted_by,
                    reason=f"PauseRequest {hold.name} deleted",
                    details={"via": "PauseRequest", "releasedPauseRequest": hold.uid, "name": hold.name},
                )
            finalize.append(hold.name)
        elif hold.name in holds_now and not work.status.phase.terminal:
            results.append(PauseRequestResult(hold.name, "Holding", f"holding run {work.run.name}"))
        else:
            why = "the run has finished" if work.status.phase.terminal else "released after an injection"
            results.append(PauseRequestResult(hold.name, "Released", why))
    return results, finalize


# --- signals ---------------------------------------------------------------------------------------


def apply_signals(work: Work) -> list[str]:
    """Complete Wait steps that have a signal; returns the signal annotations consumed."""
    consumed = []
    for key, value in work.run.annotations.items():
        if not key.startswith(SIGNAL_PREFIX):
            continue
        name = key.removeprefix(SIGNAL_PREFIX)
        step = work.steps.get(name)
        if step is None:
            consumed.append(key)
            work.event("Warning", "SignalIgnored", f"Signal for {name} ignored: the run has no such step")
            continue
        if step.phase is StepPhase.PENDING:
            continue  # given in advance: kept until the step waits
        if step.phase is not StepPhase.WAITING or work.defs[name].type is not StepType.WAIT:
            consumed.append(key)
            work.event(
                "Warning",
                "SignalIgnored",
                f"Signal for {name} ignored: the step is {step.phase.value}, not waiting",
            )
            continue
        try:
            data = json.loads(value or "{}")
        except ValueError:
            data = None
        consumed.append(key)
        if not isinstance(data, dict):
            work.event(
                "Warning", "SignalIgnored", f"Signal for {name} ignored: its data must be a JSON object"
            )
            continue
        step.phase = StepPhase.SUCCEEDED
        step.output = data
        step.finished_at = work.now
        step.deadline = None
        step.message = None
        work.event("Normal", "StepSignalled", f"Step {name} received its signal")
    return consumed


# --- injections ------------------------------------------------------------------------------------


def _reject(request: InjectionRequest, message: str) -> InjectionResult:
    return InjectionResult(request.name, "Rejected", message, actor=request.actor)


def apply_injections(work: Work, held_before: bool) -> tuple[list[InjectionResult], bool]:
    """Apply waiting Injections in creation order. Returns the results and whether one applied."""
    results: list[InjectionResult] = []
    applied_any = False
    run_phase = work.run.status.phase
    for request in sorted(work.run.injections, key=lambda r: (r.created, r.name)):
        done = next((e for e in work.status.audit if (e.details or {}).get("injection") == request.uid), None)
        if done is not None:  # applied by an earlier decision whose Injection status write was lost
            results.append(
                InjectionResult(
                    request.name,
                    "Applied",
                    f"applied to step {done.step_name}",
                    done.step_id,
                    done.step_name,
                    done.previous_output,
                    request.actor,
                )
            )
            continue
        if run_phase not in INJECTABLE_RUNS:
            if held_before and run_phase in (RunPhase.PAUSING, RunPhase.RUNNING, RunPhase.PENDING):
                continue  # a pause is on its way: apply once the run is Paused
            advice = "start a new run instead" if run_phase.terminal else "pause it first"
            results.append(
                _reject(
                    request,
                    f"run {work.run.name} is {run_phase.value}: only a Paused or Failed run "
                    f"can be injected into; {advice}",
                )
            )
            continue
        step = find_step(work, request.step)
        if step is None:
            known = ", ".join(f"{s.id} ({s.name})" for s in work.steps.values())
            results.append(
                _reject(request, f"run {work.run.name} has no step {request.step!r}; its steps: {known}")
            )
            continue
        if step.phase not in INJECTABLE_STEPS:
            why = {
                StepPhase.PENDING: "it has not run yet, so it has no output to replace",
                StepPhase.RUNNING: "it is running; wait for it to finish",
                StepPhase.WAITING: "it is waiting; signal it instead",
                StepPhase.SKIPPED: "it was skipped by a decision and has no output",
            }[step.phase]
            results.append(_reject(request, f"step {step.id} ({step.name}) is {step.phase.value}: {why}"))
            continue
        previous = step_output(work, step) if step.phase is StepPhase.SUCCEEDED else None
        output = dict(request.output)
        was_failed = step.phase is StepPhase.FAILED
        step.phase = StepPhase.SUCCEEDED
        step.injected = True
        step.finished_at = step.finished_at or work.now
        step.message = f"output injected by {request.actor}: {request.reason}"
        if _size(output) <= INLINE_OUTPUT_LIMIT:
            step.output, step.output_ref = output, None
        else:
            step.output = None
            step.output_ref = ObjectRef(
                kind="Injection", name=request.name, key="spec.output", bytes=_size(output)
            )
            work.fresh_outputs[step.id] = output
        audit(
            work,
            "step.injected",
            request.actor,
            step=step,
            reason=request.reason,
            previous=previous,
            new=output,
            details={"injection": request.uid, "name": request.name, "recoveredFailure": was_failed},
        )
        work.event(
            "Normal",
            "StepInjected",
            f"Injected the output of step {step.name} ({request.name}, by {request.actor})",
        )
        results.append(
            InjectionResult(
                request.name,
                "Applied",
                f"applied to step {step.id} ({step.name})",
                step.id,
                step.name,
                previous,
                request.actor,
            )
        )
        applied_any = True
    return results, applied_any


def reject_all(work: Work, why: str) -> list[InjectionResult]:
    """Settle every waiting Injection as Rejected (the run can no longer be edited)."""
    return [_reject(request, why) for request in work.run.injections]


def pause_cause(work: Work, set_annotations: Mapping[str, str]) -> tuple[str, str | None]:
    """Who (and why) the run is paused for an injection hold, for the `run.paused` entry."""
    if PAUSE_ANNOTATION in set_annotations:  # held after an injection into a failed run
        injected = next((e for e in reversed(work.status.audit) if e.type == "step.injected"), None)
        if injected is not None:
            return injected.actor, "held after an injection (pauseBehavior Hold)"
    for entry in reversed(work.status.audit):
        if entry.type == "run.resumed":
            break  # a request already answered by a resume is not why it is paused now
        if entry.type == "run.pause_requested":
            return entry.actor, entry.reason
    return "", None


def after_injection(work: Work, actor: str) -> tuple[dict[str, str], list[str]]:
    """What an accepted injection does to the hold: (annotations to set, annotations to remove)."""
    if work.definition.pause_behavior is PauseBehavior.RELEASE:
        work.status.released_at = work.now
        audit(
            work,
            "run.resumed",
            actor,
            reason="pauseBehavior Release: resumed after the injection",
            details={"via": "Release"},
        )
        return {}, [PAUSE_ANNOTATION]
    if work.run.annotations.get(PAUSE_ANNOTATION) != TRUE and not holding(work):
        # Hold: a failed run stays held after the injection until someone resumes it.
        return {PAUSE_ANNOTATION: TRUE}, []
    return {}, []


# --- resume from a step ----------------------------------------------------------------------------


def resume_from(work: Work, ref: str) -> bool:
    """Re-run step `ref` and everything downstream of it; earlier attempts stay in the history."""
    start = find_step(work, ref)
    if start is None:
        work.status.message = f"resume-from-step {ref!r}: the run has no such step"
        work.event("Warning", "ResumeFromIgnored", work.status.message)
        return False
    if any(step.phase is StepPhase.RUNNING for step in work.steps.values()):
        work.event(
            "Warning", "ResumeFromIgnored", f"resume-from-step {ref}: steps are still running; pause first"
        )
        return False
    dependencies = {d.name: tuple(d.depends_on or ()) for d in work.definition.steps}
    closure = downstream(dependencies, [start.name])
    for name in closure:
        step = work.steps[name]
        step.phase = StepPhase.PENDING
        step.output = None
        step.output_ref = None
        step.injected = False
        step.route = None
        step.started_at = None
        step.finished_at = None
        step.wake_at = None
        step.deadline = None
        step.message = f"to re-run (resume from {start.name})"
    work.status.finished_at = None
    order = [d.name for d in work.definition.steps if d.name in closure]
    # The resume itself is audited from its intent (with the actor); add what it re-runs.
    for entry in reversed(work.status.audit):
        if entry.type == "run.resumed" and (entry.details or {}).get("fromStep") in (
            ref,
            start.id,
            start.name,
        ):
            entry.details = {**(entry.details or {}), "fromStep": start.id, "rerun": order}
            break
    else:
        audit(
            work,
            "run.resumed",
            "",
            reason=f"re-running from {start.name}",
            details={"via": "resume-from-step", "fromStep": start.id, "rerun": order},
        )
    work.event("Normal", "ResumedFromStep", f"Re-running {', '.join(order)}")
    return True
