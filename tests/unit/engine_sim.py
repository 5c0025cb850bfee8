"""A tiny in-memory "cluster" that carries out engine decisions, for engine tests.

Each started attempt is run by a Python function `behaviour(step_name, attempt,
input_document) -> (exit_code, output | None, outcome)`, instantly or after a
simulated delay. The simulator records what each attempt was given, the order
in which steps started and finished, and every decision, so tests can assert
on the engine's rules without Kubernetes.

Interventions arrive as the kube layer would show them: `annotate()` changes
annotations as a user would, with the intents the admission webhook records;
`inject()` and `pause_request()` stand for the Injection and PauseRequest
objects. Like the kube layer, the simulator carries out a decision's annotation
changes, drops the Injections it settled and the PauseRequests it finalised.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from retcon.api.run import RunPhase, SourceRef, StepStatus, WorkflowRunStatus
from retcon.api.stepresult import Outcome, StepError, StepResultSpec
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide, start_run
from retcon.engine.model import (
    INTENTS_ANNOTATION,
    Decision,
    InjectionRequest,
    Intent,
    Observed,
    ObservedAttempt,
    PauseHold,
    RunView,
    StartAttempt,
    StopAttempt,
)
from retcon.kube.admission import read_intents, run_intents_value

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OPERATOR_USER = "system:serviceaccount:retcon-system:retcon-operator"

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
    #: Names of PauseRequests holding the run (made by "unknown" at T0); `holds` gives them in full.
    pause_requests: tuple[str, ...] = ()
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # StepResult name -> full output
    holds: tuple[PauseHold, ...] = ()
    intents: tuple[Intent, ...] = ()  # besides those admission recorded in the annotations
    injections: tuple[InjectionRequest, ...] = ()  # not yet Applied or Rejected
    injection_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # Injection name -> output
    operator_user: str = OPERATOR_USER
    #: Carry out what a decision asks of the objects around the run, as the kube layer does.
    carry_out: bool = True

    def view(self) -> RunView:
        named = {hold.name for hold in self.holds}
        implicit = tuple(
            PauseHold(name=name, uid=f"uid-{name}", reason="", actor="unknown", created=T0)
            for name in self.pause_requests
            if name not in named
        )
        holds = self.holds + implicit
        return RunView(
            name=self.name,
            namespace="ns",
            uid=self.uid,
            generation=1,
            input=self.input,
            status=self.status,
            annotations=dict(self.annotations),
            pause_requests=tuple(hold.name for hold in holds if hold.deleted_by is None),
            holds=holds,
            intents=self.admitted_intents() + self.intents,
            injections=self.injections,
            operator_user=self.operator_user,
        )

    def admitted_intents(self) -> tuple[Intent, ...]:
        """The intents the admission webhook keeps in the run's annotations."""
        return tuple(
            Intent(
                seq=int(item["seq"]),
                type=str(item["type"]),
                actor=str(item["actor"]),
                time=datetime.fromisoformat(str(item["time"])),
                data=item.get("data") or {},
            )
            for item in read_intents(self.annotations)
        )

    def annotate(self, actor: str, changes: Mapping[str, str | None]) -> None:
        """Change annotations (None removes one) as `actor` would, through the admission webhook."""
        new = {**self.annotations, **{k: v for k, v in changes.items() if v is not None}}
        for key, value in changes.items():
            if value is None:
                new.pop(key, None)
        value = run_intents_value(
            self.annotations, new, actor=actor, now=self.now, operator_user=self.operator_user
        )
        if value == "":
            new.pop(INTENTS_ANNOTATION, None)
        elif value is not None:
            new[INTENTS_ANNOTATION] = value
        self.annotations.clear()
        self.annotations.update(new)

    def inject(
        self,
        name: str,
        step: str,
        output: Mapping[str, Any],
        *,
        actor: str = "erin",
        reason: str = "fix the data",
        created: datetime | None = None,
    ) -> InjectionRequest:
        """Create an Injection (uid `uid-<name>`) naming the run."""
        request = InjectionRequest(
            name=name,
            uid=f"uid-{name}",
            step=step,
            output=dict(output),
            reason=reason,
            actor=actor,
            created=created or self.now,
        )
        self.injections += (request,)
        self.injection_outputs[name] = dict(output)
        return request

    def pause_request(self, name: str, *, actor: str = "carol", reason: str = "hold for review") -> PauseHold:
        """Create a PauseRequest (uid `uid-<name>`) naming the run."""
        hold = PauseHold(name=name, uid=f"uid-{name}", reason=reason, actor=actor, created=self.now)
        self.holds += (hold,)
        return hold

    def delete_pause_request(self, name: str, *, actor: str = "dave") -> None:
        """Ask to delete a PauseRequest: it stays, marked, until a decision finalises it."""
        self.holds = tuple(replace(h, deleted_by=actor) if h.name == name else h for h in self.holds)

    def observed_now(self) -> Observed:
        """What the kube layer would observe: every Job, and the outputs kept by reference."""
        outputs = {}
        for step in self.status.steps:
            ref = step.output_ref
            source = self.injection_outputs if ref is not None and ref.kind == "Injection" else self.results
            if ref is not None and ref.name in source:
                outputs[step.id] = source[ref.name]
        return Observed(attempts=dict(self.observed), outputs=outputs)

    def _carry_out(self, decision: Decision) -> None:
        for key in decision.consumed_annotations:
            self.annotations.pop(key, None)  # the operator's own change: admission adds no intent
        self.annotations.update(decision.set_annotations)
        settled = {result.name for result in decision.injections}
        self.injections = tuple(r for r in self.injections if r.name not in settled)
        self.holds = tuple(h for h in self.holds if h.name not in decision.finalize_pause_requests)

    def step(self) -> Decision:
        """One reconcile: decide, then carry out the actions."""
        if self.status.definition is None:
            decision = start_run(self.view(), self.spec, SourceRef(name="wf"), self.now)
        else:
            decision = decide(self.view(), self.observed_now(), self.now)
        self.decisions.append(decision)
        self.status = decision.status
        if self.carry_out:
            self._carry_out(decision)
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
