"""The run engine's rules, driven through the in-memory simulator: no Kubernetes, no clock."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from retcon.api.run import RunPhase, SourceRef, StepPhase, WorkflowRunStatus
from retcon.api.stepresult import Outcome, StepResultSpec
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide, start_run, workflow_missing
from retcon.engine.model import (
    CANCEL_ANNOTATION,
    INLINE_OUTPUT_LIMIT,
    LOST_JOB_GRACE_SECONDS,
    MAX_INPUT_BYTES,
    NON_RETRYABLE_EXIT_CODE,
    PAUSE_ANNOTATION,
    RESULT_GRACE_SECONDS,
    Decision,
    Observed,
    ObservedAttempt,
    RecordEvent,
    RunView,
    StartAttempt,
    StopAttempt,
)
from retcon.engine.naming import job_name
from retcon.engine.validation import validate_workflow
from tests.unit.engine_sim import T0, Behaviour, Result, Sim, succeed_with


def fn(name: str, **fields: Any) -> dict[str, Any]:
    """A Standard step running a function, in wire form."""
    return {"name": name, "function": f"shop.steps:{name.replace('-', '_')}", **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> WorkflowSpec:
    spec = WorkflowSpec.model_validate({"steps": list(steps), **fields})
    assert validate_workflow(spec) == []
    return spec


def started(decision: Decision) -> list[str]:
    return [action.step.name for action in decision.starts]


def events(decision: Decision) -> list[tuple[str, str]]:
    return [(a.type, a.reason) for a in decision.actions if isinstance(a, RecordEvent)]


def all_events(sim: Sim) -> list[RecordEvent]:
    return [a for d in sim.decisions for a in d.actions if isinstance(a, RecordEvent)]


def stops(decision: Decision) -> list[StopAttempt]:
    return [a for a in decision.actions if isinstance(a, StopAttempt)]


def condition(status: WorkflowRunStatus, kind: str) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == kind)
    return found.status, found.reason


def behaving(**per_step: Result) -> Behaviour:
    """Each named step ends as given; the others succeed with `{name: true}`."""
    default = succeed_with({})

    def behaviour(name: str, attempt: int, document: dict[str, Any]) -> Result:
        return per_step.get(name.replace("-", "_")) or default(name, attempt, document)

    return behaviour


def failing_attempts(failures: int, *, step: str | None = None) -> Behaviour:
    """The step (default: every step) fails its first `failures` attempts with exit code 1, then succeeds."""

    def behaviour(name: str, attempt: int, document: dict[str, Any]) -> Result:
        if attempt <= failures and step in (None, name):
            return 1, None, Outcome.FAILED
        return 0, {"attempt": attempt}, Outcome.SUCCEEDED

    return behaviour


def begin(sim: Sim, rounds: int = 2) -> Decision:
    """Snapshot the run, then take the first decision (which starts the roots)."""
    decision = sim.step()
    for _ in range(rounds - 1):
        sim.now += timedelta(seconds=1)
        decision = sim.step()
    return decision


def later(sim: Sim, seconds: float) -> Decision:
    sim.now += timedelta(seconds=seconds)
    return sim.step()


SEQUENCE = workflow(fn("a"), fn("b"), fn("c"))

ORDER_PROCESSING = workflow(
    fn("fetch-order"),
    {
        "name": "check-amount",
        "type": "Decision",
        "routes": [{"condition": "state.amount > 10000", "target": "high-value-review"}],
        "default": "standard-processing",
    },
    fn("high-value-review", dependsOn=["check-amount"]),
    fn("archive-review", dependsOn=["high-value-review"]),
    fn("standard-processing", dependsOn=["check-amount"]),
    fn("send-notification", dependsOn=["archive-review", "standard-processing"]),
)


# --- order -----------------------------------------------------------------------------------------


def test_steps_without_depends_on_run_one_after_another_in_definition_order() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert [started(d) for d in sim.decisions] == [[], ["a"], ["b"], ["c"], []]


def test_steps_with_empty_depends_on_are_roots_started_in_the_same_decision() -> None:
    spec = workflow(fn("left", dependsOn=[]), fn("right", dependsOn=[]), fn("after-right"))
    sim = Sim(spec, succeed_with({}))

    first = begin(sim)

    assert started(first) == ["left", "right"]
    assert sim.status.current_step == "left, right"
    sim.finish_jobs()
    assert started(later(sim, 1)) == ["after-right"]


def test_a_step_waits_for_all_its_dependencies() -> None:
    spec = workflow(
        fn("left", dependsOn=[]), fn("right", dependsOn=[]), fn("join", dependsOn=["left", "right"])
    )
    sim = Sim(spec, succeed_with({}))
    begin(sim)

    sim.finish_jobs(only=["left"])
    one_done = later(sim, 1)

    assert started(one_done) == []
    assert (sim.phase_of("left"), sim.phase_of("right"), sim.phase_of("join")) == (
        "Succeeded",
        "Running",
        "Pending",
    )
    sim.finish_jobs(only=["right"])
    assert started(later(sim, 1)) == ["join"]


# --- decisions -------------------------------------------------------------------------------------


def test_a_decision_runs_the_route_taken_and_skips_the_other_naming_the_decision() -> None:
    sim = Sim(ORDER_PROCESSING, succeed_with({}), input={"amount": 20000})

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.step_status("check-amount").route == "high-value-review"
    assert sim.started == ["fetch-order", "high-value-review", "archive-review", "send-notification"]
    skipped = sim.step_status("standard-processing")
    assert skipped.phase is StepPhase.SKIPPED
    assert skipped.message == "not chosen by decision check-amount"
    assert skipped.attempts == []


def test_a_decision_takes_its_default_and_skips_what_only_the_other_branch_leads_to() -> None:
    sim = Sim(ORDER_PROCESSING, succeed_with({}), input={"amount": 50})

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.step_status("check-amount").route == "standard-processing"
    assert sim.started == ["fetch-order", "standard-processing", "send-notification"]
    assert sim.step_status("high-value-review").message == "not chosen by decision check-amount"
    downstream = sim.step_status("archive-review")
    assert downstream.phase is StepPhase.SKIPPED
    assert downstream.message == "every step it depends on was skipped"


def test_a_join_of_both_branches_runs_and_sees_the_skipped_branch_as_skipped() -> None:
    sim = Sim(ORDER_PROCESSING, succeed_with({}), input={"amount": 50})

    sim.run_to_end()

    assert sim.phase_of("send-notification") == "Succeeded"
    (document,) = [d for job, d in sim.inputs.items() if d["step"]["name"] == "send-notification"]
    assert document["steps"]["archive-review"] == {"output": None, "phase": "Skipped"}
    assert document["steps"]["standard-processing"] == {
        "output": {"standard_processing": True},
        "phase": "Succeeded",
    }


def test_a_decision_with_no_route_holding_and_no_default_fails_the_run() -> None:
    spec = workflow(
        fn("fetch-order"),
        {
            "name": "check-amount",
            "type": "Decision",
            "routes": [{"condition": "state.amount > 10000", "target": "review"}],
        },
        fn("review", dependsOn=["check-amount"]),
    )
    sim = Sim(spec, succeed_with({}), input={"amount": 50})

    status = sim.run_to_end()

    message = "no route condition held ('state.amount > 10000') and the step has no default"
    assert status.phase is RunPhase.FAILED
    assert sim.step_status("check-amount").phase is StepPhase.FAILED
    assert sim.step_status("check-amount").message == message
    assert status.message == f"step check-amount failed: {message}"
    assert sim.started == ["fetch-order"]
    assert sim.phase_of("review") == "Pending"


def test_a_route_condition_erroring_at_run_time_fails_the_step_with_the_expression_and_the_error() -> None:
    spec = workflow(
        fn("fetch-order"),
        {
            "name": "check",
            "type": "Decision",
            "routes": [{"condition": "state.missing > 1", "target": "review"}],
            "default": "review",
        },
        fn("review", dependsOn=["check"]),
    )
    sim = Sim(spec, succeed_with({}), input={"amount": 50})

    status = sim.run_to_end()

    step = sim.step_status("check")
    assert step.phase is StepPhase.FAILED
    assert step.message is not None
    assert step.message.startswith("route condition 'state.missing > 1' failed: ")
    assert 'Key not found in map : "missing"' in step.message
    assert status.phase is RunPhase.FAILED
    assert step.route is None
    assert sim.started == ["fetch-order"]


# --- retries ---------------------------------------------------------------------------------------


def test_each_attempt_is_numbered_and_has_its_own_deterministic_job() -> None:
    spec = workflow(fn("charge", retry={"limit": 2, "backoff": {"durationSeconds": 1}}))
    sim = Sim(spec, failing_attempts(99))

    status = sim.run_to_end()

    step = sim.step_status("charge")
    expected = [job_name(sim.name, sim.uid, "step_001", n) for n in (1, 2, 3)]
    assert [a.number for a in step.attempts] == [1, 2, 3]
    assert [a.job for a in step.attempts] == expected
    assert list(sim.inputs) == expected
    assert [d["step"]["attempt"] for d in sim.inputs.values()] == [1, 2, 3]
    assert len(set(expected)) == 3
    assert [a.phase for a in step.attempts] == [StepPhase.FAILED] * 3
    assert step.message == "exited with code 1: boom (after 3 attempt(s))"
    assert status.phase is RunPhase.FAILED


def test_retry_delays_follow_the_backoff_and_stop_growing_at_its_cap() -> None:
    backoff = {"durationSeconds": 2, "factor": 3, "maxDurationSeconds": 10}
    sim = Sim(workflow(fn("charge", retry={"limit": 4, "backoff": backoff})), failing_attempts(99))
    begin(sim)

    delays = []
    for number in (1, 2, 3, 4):
        sim.finish_jobs()
        failed = later(sim, 1)
        retry = sim.step_status("charge").attempts[-1]
        assert retry.number == number + 1
        assert retry.phase is StepPhase.PENDING
        assert retry.not_before is not None
        delays.append((retry.not_before - sim.now).total_seconds())
        assert failed.requeue_after == delays[-1]
        assert sim.phase_of("charge") == "Pending"

        early = later(sim, delays[-1] - 0.5)
        assert started(early) == []
        assert early.requeue_after == 0.5
        assert started(later(sim, 0.5)) == ["charge"]

    assert delays == [2.0, 6.0, 10.0, 10.0]


def test_the_retry_message_says_which_retry_and_when() -> None:
    spec = workflow(fn("charge", retry={"limit": 2, "backoff": {"durationSeconds": 5}}))
    sim = Sim(spec, failing_attempts(99))
    begin(sim)
    sim.finish_jobs()

    decision = later(sim, 1)

    assert (
        sim.step_status("charge").message == "attempt 1 failed (exited with code 1: boom); retry 1 of 2 in 5s"
    )
    assert ("Warning", "StepRetrying") in events(decision)
    assert sim.status.phase is RunPhase.RUNNING


def test_exit_code_42_is_not_retried() -> None:
    sim = Sim(workflow(fn("charge", retry={"limit": 3})), succeed_with({}))
    begin(sim)
    job = sim.job_of("charge")
    sim.observed[job] = ObservedAttempt(
        job_name=job,
        job_exists=True,
        pod_phase="Failed",
        exit_code=NON_RETRYABLE_EXIT_CODE,
        termination_message="card declined\n",
        finished_at=sim.now,
    )

    later(sim, 1)

    step = sim.step_status("charge")
    assert len(step.attempts) == 1
    assert (step.attempts[0].reason, step.attempts[0].exit_code) == ("NonRetryable", 42)
    assert step.message == "exited with code 42: card declined (not retryable)"
    assert sim.status.phase is RunPhase.FAILED


@pytest.mark.parametrize("code", [0, 1, NON_RETRYABLE_EXIT_CODE])
def test_a_non_retryable_result_is_not_retried(code: int) -> None:
    sim = Sim(
        workflow(fn("charge", retry={"limit": 3})),
        behaving(charge=(code, None, Outcome.NON_RETRYABLE)),
    )

    status = sim.run_to_end()

    step = sim.step_status("charge")
    assert [a.reason for a in step.attempts] == ["NonRetryable"]
    assert step.phase is StepPhase.FAILED
    assert step.message is not None
    assert step.message.endswith("boom (not retryable)")
    assert status.phase is RunPhase.FAILED


def test_a_failed_result_with_exit_code_1_is_retried() -> None:
    spec = workflow(fn("charge", retry={"limit": 1, "backoff": {"durationSeconds": 1}}), fn("ship"))
    sim = Sim(spec, failing_attempts(1, step="charge"))

    status = sim.run_to_end()

    step = sim.step_status("charge")
    assert [(a.phase, a.reason, a.exit_code) for a in step.attempts] == [
        (StepPhase.FAILED, "Error", 1),
        (StepPhase.SUCCEEDED, "Completed", 0),
    ]
    assert step.attempts[0].message == "exited with code 1: boom"
    assert step.output == {"attempt": 2}
    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["charge", "charge", "ship"]


def test_a_step_without_retry_uses_the_workflow_default_retry() -> None:
    spec = workflow(fn("charge"), defaults={"retry": {"limit": 1, "backoff": {"durationSeconds": 1}}})
    sim = Sim(spec, failing_attempts(1))

    assert sim.run_to_end().phase is RunPhase.SUCCEEDED
    assert len(sim.step_status("charge").attempts) == 2


# --- timeouts, missing results, broken Jobs --------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"steps": [fn("slow", timeoutSeconds=30)]}, id="step"),
        pytest.param({"steps": [fn("slow")], "defaults": {"timeoutSeconds": 30}}, id="defaults"),
    ],
)
def test_a_running_attempt_requeues_at_its_deadline_and_is_then_stopped(fields: dict[str, Any]) -> None:
    sim = Sim(workflow(*fields.pop("steps"), **fields), succeed_with({}))
    begin(sim)
    job = sim.job_of("slow")

    assert later(sim, 1).requeue_after == 29.0
    assert later(sim, 9).requeue_after == 20.0
    assert sim.phase_of("slow") == "Running"

    expired = later(sim, 20)

    assert stops(expired) == [StopAttempt(job, "timed out after 30s")]
    assert sim.stopped == [job]
    attempt = sim.step_status("slow").attempts[0]
    assert (attempt.phase, attempt.reason) == (StepPhase.FAILED, "Timeout")
    assert sim.step_status("slow").message == "timed out after 30s (after 1 attempt(s))"
    assert sim.status.phase is RunPhase.FAILED


def test_a_timed_out_attempt_is_retried_like_any_failure() -> None:
    spec = workflow(fn("slow", timeoutSeconds=30, retry={"limit": 1, "backoff": {"durationSeconds": 4}}))
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    first_job = sim.job_of("slow")

    later(sim, 30)

    assert sim.stopped == [first_job]
    assert [(a.number, a.phase, a.reason) for a in sim.step_status("slow").attempts] == [
        (1, StepPhase.FAILED, "Timeout"),
        (2, StepPhase.PENDING, None),
    ]
    assert started(later(sim, 4)) == ["slow"]
    assert sim.job_of("slow") == job_name(sim.name, sim.uid, "step_001", 2)


def test_the_decision_that_starts_an_attempt_requeues_at_its_deadline() -> None:
    sim = Sim(workflow(fn("slow", timeoutSeconds=30)), succeed_with({}))

    first = begin(sim)

    assert started(first) == ["slow"]
    assert first.requeue_after == 30.0


def test_a_pod_that_exited_0_without_a_result_is_waited_for_then_fails_with_no_result() -> None:
    sim = Sim(workflow(fn("quiet")), succeed_with({}))
    begin(sim)
    job = sim.job_of("quiet")
    finished = sim.now
    sim.observed[job] = ObservedAttempt(
        job_name=job, job_exists=True, pod_phase="Succeeded", exit_code=0, finished_at=finished
    )

    waiting = later(sim, 10)
    assert sim.phase_of("quiet") == "Running"
    assert waiting.requeue_after == RESULT_GRACE_SECONDS - 10

    sim.now = finished + timedelta(seconds=RESULT_GRACE_SECONDS)
    sim.step()

    attempt = sim.step_status("quiet").attempts[0]
    assert (attempt.phase, attempt.reason) == (StepPhase.FAILED, "NoResult")
    assert sim.step_status("quiet").message == "the step exited 0 but reported no result (after 1 attempt(s))"
    assert sim.status.phase is RunPhase.FAILED


def test_a_result_arriving_within_the_grace_counts() -> None:
    sim = Sim(workflow(fn("quiet")), succeed_with({}))
    begin(sim)
    job = sim.job_of("quiet")
    exited = ObservedAttempt(
        job_name=job, job_exists=True, pod_phase="Succeeded", exit_code=0, finished_at=sim.now
    )
    sim.observed[job] = exited
    later(sim, 10)

    result = StepResultSpec(
        run_name=sim.name,
        step_id="step_001",
        step_name="quiet",
        attempt=1,
        pod_name=f"{job}-pod",
        outcome=Outcome.SUCCEEDED,
        output={"late": True},
    )
    sim.observed[job] = ObservedAttempt(
        job_name=job,
        job_exists=True,
        pod_phase="Succeeded",
        exit_code=0,
        finished_at=exited.finished_at,
        result=result,
        result_name=job,
    )
    later(sim, 10)

    assert sim.output_of("quiet") == {"late": True}
    assert sim.status.phase is RunPhase.SUCCEEDED


def test_a_job_that_could_not_run_fails_the_attempt() -> None:
    sim = Sim(workflow(fn("charge")), succeed_with({}))
    begin(sim)
    job = sim.job_of("charge")
    problem = 'the Job failed: FailedCreate: pods "x" is forbidden: exceeded quota'
    sim.observed[job] = ObservedAttempt(job_name=job, job_exists=True, job_failed=problem)

    decision = later(sim, 1)

    attempt = sim.step_status("charge").attempts[0]
    assert (attempt.phase, attempt.reason, attempt.message) == (StepPhase.FAILED, "JobFailed", problem)
    assert sim.step_status("charge").message == f"{problem} (after 1 attempt(s))"
    assert ("Warning", "StepFailed") in events(decision)
    assert sim.status.phase is RunPhase.FAILED


def test_a_container_that_cannot_start_says_why_in_the_step_message() -> None:
    sim = Sim(workflow(fn("charge")), succeed_with({}))
    begin(sim)
    job = sim.job_of("charge")
    sim.observed[job] = ObservedAttempt(
        job_name=job,
        job_exists=True,
        pod_phase="Pending",
        waiting_reason='ImagePullBackOff: Back-off pulling image "shop:1"',
    )

    later(sim, 1)

    assert sim.phase_of("charge") == "Running"
    assert (
        sim.step_status("charge").message
        == 'waiting to start: ImagePullBackOff: Back-off pulling image "shop:1"'
    )


def test_a_job_the_api_says_is_gone_is_lost_after_the_grace() -> None:
    sim = Sim(workflow(fn("charge")), succeed_with({}))
    begin(sim)
    start = sim.now
    job = sim.job_of("charge")
    sim.observed[job] = ObservedAttempt(job_name=job, job_missing=True)

    sim.now = start + timedelta(seconds=LOST_JOB_GRACE_SECONDS)
    sim.step()
    assert sim.phase_of("charge") == "Running"

    sim.now = start + timedelta(seconds=LOST_JOB_GRACE_SECONDS + 1)
    sim.step()
    attempt = sim.step_status("charge").attempts[0]
    assert (attempt.phase, attempt.reason) == (StepPhase.FAILED, "JobLost")
    assert attempt.message == f"the attempt's Job {job} was deleted"


def test_a_job_merely_absent_from_the_cache_is_not_declared_lost() -> None:
    sim = Sim(workflow(fn("charge")), succeed_with({}))
    begin(sim)
    del sim.observed[sim.job_of("charge")]

    later(sim, LOST_JOB_GRACE_SECONDS * 10)

    assert sim.phase_of("charge") == "Running"
    assert sim.step_status("charge").attempts[0].phase is StepPhase.RUNNING


def test_an_attempt_whose_job_is_not_seen_is_looked_at_again_after_the_lost_job_grace() -> None:
    sim = Sim(workflow(fn("charge")), succeed_with({}))
    begin(sim)
    del sim.observed[sim.job_of("charge")]

    decision = later(sim, 1)

    # One second past the grace, so the kube layer (which asks the API only once the grace is
    # over) confirms whether the Job is gone.
    assert decision.requeue_after == LOST_JOB_GRACE_SECONDS - 1 + 1


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_stops_running_attempts_and_the_run_ends_and_stays_cancelled() -> None:
    spec = workflow(
        fn("left", dependsOn=[]), fn("right", dependsOn=[]), fn("join", dependsOn=["left", "right"])
    )
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    jobs = [sim.job_of("left"), sim.job_of("right")]

    sim.annotations[CANCEL_ANNOTATION] = "true"
    cancelled = later(sim, 1)

    assert stops(cancelled) == [StopAttempt(job, "run cancelled") for job in jobs]
    assert sim.status.phase is RunPhase.CANCELLED
    assert sim.status.message == "cancelled by the retcon.dev/cancel annotation"
    assert condition(sim.status, "Completed") == ("True", "Cancelled")
    assert [(s.phase, s.message) for s in sim.status.steps[:2]] == [
        (StepPhase.FAILED, "cancelled with the run")
    ] * 2
    assert sim.phase_of("join") == "Pending"
    assert ("Normal", "Cancelled") in events(cancelled)
    final = sim.status.model_dump()

    del sim.annotations[CANCEL_ANNOTATION]
    sim.finish_jobs()
    afterwards = later(sim, 3600)

    assert afterwards.actions == ()
    assert sim.status.phase is RunPhase.CANCELLED
    assert sim.status.model_dump() == final


def test_a_cancel_annotation_on_a_succeeded_run_leaves_it_succeeded() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    sim.run_to_end()
    finished_at = sim.status.finished_at

    sim.annotations[CANCEL_ANNOTATION] = "true"
    later(sim, 60)

    assert sim.status.phase is RunPhase.SUCCEEDED
    assert sim.status.finished_at == finished_at


# --- pause -----------------------------------------------------------------------------------------


def test_a_pause_lets_running_steps_finish_then_holds_the_run_before_the_next_step() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)

    sim.annotations[PAUSE_ANNOTATION] = "true"
    pausing = later(sim, 1)

    assert sim.status.phase is RunPhase.PAUSING
    assert sim.status.pause_reason is None
    assert sim.status.current_step == "a"
    assert started(pausing) == []
    assert ("Normal", "RunPausing") in events(pausing)

    sim.finish_jobs()
    paused = later(sim, 1)

    assert started(paused) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is not None
    assert sim.status.pause_reason.value == "injection"
    assert sim.status.next_step_hint == "b"
    assert sim.status.current_step is None
    assert condition(sim.status, "Paused") == ("True", "Injection")
    assert ("Normal", "RunPaused") in events(paused)
    assert paused.requeue_after is None

    assert started(later(sim, 3600)) == []
    assert sim.status.phase is RunPhase.PAUSED

    del sim.annotations[PAUSE_ANNOTATION]
    resumed = later(sim, 1)

    assert started(resumed) == ["b"]
    assert sim.status.phase is RunPhase.RUNNING
    assert sim.status.pause_reason is None
    assert condition(sim.status, "Paused") == ("False", "NotPaused")
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED


def test_a_pause_request_holds_the_run_like_the_annotation() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    begin(sim)
    sim.pause_requests = ("hold-for-audit",)
    sim.finish_jobs()

    paused = later(sim, 1)

    assert started(paused) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is not None
    assert sim.status.pause_reason.value == "injection"
    assert sim.status.next_step_hint == "b"

    sim.pause_requests = ()
    assert started(later(sim, 1)) == ["b"]
    assert sim.status.phase is RunPhase.RUNNING


def test_a_pause_annotation_other_than_true_does_not_hold() -> None:
    sim = Sim(SEQUENCE, succeed_with({}), annotations={PAUSE_ANNOTATION: "false"})

    assert sim.run_to_end().phase is RunPhase.SUCCEEDED


# --- sleep and wait --------------------------------------------------------------------------------


SLEEPY = workflow(fn("a"), {"name": "nap", "type": "Sleep", "duration": "1m30s"}, fn("b"))


def test_a_sleep_step_pauses_the_run_for_its_length_then_succeeds_and_the_run_goes_on() -> None:
    sim = Sim(SLEEPY, succeed_with({}))
    begin(sim)
    sim.finish_jobs()

    sleeping = later(sim, 1)

    assert sim.phase_of("nap") == "Waiting"
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is not None
    assert sim.status.pause_reason.value == "sleep"
    assert sleeping.requeue_after == 90.0
    assert sim.status.current_step == "nap"
    assert sim.status.next_step_hint == "nap"
    assert condition(sim.status, "Paused") == ("True", "Sleep")
    assert ("Normal", "StepSleeping") in events(sleeping)

    assert later(sim, 30).requeue_after == 60.0
    woke = later(sim, 60)

    assert sim.phase_of("nap") == "Succeeded"
    assert sim.output_of("nap") == {"sleptSeconds": 90.0}
    assert started(woke) == ["b"]
    assert sim.status.phase is RunPhase.RUNNING
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED


def test_pausing_a_sleeping_run_makes_it_a_pause_that_outlasts_the_sleep() -> None:
    sim = Sim(SLEEPY, succeed_with({}))
    begin(sim)
    sim.finish_jobs()
    later(sim, 1)

    sim.annotations[PAUSE_ANNOTATION] = "true"
    later(sim, 1)

    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is not None
    assert sim.status.pause_reason.value == "injection"

    after_sleep = later(sim, 89)

    assert sim.phase_of("nap") == "Succeeded"
    assert started(after_sleep) == []
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason.value == "injection"
    assert sim.status.next_step_hint == "b"

    del sim.annotations[PAUSE_ANNOTATION]
    assert started(later(sim, 1)) == ["b"]


def test_a_wait_step_pauses_the_run_until_its_timeout() -> None:
    spec = workflow(fn("a"), {"name": "approval", "type": "Wait", "timeoutSeconds": 600}, fn("b"))
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    sim.finish_jobs()

    waiting = later(sim, 1)

    assert sim.phase_of("approval") == "Waiting"
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.pause_reason is not None
    assert sim.status.pause_reason.value == "wait"
    assert condition(sim.status, "Paused") == ("True", "Wait")
    assert sim.step_status("approval").deadline == sim.now + timedelta(seconds=600)
    assert ("Normal", "StepWaiting") in events(waiting)
    assert later(sim, 100).requeue_after == 500.0

    timed_out = later(sim, 500)

    assert sim.phase_of("approval") == "Failed"
    assert sim.step_status("approval").message == "timed out waiting for a signal"
    assert sim.status.phase is RunPhase.FAILED
    assert ("Warning", "StepFailed") in events(timed_out)
    assert sim.started == ["a"]


def test_the_decision_that_starts_a_wait_requeues_at_its_timeout() -> None:
    spec = workflow(fn("a"), {"name": "approval", "type": "Wait", "timeoutSeconds": 600}, fn("b"))
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    sim.finish_jobs()

    waiting = later(sim, 1)

    assert sim.phase_of("approval") == "Waiting"
    assert waiting.requeue_after == 600.0


def test_a_wait_step_without_a_timeout_waits_without_a_wakeup() -> None:
    spec = workflow(fn("a"), {"name": "approval", "type": "Wait"}, fn("b"))
    sim = Sim(spec, succeed_with({}))
    begin(sim)
    sim.finish_jobs()

    assert later(sim, 1).requeue_after is None
    assert later(sim, 86400).requeue_after is None
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.phase_of("approval") == "Waiting"


# --- what a step sees ------------------------------------------------------------------------------


def test_an_attempt_is_given_the_run_the_step_the_input_the_state_and_every_step() -> None:
    spec = workflow(fn("fetch"), fn("price"), fn("ship"))
    sim = Sim(spec, succeed_with({"fetch": {"order": 7, "amount": 10}}), input={"amount": 5, "who": "ann"})
    begin(sim)
    sim.finish_jobs()

    decision = later(sim, 1)

    (start,) = decision.starts
    assert start.job_name == job_name("run-1", sim.uid, "step_002", 1)
    assert start.input_name == f"{start.job_name}-input"
    assert start.input_document == {
        "run": {"name": "run-1", "namespace": "ns", "uid": sim.uid},
        "step": {"id": "step_002", "name": "price", "attempt": 1},
        "input": {"amount": 5, "who": "ann"},
        "state": {"amount": 10, "who": "ann", "order": 7},
        "steps": {
            "fetch": {"output": {"order": 7, "amount": 10}, "phase": "Succeeded"},
            "price": {"output": None, "phase": "Pending"},
            "ship": {"output": None, "phase": "Pending"},
        },
    }
    ref = sim.step_status("price").attempts[0].input_ref
    assert ref is not None
    canonical = json.dumps(start.input_document, separators=(",", ":"), sort_keys=True).encode()
    assert (ref.kind, ref.name, ref.bytes) == ("ConfigMap", start.input_name, len(canonical))
    assert ref.sha256 == hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize("first", ["left", "right"])
def test_state_merges_outputs_in_definition_order_whatever_order_they_finish_in(first: str) -> None:
    spec = workflow(
        fn("left", dependsOn=[]),
        fn("right", dependsOn=[]),
        fn("join", dependsOn=["left", "right"]),
    )
    outputs = {"left": {"winner": "left", "l": 1}, "right": {"winner": "right", "r": 2}}
    sim = Sim(spec, succeed_with(outputs), input={"winner": "input"})
    begin(sim)
    second = "right" if first == "left" else "left"

    sim.finish_jobs(only=[first])
    later(sim, 1)
    sim.finish_jobs(only=[second])
    joined = later(sim, 1)

    (start,) = joined.starts
    assert start.input_document["state"] == {"winner": "right", "l": 1, "r": 2}
    assert start.input_document["input"] == {"winner": "input"}


BIG = {"rows": ["x" * 100] * (INLINE_OUTPUT_LIMIT // 100 + 10), "count": 3}


def test_a_large_output_is_kept_by_reference_with_its_size_and_digest() -> None:
    sim = Sim(workflow(fn("extract"), fn("load")), succeed_with({"extract": BIG}))
    begin(sim)
    job = sim.job_of("extract")
    sim.finish_jobs()

    later(sim, 1)

    step = sim.step_status("extract")
    canonical = json.dumps(BIG, separators=(",", ":"), sort_keys=True).encode()
    assert len(canonical) > INLINE_OUTPUT_LIMIT
    assert step.phase is StepPhase.SUCCEEDED
    assert step.output is None
    assert step.output_ref is not None
    assert step.output_ref.model_dump() == {
        "kind": "StepResult",
        "name": job,
        "key": "spec.output",
        "bytes": len(canonical),
        "sha256": hashlib.sha256(canonical).hexdigest(),
    }


def test_a_large_output_is_read_back_in_full_for_steps_started_later() -> None:
    sim = Sim(workflow(fn("extract"), fn("load")), succeed_with({"extract": BIG}))
    begin(sim)
    sim.finish_jobs()
    sim.annotations[PAUSE_ANNOTATION] = "true"
    later(sim, 1)
    assert sim.status.phase is RunPhase.PAUSED

    del sim.annotations[PAUSE_ANNOTATION]
    resumed = later(sim, 1)

    (start,) = resumed.starts
    assert start.step.name == "load"
    assert start.input_document["steps"]["extract"] == {"output": BIG, "phase": "Succeeded"}
    assert start.input_document["state"]["count"] == 3
    assert start.input_document["state"]["rows"] == BIG["rows"]


def test_a_step_started_as_a_large_output_arrives_is_given_that_output() -> None:
    sim = Sim(workflow(fn("extract"), fn("load")), succeed_with({"extract": BIG}))
    begin(sim)
    sim.finish_jobs()

    decision = later(sim, 1)

    (start,) = decision.starts
    assert start.input_document["steps"]["extract"]["output"] == BIG
    assert start.input_document["state"]["count"] == 3


def test_an_output_at_the_inline_limit_stays_in_the_status() -> None:
    filler = INLINE_OUTPUT_LIMIT - len(json.dumps({"s": ""}, separators=(",", ":")))
    exact = {"s": "y" * filler}
    sim = Sim(workflow(fn("extract")), succeed_with({"extract": exact}))

    sim.run_to_end()

    assert sim.output_of("extract") == exact
    assert sim.step_status("extract").output_ref is None


def test_a_step_does_not_start_while_an_upstream_output_kept_by_reference_is_unavailable() -> None:
    sim = Sim(workflow(fn("extract"), fn("load")), succeed_with({"extract": BIG}))
    begin(sim)
    sim.finish_jobs()
    sim.annotations[PAUSE_ANNOTATION] = "true"
    later(sim, 1)
    del sim.annotations[PAUSE_ANNOTATION]
    sim.results.clear()  # the StepResult is gone, or not in the cache yet

    decision = later(sim, 1)

    assert started(decision) == []


def test_an_input_over_the_record_limit_fails_the_step_with_a_clear_message() -> None:
    # The document holds the input twice (as `input` and merged into `state`).
    sim = Sim(workflow(fn("a"), fn("b")), succeed_with({}), input={"blob": "z" * (MAX_INPUT_BYTES // 2)})

    decision = begin(sim)

    assert decision.starts == ()
    step = sim.step_status("a")
    assert step.phase is StepPhase.FAILED
    assert step.message is not None
    assert step.message.endswith(
        f"over the {MAX_INPUT_BYTES // 1024} KiB an input record holds; pass large data by reference"
    )
    assert step.message.startswith("the step's input is 1.00 MiB")
    assert [a.reason for a in step.attempts] == ["InputTooLarge"]
    assert sim.status.phase is RunPhase.FAILED
    assert ("Warning", "StepFailed") in events(decision)
    assert ("Warning", "RunFailed") in events(decision)


# --- events, progress, conditions ------------------------------------------------------------------


def test_events_record_steps_starting_and_succeeding_and_the_run_succeeding() -> None:
    sim = Sim(workflow(fn("a"), fn("b")), succeed_with({}))

    sim.run_to_end()

    recorded = all_events(sim)
    assert [(e.type, e.reason) for e in recorded] == [
        ("Normal", "Started"),
        ("Normal", "StepStarted"),
        ("Normal", "StepSucceeded"),
        ("Normal", "StepStarted"),
        ("Normal", "StepSucceeded"),
        ("Normal", "RunSucceeded"),
    ]
    job = job_name("run-1", sim.uid, "step_001", 1)
    assert recorded[0].message == "Started run of Workflow wf with 2 steps"
    assert recorded[1].message == f"Started step a (step_001) attempt 1 as Job {job}"
    assert recorded[2].message == "Step a succeeded"
    assert recorded[-1].message == "Run is Succeeded"


def test_events_record_a_step_and_the_run_failing_as_warnings() -> None:
    sim = Sim(workflow(fn("a"), fn("b")), behaving(a=(1, None, Outcome.FAILED)))

    sim.run_to_end()

    recorded = all_events(sim)
    assert [(e.type, e.reason) for e in recorded] == [
        ("Normal", "Started"),
        ("Normal", "StepStarted"),
        ("Warning", "StepFailed"),
        ("Warning", "RunFailed"),
    ]
    assert recorded[2].message == "Step a failed: exited with code 1: boom (after 1 attempt(s))"
    assert (
        recorded[3].message == "Run is Failed: step a failed: exited with code 1: boom (after 1 attempt(s))"
    )


def test_a_decision_step_reports_the_route_it_took() -> None:
    sim = Sim(ORDER_PROCESSING, succeed_with({}), input={"amount": 20000})

    sim.run_to_end()

    messages = [e.message for e in all_events(sim) if e.reason == "StepSucceeded"]
    assert "Step check-amount succeeded, route high-value-review" in messages


def test_progress_and_current_step_follow_the_run() -> None:
    spec = workflow(fn("a"), fn("b", dependsOn=["a"]), fn("c", dependsOn=["a"]))
    sim = Sim(spec, succeed_with({}))

    sim.step()
    assert (sim.status.progress, sim.status.current_step) == (None, None)
    later(sim, 1)
    assert (sim.status.progress, sim.status.current_step) == ("0/3", "a")
    sim.finish_jobs()
    later(sim, 1)
    assert (sim.status.progress, sim.status.current_step) == ("1/3", "b, c")
    sim.finish_jobs(only=["c"])
    later(sim, 1)
    assert (sim.status.progress, sim.status.current_step) == ("2/3", "b")
    sim.finish_jobs()
    later(sim, 1)
    assert (sim.status.progress, sim.status.current_step) == ("3/3", None)
    assert sim.status.phase is RunPhase.SUCCEEDED


def test_conditions_say_whether_the_run_completed_and_whether_it_is_paused() -> None:
    sim = Sim(SEQUENCE, succeed_with({}))
    started_run = sim.step()
    assert started_run.status.phase is RunPhase.RUNNING
    assert condition(sim.status, "WorkflowFound") == ("True", "Snapshotted")

    later(sim, 1)
    assert condition(sim.status, "Completed") == ("False", "InProgress")
    assert condition(sim.status, "Paused") == ("False", "NotPaused")

    sim.run_to_end()
    completed = next(c for c in sim.status.conditions if c.type == "Completed")
    assert (completed.status, completed.reason, completed.message) == (
        "True",
        "Succeeded",
        "All steps finished",
    )
    assert completed.last_transition_time == sim.status.finished_at
    assert condition(sim.status, "Paused") == ("False", "NotPaused")


def test_a_failed_run_has_a_completed_condition_saying_failed() -> None:
    sim = Sim(workflow(fn("a")), behaving(a=(1, None, Outcome.FAILED)))

    status = sim.run_to_end()

    assert condition(status, "Completed") == ("True", "Failed")
    assert status.finished_at is not None
    assert status.next_step_hint is None


# --- the snapshot ----------------------------------------------------------------------------------


def test_the_snapshot_has_explicit_dependencies_and_ids_in_definition_order() -> None:
    spec = workflow(
        fn("fetch"),
        fn("audit", dependsOn=[]),
        fn("price"),
        fn("ship", dependsOn=["price", "fetch", "price"]),
    )
    sim = Sim(spec, succeed_with({}))

    sim.step()

    definition = sim.status.definition
    assert definition is not None
    assert [(s.id, s.name, s.depends_on) for s in definition.steps] == [
        ("step_001", "fetch", []),
        ("step_002", "audit", []),
        ("step_003", "price", ["audit"]),
        ("step_004", "ship", ["price", "fetch"]),
    ]
    assert definition.source == SourceRef(name="wf")
    assert [(s.id, s.name, s.phase) for s in sim.status.steps] == [
        ("step_001", "fetch", StepPhase.PENDING),
        ("step_002", "audit", StepPhase.PENDING),
        ("step_003", "price", StepPhase.PENDING),
        ("step_004", "ship", StepPhase.PENDING),
    ]


def test_editing_the_workflow_steps_after_start_does_not_change_the_run() -> None:
    spec = workflow(
        fn("fetch", env=[{"name": "MODE", "value": "fast"}], retry={"limit": 1}),
        {"name": "check", "type": "Decision", "routes": [{"condition": "true", "target": "ship"}]},
        fn("ship", dependsOn=["check"]),
    )
    sim = Sim(spec, succeed_with({}))
    sim.step()
    assert sim.status.definition is not None
    before = sim.status.definition.model_dump()

    assert spec.steps[0].env is not None
    assert spec.steps[0].retry is not None
    assert spec.steps[1].routes is not None
    spec.steps[0].env[0]["value"] = "slow"
    spec.steps[0].retry.limit = 5
    spec.steps[1].routes[0].condition = "false"
    spec.steps[2].depends_on = []
    spec.steps.append(spec.steps[0].model_copy(update={"name": "extra"}))

    assert sim.status.definition.model_dump() == before
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch", "ship"]


def test_editing_the_workflow_defaults_after_start_does_not_change_the_run() -> None:
    spec = workflow(fn("fetch"), defaults={"retry": {"limit": 1}, "timeoutSeconds": 30})
    sim = Sim(spec, succeed_with({}))
    sim.step()
    assert sim.status.definition is not None
    before = sim.status.definition.model_dump()

    assert spec.defaults is not None
    assert spec.defaults.retry is not None
    spec.defaults.retry.limit = 9
    spec.defaults.timeout_seconds = 5

    assert sim.status.definition.model_dump() == before


def test_decide_refuses_a_run_that_was_never_snapshotted() -> None:
    view = RunView(name="r", namespace="ns", uid="u", generation=1, input={}, status=WorkflowRunStatus())

    with pytest.raises(ValueError, match=r"call start_run\(\) first"):
        decide(view, Observed(), T0)


# --- a missing Workflow ----------------------------------------------------------------------------


def test_a_run_whose_workflow_is_missing_stays_pending_and_looks_again() -> None:
    view = RunView(name="r", namespace="shop", uid="u", generation=3, input={}, status=WorkflowRunStatus())

    decision = workflow_missing(view, "orders", T0)

    message = "Workflow orders not found in namespace shop; waiting for it to be created"
    assert decision.status.phase is RunPhase.PENDING
    assert decision.status.message == message
    assert decision.status.observed_generation == 3
    assert decision.requeue_after == 10.0
    found = next(c for c in decision.status.conditions if c.type == "WorkflowFound")
    assert (found.status, found.reason, found.message) == ("False", "WorkflowNotFound", message)
    assert decision.actions == (RecordEvent("Warning", "WorkflowNotFound", message),)

    again = workflow_missing(
        RunView(name="r", namespace="shop", uid="u", generation=3, input={}, status=decision.status),
        "orders",
        T0 + timedelta(seconds=10),
    )
    assert again.actions == ()
    assert again.status.model_dump() == decision.status.model_dump()


def test_a_run_whose_workflow_is_invalid_says_why() -> None:
    view = RunView(name="r", namespace="shop", uid="u", generation=1, input={}, status=WorkflowRunStatus())

    decision = workflow_missing(view, "orders", T0, "Workflow orders is invalid: steps: too short")

    assert decision.status.phase is RunPhase.PENDING
    assert condition(decision.status, "WorkflowFound") == ("False", "WorkflowInvalid")
    assert decision.status.message == "Workflow orders is invalid: steps: too short"


def test_starting_a_run_after_its_workflow_appears_marks_the_workflow_found() -> None:
    view = RunView(name="r", namespace="shop", uid="u", generation=1, input={}, status=WorkflowRunStatus())
    missing = workflow_missing(view, "orders", T0)
    view = RunView(name="r", namespace="shop", uid="u", generation=1, input={}, status=missing.status)

    decision = start_run(view, SEQUENCE, SourceRef(name="orders"), T0 + timedelta(seconds=10))

    assert decision.status.phase is RunPhase.RUNNING
    assert decision.status.message is None
    assert condition(decision.status, "WorkflowFound") == ("True", "Snapshotted")
    assert decision.requeue_after == 0.0
    assert not any(isinstance(a, StartAttempt) for a in decision.actions)
