"""Dynamic step injection: steps a rule inserts as its step succeeds, and steps added to a paused run.

Driven through the in-memory simulator. The running example is the order workflow of
the reference document: `process-order` may insert `high-value-review` before
`ship-order` when the amount is high.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from retcon.api.run import AuditEntry, DefinitionStep, RunPhase, StepPhase
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide
from retcon.engine.dynamic import ADD_STEP_ANNOTATION
from retcon.engine.model import PAUSE_ANNOTATION, RESUME_FROM_ANNOTATION, Decision, RecordEvent, RunView
from retcon.engine.validation import validate_workflow
from tests.unit.engine_sim import Behaviour, Result, Sim, succeed_with

OPERATOR = "retcon-operator"
REASON = "orders over 10000 need a second look (compliance)"


@dataclass
class TenantSim(Sim):
    """The simulator, for a run of `tenant` (the WorkflowRun's spec.tenant)."""

    tenant: str | None = None

    def view(self) -> RunView:
        return replace(super().view(), tenant=self.tenant)


def fn(name: str, **fields: Any) -> dict[str, Any]:
    """A Standard step running a function, in wire form."""
    return {"name": name, "function": f"shop.steps:{name.replace('-', '_')}", **fields}


def rule(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"condition": "state.amount > 10000", "steps": list(steps), "reason": REASON, **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> WorkflowSpec:
    spec = WorkflowSpec.model_validate({"steps": list(steps), **fields})
    assert validate_workflow(spec) == []
    return spec


def orders(*rules: dict[str, Any], points: tuple[str, ...] = ("process-order",)) -> WorkflowSpec:
    """fetch-order -> process-order (carrying `rules`) -> ship-order."""
    return workflow(
        fn("fetch-order"),
        fn("process-order", dynamicInjection=list(rules)),
        fn("ship-order"),
        injectionPoints=list(points),
    )


ORDERS = orders(rule(fn("high-value-review")))


def events(sim: Sim) -> list[RecordEvent]:
    return [a for d in sim.decisions for a in d.actions if isinstance(a, RecordEvent)]


def audited(sim: Sim, kind: str) -> list[AuditEntry]:
    return [entry for entry in sim.status.audit if entry.type == kind]


def definition(sim: Sim) -> list[DefinitionStep]:
    assert sim.status.definition is not None
    return sim.status.definition.steps


def defined(sim: Sim, name: str) -> DefinitionStep:
    return next(step for step in definition(sim) if step.name == name)


def started(decision: Decision) -> list[str]:
    return [action.step.name for action in decision.starts]


def later(sim: Sim, seconds: float = 1) -> Decision:
    sim.now += timedelta(seconds=seconds)
    return sim.step()


def until_finished(sim: Sim, name: str) -> Decision:
    """Reconcile, finishing every Job, until the decision that folds step `name`'s end in."""
    for _ in range(50):
        decision = sim.step()
        if sim.status.definition is not None and sim.step_status(name).phase.terminal:
            return decision
        sim.finish_jobs()
        sim.now += timedelta(seconds=1)
    raise AssertionError(f"step {name} did not finish")


def starts_after_its_dependencies(sim: Sim) -> list[str]:
    """Steps that started before a dependency (in the final definition) had finished."""
    finished_in: dict[str, int] = {}
    started_in: dict[str, int] = {}
    for index, decision in enumerate(sim.decisions):
        for name in started(decision):
            started_in.setdefault(name, index)
        for step in decision.status.steps:
            if step.phase.terminal:
                finished_in.setdefault(step.name, index)
    return [
        f"{step.name} started before {dep} finished"
        for step in definition(sim)
        if step.name in started_in
        for dep in step.depends_on or []
        if finished_in.get(dep, len(sim.decisions)) > started_in[step.name]
    ]


# --- the reference example, both ways ----------------------------------------------------------------


def test_a_low_value_order_runs_the_workflow_as_written() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 100}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "ship-order"]
    assert [step.name for step in definition(sim)] == ["fetch-order", "process-order", "ship-order"]
    assert not any(step.injected for step in definition(sim))
    assert audited(sim, "step.dynamic_injection") == []  # a condition that does not hold leaves no trace
    assert not [e for e in events(sim) if e.reason.startswith(("StepsInserted", "DynamicInjection"))]


