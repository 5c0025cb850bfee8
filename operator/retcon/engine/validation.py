"""Whole-workflow rules: what the admission webhook checks before a Workflow is stored.

The pydantic models (and the CEL rules generated from them) check one object at
a time; the rules here need the whole workflow: dependencies name real steps and
form no cycle, Decision routes lead to steps that wait for the decision, every
condition compiles, and dynamic injection stays inside its guard rails. The
insertion rules are shared with `kubectl retcon run add-step` through
`validate_run_insertion`.

Each `Problem` carries a Kubernetes-style field path (`spec.steps[2].dependsOn[0]`)
and a message that names the step and says what to change.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from retcon.api.workflow import StepTemplate, StepType, WorkflowSpec
from retcon.engine.cel import ConditionError, compile_condition
from retcon.engine.graph import Dependencies, HasDependencies, find_cycle, resolve_dependencies

__all__ = [
    "MAX_SLEEP_SECONDS",
    "Problem",
    "format_problems",
    "parse_duration",
    "validate_run_insertion",
    "validate_workflow",
]

#: The longest a Sleep step may sleep: longer waits belong to a Wait step or a new run.
MAX_SLEEP_SECONDS = 7 * 24 * 3600.0

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (a field path) and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def format_problems(problems: Iterable[Problem]) -> str:
    """One line per problem, `field: message`, as the webhook's denial message."""
    return "\n".join(str(problem) for problem in problems)


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration: `1h30m`, `45s`, `250ms`, `2.5m`.

    Units are h, m, s and ms; every number needs one. Raises ValueError saying
    what is wrong.
    """
    if not text:
        raise ValueError("empty duration: write a number with a unit, e.g. 30s, 5m or 1h30m")
    seconds = 0.0
    position = 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r} at {text[position:]!r}: "
                "write numbers with units h, m, s or ms, e.g. 30s, 2.5m or 1h30m"
            )
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return seconds


# --- the whole workflow -------------------------------------------------------------------------


def validate_workflow(spec: WorkflowSpec) -> list[Problem]:
    """Every whole-workflow rule the spec breaks; an empty list means it is valid."""
    dependencies = resolve_dependencies(spec.steps)
    problems: list[Problem] = []
    problems += _dependency_problems(spec, dependencies)
    problems += _cycle_problems(spec, dependencies)
    for index, step in enumerate(spec.steps):
        path = f"spec.steps[{index}]"
        if step.type is StepType.DECISION:
            problems += _decision_problems(path, step, dependencies)
        if step.type is StepType.SLEEP and step.duration is not None:
            problems += _sleep_problems(f"{path}.duration", step.name, step.duration)
    problems += _dynamic_injection_problems(spec, dependencies)
    problems += _injection_point_problems(spec)
    return problems


def _dependency_problems(spec: WorkflowSpec, dependencies: Dependencies) -> list[Problem]:
    problems = []
    for index, step in enumerate(spec.steps):
        for position, name in enumerate(step.depends_on or []):
            field = f"spec.steps[{index}].dependsOn[{position}]"
            if name == step.name:
                problems.append(
                    Problem(
                        field, f'step "{step.name}" depends on itself; remove "{name}" from its dependsOn'
                    )
                )
            elif name not in dependencies:
                problems.append(
                    Problem(
                        field,
                        f'step "{step.name}" depends on "{name}", which is not a step of this workflow; '
                        f"fix the name{_did_you_mean(name, dependencies)} or remove it from dependsOn",
                    )
                )
    return problems


def _cycle_problems(spec: WorkflowSpec, dependencies: Dependencies) -> list[Problem]:
    """One problem per knot of steps that wait for each other, anchored at its earliest step."""
    position = {step.name: index for index, step in enumerate(spec.steps)}
    # Self-dependencies are reported (better) as such by _dependency_problems.
    remaining = {name: tuple(dep for dep in deps if dep != name) for name, deps in dependencies.items()}
    problems = []
    while (cycle := find_cycle(remaining)) is not None:
        members = cycle[:-1]
        start = members.index(min(members, key=position.__getitem__))
        members = members[start:] + members[:start]
        anchor, after_anchor = members[0], members[1]
        step = spec.steps[position[anchor]]
        # The earliest step of a cycle has an explicit dependsOn: an implicit one points backwards.
        explicit = step.depends_on or []
        field = f"spec.steps[{position[anchor]}]"
        if after_anchor in explicit:
            field += f".dependsOn[{explicit.index(after_anchor)}]"
        path = " -> ".join([*members, anchor])
        problems.append(
            Problem(
                field,
                f'dependency cycle {path}: step "{anchor}" would wait for itself; '
                "remove one of these dependencies",
            )
        )
        knot = _reachable(remaining, anchor) & _reachable(_reversed(remaining), anchor)
        remaining = {
            name: tuple(dep for dep in deps if dep not in knot)
            for name, deps in remaining.items()
            if name not in knot
        }
    return problems


def _decision_problems(path: str, step: StepTemplate, dependencies: Dependencies) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for index, route in enumerate(step.routes or []):
        try:
            compile_condition(route.condition)
        except ConditionError as error:
            problems.append(
                Problem(
                    f"{path}.routes[{index}].condition",
                    f'decision "{step.name}": route condition does not compile: {error.problem}',
                )
            )
        field = f"{path}.routes[{index}].target"
        if route.target in seen:
            problems.append(
                Problem(
                    field,
                    f'decision "{step.name}" routes to "{route.target}" more than once; '
                    "join the conditions with || in one route",
                )
            )
            continue
        seen.add(route.target)
        problems += _target_problems(field, step.name, route.target, "routes to", dependencies)
    if step.default is not None:
        problems += _target_problems(f"{path}.default", step.name, step.default, "has default", dependencies)
    return problems


def _target_problems(
    field: str, decision: str, target: str, verb: str, dependencies: Dependencies
) -> list[Problem]:
    if target == decision:
        return [
            Problem(field, f'decision "{decision}" {verb} itself; a decision can only lead to later steps')
        ]
    if target not in dependencies:
        return [
            Problem(
                field,
                f'decision "{decision}" {verb} "{target}", which is not a step of this workflow'
                + _did_you_mean(target, dependencies),
            )
        ]
    if decision not in dependencies[target]:
        return [
            Problem(
                field,
                f'decision "{decision}" {verb} "{target}", but step "{target}" does not depend on it; '
                f'give step "{target}" dependsOn: [{decision}]',
            )
        ]
    return []


def _sleep_problems(field: str, name: str, duration: str) -> list[Problem]:
    try:
        seconds = parse_duration(duration)
    except ValueError as error:
        return [Problem(field, f'Sleep step "{name}": {error}')]
    if seconds <= 0:
        return [Problem(field, f'Sleep step "{name}" sleeps for {duration}; give a duration above 0')]
    if seconds > MAX_SLEEP_SECONDS:
        return [
            Problem(
                field,
                f'Sleep step "{name}" sleeps for {duration}, longer than 7 days (168h); '
                "use a Wait step for longer pauses",
            )
        ]
    return []


def _dynamic_injection_problems(spec: WorkflowSpec, dependencies: Dependencies) -> list[Problem]:
    points = list(spec.injection_points or [])
    problems = []
    # Inserted names must be unique across every rule too: one run may apply several rules.
    inserted_by: dict[str, str] = {}
    for index, step in enumerate(spec.steps):
        for rule_index, rule in enumerate(step.dynamic_injection or []):
            path = f"spec.steps[{index}].dynamicInjection[{rule_index}]"
            insertion = _Insertion(
                path=path,
                who=f'step "{step.name}"',
                after=rule.insert_after or step.name,
                new_steps=rule.steps,
                dependencies=dependencies,
                scope="this workflow",
            )
            try:
                compile_condition(rule.condition)
            except ConditionError as error:
                problems.append(
                    Problem(
                        f"{path}.condition",
                        f'step "{step.name}": dynamicInjection condition does not compile: {error.problem}',
                    )
                )
            problems += insertion.point_problems(
                f"{path}.insertAfter",
                points,
                advice=f'add "{insertion.after}" to spec.injectionPoints or insert after a listed step',
                listed="spec.injectionPoints",
            )
            for position, inserted in enumerate(rule.steps):
                if inserted.name in inserted_by and inserted.name not in dependencies:
                    problems.append(
                        Problem(
                            insertion.step_field(position, "name"),
                            f'step "{step.name}" inserts a step named "{inserted.name}", and so does '
                            f"{inserted_by[inserted.name]}; a run could have two steps of one name: "
                            "rename one of them",
                        )
                    )
            problems += insertion.step_problems()
            for inserted in rule.steps:
                inserted_by.setdefault(inserted.name, f'step "{step.name}" ({path})')
    return problems


@dataclass(frozen=True)
class _Insertion:
    """One group of steps to insert after `after`, by a dynamicInjection rule or a run-time request."""

    path: str  # where the group's fields start: "spec.steps[0].dynamicInjection[1]", or "" at run time
    who: str  # who inserts, as the messages name it: 'step "process"'
    after: str
    new_steps: Sequence[StepTemplate]
    dependencies: Dependencies  # of the steps the group is inserted into
    scope: str  # "this workflow" or "this run"

    def step_field(self, index: int, rest: str) -> str:
        return f"{self.path}.steps[{index}].{rest}" if self.path else f"steps[{index}].{rest}"

    def point_problems(self, field: str, points: Sequence[str], *, advice: str, listed: str) -> list[Problem]:
        if self.after not in self.dependencies:
            return [
                Problem(
                    field,
                    f'{self.who} inserts steps after "{self.after}", which is not a step of {self.scope}',
                )
            ]
        if self.after not in points:
            return [
                Problem(
                    field,
                    f'{self.who} inserts steps after "{self.after}", which is not listed in {listed}; '
                    + advice,
                )
            ]
        return []

    def step_problems(self) -> list[Problem]:
        """Name clashes, step types and dependencies of the inserted steps."""
        problems = []
        seen: set[str] = set()
        for index, step in enumerate(self.new_steps):
            if step.name in self.dependencies:
                problems.append(
                    Problem(
                        self.step_field(index, "name"),
                        f'{self.who} inserts a step named "{step.name}", but {self.scope} already has a step '
                        f'"{step.name}"; rename the inserted step',
                    )
                )
            elif step.name in seen:
                problems.append(
                    Problem(
                        self.step_field(index, "name"),
                        f'{self.who} inserts two steps named "{step.name}"; a run would have two steps of '
                        "one name: rename one of them",
                    )
                )
            seen.add(step.name)
            if step.type is StepType.DECISION:
                problems.append(
                    Problem(
                        self.step_field(index, "type"),
                        f'{self.who} inserts Decision step "{step.name}": routes inside inserted steps are '
                        "not supported; put the Decision step in the workflow itself",
                    )
                )
            if step.type is StepType.SLEEP and step.duration is not None:
                problems += _sleep_problems(self.step_field(index, "duration"), step.name, step.duration)
        if self.after in self.dependencies:  # otherwise that is reported, and "upstream" means nothing
            problems += self._dependency_problems()
        return problems

    def _dependency_problems(self) -> list[Problem]:
        own = {step.name for step in self.new_steps}
        upstream = _reachable(self.dependencies, self.after)
        problems = []
        for index, step in enumerate(self.new_steps):
            for position, dependency in enumerate(step.depends_on or []):
                field = self.step_field(index, f"dependsOn[{position}]")
                if dependency == step.name:
                    problems.append(
                        Problem(
                            field,
                            f'inserted step "{step.name}" (inserted by {self.who}) depends on itself; '
                            "remove it from its dependsOn",
                        )
                    )
                elif dependency not in own and dependency not in upstream:
                    problems.append(Problem(field, self._foreign_dependency(step.name, dependency)))
        graph = {
            step.name: tuple(dep for dep in step.depends_on or [] if dep in own and dep != step.name)
            for step in self.new_steps
        }
        if (cycle := find_cycle(graph)) is not None:
            index = next(index for index, step in enumerate(self.new_steps) if step.name == cycle[0])
            position = (self.new_steps[index].depends_on or []).index(cycle[1])
            problems.append(
                Problem(
                    self.step_field(index, f"dependsOn[{position}]"),
                    f"steps inserted by {self.who} form a dependency cycle {' -> '.join(cycle)}; "
                    "remove one of these dependencies",
                )
            )
        return problems

    def _foreign_dependency(self, name: str, dependency: str) -> str:
        after = self.after
        why = (
            f'"{dependency}" is not upstream of "{after}"'
            if dependency in self.dependencies
            else f'"{dependency}" is neither a step of {self.scope} nor one inserted with it'
        )
        return (
            f'inserted step "{name}" (inserted by {self.who} after "{after}") depends on "{dependency}", '
            f'but {why}; an inserted step may depend only on steps inserted with it, on "{after}", '
            f'or on steps that "{after}" depends on, since anything else could form a cycle once the '
            "steps are inserted"
        )


def _injection_point_problems(spec: WorkflowSpec) -> list[Problem]:
    names = {step.name for step in spec.steps}
    problems = []
    seen: set[str] = set()
    for index, point in enumerate(spec.injection_points or []):
        field = f"spec.injectionPoints[{index}]"
        if point not in names:
            problems.append(
                Problem(
                    field,
                    f'injection point "{point}" is not a step of this workflow; list only step names',
                )
            )
        elif point in seen:
            problems.append(Problem(field, f'injection point "{point}" is listed twice; remove one'))
        seen.add(point)
    return problems


# --- run time -----------------------------------------------------------------------------------


def validate_run_insertion(
    steps: WorkflowSpec | Sequence[HasDependencies],
    injection_points: Iterable[str] | None,
    after: str,
    new_steps: Sequence[StepTemplate],
) -> list[Problem]:
    """The insertion rules for steps added to a running run (`kubectl retcon run add-step`).

    `steps` is the run's definition (or a Workflow spec). Fields are relative to
    the request: `after`, `steps[0].name`, `steps[0].dependsOn[1]`.
    """
    definition = steps.steps if isinstance(steps, WorkflowSpec) else steps
    points = list(injection_points or [])
    insertion = _Insertion(
        path="",
        who="this request",
        after=after,
        new_steps=new_steps,
        dependencies=resolve_dependencies(definition),
        scope="this run",
    )
    advice = (
        f"insert after one of: {', '.join(points)}"
        if points
        else "this run allows no insertions: its Workflow lists no injectionPoints"
    )
    problems = insertion.point_problems("after", points, advice=advice, listed="the run's injectionPoints")
    problems += insertion.step_problems()
    return problems


# --- helpers ------------------------------------------------------------------------------------


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _reachable(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """`start` and everything reachable from it along the graph's edges."""
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        frontier.extend(graph.get(name, ()))
    return seen


def _reversed(graph: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    reverse: dict[str, list[str]] = {name: [] for name in graph}
    for name, targets in graph.items():
        for target in targets:
            reverse.setdefault(target, []).append(name)
    return reverse
