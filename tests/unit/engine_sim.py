"""A tiny in-memory "cluster" that carries out engine decisions, for engine tests.

Each started attempt is run by a Python function `behaviour(step_name, attempt,
input_document) -> (exit_code, output | None, outcome)`, instantly or after a
simulated delay. The simulator records what each attempt was given, the order
in which steps started and finished, and every decision, so tests can assert
on the engine's rules without Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retcon.api.run import RunPhase, SourceRef, StepStatus, WorkflowRunStatus
from retcon.api.stepresult import Outcome, StepError, StepResultSpec
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide, start_run
from retcon.engine.model import Decision, Observed, ObservedAttempt, RunView, StartAttempt, StopAttempt

T0 = datetime(2026, 1, 1, tzinfo=UTC)

Result = tuple[int, dict[str, Any] | None, Outcome]
Behaviour = Callable[[str, int, dict[str, Any]], Result]


def succeed_with(outputs: dict[str, dict[str, Any]]) -> Behaviour:
    """Every step succeeds, with the given output (or `{name: true}`)."""

    def behaviour(name: str, attempt: int, document: dict[str, Any]) -> Result:
        return 0, outputs.get(name, {name.replace("-", "_"): True}), Outcome.SUCCEEDED

    return behaviour


@dataclass
class Sim:
    spec: WorkflowSpec
    behaviour: Behaviour
    input: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    now: datetime = T0
    name: str = "run-1"
    uid: str = "0d5e1c2a-aaaa-bbbb-cccc-000000000001"
    status: WorkflowRunStatus = field(default_factory=WorkflowRunStatus)
    observed: dict[str, ObservedAttempt] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job -> input document
    started: list[str] = field(default_factory=list)  # step names, in start order
    finished: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    pending_jobs: dict[str, StartAttempt] = field(default_factory=dict)
    pause_requests: tuple[str, ...] = ()
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # StepResult name -> full output

    def view(self) -> RunView:
        return RunView(
            name=self.name,
            namespace="ns",
            uid=self.uid,
            generation=1,
            input=self.input,
            status=self.status,
            annotations=self.annotations,
            pause_requests=self.pause_requests,
        )

    def observed_now(self) -> Observed:
        """What the kube layer would observe: every Job, and the outputs kept by reference."""
        outputs = {
            step.id: self.results[step.output_ref.name]
            for step in self.status.steps
            if step.output_ref is not None and step.output_ref.name in self.results
        }
        return Observed(attempts=dict(self.observed), outputs=outputs)

    def step(self) -> Decision:
        """One reconcile: decide, then carry out the actions."""
        if self.status.definition is None:
            decision = start_run(self.view(), self.spec, SourceRef(name="wf"), self.now)
        else:
            decision = decide(self.view(), self.observed_now(), self.now)
        self.decisions.append(decision)
        self.status = decision.status
        for action in decision.actions:
            if isinstance(action, StartAttempt):
                assert action.job_name not in self.inputs, f"{action.job_name} started twice"
                self.inputs[action.job_name] = action.input_document
                self.started.append(action.step.name)
                self.observed[action.job_name] = ObservedAttempt(job_name=action.job_name, job_exists=True)
                self.pending_jobs[action.job_name] = action
            elif isinstance(action, StopAttempt):
                self.stopped.append(action.job_name)
                self.pending_jobs.pop(action.job_name, None)
        return decision

    def finish_jobs(self, only: Collection[str] | None = None) -> None:
        """Let every running job (or those of the steps named in `only`) finish, as `behaviour` says."""
        for job, action in list(self.pending_jobs.items()):
            if only is not None and action.step.name not in only:
                continue
            code, output, outcome = self.behaviour(action.step.name, action.attempt, action.input_document)
            result = StepResultSpec(
                run_name=self.name,
                step_id=action.step.id,
                step_name=action.step.name,
                attempt=action.attempt,
                pod_name=f"{job}-pod",
                outcome=outcome,
                output=output if outcome is Outcome.SUCCEEDED else None,
                error=None if outcome is Outcome.SUCCEEDED else StepError(type="Error", message="boom"),
            )
            self.observed[job] = ObservedAttempt(
                job_name=job,
                job_exists=True,
                pod_phase="Succeeded" if code == 0 else "Failed",
                exit_code=code,
                finished_at=self.now,
                result=result,
                result_name=job,
            )
            if output is not None:
                self.results[job] = output
            self.finished.append(action.step.name)
            del self.pending_jobs[job]

    def run_to_end(self, max_rounds: int = 200, tick: timedelta = timedelta(seconds=1)) -> WorkflowRunStatus:
        for _ in range(max_rounds):
            decision = self.step()
            if self.status.phase.terminal and not self.pending_jobs:
                return self.status
            if (
                self.status.phase is RunPhase.PAUSED
                and self.status.pause_reason
                and self.status.pause_reason.value == "injection"
            ):
                return self.status
            self.finish_jobs()
            if decision.requeue_after:
                self.now += timedelta(seconds=decision.requeue_after)
            else:
                self.now += tick
        raise AssertionError(f"run did not finish in {max_rounds} rounds: {self.status.phase}")

    def phase_of(self, name: str) -> str:
        return next(s.phase.value for s in self.status.steps if s.name == name)

    def output_of(self, name: str) -> dict[str, Any] | None:
        return next(s.output for s in self.status.steps if s.name == name)

    def step_status(self, name: str) -> StepStatus:
        return next(s for s in self.status.steps if s.name == name)

    def job_of(self, name: str) -> str:
        """The Job of the step's latest attempt."""
        job = self.step_status(name).attempts[-1].job
        assert job is not None, f"step {name}'s latest attempt has no Job"
        return job