def test_a_high_value_order_gets_the_review_inserted_and_run_before_shipping() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "high-value-review", "ship-order"]
    assert [(s.name, s.id) for s in definition(sim)] == [
        ("fetch-order", "step_001"),
        ("process-order", "step_002"),
        ("high-value-review", "step_004"),  # a fresh id, after the original ones
        ("ship-order", "step_003"),
    ]
    review = defined(sim, "high-value-review")
    assert (review.injected, review.inserted_after, review.inserted_by) == (
        True,
        "process-order",
        "process-order/dynamicInjection[0]",
    )
    assert review.function == "shop.steps:high_value_review"
    assert review.depends_on == ["process-order"]
    assert defined(sim, "ship-order").depends_on == ["high-value-review"]
    assert not any(s.injected for s in definition(sim) if s.name != "high-value-review")
    assert sim.step_status("high-value-review").id == "step_004"
    assert sim.phase_of("high-value-review") == "Succeeded"


def test_the_insertion_is_audited_with_the_rule_the_condition_its_value_and_the_reason() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    (entry,) = audited(sim, "step.dynamic_injection")
    assert (entry.actor, entry.step_id, entry.step_name, entry.reason) == (
        OPERATOR,
        "step_002",
        "process-order",
        REASON,
    )
    assert entry.details == {
        "rule": "process-order/dynamicInjection[0]",
        "insertAfter": "process-order",
        "condition": "state.amount > 10000",
        "conditionValue": True,
        "steps": [
            {"name": "high-value-review", "type": "Standard", "function": "shop.steps:high_value_review"}
        ],
        "inserted": True,
        "insertedSteps": ["high-value-review"],
    }
    (event,) = [e for e in events(sim) if e.reason == "StepsInserted"]
    assert event.type == "Normal"
    assert event.message == (
        f"Inserted high-value-review after process-order (process-order/dynamicInjection[0]: {REASON})"
    )


def test_an_inserted_image_step_is_described_by_its_image_in_the_audit() -> None:
    spec = orders(rule({"name": "scan", "image": "registry.example/scan:1", "command": ["scan"]}))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert entry.details["steps"] == [
        {"name": "scan", "type": "Standard", "image": "registry.example/scan:1"}
    ]
    assert defined(sim, "scan").command == ["scan"]


def test_the_condition_sees_the_run_input_as_well_as_the_outputs() -> None:
    spec = orders(rule(fn("high-value-review"), condition='input.region == "EU" && state.amount > 10'))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20}}), input={"region": "EU"})

    sim.run_to_end()

    assert sim.started == ["fetch-order", "process-order", "high-value-review", "ship-order"]


# --- tenants ----------------------------------------------------------------------------------------

TENANT_ORDERS = orders(rule(fn("high-value-review"), allowedTenants=["tenant-a", "tenant-b"]))


def test_a_run_of_an_allowed_tenant_gets_the_steps() -> None:
    sim = TenantSim(TENANT_ORDERS, succeed_with({"process-order": {"amount": 20000}}), tenant="tenant-b")

    sim.run_to_end()

    assert sim.started == ["fetch-order", "process-order", "high-value-review", "ship-order"]
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert entry.details["inserted"] is True


@pytest.mark.parametrize(
    ("tenant", "why"),
    [
        ("tenant-c", "tenant 'tenant-c' is not in allowedTenants (tenant-a, tenant-b)"),
        (None, "the run has no tenant; allowedTenants is (tenant-a, tenant-b)"),
    ],
)
def test_a_run_of_another_tenant_gets_no_steps_and_the_audit_says_why(tenant: str | None, why: str) -> None:
    sim = TenantSim(TENANT_ORDERS, succeed_with({"process-order": {"amount": 20000}}), tenant=tenant)

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "ship-order"]
    assert [step.name for step in definition(sim)] == ["fetch-order", "process-order", "ship-order"]
    assert defined(sim, "ship-order").depends_on == ["process-order"]
    (entry,) = audited(sim, "step.dynamic_injection")
    assert (entry.actor, entry.step_name, entry.reason) == (OPERATOR, "process-order", REASON)
    assert entry.details is not None
    assert entry.details["conditionValue"] is True
    assert entry.details["inserted"] is False
    assert entry.details["why"] == why
    assert "insertedSteps" not in entry.details
    (event,) = [e for e in events(sim) if e.reason == "DynamicInjectionSkipped"]
    assert event.message == f"Rule process-order/dynamicInjection[0] not applied: {why}"


