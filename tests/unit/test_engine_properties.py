"""Properties of the run engine over random valid workflows, checked with hypothesis.

A workflow is a random DAG of 1-12 Standard steps, each depending on earlier
ones (or on the previous step implicitly), optionally with one Decision step
routing on `state.x` to some of the steps that depend on it. Every step gets a
random retry limit and a random fate: succeed, fail retryably some times first,
or fail for good. The simulator finishes every started Job each round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from retcon.api.run import RunPhase, StepPhase, StepStatus, WorkflowRunStatus
from retcon.api.stepresult import Outcome
from retcon.api.workflow import Step, StepType, WorkflowSpec
from retcon.engine.decide import decide
from retcon.engine.graph import resolve_dependencies
from retcon.engine.model import INLINE_OUTPUT_LIMIT, Decision, StartAttempt, StopAttempt
from retcon.engine.naming import job_name
from retcon.engine.validation import validate_workflow
from tests.unit.engine_sim import Result, Sim

DECISION = "decide"
COMPARISONS = (">", "<", "==", ">=", "!=")

# --- random workflows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    """How a step's attempts end: `failures` retryable failures, then the final outcome."""

    failures: int = 0
    final: Outcome = Outcome.SUCCEEDED
    final_code: int = 0
    output: dict[str, Any] = field(default_factory=dict)

    def attempt(self, number: int) -> Result:
        if number <= self.failures:
            return 1, None, Outcome.FAILED
        return self.final_code, dict(self.output) if self.final is Outcome.SUCCEEDED else None, self.final


@dataclass(frozen=True)
class Plan:
    spec: WorkflowSpec
    fates: dict[str, Fate]
    input: dict[str, Any]

    def behaviour(self, name: str, attempt: int, document: dict[str, Any]) -> Result:
        return self.fates[name].attempt(attempt)

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return resolve_dependencies(self.spec.steps)

    @property
    def attempts_at_most(self) -> int:
        return sum((step.retry.limit if step.retry else 0) + 1 for step in self.spec.steps)

    @property
    def decision(self) -> Step | None:
        return next((s for s in self.spec.steps if s.type is StepType.DECISION), None)

    @property
    def targets(self) -> set[str]:
        """The steps the Decision may choose: its route targets and its default."""
        if self.decision is None:
            return set()
        targets = {route.target for route in self.decision.routes or []}
        return targets | {self.decision.default} if self.decision.default else targets


small_ints = st.integers(min_value=-3, max_value=3)


@st.composite
def outputs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    output: dict[str, Any] = {}
    if draw(st.booleans()):
        output["x"] = draw(small_ints)  # the key the Decision routes on
    if draw(st.booleans()):
        output["shared"] = name  # a key many steps write: the merge order decides who wins
    if draw(st.booleans()):
        output[f"own_{name}"] = draw(st.lists(small_ints, max_size=3))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        output[f"blob_{name}"] = "b" * INLINE_OUTPUT_LIMIT  # kept by reference, not in the status
    return output


#: Mostly success, so that runs get deep enough for the later rules to matter.
KINDS = ["succeed"] * 8 + ["flaky"] * 4 + ["exhausted", "non-retryable"]


@st.composite
def fates(draw: st.DrawFn, name: str, limit: int, *, always_succeed: bool) -> Fate:
    output = draw(outputs(name))
    kind = "succeed" if always_succeed else draw(st.sampled_from(KINDS))
    if kind == "flaky" and limit > 0:  # fails, then succeeds within its retries
        return Fate(failures=draw(st.integers(min_value=1, max_value=limit)), output=output)
    if kind == "exhausted":  # fails more often than it may retry
        return Fate(failures=limit + 1, output=output)
    if kind == "non-retryable":  # maybe after some retryable failures
        failures = draw(st.integers(min_value=0, max_value=limit))
        code = draw(st.sampled_from([0, 1, 42]))
        return Fate(failures=failures, final=Outcome.NON_RETRYABLE, final_code=code)
    return Fate(output=output)


