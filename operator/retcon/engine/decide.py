"""The run engine: (run, observed children, now) -> Decision.

A pure function: no Kubernetes client, no clock, no I/O. Given the same
inputs it returns the same decision, so a reconcile can be retried (after a
conflict or a crash) without doing anything twice: every action names its
objects deterministically and the kube layer adopts what already exists.

The order of a decision:
1. a cancellation stops everything;
2. finished attempts, sleeps and waits are folded into the steps;
3. Decision routes and skips are settled;
4. unless the run is held, ready steps start;
5. the run's phase, hint, conditions and requeue time are derived.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from retcon.api.meta import Condition
from retcon.api.run import (
    Attempt,
    DefinitionStep,
    ObjectRef,
    PauseReason,
    RunPhase,
    SourceRef,
    StepPhase,
    StepStatus,
    WorkflowRunStatus,
)
from retcon.api.stepresult import Outcome
from retcon.api.workflow import RetryPolicy, StepType, WorkflowSpec
from retcon.engine import cel, dynamic, interventions
from retcon.engine.model import (
    ADD_STEP_ANNOTATION,
    CANCEL_ANNOTATION,
    INLINE_OUTPUT_LIMIT,
    LOST_JOB_GRACE_SECONDS,
    MAX_INPUT_BYTES,
    NON_RETRYABLE_EXIT_CODE,
    PAUSE_ANNOTATION,
    RESULT_GRACE_SECONDS,
    RESUME_FROM_ANNOTATION,
    Action,
    Decision,
    InjectionResult,
    Observed,
    ObservedAttempt,
    RecordEvent,
    RunView,
    StartAttempt,
    StopAttempt,
)
from retcon.engine.naming import input_name, job_name
from retcon.engine.snapshot import build_definition, initial_steps
from retcon.engine.validation import parse_duration
from retcon.engine.work import Work as _Work
from retcon.engine.work import step_output

TRUE = "true"


def canonical_json(value: Any) -> bytes:
    """The byte form used for sizes and digests: compact, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


# --- starting a run --------------------------------------------------------------------------------


def start_run(run: RunView, spec: WorkflowSpec, source: SourceRef, now: datetime) -> Decision:
    """Snapshot the Workflow into the run and make it Running; the next decide() starts steps."""
    definition = build_definition(spec, source)
    status = run.status.model_copy(deep=True)
    status.definition = definition
    status.steps = initial_steps(definition)
    status.phase = RunPhase.RUNNING
    status.started_at = status.started_at or now
    status.message = None
    status.observed_generation = run.generation
    _set_condition(status, "WorkflowFound", "True", "Snapshotted", f"Using Workflow {source.name}", now)
    event = RecordEvent(
        "Normal", "Started", f"Started run of Workflow {source.name} with {len(definition.steps)} steps"
    )
    return Decision(status=status, actions=(event,), requeue_after=0.0)


def workflow_missing(run: RunView, workflow: str, now: datetime, problem: str | None = None) -> Decision:
    """The run cannot start yet: its Workflow is missing or invalid. Look again later."""
    status = run.status.model_copy(deep=True)
    message = (
        problem or f"Workflow {workflow} not found in namespace {run.namespace}; waiting for it to be created"
    )
    changed = status.message != message
    status.phase = RunPhase.PENDING
    status.message = message
    status.observed_generation = run.generation
    reason = "WorkflowInvalid" if problem else "WorkflowNotFound"
    _set_condition(status, "WorkflowFound", "False", reason, message, now)
    actions: tuple[Action, ...] = (RecordEvent("Warning", reason, message),) if changed else ()
    return Decision(status=status, actions=actions, requeue_after=10.0)


# --- the main decision -----------------------------------------------------------------------------


