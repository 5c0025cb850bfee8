"""The whole-workflow rules the admission webhook enforces, and the run-time insertion rules."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retcon.api.workflow import StepTemplate, WorkflowSpec
from retcon.engine.graph import find_cycle, resolve_dependencies, topological_order
from retcon.engine.validation import (
    Problem,
    format_problems,
    parse_duration,
    validate_run_insertion,
    validate_workflow,
)


def fn(name: str, **fields: Any) -> dict[str, Any]:
    """A Standard step running a function, in wire form."""
    return {"name": name, "function": f"shop.steps:{name.replace('-', '_')}", **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": list(steps), **fields})


def template(name: str, **fields: Any) -> StepTemplate:
    return StepTemplate.model_validate(fn(name, **fields))


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, format_problems(problems)
    return problems[0]


ORDER_PROCESSING = workflow(
    fn("fetch-order"),
    fn("validate-payment"),
    {
        "name": "check-amount",
        "type": "Decision",
        "routes": [{"condition": "state.amount > 10000", "target": "high-value-review"}],
        "default": "standard-processing",
    },
    fn("high-value-review", dependsOn=["check-amount"]),
    fn("standard-processing", dependsOn=["check-amount"]),
    fn("send-notification", dependsOn=["high-value-review", "standard-processing"]),
)


def test_the_order_processing_example_is_valid() -> None:
    assert validate_workflow(ORDER_PROCESSING) == []


def test_a_function_step_needs_no_image_anywhere() -> None:
    assert ORDER_PROCESSING.defaults is None
    assert validate_workflow(workflow(fn("only"))) == []


# --- 1. dependsOn names steps ---------------------------------------------------------------------


def test_a_dependency_on_a_missing_step_is_reported_at_its_entry() -> None:
    spec = workflow(fn("fetch"), fn("check"), fn("ship", dependsOn=["pack"]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[2].dependsOn[0]"
    assert 'step "ship" depends on "pack", which is not a step of this workflow' in problem.message
    assert "remove it from dependsOn" in problem.message


def test_a_misspelt_dependency_gets_a_suggestion() -> None:
    spec = workflow(fn("pack"), fn("ship", dependsOn=["pakc"]))
    assert 'did you mean "pack"?' in only(validate_workflow(spec)).message


def test_a_step_depending_on_itself_is_reported_once_and_not_as_a_cycle() -> None:
    spec = workflow(fn("fetch"), fn("ship", dependsOn=["fetch", "ship"]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dependsOn[1]"
    assert 'step "ship" depends on itself' in problem.message


# --- 2. no cycles ---------------------------------------------------------------------------------


def test_a_two_step_cycle_is_reported_with_its_path() -> None:
    spec = workflow(fn("a", dependsOn=["b"]), fn("b", dependsOn=["a"]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dependsOn[0]"
    assert "dependency cycle a -> b -> a" in problem.message


def test_a_cycle_is_anchored_at_its_earliest_step() -> None:
    # The search meets the cycle at "b" first; the report still starts at "a", the earliest member.
    spec = workflow(
        fn("b", dependsOn=["c"]),
        fn("root", dependsOn=[]),
        fn("a", dependsOn=["root", "b"]),
        fn("c", dependsOn=["a"]),
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dependsOn[0]"
    assert "dependency cycle b -> c -> a -> b" in problem.message


def test_an_implicit_dependency_can_close_a_cycle() -> None:
    # "b" and "c" depend on the previous step; "a" closes the loop explicitly.
    spec = workflow(fn("a", dependsOn=["c"]), fn("b"), fn("c"))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dependsOn[0]"
    assert "dependency cycle a -> c -> b -> a" in problem.message


def test_each_separate_cycle_is_reported() -> None:
    spec = workflow(
        fn("a", dependsOn=["b"]),
        fn("b", dependsOn=["a"]),
        fn("c", dependsOn=["d"]),
        fn("d", dependsOn=["c"]),
    )
    problems = validate_workflow(spec)
    assert [problem.field for problem in problems] == [
        "spec.steps[0].dependsOn[0]",
        "spec.steps[2].dependsOn[0]",
    ]
    assert "a -> b -> a" in problems[0].message
    assert "c -> d -> c" in problems[1].message


# --- 3. Decision routes ---------------------------------------------------------------------------


def decision(routes: list[tuple[str, str]], default: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": "check",
        "type": "Decision",
        "routes": [{"condition": condition, "target": target} for condition, target in routes],
    }
    if default:
        step["default"] = default
    return step


def test_a_route_to_a_missing_step_is_reported() -> None:
    spec = workflow(fn("fetch"), decision([("state.x > 1", "review")]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].routes[0].target"
    assert 'decision "check" routes to "review", which is not a step of this workflow' in problem.message


def test_a_default_to_a_missing_step_is_reported() -> None:
    spec = workflow(decision([("state.x > 1", "a")], default="b"), fn("a", dependsOn=["check"]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].default"
    assert '"b", which is not a step of this workflow' in problem.message


def test_a_target_must_depend_on_the_decision() -> None:
    spec = workflow(
        fn("fetch"),
        decision([("state.x > 1", "review")], default="plain"),
        fn("review", dependsOn=["fetch"]),
        fn("plain", dependsOn=["check"]),
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].routes[0].target"
    assert 'step "review" does not depend on it' in problem.message
    assert "dependsOn: [check]" in problem.message


def test_the_default_must_depend_on_the_decision_too() -> None:
    spec = workflow(
        fn("fetch"),
        decision([("state.x > 1", "review")], default="plain"),
        fn("review", dependsOn=["check"]),
        fn("plain", dependsOn=["fetch"]),
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].default"
    assert "dependsOn: [check]" in problem.message


def test_a_target_right_after_the_decision_depends_on_it_implicitly() -> None:
    spec = workflow(decision([("state.x > 1", "review")]), fn("review"))
    assert validate_workflow(spec) == []


def test_a_decision_cannot_route_to_itself() -> None:
    spec = workflow(fn("fetch"), decision([("state.x > 1", "check")]))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].routes[0].target"
    assert 'decision "check" routes to itself' in problem.message


def test_the_same_target_twice_in_one_decision_is_reported_at_the_second() -> None:
    spec = workflow(
        decision([("state.x > 1", "review"), ("state.y > 1", "review")]),
        fn("review", dependsOn=["check"]),
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].routes[1].target"
    assert 'routes to "review" more than once' in problem.message


# --- 4. conditions compile ------------------------------------------------------------------------


def test_a_route_condition_that_does_not_compile_is_reported_with_the_compiler_text() -> None:
    spec = workflow(decision([("state.amount >", "review")]), fn("review"))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].routes[0].condition"
    assert 'decision "check": route condition does not compile' in problem.message
    assert "Syntax error" in problem.message


def test_a_condition_over_an_unknown_variable_is_reported() -> None:
    spec = workflow(decision([("order.amount > 1", "review")]), fn("review"))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].routes[0].condition"
    assert "undeclared reference to 'order.amount'" in problem.message


def injecting(name: str, *rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return fn(name, dynamicInjection=[{"reason": "tenant plugins", **rule} for rule in rules], **fields)


def test_a_dynamic_injection_condition_that_does_not_compile_is_reported() -> None:
    spec = workflow(
        fn("fetch"),
        injecting("process", {"condition": "state.amount >>> 1", "steps": [fn("audit")]}),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dynamicInjection[0].condition"
    assert 'step "process": dynamicInjection condition does not compile' in problem.message
    assert "Syntax error" in problem.message


# --- 5. dynamic injection -------------------------------------------------------------------------

RULE = {"condition": "state.amount > 10000"}


def test_insert_after_defaults_to_the_step_and_must_be_an_injection_point() -> None:
    spec = workflow(fn("fetch"), injecting("process", {**RULE, "steps": [fn("audit")]}), fn("ship"))
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dynamicInjection[0].insertAfter"
    assert problem.message.startswith(
        'step "process" inserts steps after "process", which is not listed in spec.injectionPoints'
    )
    assert 'add "process" to spec.injectionPoints' in problem.message


def test_an_explicit_insert_after_must_be_an_injection_point() -> None:
    spec = workflow(
        fn("fetch"),
        injecting("process", {**RULE, "steps": [fn("audit")], "insertAfter": "fetch"}),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dynamicInjection[0].insertAfter"
    assert 'step "process" inserts steps after "fetch", which is not listed' in problem.message


def test_insert_after_must_be_a_step() -> None:
    spec = workflow(
        injecting("process", {**RULE, "steps": [fn("audit")], "insertAfter": "nowhere"}),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[0].insertAfter"
    assert 'inserts steps after "nowhere", which is not a step of this workflow' in problem.message


def test_a_valid_injection_rule_passes() -> None:
    spec = workflow(
        fn("fetch"),
        fn("price"),
        injecting(
            "process",
            {
                **RULE,
                "steps": [
                    fn("review"),  # implicit: after "process"
                    fn("audit", dependsOn=["review", "process", "fetch"]),
                    fn("notify", dependsOn=[]),
                ],
            },
        ),
        fn("ship"),
        injectionPoints=["process"],
    )
    assert validate_workflow(spec) == []


def test_an_inserted_step_cannot_take_a_workflow_step_name() -> None:
    spec = workflow(
        injecting("process", {**RULE, "steps": [fn("ship")]}), fn("ship"), injectionPoints=["process"]
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[0].steps[0].name"
    assert (
        'step "process" inserts a step named "ship", but this workflow already has a step' in problem.message
    )


def test_inserted_step_names_are_unique_across_rules() -> None:
    spec = workflow(
        injecting("process", {**RULE, "steps": [fn("audit")]}),
        injecting("ship", {**RULE, "steps": [fn("audit")]}),
        injectionPoints=["process", "ship"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dynamicInjection[0].steps[0].name"
    assert 'step "ship" inserts a step named "audit", and so does step "process"' in problem.message
    assert "two steps of one name" in problem.message


def test_inserted_step_names_are_unique_within_a_rule() -> None:
    spec = workflow(
        injecting("process", {**RULE, "steps": [fn("audit"), fn("audit")]}), injectionPoints=["process"]
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[0].steps[1].name"
    assert 'inserts two steps named "audit"' in problem.message


def test_an_inserted_step_cannot_depend_on_a_step_downstream_of_insert_after() -> None:
    spec = workflow(
        fn("fetch"),
        injecting("process", {**RULE, "steps": [fn("audit", dependsOn=["ship"])]}),
        fn("ship"),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[1].dynamicInjection[0].steps[0].dependsOn[0]"
    assert 'inserted step "audit"' in problem.message
    assert '"ship" is not upstream of "process"' in problem.message
    assert "cycle" in problem.message


def test_an_inserted_step_cannot_depend_on_a_parallel_branch() -> None:
    spec = workflow(
        fn("fetch"),
        injecting("process", {**RULE, "steps": [fn("audit", dependsOn=["side"])]}),
        fn("side", dependsOn=["fetch"]),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert '"side" is not upstream of "process"' in problem.message


def test_an_inserted_step_cannot_depend_on_another_rules_steps() -> None:
    spec = workflow(
        injecting(
            "process", {**RULE, "steps": [fn("audit")]}, {**RULE, "steps": [fn("log", dependsOn=["audit"])]}
        ),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[1].steps[0].dependsOn[0]"
    assert '"audit" is neither a step of this workflow nor one inserted with it' in problem.message


def test_inserted_steps_cannot_wait_for_each_other() -> None:
    spec = workflow(
        injecting("process", {**RULE, "steps": [fn("a", dependsOn=["b"]), fn("b", dependsOn=["a"])]}),
        injectionPoints=["process"],
    )
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[0].steps[0].dependsOn[0]"
    assert 'steps inserted by step "process" form a dependency cycle a -> b -> a' in problem.message


def test_an_inserted_decision_step_is_not_supported() -> None:
    inserted = {"name": "route", "type": "Decision", "routes": [{"condition": "true", "target": "x"}]}
    spec = workflow(injecting("process", {**RULE, "steps": [inserted]}), injectionPoints=["process"])
    problem = only(validate_workflow(spec))
    assert problem.field == "spec.steps[0].dynamicInjection[0].steps[0].type"
    assert 'inserts Decision step "route"' in problem.message
    assert "not supported" in problem.message


# --- 6. injectionPoints ---------------------------------------------------------------------------


def test_an_injection_point_must_name_a_step() -> None:
    problem = only(validate_workflow(workflow(fn("process"), injectionPoints=["process", "procss"])))
    assert problem.field == "spec.injectionPoints[1]"
    assert 'injection point "procss" is not a step of this workflow' in problem.message


def test_an_injection_point_is_listed_once() -> None:
    problem = only(validate_workflow(workflow(fn("process"), injectionPoints=["process", "process"])))
    assert problem.field == "spec.injectionPoints[1]"
    assert 'injection point "process" is listed twice' in problem.message


# --- 7. Sleep durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45.0),
        ("250ms", 0.25),
        ("2.5m", 150.0),
        ("1h30m", 5400.0),
        ("1h0m0.5s", 3600.5),
        ("168h", 604800.0),
    ],
)
def test_parse_duration_reads_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "5 m", "1d", "-5s", "s", "1h30", ".5s", "1.s"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def sleep(duration: str) -> dict[str, Any]:
    return {"name": "cool-off", "type": "Sleep", "duration": duration}


def test_a_sleep_must_last_longer_than_zero() -> None:
    problem = only(validate_workflow(workflow(fn("fetch"), sleep("0s"))))
    assert problem.field == "spec.steps[1].duration"
    assert 'Sleep step "cool-off"' in problem.message
    assert "above 0" in problem.message


def test_a_sleep_lasts_at_most_seven_days() -> None:
    assert validate_workflow(workflow(sleep("168h"))) == []
    problem = only(validate_workflow(workflow(sleep("167h60m1s"))))
    assert problem.field == "spec.steps[0].duration"
    assert "longer than 7 days" in problem.message


def test_an_inserted_sleep_is_checked_too() -> None:
    spec = workflow(injecting("process", {**RULE, "steps": [sleep("0ms")]}), injectionPoints=["process"])
    assert only(validate_workflow(spec)).field == "spec.steps[0].dynamicInjection[0].steps[0].duration"


# --- the denial message ---------------------------------------------------------------------------


def test_format_problems_writes_one_line_per_problem() -> None:
    spec = workflow(fn("fetch"), fn("ship", dependsOn=["pack"]), injectionPoints=["nowhere"])
    text = format_problems(validate_workflow(spec))
    assert text.splitlines() == [
        'spec.steps[1].dependsOn[0]: step "ship" depends on "pack", which is not a step of this workflow; '
        "fix the name or remove it from dependsOn",
        'spec.injectionPoints[0]: injection point "nowhere" is not a step of this workflow; '
        "list only step names",
    ]


# --- run-time insertion ---------------------------------------------------------------------------

RUN_STEPS = [template("fetch"), template("process"), template("side", dependsOn=["fetch"]), template("ship")]


def test_a_run_time_insertion_after_an_injection_point_passes() -> None:
    new = [template("audit", dependsOn=["process", "fetch"]), template("log")]
    assert validate_run_insertion(RUN_STEPS, ["process"], "process", new) == []


def test_a_run_time_insertion_needs_an_injection_point() -> None:
    problem = only(validate_run_insertion(RUN_STEPS, ["process"], "fetch", [template("audit")]))
    assert problem.field == "after"
    assert 'inserts steps after "fetch", which is not listed' in problem.message
    assert "insert after one of: process" in problem.message


def test_a_run_without_injection_points_allows_no_insertion() -> None:
    problem = only(validate_run_insertion(RUN_STEPS, None, "process", [template("audit")]))
    assert problem.field == "after"
    assert "allows no insertions" in problem.message


def test_a_run_time_insertion_after_a_missing_step_is_refused() -> None:
    problem = only(validate_run_insertion(RUN_STEPS, ["nowhere"], "nowhere", [template("audit")]))
    assert problem.field == "after"
    assert "not a step of this run" in problem.message


def test_a_run_time_insertion_cannot_reuse_a_step_name() -> None:
    problem = only(validate_run_insertion(RUN_STEPS, ["process"], "process", [template("ship")]))
    assert problem.field == "steps[0].name"
    assert 'this run already has a step "ship"' in problem.message


def test_a_run_time_insertion_cannot_depend_on_a_later_step() -> None:
    new = [template("audit", dependsOn=["side"])]
    problem = only(validate_run_insertion(RUN_STEPS, ["process"], "process", new))
    assert problem.field == "steps[0].dependsOn[0]"
    assert '"side" is not upstream of "process"' in problem.message


def test_a_run_time_insertion_accepts_a_workflow_spec() -> None:
    assert validate_run_insertion(ORDER_PROCESSING, ["fetch-order"], "fetch-order", [template("audit")]) == []


# --- properties -----------------------------------------------------------------------------------

NAMES = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=12, unique=True)


@st.composite
def backward_dags(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Steps whose explicit dependencies all name earlier steps; some use the implicit one."""
    names = draw(NAMES)
    steps = []
    for index, name in enumerate(names):
        if draw(st.booleans()):
            steps.append(fn(name))
        else:
            earlier = draw(st.lists(st.sampled_from(names[:index]), max_size=4)) if index else []
            steps.append(fn(name, dependsOn=earlier))
    return steps