@st.composite
def plans(draw: st.DrawFn, *, always_succeed: bool = False) -> Plan:
    count = draw(st.integers(min_value=1, max_value=12))
    names = [f"s{index:02d}" for index in range(count)]
    decision_at = draw(st.none() | st.integers(min_value=0, max_value=count - 2)) if count > 1 else None
    if decision_at is not None:
        names[decision_at] = DECISION
    depends_on = draw(dependencies(names, decision_at))

    steps: list[dict[str, Any]] = []
    plan_fates: dict[str, Fate] = {}
    for name, deps in zip(names, depends_on, strict=True):
        step: dict[str, Any] = {"name": name} | ({"dependsOn": deps} if deps is not None else {})
        if name == DECISION:
            step |= draw(routes(names, depends_on))
        else:
            limit = draw(st.integers(min_value=0, max_value=3))
            delay = draw(st.integers(min_value=0, max_value=3))
            step["function"] = f"shop.steps:{name}"
            step["retry"] = {"limit": limit, "backoff": {"durationSeconds": delay, "factor": 2}}
            plan_fates[name] = draw(fates(name, limit, always_succeed=always_succeed))
        steps.append(step)

    spec = WorkflowSpec.model_validate({"steps": steps})
    assert validate_workflow(spec) == [], spec
    return Plan(spec=spec, fates=plan_fates, input={"x": draw(small_ints), "shared": "input"})


@st.composite
def dependencies(draw: st.DrawFn, names: list[str], decision_at: int | None) -> list[list[str] | None]:
    """Each step's dependsOn: omitted (the previous step), or up to three earlier steps ([] at first)."""
    depends_on: list[list[str] | None] = [draw(st.sampled_from([None, []]))]
    for index in range(1, len(names)):
        implicit = draw(st.booleans())
        earlier = draw(st.lists(st.sampled_from(names[:index]), unique=True, max_size=3))
        depends_on.append(None if implicit else earlier)
    if decision_at is not None:
        # The Decision leads to the step after it, and perhaps to later ones, so it has a choice.
        for index in range(decision_at + 1, len(names)):
            deps = depends_on[index]
            if index > decision_at + 1 and not draw(st.booleans()):
                continue
            if deps is None and index > decision_at + 1:
                depends_on[index] = [names[index - 1], DECISION]
            elif deps is not None and DECISION not in deps:
                deps.append(DECISION)
    return depends_on


@st.composite
def routes(draw: st.DrawFn, names: list[str], depends_on: list[list[str] | None]) -> dict[str, Any]:
    """A Decision's routes on `state.x` to some of the steps that depend on it, and maybe a default."""
    resolved = [
        deps if deps is not None else names[index - 1 : index] for index, deps in enumerate(depends_on)
    ]
    dependents = [name for name, deps in zip(names, resolved, strict=True) if DECISION in deps]
    targets = draw(st.lists(st.sampled_from(dependents), unique=True, min_size=1, max_size=3))
    fields: dict[str, Any] = {
        "type": "Decision",
        "routes": [
            {
                "condition": f"state.x {draw(st.sampled_from(COMPARISONS))} {draw(small_ints)}",
                "target": target,
            }
            for target in targets
        ],
    }
    default = draw(st.sampled_from([None, *dependents, *dependents]))
    if default is not None:
        fields["default"] = default
    return fields


# --- driving a run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A StartAttempt and the run's status in the decision that issued it."""

    round: int
    action: StartAttempt
    status: WorkflowRunStatus


@dataclass
class Trace:
    plan: Plan
    sim: Sim
    starts: list[Started] = field(default_factory=list)
    injections: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # round, step, output
    rounds: int = 0


def same(a: Decision, b: Decision) -> bool:
    return (a.status.model_dump(), a.actions, a.requeue_after, a.consumed_annotations) == (
        b.status.model_dump(),
        b.actions,
        b.requeue_after,
        b.consumed_annotations,
    )