def decide(run: RunView, observed: Observed, now: datetime) -> Decision:
    """Everything the run should do next, given what the cluster shows."""
    status = run.status.model_copy(deep=True)
    definition = status.definition
    if definition is None:
        raise ValueError("decide() needs a run whose definition was snapshotted; call start_run() first")
    work = _Work(
        run=run,
        observed=observed,
        now=now,
        status=status,
        definition=definition,
        steps={step.name: step for step in status.steps},
        defs={step.name: step for step in definition.steps},
    )
    for step in definition.steps:  # steps added to the definition since the status was written
        if step.name not in work.steps:
            new = StepStatus(id=step.id, name=step.name, type=step.type.value)
            status.steps.append(new)
            work.steps[step.name] = new
    status.observed_generation = run.generation

    interventions.record_intents(work)
    holds, finalize = interventions.track_pause_requests(work)
    if status.phase is RunPhase.CANCELLED or (
        run.annotations.get(CANCEL_ANNOTATION) == TRUE and not status.phase.terminal
    ):
        refused = interventions.reject_all(work, "the run is cancelled: its history can no longer be edited")
        done = Decision(status=status) if status.phase is RunPhase.CANCELLED else _cancel(work)
        return replace(
            done,
            injections=tuple(refused),
            pause_requests=tuple(holds),
            finalize_pause_requests=tuple(finalize),
        )

    _fold_attempts(work)
    _fold_waiting(work)
    consumed, set_annotations, injected, held = _intervene(work)
    _settle(work)
    unavailable = _check_outputs(work)
    if not held and not _has_failed(work) and not unavailable:
        while _start_ready(work):
            _settle(work)  # a Decision without work resolves at once and may unlock more
    previous = status.phase
    _derive_phase(work, held)
    if (
        status.phase is RunPhase.PAUSED
        and status.pause_reason is PauseReason.INJECTION
        and (previous is not RunPhase.PAUSED or run.status.pause_reason is not PauseReason.INJECTION)
    ):
        actor, reason = interventions.pause_cause(work, set_annotations)
        interventions.audit(
            work, "run.paused", actor, reason=reason, details={"nextStepHint": status.next_step_hint or ""}
        )
    return Decision(
        status=status,
        actions=tuple(work.actions),
        requeue_after=_requeue(work),
        consumed_annotations=tuple(dict.fromkeys(consumed)),
        set_annotations=set_annotations,
        injections=tuple(injected),
        pause_requests=tuple(holds),
        finalize_pause_requests=tuple(finalize),
    )


def _intervene(work: _Work) -> tuple[list[str], dict[str, str], list[InjectionResult], bool]:
    """Signals, injections and resume-from-step: (consumed annotations, annotations to set,
    injection results, whether the run is held)."""
    run = work.run
    consumed = interventions.apply_signals(work)
    if dynamic.add_step(work, run.annotations):
        consumed.append(ADD_STEP_ANNOTATION)
    annotated = run.annotations.get(PAUSE_ANNOTATION) == TRUE
    injected, applied = interventions.apply_injections(work, annotated or bool(interventions.holding(work)))
    set_annotations: dict[str, str] = {}
    if applied:
        actor = next(r.actor for r in reversed(injected) if r.phase == "Applied")
        set_annotations, released = interventions.after_injection(work, actor)
        consumed += released
    held = (
        (annotated and PAUSE_ANNOTATION not in consumed)
        or bool(set_annotations)
        or bool(interventions.holding(work))
    )
    resume_ref = run.annotations.get(RESUME_FROM_ANNOTATION)
    if resume_ref and not held:
        interventions.resume_from(work, resume_ref)
        consumed.append(RESUME_FROM_ANNOTATION)
    return consumed, set_annotations, injected, held


def _check_outputs(work: _Work) -> dict[str, bool]:
    """Outputs kept by reference that are not at hand; say which are gone for good."""
    unavailable = _unavailable_outputs(work)
    lost = [name for name, gone in unavailable.items() if gone]
    for name in lost:
        message = "its output (kept in a StepResult) is gone; inject it again or resume from this step"
        work.steps[name].message = message
    if lost:
        work.event("Warning", "OutputLost", f"Output of step(s) {', '.join(lost)} is gone; no step can start")
    elif unavailable:
        work.wakeups.append(work.now + timedelta(seconds=1))  # being loaded: look again shortly
    return unavailable