def test_a_rule_without_allowed_tenants_applies_to_every_run_with_or_without_a_tenant() -> None:
    for tenant in (None, "anyone"):
        sim = TenantSim(ORDERS, succeed_with({"process-order": {"amount": 20000}}), tenant=tenant)
        sim.run_to_end()
        assert "high-value-review" in sim.started, tenant


# --- where steps go ---------------------------------------------------------------------------------


def test_a_rule_may_insert_after_another_injection_point_downstream_of_its_step() -> None:
    spec = workflow(
        fn("fetch-order", dynamicInjection=[rule(fn("fraud-check"), insertAfter="charge-card")]),
        fn("charge-card"),
        fn("ship-order"),
        injectionPoints=["charge-card"],
    )
    sim = Sim(spec, succeed_with({"fetch-order": {"amount": 20000}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "charge-card", "fraud-check", "ship-order"]
    fraud = defined(sim, "fraud-check")
    assert (fraud.inserted_after, fraud.inserted_by, fraud.depends_on) == (
        "charge-card",
        "fetch-order/dynamicInjection[0]",
        ["charge-card"],
    )
    assert defined(sim, "ship-order").depends_on == ["fraud-check"]
    assert [s.name for s in definition(sim)] == ["fetch-order", "charge-card", "fraud-check", "ship-order"]
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.step_name == "fetch-order"
    assert entry.details is not None
    assert entry.details["insertAfter"] == "charge-card"


def test_a_rule_inserting_after_an_upstream_point_never_rewires_a_step_that_already_ran() -> None:
    spec = workflow(
        fn("fetch-order"),
        fn("process-order", dynamicInjection=[rule(fn("fraud-check"), insertAfter="fetch-order")]),
        fn("ship-order"),
        injectionPoints=["fetch-order"],
    )
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    assert starts_after_its_dependencies(sim) == []


def test_two_inserted_steps_run_in_a_chain_and_the_dependents_wait_for_the_second() -> None:
    spec = orders(rule(fn("high-value-review"), fn("notify-finance")))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    assert sim.started == [
        "fetch-order",
        "process-order",
        "high-value-review",
        "notify-finance",
        "ship-order",
    ]
    assert defined(sim, "high-value-review").depends_on == ["process-order"]
    assert defined(sim, "notify-finance").depends_on == ["high-value-review"]
    assert defined(sim, "ship-order").depends_on == ["notify-finance"]
    assert [(s.name, s.id) for s in definition(sim) if s.injected] == [
        ("high-value-review", "step_004"),
        ("notify-finance", "step_005"),
    ]
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert entry.details["insertedSteps"] == ["high-value-review", "notify-finance"]


def test_explicit_depends_on_inside_the_group_is_kept_and_every_tail_gates_the_dependents() -> None:
    spec = orders(
        rule(
            fn("high-value-review"),
            fn("notify-finance"),  # implicit: after high-value-review
            fn("archive-review", dependsOn=["high-value-review"]),
        )
    )
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert defined(sim, "notify-finance").depends_on == ["high-value-review"]
    assert defined(sim, "archive-review").depends_on == ["high-value-review"]
    assert defined(sim, "ship-order").depends_on == ["notify-finance", "archive-review"]
    assert sim.started[-1] == "ship-order"
    assert sorted(sim.started[3:5]) == ["archive-review", "notify-finance"]
    assert starts_after_its_dependencies(sim) == []


def test_a_group_with_two_roots_on_the_point_has_two_tails() -> None:
    spec = orders(
        rule(fn("high-value-review"), fn("credit-check", dependsOn=["process-order", "fetch-order"]))
    )
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    assert defined(sim, "credit-check").depends_on == ["process-order", "fetch-order"]
    assert defined(sim, "ship-order").depends_on == ["high-value-review", "credit-check"]
    assert sim.started[2:4] == ["high-value-review", "credit-check"]  # started together
    assert starts_after_its_dependencies(sim) == []


def test_a_dependent_keeps_its_other_dependencies_when_rewired() -> None:
    spec = workflow(
        fn("fetch-order"),
        fn("process-order", dynamicInjection=[rule(fn("high-value-review"))]),
        fn("ship-order", dependsOn=["process-order", "fetch-order"]),
        fn("invoice", dependsOn=["process-order"]),
        injectionPoints=["process-order"],
    )
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    assert defined(sim, "ship-order").depends_on == ["fetch-order", "high-value-review"]
    assert defined(sim, "invoice").depends_on == ["high-value-review"]
    assert starts_after_its_dependencies(sim) == []


def test_two_rules_inserting_after_one_point_leave_a_definition_whose_order_follows_its_dependencies() -> (
    None
):
    spec = orders(rule(fn("high-value-review")), rule(fn("notify-finance")))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    sim.run_to_end()

    assert len(audited(sim, "step.dynamic_injection")) == 2
    seen: set[str] = set()
    for step in definition(sim):
        assert set(step.depends_on or []) <= seen, f"{step.name} is listed before {step.depends_on}"
        seen.add(step.name)


def test_two_rules_inserting_after_one_point_both_run_before_the_dependents() -> None:
    spec = orders(rule(fn("high-value-review")), rule(fn("notify-finance")))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started[:2] == ["fetch-order", "process-order"]
    assert sorted(sim.started[2:4]) == ["high-value-review", "notify-finance"]
    assert sim.started[4] == "ship-order"
    assert starts_after_its_dependencies(sim) == []
    assert [e.details["rule"] for e in audited(sim, "step.dynamic_injection") if e.details] == [
        "process-order/dynamicInjection[0]",
        "process-order/dynamicInjection[1]",
    ]


# --- guard rails at run time --------------------------------------------------------------------------


def test_an_insertion_point_no_longer_listed_at_run_time_is_refused_with_an_audit_entry() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))
    sim.step()  # the snapshot
    assert sim.status.definition is not None
    sim.status.definition.injection_points = []  # as if the run's definition had been edited

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "ship-order"]
    assert not any(step.injected for step in definition(sim))
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert (entry.details["inserted"], entry.details["conditionValue"]) == (False, True)
    assert 'inserts steps after "process-order", which is not listed' in entry.details["why"]
    assert "this run allows no insertions" in entry.details["why"]
    (event,) = [e for e in events(sim) if e.reason == "DynamicInjectionRefused"]
    assert event.type == "Warning"
    assert event.message.startswith("Rule process-order/dynamicInjection[0] refused: ")