def drive(plan: Plan, *, data: st.DataObject | None = None, twice: bool = False) -> Trace:
    """Run the plan to a terminal phase, finishing every Job each round; fail if it takes too long.

    With `twice`, every decision is also taken twice more from the same inputs and must be equal.
    With `data`, succeeded Standard steps get their outputs replaced between rounds, as an
    Injection would.
    """
    sim = Sim(plan.spec, plan.behaviour, input=dict(plan.input))
    trace = Trace(plan=plan, sim=sim)
    # Each attempt takes at most two rounds (start, then fold), plus one per Decision and the ends.
    bound = 2 * plan.attempts_at_most + len(plan.spec.steps) + 3
    for round_ in range(bound):
        trace.rounds = round_ + 1
        expected = None
        if twice and sim.status.definition is not None:
            view, observed = sim.view(), sim.observed_now()
            expected = decide(view, observed, sim.now)
            assert same(expected, decide(view, observed, sim.now))
        decision = sim.step()
        if expected is not None:
            assert same(decision, expected)
        for action in decision.starts:
            trace.starts.append(Started(round_, action, decision.status.model_copy(deep=True)))
        if sim.status.phase.terminal:
            assert not sim.pending_jobs, "a finished run left Jobs running"
            return trace
        sim.finish_jobs()
        if data is not None:
            _maybe_inject(trace, data, round_)
        sim.now += timedelta(seconds=decision.requeue_after or 1.0)
    raise AssertionError(f"the run is still {sim.status.phase} after {bound} rounds")


def _maybe_inject(trace: Trace, data: st.DataObject, round_: int) -> None:
    done = {name for _, name, _ in trace.injections}
    candidates = [
        s.name
        for s in trace.sim.status.steps
        if s.phase is StepPhase.SUCCEEDED and s.type == "Standard" and s.name not in done
    ]
    if not candidates or not data.draw(st.booleans(), label="inject now"):
        return
    name = data.draw(st.sampled_from(candidates), label="step injected")
    output = {"x": data.draw(small_ints, label="injected x"), f"inj_{name}": round_}
    step = trace.sim.step_status(name)
    step.output, step.output_ref, step.injected = output, None, True
    trace.injections.append((round_, name, output))


def phases(status: WorkflowRunStatus) -> dict[str, StepPhase]:
    return {s.name: s.phase for s in status.steps}


def full_output(sim: Sim, step: StepStatus) -> dict[str, Any] | None:
    """A step's output, read back from its StepResult when the status keeps it by reference."""
    if step.output_ref is not None:
        return sim.results[step.output_ref.name]
    return step.output


# --- the properties --------------------------------------------------------------------------------

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(plans())
def test_the_same_inputs_always_give_the_same_decision(plan: Plan) -> None:
    drive(plan, twice=True)


@SETTINGS
@given(plans())
def test_no_step_starts_before_its_dependencies_succeeded_or_were_skipped(plan: Plan) -> None:
    trace = drive(plan)

    dependencies = plan.dependencies
    for started in trace.starts:
        now = phases(started.status)
        deps = dependencies[started.action.step.name]
        assert all(now[d] in (StepPhase.SUCCEEDED, StepPhase.SKIPPED) for d in deps), (started, now)
        assert not deps or any(now[d] is StepPhase.SUCCEEDED for d in deps), (started, now)
        if started.action.step.name in plan.targets:
            gate = next(s for s in started.status.steps if s.name == DECISION)
            assert (gate.phase, gate.route) == (StepPhase.SUCCEEDED, started.action.step.name)


@SETTINGS
@given(plans(), st.sampled_from([1.0, 60.0, 3600.0, 30 * 86400.0]))
def test_a_finished_run_stays_finished_as_time_goes_by(plan: Plan, seconds: float) -> None:
    sim = drive(plan).sim
    final = sim.status.model_dump()
    observed = sim.observed_now()

    for step in range(1, 4):
        decision = decide(sim.view(), observed, sim.now + timedelta(seconds=seconds * step))

        assert decision.status.phase is sim.status.phase
        assert not [a for a in decision.actions if isinstance(a, StartAttempt | StopAttempt)]
        assert decision.status.model_dump() == final