def _unavailable_outputs(work: _Work) -> dict[str, bool]:
    """Succeeded steps whose output is kept by reference but not at hand: name -> confirmed gone."""
    missing = {}
    for step in work.steps.values():
        by_reference = step.output is None and step.output_ref is not None
        if step.phase is StepPhase.SUCCEEDED and by_reference and step_output(work, step) is None:
            missing[step.name] = step.id in work.observed.lost_outputs
    return missing


def _has_failed(work: _Work) -> bool:
    return any(step.phase is StepPhase.FAILED for step in work.steps.values())


# --- cancellation ----------------------------------------------------------------------------------


def _cancel(work: _Work) -> Decision:
    status = work.status
    for step in work.steps.values():
        if step.phase in (StepPhase.RUNNING, StepPhase.WAITING):
            attempt = step.attempts[-1] if step.attempts else None
            if attempt is not None and attempt.job and attempt.phase is StepPhase.RUNNING:
                work.actions.append(StopAttempt(attempt.job, "run cancelled"))
                attempt.phase = StepPhase.FAILED
                attempt.finished_at = work.now
                attempt.reason = "Cancelled"
            step.phase = StepPhase.FAILED
            step.finished_at = work.now
            step.message = "cancelled with the run"
    status.phase = RunPhase.CANCELLED
    status.pause_reason = None
    status.finished_at = work.now
    status.current_step = None
    status.message = f"cancelled by the {CANCEL_ANNOTATION} annotation"
    _set_condition(status, "Completed", "True", "Cancelled", status.message, work.now)
    _set_progress(work)
    work.event("Normal", "Cancelled", "Cancelled the run; its running Jobs are being stopped")
    return Decision(status=status, actions=tuple(work.actions))


# --- folding observations into steps ---------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    succeeded: bool
    output: dict[str, Any] | None = None
    output_ref: ObjectRef | None = None
    retryable: bool = True
    reason: str = ""
    message: str = ""
    exit_code: int | None = None


def _timeout_seconds(work: _Work, step: DefinitionStep) -> int | None:
    if step.timeout_seconds is not None:
        return step.timeout_seconds
    return work.definition.defaults.timeout_seconds


def _retry_policy(work: _Work, step: DefinitionStep) -> RetryPolicy:
    if step.retry is not None:
        return step.retry
    return work.definition.defaults.retry or RetryPolicy()


def _classify(
    work: _Work, step: DefinitionStep, attempt: Attempt, seen: ObservedAttempt | None
) -> _Outcome | None:
    """The attempt's outcome, or None while it is still going."""
    now = work.now
    started = attempt.started_at or now
    timeout = _timeout_seconds(work, step)
    if seen is not None and seen.job_failed and seen.exit_code is None:
        return _Outcome(False, reason="JobFailed", message=seen.job_failed)
    if seen is None or not seen.job_exists:
        if seen is not None and seen.job_missing and (now - started).total_seconds() > LOST_JOB_GRACE_SECONDS:
            return _Outcome(False, reason="JobLost", message=f"the attempt's Job {attempt.job} was deleted")
        # Nothing else would wake the run for a Job that is gone: look again once the grace is over.
        work.wakeups.append(
            max(now, started + timedelta(seconds=LOST_JOB_GRACE_SECONDS)) + timedelta(seconds=1)
        )
        return None
    result = seen.result
    if seen.pod_reason == "DeadlineExceeded":
        return _Outcome(False, reason="Timeout", message=f"timed out after {timeout}s (pod deadline)")
    if seen.exit_code is not None:
        code = seen.exit_code
        if code == 0:
            if result is None:
                finished = seen.finished_at or now
                if (now - finished).total_seconds() < RESULT_GRACE_SECONDS:
                    work.wakeups.append(finished + timedelta(seconds=RESULT_GRACE_SECONDS))
                    return None  # the result is on its way
                return _Outcome(False, reason="NoResult", message="the step exited 0 but reported no result")
            if result.outcome is Outcome.SUCCEEDED:
                output = result.output or {}
                size = len(canonical_json(output))
                if size > INLINE_OUTPUT_LIMIT and seen.result_name:
                    ref = ObjectRef(
                        kind="StepResult",
                        name=seen.result_name,
                        key="spec.output",
                        bytes=size,
                        sha256=digest(output),
                    )
                    return _Outcome(True, output=output, output_ref=ref, exit_code=0)
                return _Outcome(True, output=output, exit_code=0)
            message = result.error.message if result.error else "the step reported a failure"
            return _Outcome(
                False,
                retryable=result.outcome is Outcome.FAILED,
                reason="NonRetryable" if result.outcome is Outcome.NON_RETRYABLE else "Error",
                message=message,
                exit_code=code,
            )
        detail = (result.error.message if result and result.error else None) or seen.termination_message
        message = f"exited with code {code}" + (f": {detail.strip()}" if detail and detail.strip() else "")
        non_retryable = code == NON_RETRYABLE_EXIT_CODE or (
            result is not None and result.outcome is Outcome.NON_RETRYABLE
        )
        return _Outcome(
            False,
            retryable=not non_retryable,
            reason="NonRetryable" if non_retryable else (seen.termination_reason or "Error"),
            message=message,
            exit_code=code,
        )
    if timeout is not None:
        deadline = started + timedelta(seconds=timeout)
        if now >= deadline:
            return _Outcome(False, reason="Timeout", message=f"timed out after {timeout}s")
        work.wakeups.append(deadline)
    return None