def test_a_rule_inserting_a_name_a_person_already_added_is_refused_with_an_audit_entry() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))
    sim.step()
    assert started(later(sim)) == ["fetch-order"]
    sim.annotate("carol", {PAUSE_ANNOTATION: "true"})
    until_finished(sim, "fetch-order")
    assert sim.status.phase is RunPhase.PAUSED
    manual = fn("high-value-review", function="shop.steps:manual_review")
    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request(step=manual)})
    later(sim)
    sim.annotate("carol", {PAUSE_ANNOTATION: None})

    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "high-value-review", "ship-order"]
    assert defined(sim, "high-value-review").inserted_by == "alice"
    assert defined(sim, "high-value-review").function == "shop.steps:manual_review"
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert entry.details["inserted"] is False
    assert 'already has a step "high-value-review"; rename the inserted step' in entry.details["why"]
    assert [e.reason for e in events(sim) if e.reason.startswith("DynamicInjection")] == [
        "DynamicInjectionRefused"
    ]


def test_a_condition_erroring_at_run_time_fails_the_step_with_the_expression_and_the_error() -> None:
    spec = orders(rule(fn("high-value-review"), condition="state.missing > 1"))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    status = sim.run_to_end()

    step = sim.step_status("process-order")
    assert step.phase is StepPhase.FAILED
    assert step.message is not None
    assert step.message.startswith("dynamicInjection condition 'state.missing > 1' failed: ")
    assert 'Key not found in map : "missing"' in step.message
    assert status.phase is RunPhase.FAILED
    assert status.message == f"step process-order failed: {step.message}"
    assert sim.started == ["fetch-order", "process-order"]
    assert sim.phase_of("ship-order") == "Pending"
    assert not any(s.injected for s in definition(sim))
    assert audited(sim, "step.dynamic_injection") == []
    assert any(
        e.type == "Warning" and e.reason == "StepFailed" and "state.missing" in e.message for e in events(sim)
    )


