"""The step graph: who depends on whom, in what order steps may run, what lies downstream.

Pure functions over step names. A step's `dependsOn`, when omitted, is the
previous step in the list; `[]` makes it a root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol


class HasDependencies(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def depends_on(self) -> list[str] | None: ...


Dependencies = Mapping[str, tuple[str, ...]]


def resolve_dependencies(steps: Sequence[HasDependencies]) -> dict[str, tuple[str, ...]]:
    """Each step's dependencies, with the implicit "previous step" made explicit."""
    resolved: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for step in steps:
        if step.depends_on is None:
            resolved[step.name] = (previous,) if previous is not None else ()
        else:
            resolved[step.name] = tuple(dict.fromkeys(step.depends_on))  # de-duplicated, in order
        previous = step.name
    return resolved


def find_cycle(dependencies: Dependencies) -> list[str] | None:
    """A dependency cycle as a path `[a, b, ..., a]`, or None. Unknown names are ignored."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(dependencies, white)
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = grey
        stack.append(name)
        for dependency in dependencies[name]:
            if dependency not in colour:
                continue
            if colour[dependency] == grey:
                return [*stack[stack.index(dependency) :], dependency]
            if colour[dependency] == white and (cycle := visit(dependency)):
                return cycle
        stack.pop()
        colour[name] = black
        return None

    for name in dependencies:
        if colour[name] == white and (cycle := visit(name)):
            return cycle
    return None


def topological_order(dependencies: Dependencies) -> list[str]:
    """Steps in an order that respects every dependency; ties keep definition order."""
    order: list[str] = []
    placed: set[str] = set()
    pending = list(dependencies)
    while pending:
        progressed = False
        for name in list(pending):
            if all(dep in placed or dep not in dependencies for dep in dependencies[name]):
                order.append(name)
                placed.add(name)
                pending.remove(name)
                progressed = True
                break  # restart from the top so earlier definitions win ties
        if not progressed:
            raise ValueError(f"dependency cycle: {' -> '.join(find_cycle(dependencies) or pending)}")
    return order


def dependents(dependencies: Dependencies) -> dict[str, list[str]]:
    """The reverse graph: for each step, the steps that depend on it directly."""
    reverse: dict[str, list[str]] = {name: [] for name in dependencies}
    for name, deps in dependencies.items():
        for dep in deps:
            reverse.setdefault(dep, []).append(name)
    return reverse


def downstream(dependencies: Dependencies, start: Iterable[str]) -> set[str]:
    """`start` and every step that depends on it, directly or not."""
    reverse = dependents(dependencies)
    seen: set[str] = set()
    frontier = list(start)
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        frontier.extend(reverse.get(name, []))
    return seen