def _fold_attempts(work: _Work) -> None:
    for step in list(work.steps.values()):
        if step.phase is not StepPhase.RUNNING or not step.attempts:
            continue
        attempt = step.attempts[-1]
        if attempt.phase is not StepPhase.RUNNING or attempt.job is None:
            continue
        definition = work.defs[step.name]
        seen = work.observed.attempts.get(attempt.job)
        if seen is not None and seen.waiting_reason:
            step.message = f"waiting to start: {seen.waiting_reason}"
        elif step.message and step.message.startswith("waiting to start: "):
            step.message = None
        outcome = _classify(work, definition, attempt, seen)
        if outcome is None:
            continue
        attempt.finished_at = work.now
        attempt.exit_code = outcome.exit_code
        if outcome.succeeded:
            attempt.phase = StepPhase.SUCCEEDED
            attempt.reason = "Completed"
            _succeed(work, step, outcome.output, outcome.output_ref)
            continue
        attempt.phase = StepPhase.FAILED
        attempt.reason = outcome.reason
        attempt.message = outcome.message
        if outcome.reason == "Timeout":
            work.actions.append(StopAttempt(attempt.job, outcome.message))
        policy = _retry_policy(work, definition)
        if outcome.retryable and attempt.number <= policy.limit:
            backoff = policy.backoff
            delay = min(
                backoff.duration_seconds * backoff.factor ** (attempt.number - 1),
                backoff.max_duration_seconds,
            )
            not_before = work.now + timedelta(seconds=delay)
            step.attempts.append(
                Attempt(number=attempt.number + 1, phase=StepPhase.PENDING, not_before=not_before)
            )
            step.phase = StepPhase.PENDING
            step.message = (
                f"attempt {attempt.number} failed ({outcome.message}); "
                f"retry {attempt.number} of {policy.limit} in {delay:g}s"
            )
            work.event(
                "Warning",
                "StepRetrying",
                f"Step {step.name} attempt {attempt.number} failed: {outcome.message}",
            )
            continue
        step.phase = StepPhase.FAILED
        step.finished_at = work.now
        why = "not retryable" if not outcome.retryable else f"after {attempt.number} attempt(s)"
        step.message = f"{outcome.message} ({why})"
        work.event("Warning", "StepFailed", f"Step {step.name} failed: {step.message}")


def _succeed(
    work: _Work, step: StepStatus, output: dict[str, Any] | None, ref: ObjectRef | None = None
) -> None:
    step.phase = StepPhase.SUCCEEDED
    step.output = output if ref is None else None
    step.output_ref = ref
    if ref is not None and output is not None:
        work.fresh_outputs[step.id] = output
    step.finished_at = work.now
    step.message = None
    definition = work.defs[step.name]
    if definition.type is StepType.DECISION:
        _route(work, step, definition)
        if step.phase is StepPhase.FAILED:
            return
    if definition.dynamic_injection and not dynamic.evaluate_rules(work, step, _condition_inputs(work)):
        step.output = None  # a failed step has no output, as when a route fails
        return
    work.event(
        "Normal",
        "StepSucceeded",
        f"Step {step.name} succeeded" + (f", route {step.route}" if step.route else ""),
    )