def test_a_condition_that_is_not_a_boolean_fails_the_step() -> None:
    spec = orders(rule(fn("high-value-review"), condition="state.amount"))
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    status = sim.run_to_end()

    assert status.phase is RunPhase.FAILED
    assert sim.step_status("process-order").message == (
        "dynamicInjection condition 'state.amount' failed: evaluated to a int, not a boolean"
    )


# --- when inserted steps start --------------------------------------------------------------------------


def test_inserted_steps_start_only_in_the_decision_after_the_one_that_inserted_them() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))

    inserting = until_finished(sim, "process-order")

    assert started(inserting) == []
    assert inserting.requeue_after == 0  # the structure is written, then the steps start at once
    review = sim.step_status("high-value-review")
    assert (review.phase, review.id, review.message) == (
        StepPhase.PENDING,
        "step_004",
        "inserted; starts next",
    )
    assert sim.status.phase is RunPhase.RUNNING

    assert started(sim.step()) == ["high-value-review"]  # no time has passed


def test_the_structure_is_in_status_definition_in_the_decision_that_inserts() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))

    inserting = until_finished(sim, "process-order")

    written = inserting.status.definition
    assert written is not None
    assert [(s.name, s.id, s.injected) for s in written.steps] == [
        ("fetch-order", "step_001", False),
        ("process-order", "step_002", False),
        ("high-value-review", "step_004", True),
        ("ship-order", "step_003", False),
    ]
    assert next(s for s in written.steps if s.name == "ship-order").depends_on == ["high-value-review"]
    assert [e.type for e in inserting.status.audit] == ["step.dynamic_injection"]


def test_other_steps_ready_in_the_inserting_decision_still_start_in_it() -> None:
    spec = workflow(
        fn("process-order", dependsOn=[], dynamicInjection=[rule(fn("high-value-review"))]),
        fn("ship-order"),
        fn("restock", dependsOn=[]),
        fn("reorder", dependsOn=["restock"]),
        injectionPoints=["process-order"],
    )
    sim = Sim(spec, succeed_with({"process-order": {"amount": 20000}}))

    inserting = until_finished(sim, "process-order")

    assert sim.phase_of("restock") == "Succeeded"  # finished alongside process-order
    assert started(inserting) == ["reorder"]
    assert inserting.requeue_after == 0
    assert started(sim.step()) == ["high-value-review"]


def test_a_step_added_while_paused_starts_when_the_run_resumes() -> None:
    sim = paused_after_process()
    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request()})
    adding = later(sim)
    assert started(adding) == []
    assert sim.status.phase is RunPhase.PAUSED

    sim.annotate("alice", {PAUSE_ANNOTATION: None})

    assert started(later(sim)) == ["fraud-check"]
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "fraud-check", "ship-order"]


# --- re-running a step ------------------------------------------------------------------------------------


def test_a_step_re_run_after_resume_from_step_does_not_insert_its_steps_twice() -> None:
    sim = Sim(ORDERS, succeed_with({"process-order": {"amount": 20000}}))
    sim.run_to_end()

    sim.annotate("bob", {RESUME_FROM_ANNOTATION: "process-order"})
    status = sim.run_to_end()

    assert status.phase is RunPhase.SUCCEEDED
    assert sim.started == [
        "fetch-order",
        "process-order",
        "high-value-review",
        "ship-order",
        "process-order",
        "high-value-review",
        "ship-order",
    ]
    assert [s.name for s in definition(sim)].count("high-value-review") == 1
    assert len(sim.status.steps) == 4
    assert len(audited(sim, "step.dynamic_injection")) == 1
    assert [a.number for a in sim.step_status("high-value-review").attempts] == [1, 2]


