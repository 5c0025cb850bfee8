"""History editing through `decide()`: intents, PauseRequests, Injections, signals, resume from a step.

Every test drives the engine with the in-memory simulator, which carries out
each decision the way the kube layer does (annotations consumed or set,
Injections settled, PauseRequests finalised), so the rules are checked across
reconciles, not just within one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retcon.api.run import AuditEntry, ObjectRef, PauseReason, RunPhase, StepPhase
from retcon.api.stepresult import Outcome
from retcon.api.workflow import WorkflowSpec
from retcon.engine.model import (
    CANCEL_ANNOTATION,
    INLINE_OUTPUT_LIMIT,
    NON_RETRYABLE_EXIT_CODE,
    PAUSE_ANNOTATION,
    RESUME_FROM_ANNOTATION,
    SIGNAL_PREFIX,
    InjectionResult,
    Intent,
    PauseRequestResult,
)
from retcon.engine.naming import job_name
from tests.unit.engine_sim import Sim, succeed_with
from tests.unit.test_engine import begin, behaving, condition, events, fn, later, started, workflow

SEQUENCE = workflow(fn("a"), fn("b"), fn("c"))
RELEASING = workflow(fn("a"), fn("b"), fn("c"), pauseBehavior="Release")
APPROVAL = workflow(fn("a"), {"name": "approval", "type": "Wait"}, fn("b"))
SIGNAL = f"{SIGNAL_PREFIX}approval"
STEPS = "step_001 (a), step_002 (b), step_003 (c)"
B_FAILS = behaving(b=(NON_RETRYABLE_EXIT_CODE, None, Outcome.NON_RETRYABLE))


def audit_of(sim: Sim, kind: str) -> list[AuditEntry]:
    return [entry for entry in sim.status.audit if entry.type == kind]


def audit_trail(sim: Sim) -> list[tuple[str, str]]:
    return [(entry.type, entry.actor) for entry in sim.status.audit]


def warnings(sim: Sim, since: int = 0) -> list[str]:
    return [
        action.message
        for decision in sim.decisions[since:]
        for action in decision.actions
        if getattr(action, "type", None) == "Warning"
    ]


def paused_after_a(spec: WorkflowSpec = SEQUENCE, *, by: str = "alice") -> Sim:
    """A run paused (by `by`, with the annotation) after step a succeeded with {"a": true}."""
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    sim.annotate(by, {PAUSE_ANNOTATION: "true"})
    sim.finish_jobs()
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is PauseReason.INJECTION
    return sim


def failed_at_b(spec: WorkflowSpec = SEQUENCE) -> Sim:
    """A run that failed because step b failed for good; a succeeded with {"a": true}."""
    sim = Sim(spec, B_FAILS)
    sim.run_to_end()
    assert sim.status.phase is RunPhase.FAILED
    assert sim.phase_of("b") == "Failed"
    return sim


# --- intents: who asked, from admission ------------------------------------------------------------


def test_each_intent_is_audited_once_with_its_actor_and_admission_time_even_as_decide_runs_again() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    asked = sim.now
    sim.annotate("alice", {PAUSE_ANNOTATION: "true"})

    later(sim, 5)
    sim.finish_jobs()
    later(sim, 5)
    later(sim, 5)

    (requested,) = audit_of(sim, "run.pause_requested")
    assert (requested.actor, requested.time, requested.details) == ("alice", asked, {"via": "annotation"})
    assert sim.status.last_intent == 1

    resumed_at = sim.now
    sim.annotate("bob", {PAUSE_ANNOTATION: None})
    later(sim, 1)
    later(sim, 1)

    assert audit_trail(sim) == [
        ("run.pause_requested", "alice"),
        ("run.paused", "alice"),
        ("run.resumed", "bob"),
    ]
    (resumed,) = audit_of(sim, "run.resumed")
    assert (resumed.time, resumed.details) == (resumed_at, {"via": "annotation"})
    assert sim.status.last_intent == 2


def test_intents_are_audited_in_sequence_order_and_those_already_recorded_are_skipped() -> None:
    sim = Sim(APPROVAL, succeed_with({}))
    begin(sim)
    sim.status.last_intent = 3  # intents 1-3 were recorded by earlier decisions
    at = sim.now
    sim.intents = (
        Intent(5, "signal", "frank", at, {"step": "approval", "data": {"approved": True}}),
        Intent(2, "pause", "old", at),
        Intent(4, "pause", "gina", at),
        Intent(6, "add-step", "hal", at, {"request": None}),
    )

    later(sim, 1)

    assert audit_trail(sim) == [("run.pause_requested", "gina"), ("step.signalled", "frank")]
    signalled = audit_of(sim, "step.signalled")[0]
    assert (signalled.step_id, signalled.step_name) == ("step_002", "approval")
    assert signalled.new_output == {"approved": True}
    assert signalled.details == {"step": "approval"}
    assert sim.status.last_intent == 6


def test_a_cancel_is_audited_with_its_actor_as_the_run_is_cancelled() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    sim.annotate("zed", {CANCEL_ANNOTATION: "true"})

    later(sim, 1)
    later(sim, 1)

    assert sim.status.phase is RunPhase.CANCELLED
    assert audit_trail(sim) == [("run.cancel_requested", "zed")]


def test_the_operators_own_annotation_changes_are_not_audited() -> None:
    sim = failed_at_b()
    sim.inject("fix-b", "b", {"b": "fixed"})

    later(sim, 1)  # sets retcon.dev/pause itself: a hold, not someone's pause
    later(sim, 1)

    assert sim.annotations.get(PAUSE_ANNOTATION) == "true"
    assert sim.admitted_intents() == ()
    assert audit_of(sim, "run.pause_requested") == []


# --- PauseRequests ---------------------------------------------------------------------------------


def test_a_pause_request_holds_the_run_and_deleting_it_resumes_the_run_naming_who_deleted_it() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    created = sim.now
    sim.pause_request("hold-1", actor="carol", reason="audit review")
    sim.finish_jobs()

    paused = later(sim, 1)

    assert started(paused) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is PauseReason.INJECTION
    assert paused.pause_requests == (PauseRequestResult("hold-1", "Holding", "holding run run-1"),)
    assert paused.finalize_pause_requests == ()
    (requested,) = audit_of(sim, "run.pause_requested")
    assert (requested.actor, requested.time, requested.reason) == ("carol", created, "audit review")
    assert requested.details == {"via": "PauseRequest", "pauseRequest": "uid-hold-1", "name": "hold-1"}
    (run_paused,) = audit_of(sim, "run.paused")
    assert (run_paused.actor, run_paused.reason) == ("carol", "audit review")
    assert later(sim, 600).pause_requests == paused.pause_requests
    assert len(audit_of(sim, "run.pause_requested")) == 1

    sim.delete_pause_request("hold-1", actor="dave")
    released = later(sim, 1)

    assert started(released) == ["b"]
    assert sim.status.phase is RunPhase.RUNNING
    assert released.pause_requests == ()
    assert released.finalize_pause_requests == ("hold-1",)
    (resumed,) = audit_of(sim, "run.resumed")
    assert (resumed.actor, resumed.time, resumed.reason) == ("dave", sim.now, "PauseRequest hold-1 deleted")
    assert resumed.details == {"via": "PauseRequest", "releasedPauseRequest": "uid-hold-1", "name": "hold-1"}


def test_a_pause_request_whose_finalizer_is_still_there_is_finalised_again_but_audited_once() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    hold = sim.pause_request("hold-1")
    sim.finish_jobs()
    later(sim, 1)
    sim.delete_pause_request("hold-1", actor="dave")
    deleting = sim.holds
    later(sim, 1)

    sim.holds = deleting  # the finalizer's removal was lost: the object is still being deleted
    again = later(sim, 1)

    assert again.finalize_pause_requests == (hold.name,)
    assert audit_trail(sim) == [
        ("run.pause_requested", "carol"),
        ("run.paused", "carol"),
        ("run.resumed", "dave"),
    ]


def test_a_pause_request_for_a_finished_run_is_released_because_the_run_has_finished() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    sim.run_to_end()

    sim.pause_request("too-late")
    decision = later(sim, 1)

    assert sim.status.phase is RunPhase.SUCCEEDED
    assert decision.pause_requests == (PauseRequestResult("too-late", "Released", "the run has finished"),)


def test_release_after_an_injection_lets_existing_pause_requests_go_but_a_new_one_holds() -> None:
    sim = Sim(RELEASING, succeed_with({}))
    begin(sim)
    sim.pause_request("hold-1")
    sim.finish_jobs()
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSED

    sim.inject("fix-a", "a", {"a": "fixed"})
    released = later(sim, 1)

    assert started(released) == ["b"]
    assert sim.status.released_at == sim.now
    assert later(sim, 1).pause_requests == (
        PauseRequestResult("hold-1", "Released", "released after an injection"),
    )

    sim.pause_request("hold-2")
    sim.finish_jobs()
    held = later(sim, 1)

    assert started(held) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert [(r.name, r.phase) for r in held.pause_requests] == [("hold-1", "Released"), ("hold-2", "Holding")]


# --- Injections: what applies ----------------------------------------------------------------------


def test_an_injection_into_a_succeeded_step_of_a_paused_run_replaces_its_output_and_the_run_stays_paused() -> (
    None
):
    sim = paused_after_a()
    new = {"a": "fixed", "price": 12}
    sim.inject("fix-a", "a", new, actor="erin", reason="wrong price")

    decision = later(sim, 1)

    assert decision.injections == (
        InjectionResult(
            "fix-a", "Applied", "applied to step step_001 (a)", "step_001", "a", {"a": True}, "erin"
        ),
    )
    step = sim.step_status("a")
    assert (step.phase, step.output, step.injected) == (StepPhase.SUCCEEDED, new, True)
    assert step.message == "output injected by erin: wrong price"
    assert len(step.attempts) == 1
    entry = sim.status.audit[-1]
    assert entry == AuditEntry(
        type="step.injected",
        time=sim.now,
        actor="erin",
        step_id="step_001",
        step_name="a",
        reason="wrong price",
        previous_output={"a": True},
        new_output=new,
        details={"injection": "uid-fix-a", "name": "fix-a", "recoveredFailure": False},
    )
    assert ("Normal", "StepInjected") in events(decision)
    assert started(decision) == []
    assert decision.set_annotations == {}
    assert PAUSE_ANNOTATION not in decision.consumed_annotations
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is PauseReason.INJECTION

    sim.annotate("bob", {PAUSE_ANNOTATION: None})
    resumed = later(sim, 1)

    (start,) = resumed.starts
    assert start.step.name == "b"
    assert start.input_document["steps"]["a"] == {"output": new, "phase": "Succeeded"}
    assert start.input_document["state"] == new


def test_an_injection_into_the_failed_step_of_a_failed_run_recovers_it_and_holds_the_run_under_hold() -> None:
    sim = failed_at_b()
    attempts = [attempt.model_dump() for attempt in sim.step_status("b").attempts]
    sim.inject("fix-b", "b", {"b": "fixed"}, actor="erin", reason="vendor outage")

    decision = later(sim, 1)

    assert decision.injections == (
        InjectionResult("fix-b", "Applied", "applied to step step_002 (b)", "step_002", "b", None, "erin"),
    )
    step = sim.step_status("b")
    assert (step.phase, step.output, step.injected) == (StepPhase.SUCCEEDED, {"b": "fixed"}, True)
    assert [attempt.model_dump() for attempt in step.attempts] == attempts  # the failure stays in the history
    (injected,) = audit_of(sim, "step.injected")
    assert (injected.previous_output, injected.new_output) == (None, {"b": "fixed"})
    assert injected.details == {"injection": "uid-fix-b", "name": "fix-b", "recoveredFailure": True}
    assert decision.set_annotations == {PAUSE_ANNOTATION: "true"}
    assert started(decision) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is PauseReason.INJECTION
    assert sim.status.next_step_hint == "c"
    assert sim.status.finished_at is None
    assert condition(sim.status, "Completed") == ("False", "InProgress")

    assert started(later(sim, 600)) == []  # held by the annotation the operator set
    assert sim.status.phase is RunPhase.PAUSED

    sim.annotate("bob", {PAUSE_ANNOTATION: None})
    resumed = later(sim, 1)

    (start,) = resumed.starts
    assert start.step.name == "c"
    assert start.input_document["steps"]["b"] == {"output": {"b": "fixed"}, "phase": "Succeeded"}
    assert audit_trail(sim)[-1] == ("run.resumed", "bob")
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED


def test_an_injection_into_a_failed_run_under_release_continues_the_run_at_once() -> None:
    sim = failed_at_b(RELEASING)
    sim.inject("fix-b", "b", {"b": "fixed"}, actor="erin")

    decision = later(sim, 1)

    assert [r.phase for r in decision.injections] == ["Applied"]
    assert decision.set_annotations == {}
    assert PAUSE_ANNOTATION in decision.consumed_annotations
    assert started(decision) == ["c"]
    assert sim.status.phase is RunPhase.RUNNING
    assert audit_trail(sim) == [("step.injected", "erin"), ("run.resumed", "erin")]
    resumed = sim.status.audit[-1]
    assert resumed.reason == "pauseBehavior Release: resumed after the injection"
    assert resumed.details == {"via": "Release"}
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED


def test_an_injection_into_a_paused_run_under_release_removes_the_pause_and_continues() -> None:
    sim = paused_after_a(RELEASING)
    sim.inject("fix-a", "a", {"a": "fixed"})

    decision = later(sim, 1)

    assert decision.consumed_annotations == (PAUSE_ANNOTATION,)
    assert PAUSE_ANNOTATION not in sim.annotations
    assert started(decision) == ["b"]
    assert sim.status.phase is RunPhase.RUNNING


def test_an_injection_waits_without_a_result_while_the_run_is_pausing_then_applies() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    sim.annotate("alice", {PAUSE_ANNOTATION: "true"})
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSING
    sim.inject("early", "a", {"a": "fixed"})

    waiting = later(sim, 1)

    assert waiting.injections == ()
    assert sim.step_status("a").phase is StepPhase.RUNNING
    assert [request.name for request in sim.injections] == ["early"]

    sim.finish_jobs()
    results = [later(sim, 1).injections for _ in range(2)]

    assert sim.status.phase is RunPhase.PAUSED
    assert [r.phase for batch in results for r in batch] == ["Applied"]
    assert sim.output_of("a") == {"a": "fixed"}


def test_an_injection_into_a_running_run_held_by_a_pause_request_waits() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    sim.pause_request("hold-1")
    sim.inject("early", "a", {"a": "fixed"})

    assert later(sim, 1).injections == ()
    assert sim.status.phase is RunPhase.PAUSING


def test_the_same_injection_seen_again_is_reported_applied_without_applying_it_twice() -> None:
    sim = paused_after_a()
    request = sim.inject("fix-a", "a", {"a": "fixed"})
    first = later(sim, 1)
    sim.inject("fix-a-again", "a", {"a": "second"})
    later(sim, 1)

    sim.injections = (request,)  # its status write was lost: it still looks pending
    again = later(sim, 1)

    (result,) = again.injections
    (applied,) = first.injections
    assert (result.name, result.phase, result.step_id, result.step_name, result.actor) == (
        "fix-a",
        "Applied",
        "step_001",
        "a",
        "erin",
    )
    assert result.previous_output == applied.previous_output == {"a": True}
    assert sim.output_of("a") == {"a": "second"}
    assert len(audit_of(sim, "step.injected")) == 2
    assert ("Normal", "StepInjected") not in events(again)


def test_two_injections_into_one_step_apply_in_creation_order_each_replacing_the_last() -> None:
    sim = paused_after_a()
    # Names sort the other way round: creation time decides.
    sim.inject("z-first", "a", {"v": 1}, actor="erin", created=sim.now)
    sim.inject("a-second", "step_001", {"v": 2}, actor="fay", created=sim.now + timedelta(seconds=1))

    decision = later(sim, 5)

    assert [(r.name, r.phase, r.previous_output) for r in decision.injections] == [
        ("z-first", "Applied", {"a": True}),
        ("a-second", "Applied", {"v": 1}),
    ]
    assert sim.output_of("a") == {"v": 2}
    assert [(e.actor, e.previous_output, e.new_output) for e in audit_of(sim, "step.injected")] == [
        ("erin", {"a": True}, {"v": 1}),
        ("fay", {"v": 1}, {"v": 2}),
    ]


BIG = {"rows": ["x" * 100] * (INLINE_OUTPUT_LIMIT // 100 + 10), "count": 3}


def test_a_large_injected_output_is_kept_by_reference_and_seen_by_the_next_step_at_once() -> None:
    size = len(json.dumps(BIG, separators=(",", ":"), sort_keys=True).encode())
    assert size > INLINE_OUTPUT_LIMIT
    sim = paused_after_a(RELEASING)
    sim.inject("big", "a", BIG)

    decision = later(sim, 1)

    step = sim.step_status("a")
    assert step.output is None
    assert step.output_ref == ObjectRef(kind="Injection", name="big", key="spec.output", bytes=size)
    assert step.injected
    (start,) = decision.starts
    assert start.step.name == "b"
    assert start.input_document["steps"]["a"] == {"output": BIG, "phase": "Succeeded"}
    assert start.input_document["state"]["count"] == 3
    (entry,) = audit_of(sim, "step.injected")
    assert (entry.previous_output, entry.new_output) == ({"a": True}, None)  # too large for the status

    sim.finish_jobs()
    after = later(sim, 1)  # read back from the Injection object

    (start,) = after.starts
    assert start.step.name == "c"
    assert start.input_document["steps"]["a"]["output"] == BIG


# --- Injections: what is refused -------------------------------------------------------------------


def test_an_injection_into_a_running_run_without_a_hold_is_rejected_saying_to_pause_first() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    sim.inject("too-soon", "a", {"a": "fixed"}, actor="erin")

    decision = later(sim, 1)

    assert decision.injections == (
        InjectionResult(
            "too-soon",
            "Rejected",
            "run run-1 is Running: only a Paused or Failed run can be injected into; pause it first",
            actor="erin",
        ),
    )
    assert audit_of(sim, "step.injected") == []
    assert sim.injections == ()


def test_an_injection_into_a_succeeded_run_is_rejected_naming_the_phase() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    sim.run_to_end()
    sim.inject("too-late", "a", {"a": "fixed"})

    (result,) = later(sim, 1).injections

    assert result.phase == "Rejected"
    assert result.message.startswith(
        "run run-1 is Succeeded: only a Paused or Failed run can be injected into"
    )
    assert sim.output_of("a") == {"a": True}


ROUTED = workflow(
    fn("a"),
    {
        "name": "route",
        "type": "Decision",
        "routes": [{"condition": "state.x > 1", "target": "hi"}],
        "default": "lo",
    },
    fn("hi", dependsOn=["route"]),
    fn("lo", dependsOn=["route"]),
    fn("end", dependsOn=["hi"]),
)


def paused_with_a_skipped_step() -> Sim:
    sim = Sim(ROUTED, succeed_with({}), input={"x": 5})
    begin(sim)
    sim.finish_jobs()
    later(sim, 1)  # route takes hi, skips lo
    sim.annotate("alice", {PAUSE_ANNOTATION: "true"})
    sim.finish_jobs()
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.phase_of("lo") == "Skipped"
    return sim


def paused_with_a_running_step() -> Sim:
    """Not a state the engine makes: a status that says Paused while a step runs (defence in depth)."""
    sim = paused_after_a()
    sim.step_status("b").phase = StepPhase.RUNNING
    return sim


def paused_at_a_wait() -> Sim:
    sim = Sim(APPROVAL, succeed_with({}))
    begin(sim)
    sim.finish_jobs()
    later(sim, 1)
    assert sim.status.pause_reason is PauseReason.WAIT
    return sim


@pytest.mark.parametrize(
    ("make", "step", "message"),
    [
        pytest.param(
            paused_after_a,
            "c",
            "step step_003 (c) is Pending: it has not run yet, so it has no output to replace",
            id="pending",
        ),
        pytest.param(
            paused_with_a_running_step,
            "b",
            "step step_002 (b) is Running: it is running; wait for it to finish",
            id="running",
        ),
        pytest.param(
            paused_at_a_wait,
            "approval",
            "step step_002 (approval) is Waiting: it is waiting; signal it instead",
            id="waiting",
        ),
        pytest.param(
            paused_with_a_skipped_step,
            "lo",
            "step step_004 (lo) is Skipped: it was skipped by a decision and has no output",
            id="skipped",
        ),
        pytest.param(
            paused_after_a, "nope", f"run run-1 has no step 'nope'; its steps: {STEPS}", id="unknown-step"
        ),
    ],
)
def test_an_injection_into_a_step_without_an_output_to_replace_is_rejected_saying_why(
    make: Callable[[], Sim], step: str, message: str
) -> None:
    sim = make()
    before = sim.status.model_dump()["steps"]
    sim.inject("bad", step, {"x": 1}, actor="erin")

    decision = later(sim, 1)

    assert decision.injections == (InjectionResult("bad", "Rejected", message, actor="erin"),)
    assert audit_of(sim, "step.injected") == []
    assert decision.set_annotations == {}
    if make is not paused_with_a_running_step:
        assert sim.status.model_dump()["steps"] == before


# --- the run.paused entry --------------------------------------------------------------------------


def test_run_paused_is_audited_once_when_an_injection_holds_a_failed_run() -> None:
    sim = failed_at_b()
    sim.inject("fix-b", "b", {"b": "fixed"})

    later(sim, 1)
    later(sim, 60)
    sim.inject("fix-b-again", "b", {"b": "fixed twice"})
    later(sim, 1)
    later(sim, 60)

    (paused,) = audit_of(sim, "run.paused")
    assert paused.details == {"nextStepHint": "c"}
    assert [entry.type for entry in sim.status.audit] == ["step.injected", "run.paused", "step.injected"]


def test_run_paused_is_audited_again_for_a_new_pause_after_a_resume() -> None:
    sim = paused_after_a()
    sim.annotate("bob", {PAUSE_ANNOTATION: None})
    later(sim, 1)
    sim.annotate("carl", {PAUSE_ANNOTATION: "true"})
    sim.finish_jobs()
    later(sim, 1)
    later(sim, 1)

    assert [(e.type, e.actor) for e in sim.status.audit] == [
        ("run.pause_requested", "alice"),
        ("run.paused", "alice"),
        ("run.resumed", "bob"),
        ("run.pause_requested", "carl"),
        ("run.paused", "carl"),
    ]
    assert audit_of(sim, "run.paused")[-1].details == {"nextStepHint": "c"}


def test_the_hold_after_an_injection_into_a_failed_run_is_credited_to_the_injector() -> None:
    sim = Sim(SEQUENCE, B_FAILS)
    begin(sim)
    sim.annotate("alice", {PAUSE_ANNOTATION: "true"})
    sim.finish_jobs()
    later(sim, 1)
    sim.annotate("alice", {PAUSE_ANNOTATION: None})
    sim.run_to_end()
    assert sim.status.phase is RunPhase.FAILED

    sim.inject("fix-b", "b", {"b": "fixed"}, actor="erin")
    later(sim, 1)

    assert audit_trail(sim)[-2:] == [("step.injected", "erin"), ("run.paused", "erin")]


def test_a_failed_run_recovered_by_an_injection_no_longer_says_its_step_failed() -> None:
    sim = failed_at_b()
    sim.inject("fix-b", "b", {"b": "fixed"})

    later(sim, 1)

    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.message is None or "failed" not in sim.status.message


def test_an_injection_pending_on_a_cancelled_run_is_rejected() -> None:
    sim = paused_after_a()
    sim.annotate("zed", {CANCEL_ANNOTATION: "true"})
    sim.inject("late", "a", {"a": "fixed"})

    results = [later(sim, 1).injections for _ in range(2)]

    assert sim.status.phase is RunPhase.CANCELLED
    assert [(r.name, r.phase) for batch in results for r in batch] == [("late", "Rejected")]


# --- signals ---------------------------------------------------------------------------------------


def test_a_signal_completes_a_waiting_wait_step_with_its_data_and_the_run_goes_on() -> None:
    sim = paused_at_a_wait()
    sim.annotate("frank", {SIGNAL: '{"approved": true, "by": "ops"}'})

    decision = later(sim, 1)

    step = sim.step_status("approval")
    assert (step.phase, step.output) == (StepPhase.SUCCEEDED, {"approved": True, "by": "ops"})
    assert step.finished_at == sim.now
    assert SIGNAL in decision.consumed_annotations
    assert SIGNAL not in sim.annotations
    assert ("Normal", "StepSignalled") in events(decision)
    (start,) = decision.starts
    assert start.step.name == "b"
    assert start.input_document["state"] == {"a": True, "approved": True, "by": "ops"}
    (signalled,) = audit_of(sim, "step.signalled")
    assert (signalled.actor, signalled.step_id, signalled.new_output) == (
        "frank",
        "step_002",
        {"approved": True, "by": "ops"},
    )


def test_a_signal_given_before_the_step_waits_is_kept_until_it_does() -> None:
    sim = Sim(APPROVAL, succeed_with({}))
    begin(sim)
    sim.annotate("frank", {SIGNAL: '{"approved": true}'})

    early = later(sim, 1)

    assert SIGNAL not in early.consumed_annotations
    assert SIGNAL in sim.annotations
    assert sim.phase_of("approval") == "Pending"

    sim.finish_jobs()
    later(sim, 1)
    later(sim, 1)

    assert sim.output_of("approval") == {"approved": True}
    assert SIGNAL not in sim.annotations
    assert sim.started == ["a", "b"]
    assert warnings(sim) == []


@pytest.mark.parametrize("value", ["{approved", "[true]", '"yes"'])
def test_a_signal_whose_data_is_not_a_json_object_is_consumed_with_a_warning(value: str) -> None:
    sim = paused_at_a_wait()
    sim.annotations[SIGNAL] = value  # admission refuses it; the engine copes anyway
    count = len(sim.decisions)

    decision = later(sim, 1)

    assert SIGNAL in decision.consumed_annotations
    assert sim.phase_of("approval") == "Waiting"
    assert warnings(sim, count) == ["Signal for approval ignored: its data must be a JSON object"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param(
            f"{SIGNAL_PREFIX}a", "Signal for a ignored: the step is Succeeded, not waiting", id="done"
        ),
        pytest.param(
            f"{SIGNAL_PREFIX}ghost", "Signal for ghost ignored: the run has no such step", id="unknown-step"
        ),
    ],
)
def test_a_signal_for_a_step_that_cannot_take_it_is_consumed_with_a_warning(key: str, message: str) -> None:
    sim = paused_at_a_wait()
    sim.annotations[key] = '{"approved": true}'
    count = len(sim.decisions)
    output = sim.output_of("a")

    decision = later(sim, 1)

    assert key in decision.consumed_annotations
    assert warnings(sim, count) == [message]
    assert sim.output_of("a") == output
    assert sim.phase_of("approval") == "Waiting"


# --- resume from a step ----------------------------------------------------------------------------

DIAMOND = workflow(
    fn("a"),
    fn("b", dependsOn=["a"]),
    fn("c", dependsOn=["a"]),
    fn("d", dependsOn=["b"]),
    fn("e", dependsOn=["d", "c"]),
)


def test_resume_from_a_step_reruns_its_downstream_closure_keeping_earlier_attempts() -> None:
    sim = Sim(DIAMOND, succeed_with({}))
    sim.run_to_end()
    kept = {name: sim.step_status(name).model_dump() for name in ("a", "c")}
    sim.annotate("gina", {RESUME_FROM_ANNOTATION: "step_002"})

    decision = later(sim, 1)

    assert RESUME_FROM_ANNOTATION in decision.consumed_annotations
    assert RESUME_FROM_ANNOTATION not in sim.annotations
    assert started(decision) == ["b"]
    assert decision.starts[0].job_name == job_name("run-1", sim.uid, "step_002", 2)
    assert [(a.number, a.phase) for a in sim.step_status("b").attempts] == [
        (1, StepPhase.SUCCEEDED),
        (2, StepPhase.RUNNING),
    ]
    for name in ("d", "e"):
        step = sim.step_status(name)
        assert step.phase is StepPhase.PENDING
        assert step.output is None
        assert [(a.number, a.phase) for a in step.attempts] == [(1, StepPhase.SUCCEEDED)]
        assert step.message == "to re-run (resume from b)"
    assert {name: sim.step_status(name).model_dump() for name in ("a", "c")} == kept
    assert sim.status.phase is RunPhase.RUNNING
    assert sim.status.finished_at is None
    (resumed,) = audit_of(sim, "run.resumed")
    assert resumed.actor == "gina"
    assert resumed.details == {"via": "annotation", "fromStep": "step_002", "rerun": ["b", "d", "e"]}
    assert ("Normal", "ResumedFromStep") in events(decision)

    assert sim.run_to_end().phase is RunPhase.SUCCEEDED
    assert sim.started[-3:] == ["b", "d", "e"]
    assert [len(sim.step_status(name).attempts) for name in "abcde"] == [1, 2, 1, 2, 2]


def test_resuming_a_paused_run_from_a_step_by_name_reruns_it_and_what_follows() -> None:
    sim = paused_after_a()
    sim.annotate("gina", {PAUSE_ANNOTATION: None, RESUME_FROM_ANNOTATION: "a"})

    decision = later(sim, 1)

    assert started(decision) == ["a"]
    assert decision.starts[0].attempt == 2
    assert audit_trail(sim)[-1] == ("run.resumed", "gina")
    assert sim.status.audit[-1].details == {
        "via": "annotation",
        "fromStep": "step_001",
        "rerun": ["a", "b", "c"],
    }
    assert len(audit_of(sim, "run.resumed")) == 1


def test_resume_from_a_step_waits_while_the_run_is_held() -> None:
    sim = paused_after_a()
    sim.annotate("gina", {RESUME_FROM_ANNOTATION: "a"})

    decision = later(sim, 1)

    assert RESUME_FROM_ANNOTATION not in decision.consumed_annotations
    assert started(decision) == []
    assert sim.step_status("a").phase is StepPhase.SUCCEEDED

    sim.annotate("gina", {PAUSE_ANNOTATION: None})
    resumed = later(sim, 1)

    assert started(resumed) == ["a"]
    assert RESUME_FROM_ANNOTATION in resumed.consumed_annotations
    last = audit_of(sim, "run.resumed")[-1]
    assert (last.actor, last.details) == (
        "gina",
        {"via": "annotation", "fromStep": "step_001", "rerun": ["a", "b", "c"]},
    )


def test_resume_from_a_step_is_refused_while_steps_are_running() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    before = sim.status.model_dump()["steps"]
    count = len(sim.decisions)
    sim.annotate("gina", {RESUME_FROM_ANNOTATION: "a"})

    decision = later(sim, 1)

    assert warnings(sim, count) == ["resume-from-step a: steps are still running; pause first"]
    assert RESUME_FROM_ANNOTATION in decision.consumed_annotations
    assert sim.status.model_dump()["steps"] == before
    assert started(decision) == []


def test_resume_from_an_unknown_step_is_ignored_with_a_warning() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    sim.run_to_end()
    sim.annotations[RESUME_FROM_ANNOTATION] = "ghost"  # admission refuses it; the engine copes anyway
    count = len(sim.decisions)

    decision = later(sim, 1)

    assert warnings(sim, count) == ["resume-from-step 'ghost': the run has no such step"]
    assert RESUME_FROM_ANNOTATION in decision.consumed_annotations
    assert sim.status.phase is RunPhase.SUCCEEDED
    assert started(decision) == []


# --- property: the audit and the outputs agree -----------------------------------------------------

PARALLEL = workflow(
    fn("a", dependsOn=[]), fn("b", dependsOn=[]), fn("c", dependsOn=[]), fn("d", dependsOn=["a", "b", "c"])
)
REFS = ("a", "b", "c", "d", "step_001", "step_002", "step_003", "step_004")
NAME_OF = {"step_001": "a", "step_002": "b", "step_003": "c", "step_004": "d"}
VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.lists(st.integers(), max_size=3)
OUTPUTS = st.dictionaries(st.sampled_from(["x", "y", "amount", "a"]), VALUES, max_size=3)
ROUNDS = st.lists(st.lists(st.tuples(st.sampled_from(REFS), OUTPUTS), min_size=1, max_size=3), max_size=4)


def finished_then_paused() -> Sim:
    """a, b and c succeeded (each with its own output), d not started: the run is paused."""
    sim = Sim(PARALLEL, succeed_with({"a": {"x": 1}, "b": {"y": "two"}, "c": {}}))
    begin(sim)
    sim.annotate("alice", {PAUSE_ANNOTATION: "true"})
    sim.finish_jobs()
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSED
    return sim


@settings(max_examples=80, deadline=None)
@given(rounds=ROUNDS)
def test_injected_outputs_and_the_audit_trail_always_agree(
    rounds: list[list[tuple[str, dict[str, Any]]]],
) -> None:
    sim = finished_then_paused()
    original = {name: sim.output_of(name) for name in "abcd"}
    count = 0
    results: list[InjectionResult] = []
    for batch in rounds:
        for ref, output in batch:
            sim.inject(f"inj-{count:03d}", ref, output, actor=f"user-{count}")
            count += 1
        results += later(sim, 1).injections

    assert sorted(r.name for r in results) == [f"inj-{n:03d}" for n in range(count)]
    assert sim.status.phase is RunPhase.PAUSED
    entries = audit_of(sim, "step.injected")
    applied = [r for r in results if r.phase == "Applied"]
    assert [e.details["name"] for e in entries if e.details] == [r.name for r in applied]
    for name in "abcd":
        mine = [e for e in entries if e.step_name == name]
        expected_previous = original[name]
        for entry in mine:
            assert entry.previous_output == expected_previous
            expected_previous = entry.new_output
        assert sim.output_of(name) == (mine[-1].new_output if mine else original[name])
        assert sim.step_status(name).injected is bool(mine)
    for entry, result in zip(entries, applied, strict=True):
        assert (result.step_id, result.previous_output) == (entry.step_id, entry.previous_output)
    pending = "step step_004 (d) is Pending: it has not run yet, so it has no output to replace"
    assert all(r.message == pending for r in results if r.phase == "Rejected")
    assert [r.name for r in results if r.phase == "Rejected"] == [
        f"inj-{n:03d}"
        for n, (ref, _) in enumerate(r for batch in rounds for r in batch)
        if NAME_OF.get(ref, ref) == "d"
    ]

    sim.annotate("bob", {PAUSE_ANNOTATION: None})
    (start,) = later(sim, 1).starts
    assert start.step.name == "d"
    assert {name: start.input_document["steps"][name]["output"] for name in "abc"} == {
        name: sim.output_of(name) for name in "abc"
    }