def _route(work: _Work, step: StepStatus, definition: DefinitionStep) -> None:
    """Pick a Decision step's target: the first route whose condition holds, else the default."""
    inputs = _condition_inputs(work)
    for route in definition.routes or []:
        try:
            if cel.evaluate(route.condition, **inputs):
                step.route = route.target
                return
        except cel.ConditionError as error:
            step.phase = StepPhase.FAILED
            step.output = None
            step.message = f"route condition {error.expression!r} failed: {error.problem}"
            work.event("Warning", "StepFailed", f"Step {step.name}: {step.message}")
            return
    if definition.default:
        step.route = definition.default
        return
    step.phase = StepPhase.FAILED
    step.output = None
    conditions = ", ".join(repr(r.condition) for r in definition.routes or [])
    step.message = f"no route condition held ({conditions}) and the step has no default"
    work.event("Warning", "StepFailed", f"Step {step.name}: {step.message}")


def _fold_waiting(work: _Work) -> None:
    for step in list(work.steps.values()):
        if step.phase is not StepPhase.WAITING:
            continue
        if step.wake_at is not None:
            if work.now >= step.wake_at:
                seconds = parse_duration(work.defs[step.name].duration or "0s")
                _succeed(work, step, {"sleptSeconds": seconds})
            else:
                work.wakeups.append(step.wake_at)
        elif step.deadline is not None:
            if work.now >= step.deadline:
                step.phase = StepPhase.FAILED
                step.finished_at = work.now
                step.message = "timed out waiting for a signal"
                work.event("Warning", "StepFailed", f"Step {step.name} timed out waiting for a signal")
            else:
                work.wakeups.append(step.deadline)


# --- routes, skips and readiness -------------------------------------------------------------------


def _route_gates(work: _Work) -> dict[str, list[str]]:
    """For each step, the Decision steps that route to it (it runs only if chosen)."""
    gates: dict[str, list[str]] = {}
    for definition in work.definition.steps:
        if definition.type is StepType.DECISION:
            targets = {route.target for route in definition.routes or []}
            if definition.default:
                targets.add(definition.default)
            for target in targets:
                gates.setdefault(target, []).append(definition.name)
    return gates


def _settle(work: _Work) -> None:
    """Skip steps a Decision did not choose, and steps whose every dependency was skipped."""
    gates = _route_gates(work)
    changed = True
    while changed:
        changed = False
        for definition in work.definition.steps:
            step = work.steps[definition.name]
            if step.phase is not StepPhase.PENDING:
                continue
            skipped_by = [
                gate
                for gate in gates.get(definition.name, [])
                if work.steps[gate].phase is StepPhase.SUCCEEDED and work.steps[gate].route != definition.name
            ] + [
                gate for gate in gates.get(definition.name, []) if work.steps[gate].phase is StepPhase.SKIPPED
            ]
            deps = definition.depends_on or []
            all_deps_skipped = bool(deps) and all(
                work.steps[d].phase is StepPhase.SKIPPED for d in deps if d in work.steps
            )
            if skipped_by or all_deps_skipped:
                step.phase = StepPhase.SKIPPED
                step.finished_at = work.now
                step.message = (
                    f"not chosen by decision {skipped_by[0]}"
                    if skipped_by
                    else "every step it depends on was skipped"
                )
                changed = True


def _ready(work: _Work) -> list[DefinitionStep]:
    """Pending steps whose dependencies are done (at least one succeeded, unless a root)."""
    ready = []
    for definition in work.definition.steps:
        step = work.steps[definition.name]
        if step.phase is not StepPhase.PENDING:
            continue
        deps = [work.steps[d] for d in definition.depends_on or [] if d in work.steps]
        if any(d.phase not in (StepPhase.SUCCEEDED, StepPhase.SKIPPED) for d in deps):
            continue
        if deps and not any(d.phase is StepPhase.SUCCEEDED for d in deps):
            continue  # _settle() skips it
        ready.append(definition)
    return ready