def test_a_rule_that_did_not_hold_is_evaluated_again_when_its_step_re_runs() -> None:
    def behaviour(name: str, attempt: int, document: dict[str, Any]) -> Result:
        amount = 100 if attempt == 1 else 20000  # the re-run sees a bigger order
        return succeed_with({"process-order": {"amount": amount}})(name, attempt, document)

    sim = Sim(ORDERS, behaviour)
    sim.run_to_end()
    assert "high-value-review" not in sim.started

    sim.annotate("bob", {RESUME_FROM_ANNOTATION: "step_002"})
    sim.run_to_end()

    assert sim.started[3:] == ["process-order", "high-value-review", "ship-order"]
    (entry,) = audited(sim, "step.dynamic_injection")
    assert entry.details is not None
    assert entry.details["inserted"] is True


# --- add-step --------------------------------------------------------------------------------------------


def add_request(
    after: str = "process-order", step: dict[str, Any] | None = None, reason: str | None = "customer asked"
) -> str:
    request: dict[str, Any] = {"after": after, "step": step or fn("fraud-check")}
    if reason is not None:
        request["reason"] = reason
    return json.dumps(request)


PLAIN_ORDERS = orders()  # no rules; process-order is an injection point


def paused_after_process(behaviour: Behaviour | None = None) -> Sim:
    """A run of PLAIN_ORDERS paused (by carol) after process-order, ship-order next."""
    sim = Sim(PLAIN_ORDERS, behaviour or succeed_with({}))
    until_finished(sim, "fetch-order")
    sim.annotate("carol", {PAUSE_ANNOTATION: "true"})
    until_finished(sim, "process-order")
    sim.finish_jobs()
    later(sim)
    assert sim.status.phase is RunPhase.PAUSED
    assert sim.status.next_step_hint == "ship-order"
    return sim


def refusals(decision: Decision) -> list[RecordEvent]:
    return [a for a in decision.actions if isinstance(a, RecordEvent) and a.reason == "AddStepRefused"]


def test_a_step_added_to_a_paused_run_is_inserted_and_audited_with_the_actor() -> None:
    sim = paused_after_process()

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request()})
    decision = later(sim)

    assert ADD_STEP_ANNOTATION in decision.consumed_annotations
    assert ADD_STEP_ANNOTATION not in sim.annotations
    added = defined(sim, "fraud-check")
    assert (added.id, added.injected, added.inserted_after, added.inserted_by, added.depends_on) == (
        "step_004",
        True,
        "process-order",
        "alice",
        ["process-order"],
    )
    assert defined(sim, "ship-order").depends_on == ["fraud-check"]
    assert sim.status.next_step_hint == "fraud-check"
    (entry,) = audited(sim, "step.added")
    assert (entry.actor, entry.step_id, entry.step_name, entry.reason) == (
        "alice",
        "step_004",
        "fraud-check",
        "customer asked",
    )
    assert entry.details == {
        "insertAfter": "process-order",
        "steps": [{"name": "fraud-check", "type": "Standard", "function": "shop.steps:fraud_check"}],
        "insertedSteps": ["fraud-check"],
    }
    assert ("Normal", "StepAdded", "Added step fraud-check after process-order (alice: customer asked)") in [
        (e.type, e.reason, e.message) for e in decision.actions if isinstance(e, RecordEvent)
    ]


def test_a_step_may_be_added_after_a_point_named_by_its_id() -> None:
    sim = paused_after_process()

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request(after="step_002")})
    later(sim)

    assert defined(sim, "fraud-check").inserted_after == "process-order"
    (entry,) = audited(sim, "step.added")
    assert entry.details is not None
    assert entry.details["insertAfter"] == "process-order"


def test_the_actor_of_an_added_step_is_unknown_without_an_admission_record() -> None:
    sim = paused_after_process()

    sim.annotations[ADD_STEP_ANNOTATION] = add_request()  # bypassing the webhook
    later(sim)

    assert defined(sim, "fraud-check").inserted_by == "unknown"
    assert audited(sim, "step.added")[0].actor == "unknown"


def assert_refused(sim: Sim, decision: Decision, message: str) -> None:
    assert ADD_STEP_ANNOTATION in decision.consumed_annotations
    assert ADD_STEP_ANNOTATION not in sim.annotations
    (event,) = refusals(decision)
    assert event.type == "Warning"
    assert message in event.message, event.message
    assert not any(step.injected for step in definition(sim))
    assert [s.name for s in sim.status.steps] == ["fetch-order", "process-order", "ship-order"]
    assert audited(sim, "step.added") == []


