"""Properties of dynamic step injection over random workflows, checked with hypothesis.

A workflow is a random DAG of 2-10 Standard steps; a random subset of them are
injection points; 0-3 dynamicInjection rules sit on random steps, each inserting
a group of 1-3 steps (with random dependsOn among earlier members of the group)
after its own step or after an injection point downstream of it, when a condition
on `state.x` holds, perhaps only for some tenants. Every step's output sets `x`
(or not) at random, and a few steps fail for good. The simulator finishes every
started Job each round.

Rules that insert after a point *upstream* of (or parallel to) their step are
left out: their dependents may have run already, see the xfail test in
test_dynamic.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from retcon.api.run import DefinitionStep, RunPhase, StepPhase, WorkflowRunStatus
from retcon.api.stepresult import Outcome
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide
from retcon.engine.validation import validate_workflow
from tests.unit.engine_sim import Result
from tests.unit.test_dynamic import TenantSim

TENANTS = ("acme", "globex", "initech")
#: One step in 25 fails for good: runs get deep enough for insertions to matter, and a few fail.
MOSTLY_TRUE = st.sampled_from([True] * 24 + [False])
#: Mostly every tenant (no allowedTenants), else one or two of them, rarely none at all.
ALLOWED_TENANTS: st.SearchStrategy[tuple[str, ...] | None] = st.sampled_from(
    [None, None, None, ()]
) | st.lists(st.sampled_from(TENANTS), unique=True, min_size=1, max_size=2).map(tuple)
CONDITIONS = ("state.x", "!state.x", "state.x == true", "state.x == false", "true", "false")


# --- random workflows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    label: str  # `<step>/dynamicInjection[<n>]`, as inserted_by names it
    host: str
    insert_after: str
    condition: str
    allowed_tenants: tuple[str, ...] | None
    steps: tuple[str, ...]

    def allows(self, tenant: str | None) -> bool:
        return self.allowed_tenants is None or tenant in self.allowed_tenants


@dataclass(frozen=True)
class Fate:
    output: dict[str, Any]
    succeeds: bool = True

    def result(self) -> Result:
        if self.succeeds:
            return 0, dict(self.output), Outcome.SUCCEEDED
        return 1, None, Outcome.NON_RETRYABLE


@dataclass(frozen=True)
class Plan:
    spec: WorkflowSpec
    rules: tuple[Rule, ...]
    fates: dict[str, Fate]  # every step that may run, inserted ones too
    input: dict[str, Any]
    tenant: str | None

    def behaviour(self, name: str, attempt: int, document: dict[str, Any]) -> Result:
        return self.fates[name].result()

    @property
    def originals(self) -> list[str]:
        return [step.name for step in self.spec.steps]


def upstream(resolved: dict[str, list[str]], name: str) -> set[str]:
    """Every step `name` waits for, directly or not."""
    seen: set[str] = set()
    frontier = list(resolved[name])
    while frontier:
        dep = frontier.pop()
        if dep not in seen:
            seen.add(dep)
            frontier.extend(resolved[dep])
    return seen


@st.composite
def groups(draw: st.DrawFn, prefix: str) -> list[dict[str, Any]]:
    """1-3 steps to insert; each after the previous one (implicitly) or after earlier members."""
    size = draw(st.integers(min_value=1, max_value=3))
    names = [f"{prefix}{index}" for index in range(size)]
    steps: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        step: dict[str, Any] = {"name": name, "function": f"plugins.steps:{name}"}
        if index > 0 and draw(st.booleans()):
            step["dependsOn"] = draw(st.lists(st.sampled_from(names[:index]), min_size=1, unique=True))
        steps.append(step)
    return steps


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(min_value=2, max_value=10))
    names = [f"s{index}" for index in range(count)]
    steps: list[dict[str, Any]] = []
    resolved: dict[str, list[str]] = {}
    for index, name in enumerate(names):
        step: dict[str, Any] = {"name": name, "function": f"shop.steps:{name}"}
        if index > 0 and draw(st.booleans()):
            step["dependsOn"] = draw(st.lists(st.sampled_from(names[:index]), unique=True, max_size=3))
        elif index == 0 and draw(st.booleans()):
            step["dependsOn"] = []
        resolved[name] = step.get("dependsOn", names[index - 1 : index])
        steps.append(step)
    points = draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=count))
    # A rule inserts after its own step or after a point that waits for it (so none of the
    # point's dependents can have run yet).
    after_candidates = {
        host: [p for p in points if p == host or host in upstream(resolved, p)] for host in names
    }
    hosts = [host for host in names if after_candidates[host]]

    rules: list[Rule] = []
    for number in range(draw(st.integers(min_value=0, max_value=3))):
        host = draw(st.sampled_from(hosts))
        after = draw(st.sampled_from(after_candidates[host]))
        group = draw(groups(f"r{number}i"))
        allowed = draw(ALLOWED_TENANTS)
        wire: dict[str, Any] = {
            "condition": draw(st.sampled_from(CONDITIONS)),
            "steps": group,
            "reason": f"rule {number}",
        }
        if after != host or draw(st.booleans()):
            wire["insertAfter"] = after
        if allowed is not None:
            wire["allowedTenants"] = list(allowed)
        host_step = steps[names.index(host)]
        position = len(host_step.setdefault("dynamicInjection", []))
        host_step["dynamicInjection"].append(wire)
        rules.append(
            Rule(
                label=f"{host}/dynamicInjection[{position}]",
                host=host,
                insert_after=after,
                condition=wire["condition"],
                allowed_tenants=allowed,
                steps=tuple(s["name"] for s in group),
            )
        )

    spec = WorkflowSpec.model_validate({"steps": steps, "injectionPoints": points})
    assert validate_workflow(spec) == [], spec
    everyone = names + [name for rule in rules for name in rule.steps]
    fates = {
        name: Fate(
            output=draw(st.sampled_from([{}, {"x": True}, {"x": False}])),
            succeeds=draw(MOSTLY_TRUE),
        )
        for name in everyone
    }
    tenant = draw(st.none() | st.sampled_from(TENANTS))
    return Plan(spec=spec, rules=tuple(rules), fates=fates, input={"x": draw(st.booleans())}, tenant=tenant)


# --- driving a run ---------------------------------------------------------------------------------


@dataclass
class Trace:
    plan: Plan
    sim: TenantSim
    #: Per started step: the index of the decision that started it (its first attempt).
    started_in: dict[str, int] = field(default_factory=dict)
    statuses: list[WorkflowRunStatus] = field(default_factory=list)

    @property
    def definition(self) -> list[DefinitionStep]:
        assert self.sim.status.definition is not None
        return self.sim.status.definition.steps


def drive(plan: Plan, *, twice: bool = False) -> Trace:
    """Run the plan to a terminal phase, finishing every Job each round.

    With `twice`, every decision is also taken twice more from the same inputs and must be equal.
    """
    sim = TenantSim(plan.spec, plan.behaviour, input=dict(plan.input), tenant=plan.tenant)
    trace = Trace(plan=plan, sim=sim)
    # Each step takes two rounds (start, fold) and an insertion one more; then the snapshot and the end.
    bound = 3 * len(plan.fates) + 4
    for _ in range(bound):
        expected = None
        if twice and sim.status.definition is not None:
            view, observed = sim.view(), sim.observed_now()
            expected = decide(view, observed, sim.now)
            assert decide(view, observed, sim.now) == expected
        decision = sim.step()
        if expected is not None:
            assert decision == expected
        for action in decision.starts:
            trace.started_in.setdefault(action.step.name, len(trace.statuses))
        trace.statuses.append(decision.status)
        if sim.status.phase.terminal:
            assert not sim.pending_jobs, "a finished run left Jobs running"
            return trace
        sim.finish_jobs()
        sim.now += timedelta(seconds=decision.requeue_after or 1.0)
    raise AssertionError(f"the run is still {sim.status.phase} after {bound} rounds")


# --- the properties --------------------------------------------------------------------------------

SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(plans())
def test_every_step_starts_only_after_all_its_final_dependencies_succeeded(plan: Plan) -> None:
    trace = drive(plan)

    for step in trace.definition:
        if step.name not in trace.started_in:
            continue
        index = trace.started_in[step.name]
        then = {s.name: s.phase for s in trace.statuses[index].steps}
        late = [dep for dep in step.depends_on or [] if then.get(dep) is not StepPhase.SUCCEEDED]
        assert late == [], f"{step.name} started in decision {index} before {late} succeeded"


@SETTINGS
@given(plans())
def test_every_step_of_the_final_definition_ran_or_the_run_failed(plan: Plan) -> None:
    trace = drive(plan)

    status = trace.sim.status
    defined = {step.name for step in trace.definition}
    assert set(trace.started_in) <= defined
    assert sorted(s.name for s in status.steps) == sorted(defined)
    for step in status.steps:
        if status.phase is RunPhase.SUCCEEDED:
            assert step.phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED), step
        else:
            assert status.phase is RunPhase.FAILED
            assert step.phase in (StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.PENDING), step
    if status.phase is RunPhase.FAILED:
        assert any(s.phase is StepPhase.FAILED for s in status.steps)


@SETTINGS
@given(plans())
def test_inserted_steps_are_marked_with_their_point_and_rule_and_have_fresh_ids(plan: Plan) -> None:
    trace = drive(plan)

    definition = trace.sim.status.definition
    assert definition is not None
    by_label = {rule.label: rule for rule in plan.rules}
    originals = plan.originals
    ids = [step.id for step in definition.steps]
    assert len(ids) == len(set(ids))
    for step in definition.steps:
        if step.name in originals:
            assert not step.injected
            assert step.id == f"step_{originals.index(step.name) + 1:03d}"
            continue
        assert step.injected
        assert step.inserted_after in definition.injection_points
        assert step.inserted_by in by_label
        rule = by_label[step.inserted_by]
        assert step.name in rule.steps
        assert step.inserted_after == rule.insert_after
        assert int(step.id.removeprefix("step_")) > len(originals)
    # A rule inserts all of its steps or none.
    for rule in plan.rules:
        inserted = [s.name for s in definition.steps if s.inserted_by == rule.label]
        assert sorted(inserted) in ([], sorted(rule.steps))


@SETTINGS
@given(plans())
def test_a_rule_inserts_exactly_when_its_step_succeeded_its_condition_held_and_the_tenant_is_allowed(
    plan: Plan,
) -> None:
    trace = drive(plan)

    status = trace.sim.status
    entries = {
        (entry.details or {}).get("rule"): entry
        for entry in status.audit
        if entry.type == "step.dynamic_injection"
    }
    assert len(entries) == len([e for e in status.audit if e.type == "step.dynamic_injection"])
    inserted_by = {step.inserted_by for step in trace.definition if step.injected}
    for rule in plan.rules:
        entry = entries.get(rule.label)
        host_succeeded = trace.sim.step_status(rule.host).phase is StepPhase.SUCCEEDED
        if not rule.allows(plan.tenant):
            assert rule.label not in inserted_by
            if entry is not None:
                assert entry.details is not None
                assert entry.details["inserted"] is False
                assert "allowedTenants" in entry.details["why"]
        if entry is None:
            assert rule.label not in inserted_by
            assert rule.condition != "true" or not rule.allows(plan.tenant) or not host_succeeded
            continue
        assert rule.condition != "false"
        assert entry.details is not None
        assert entry.details["conditionValue"] is True
        assert entry.step_name == rule.host
        assert entry.details["inserted"] is (rule.label in inserted_by)
        assert entry.details["inserted"] is rule.allows(plan.tenant)


@settings(max_examples=100, deadline=None)
@given(plans())
def test_the_same_inputs_always_give_the_same_decision(plan: Plan) -> None:
    drive(plan, twice=True)