def _start_ready(work: _Work) -> bool:
    """Start every ready step whose time has come. True if a step finished at once."""
    resolved_now = False
    if work.inserted_now:
        # The new structure must be written before any inserted step starts: look again at once.
        work.wakeups.append(work.now)
    for definition in _ready(work):
        if definition.name in work.inserted_now:
            continue
        step = work.steps[definition.name]
        pending = (
            step.attempts[-1] if step.attempts and step.attempts[-1].phase is StepPhase.PENDING else None
        )
        if pending is not None and pending.not_before is not None and pending.not_before > work.now:
            work.wakeups.append(pending.not_before)
            continue
        step.started_at = step.started_at or work.now
        step.message = None
        if definition.type is StepType.SLEEP:
            seconds = parse_duration(definition.duration or "0s")
            step.phase = StepPhase.WAITING
            step.wake_at = work.now + timedelta(seconds=seconds)
            work.wakeups.append(step.wake_at)
            work.event("Normal", "StepSleeping", f"Step {step.name} sleeps for {definition.duration}")
        elif definition.type is StepType.WAIT:
            step.phase = StepPhase.WAITING
            timeout = definition.timeout_seconds
            step.deadline = work.now + timedelta(seconds=timeout) if timeout else None
            if step.deadline is not None:
                work.wakeups.append(step.deadline)
            work.event("Normal", "StepWaiting", f"Step {step.name} waits for a signal")
        elif definition.type is StepType.DECISION and not (definition.function or definition.image):
            _succeed(work, step, {})
            resolved_now = True
        else:
            _start_attempt(work, step, definition, pending)
    return resolved_now


def _start_attempt(
    work: _Work, step: StepStatus, definition: DefinitionStep, pending: Attempt | None
) -> None:
    number = pending.number if pending is not None else len(step.attempts) + 1
    job = job_name(work.run.name, work.run.uid, step.id, number)
    document = input_document(work, step, number)
    size = len(canonical_json(document))
    attempt = pending or Attempt(number=number)
    if pending is None:
        step.attempts.append(attempt)
    attempt.job = job
    attempt.started_at = work.now
    attempt.not_before = None
    if size > MAX_INPUT_BYTES:
        attempt.job = None  # no Job was made for it
        attempt.phase = StepPhase.FAILED
        attempt.reason = "InputTooLarge"
        step.phase = StepPhase.FAILED
        step.finished_at = work.now
        step.message = (
            f"the step's input is {size / 1048576:.2f} MiB, over the {MAX_INPUT_BYTES // 1024} KiB an input "
            "record holds; pass large data by reference"
        )
        work.event("Warning", "StepFailed", f"Step {step.name}: {step.message}")
        return
    attempt.phase = StepPhase.RUNNING
    timeout = _timeout_seconds(work, definition)
    if timeout is not None:
        work.wakeups.append(work.now + timedelta(seconds=timeout))
    attempt.input_ref = ObjectRef(
        kind="ConfigMap", name=input_name(job), key="input.json", bytes=size, sha256=digest(document)
    )
    step.phase = StepPhase.RUNNING
    work.actions.append(StartAttempt(definition, number, job, input_name(job), document))
    work.event("Normal", "StepStarted", f"Started step {step.name} ({step.id}) attempt {number} as Job {job}")


# --- what a step sees ------------------------------------------------------------------------------


def _condition_inputs(work: _Work) -> dict[str, Mapping[str, Any]]:
    steps_view: dict[str, Any] = {}
    state: dict[str, Any] = dict(work.run.input)
    for definition in work.definition.steps:  # definition order, never completion order
        step = work.steps[definition.name]
        output = step_output(work, step) if step.phase is StepPhase.SUCCEEDED else None
        steps_view[step.name] = {"output": output, "phase": step.phase.value}
        if output:
            state.update(output)
    return {"input": dict(work.run.input), "steps": steps_view, "state": state}