def test_a_step_added_to_a_running_run_is_refused() -> None:
    sim = Sim(PLAIN_ORDERS, succeed_with({}))
    until_finished(sim, "fetch-order")
    assert sim.status.phase is RunPhase.RUNNING

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request()})
    decision = later(sim)

    assert_refused(sim, decision, "steps can be added only to a Paused run; this one is Running")
    assert sim.run_to_end().phase is RunPhase.SUCCEEDED
    assert sim.started == ["fetch-order", "process-order", "ship-order"]


def test_a_step_added_to_a_succeeded_run_is_refused() -> None:
    sim = Sim(PLAIN_ORDERS, succeed_with({}))
    sim.run_to_end()

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request()})
    decision = later(sim)

    assert_refused(sim, decision, "this one is Succeeded")
    assert sim.status.phase is RunPhase.SUCCEEDED


DECISION_STEP = {"name": "pick", "type": "Decision", "routes": [{"condition": "true", "target": "x"}]}
NOT_VALID = "retcon.dev/add-step is not a valid request"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param(
            add_request(after="fetch-order"),
            'inserts steps after "fetch-order", which is not listed',
            id="point-not-allowed",
        ),
        pytest.param(
            add_request(after="nowhere"),
            'inserts steps after "nowhere", which is not a step of this run',
            id="point-not-a-step",
        ),
        pytest.param(add_request(step=fn("ship-order")), 'already has a step "ship-order"', id="name-clash"),
        pytest.param(
            add_request(step={**fn("late"), "dependsOn": ["ship-order"]}),
            '"ship-order" is not upstream',
            id="dependency-not-upstream",
        ),
        pytest.param(
            add_request(step=DECISION_STEP),
            "routes inside inserted steps are not supported",
            id="decision-step",
        ),
        pytest.param("{not json", NOT_VALID, id="malformed-json"),
        pytest.param(json.dumps(["process-order"]), NOT_VALID, id="not-an-object"),
        pytest.param(json.dumps({"step": fn("fraud-check"), "reason": "r"}), NOT_VALID, id="no-after"),
        pytest.param(
            add_request(step={"name": "Bad_Name", "function": "a.b:c"}), NOT_VALID, id="invalid-step"
        ),
        pytest.param(add_request(reason=None), "an added step needs a reason", id="no-reason"),
        pytest.param(add_request(reason=""), "an added step needs a reason", id="empty-reason"),
    ],
)
def test_an_invalid_add_step_request_is_consumed_and_refused_with_a_warning(
    request_: str, message: str
) -> None:
    sim = paused_after_process()

    sim.annotate("alice", {ADD_STEP_ANNOTATION: request_})
    decision = later(sim)

    assert_refused(sim, decision, message)
    assert sim.status.phase is RunPhase.PAUSED


def test_a_blank_reason_is_refused_like_a_missing_one() -> None:
    sim = paused_after_process()

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request(reason="   ")})
    decision = later(sim)

    assert_refused(sim, decision, "an added step needs a reason")


def test_a_step_added_after_a_point_whose_dependents_already_ran_does_not_rewrite_their_history() -> None:
    spec = orders(points=("fetch-order", "process-order"))
    sim = Sim(spec, succeed_with({}))
    until_finished(sim, "fetch-order")
    sim.annotate("carol", {PAUSE_ANNOTATION: "true"})
    until_finished(sim, "process-order")
    later(sim)
    assert sim.status.phase is RunPhase.PAUSED

    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request(after="fetch-order")})
    later(sim)
    sim.annotate("alice", {PAUSE_ANNOTATION: None})
    sim.run_to_end()

    assert starts_after_its_dependencies(sim) == []


def test_add_step_is_deterministic_from_the_same_inputs() -> None:
    sim = paused_after_process()
    sim.annotate("alice", {ADD_STEP_ANNOTATION: add_request()})
    view, observed = sim.view(), sim.observed_now()

    first, second = decide(view, observed, sim.now), decide(view, observed, sim.now)

    assert first == second
    assert view.status.definition is not None
    assert [s.name for s in view.status.definition.steps] == ["fetch-order", "process-order", "ship-order"]