@SETTINGS
@given(plans())
def test_every_run_finishes_within_a_bounded_number_of_rounds(plan: Plan) -> None:
    trace = drive(plan)  # raises if the bound is exceeded

    assert trace.sim.status.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED)
    assert trace.rounds <= 2 * plan.attempts_at_most + len(plan.spec.steps) + 3
    assert all(s.phase.terminal or s.phase is StepPhase.PENDING for s in trace.sim.status.steps)


@SETTINGS
@given(plans())
def test_no_job_is_started_twice_and_each_is_named_for_its_step_and_attempt(plan: Plan) -> None:
    trace = drive(plan)

    jobs = [s.action.job_name for s in trace.starts]
    assert len(jobs) == len(set(jobs))
    sim = trace.sim
    for started in trace.starts:
        action = started.action
        assert action.job_name == job_name(sim.name, sim.uid, action.step.id, action.attempt)
        assert action.input_name == f"{action.job_name}-input"
    for step in sim.status.steps:
        assert [a.number for a in step.attempts] == list(range(1, len(step.attempts) + 1))


@settings(max_examples=80, deadline=None)
@given(plans(always_succeed=True), st.data())
def test_an_injected_output_is_what_every_later_step_sees(plan: Plan, data: st.DataObject) -> None:
    trace = drive(plan, data=data)

    for round_, name, output in trace.injections:
        for started in trace.starts:
            if started.round <= round_:
                continue
            document = started.action.input_document
            assert document["steps"][name] == {"output": output, "phase": "Succeeded"}
            assert document["state"][f"inj_{name}"] == round_
    assert all(trace.sim.step_status(name).output == output for _, name, output in trace.injections)


@SETTINGS
@given(plans())
def test_state_is_the_input_merged_with_succeeded_outputs_in_definition_order(plan: Plan) -> None:
    trace = drive(plan)

    order = [step.name for step in plan.spec.steps]
    for started in trace.starts:
        by_name = {s.name: s for s in started.status.steps}
        expected = dict(plan.input)
        for name in order:
            if by_name[name].phase is StepPhase.SUCCEEDED:
                expected.update(full_output(trace.sim, by_name[name]) or {})
        assert started.action.input_document["state"] == expected
        assert started.action.input_document["input"] == plan.input


@SETTINGS
@given(plans(always_succeed=True))
def test_when_every_step_succeeds_the_run_succeeds_with_one_attempt_per_step_run(plan: Plan) -> None:
    sim = drive(plan).sim

    decision = plan.decision
    gate = sim.step_status(DECISION) if decision else None
    if gate is not None and gate.phase is StepPhase.FAILED:
        # The one way a run of succeeding steps fails: no route held and there is no default.
        assert decision is not None
        assert decision.default is None
        assert gate.message is not None
        assert gate.message.startswith("no route condition held")
        assert sim.status.phase is RunPhase.FAILED
        return
    assert sim.status.phase is RunPhase.SUCCEEDED
    if gate is not None:
        assert gate.route is not None
        assert sim.phase_of(gate.route) == "Succeeded"
        for other in plan.targets - {gate.route}:
            assert sim.step_status(other).phase is StepPhase.SKIPPED
            assert sim.step_status(other).message == f"not chosen by decision {DECISION}"
    for step in sim.status.steps:
        if step.name == DECISION:
            assert step.phase is StepPhase.SUCCEEDED
            assert step.attempts == []  # a Decision without a function runs no Job
        elif step.phase is StepPhase.SKIPPED:
            assert decision is not None, f"{step.name} was skipped without a Decision"
            assert step.attempts == []
        else:
            assert step.phase is StepPhase.SUCCEEDED
            assert [(a.number, a.phase) for a in step.attempts] == [(1, StepPhase.SUCCEEDED)]
            assert full_output(sim, step) == plan.fates[step.name].output
            large = any(key.startswith("blob_") for key in plan.fates[step.name].output)
            assert (step.output_ref is not None, step.output is None) == (large, large)