@given(backward_dags())
def test_a_dag_of_backward_references_has_no_problem(steps: list[dict[str, Any]]) -> None:
    assert validate_workflow(workflow(*steps)) == []


@given(backward_dags(), st.data())
def test_one_back_edge_closing_a_loop_is_always_reported_as_a_cycle(
    steps: list[dict[str, Any]], data: st.DataObject
) -> None:
    if len(steps) < 2:
        steps = [*steps, fn("zz-extra")]
    early = data.draw(st.integers(0, len(steps) - 2), label="early")
    late = data.draw(st.integers(early + 1, len(steps) - 1), label="late")
    early_name, late_name = steps[early]["name"], steps[late]["name"]
    # Make sure `late` waits for `early` (still a DAG), then let `early` wait for `late`.
    resolved = resolve_dependencies(workflow(*steps).steps)
    steps[late] = {**steps[late], "dependsOn": [*resolved[late_name], early_name]}
    back_edges = [*resolved[early_name], late_name]
    steps[early] = {**steps[early], "dependsOn": back_edges}

    problems = validate_workflow(workflow(*steps))

    problem = only(problems)
    # Every other member of the loop lies between the two: `early` is its earliest step.
    assert problem.field == f"spec.steps[{early}].dependsOn[{len(back_edges) - 1}]"
    assert f"dependency cycle {early_name} -> {late_name} -> " in problem.message
    assert problem.message.split(":")[0].endswith(f" -> {early_name}")


@given(
    st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True).flatmap(
        lambda names: st.fixed_dictionaries(
            {name: st.lists(st.sampled_from([*names, "unknown"]), max_size=3).map(tuple) for name in names}
        )
    )
)
def test_find_cycle_and_topological_order_agree(graph: dict[str, tuple[str, ...]]) -> None:
    cycle = find_cycle(graph)
    if cycle is None:
        order = topological_order(graph)
        assert sorted(order) == sorted(graph)
        for name, dependencies in graph.items():
            for dependency in dependencies:
                if dependency in graph:
                    assert order.index(dependency) < order.index(name)
    else:
        assert cycle[0] == cycle[-1]
        for name, dependency in itertools.pairwise(cycle):
            assert dependency in graph[name]
        with pytest.raises(ValueError, match="dependency cycle"):
            topological_order(graph)