def input_document(work: _Work, step: StepStatus, attempt: int) -> dict[str, Any]:
    """What an attempt is given: the run's input, the merged state, every step's output and phase."""
    inputs = _condition_inputs(work)
    run = work.run
    return {
        "run": {"name": run.name, "namespace": run.namespace, "uid": run.uid},
        "step": {"id": step.id, "name": step.name, "attempt": attempt},
        "input": inputs["input"],
        "state": inputs["state"],
        "steps": inputs["steps"],
    }


# --- the run as a whole ----------------------------------------------------------------------------


def _next_hint(work: _Work) -> str | None:
    names = [definition.name for definition in _ready(work)]
    return ", ".join(names) if names else None


def _derive_phase(work: _Work, held: bool) -> None:
    status = work.status
    steps = list(work.steps.values())
    running = [s for s in steps if s.phase is StepPhase.RUNNING]
    waiting = [s for s in steps if s.phase is StepPhase.WAITING]
    failed = [s for s in steps if s.phase is StepPhase.FAILED]
    unfinished = [s for s in steps if not s.phase.terminal]
    previous = status.phase
    status.current_step = ", ".join(s.name for s in running + waiting) or None
    _set_progress(work)

    if failed and not running:
        status.phase = RunPhase.FAILED
        status.pause_reason = None
        status.finished_at = status.finished_at if previous is RunPhase.FAILED else work.now
        status.message = "; ".join(f"step {s.name} failed: {s.message}" for s in failed)
        status.next_step_hint = None
        _set_condition(status, "Completed", "True", "Failed", status.message, work.now)
    elif not unfinished:
        status.phase = RunPhase.SUCCEEDED
        status.pause_reason = None
        status.finished_at = status.finished_at if previous is RunPhase.SUCCEEDED else work.now
        status.message = None
        status.next_step_hint = None
        _set_condition(status, "Completed", "True", "Succeeded", "All steps finished", work.now)
    elif held:
        if not failed:
            status.message = None  # e.g. a failure an injection has just recovered
        status.phase = RunPhase.PAUSING if running else RunPhase.PAUSED
        status.pause_reason = PauseReason.INJECTION if status.phase is RunPhase.PAUSED else None
        status.next_step_hint = _next_hint(work)
        status.finished_at = None
    elif waiting and not running:
        sleeping = any(s.wake_at is not None for s in waiting)
        status.phase = RunPhase.PAUSED
        status.pause_reason = PauseReason.SLEEP if sleeping else PauseReason.WAIT
        status.next_step_hint = ", ".join(s.name for s in waiting)
        status.finished_at = None
    else:
        status.phase = RunPhase.RUNNING
        status.pause_reason = None
        status.next_step_hint = _next_hint(work) if not running else None
        status.finished_at = None
        status.message = None

    paused = status.phase is RunPhase.PAUSED
    _set_condition(
        status,
        "Paused",
        "True" if paused else "False",
        (status.pause_reason.value.capitalize() if paused and status.pause_reason else "NotPaused"),
        f"paused ({status.pause_reason.value})" if paused and status.pause_reason else "",
        work.now,
    )
    if status.phase is not previous:
        kind = "Warning" if status.phase is RunPhase.FAILED else "Normal"
        work.event(
            kind,
            f"Run{status.phase.value}",
            f"Run is {status.phase.value}" + (f": {status.message}" if status.message else ""),
        )
    if not status.phase.terminal:
        _set_condition(status, "Completed", "False", "InProgress", "", work.now)


def _set_progress(work: _Work) -> None:
    total = len(work.steps)
    done = sum(1 for s in work.steps.values() if s.phase.terminal)
    work.status.progress = f"{done}/{total}"


def _requeue(work: _Work) -> float | None:
    if not work.wakeups:
        return None
    soonest = min(work.wakeups)
    return max(0.0, (soonest - work.now).total_seconds())


def _set_condition(
    status: WorkflowRunStatus, kind: str, value: str, reason: str, message: str, now: datetime
) -> None:
    for condition in status.conditions:
        if condition.type == kind:
            if condition.status != value:
                condition.last_transition_time = now
            condition.status = value  # type: ignore[assignment]
            condition.reason = reason
            condition.message = message
            return
    status.conditions.append(
        Condition(type=kind, status=value, reason=reason, message=message, last_transition_time=now)  # type: ignore[arg-type]
    )
