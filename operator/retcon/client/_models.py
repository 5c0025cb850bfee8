"""What the SDK returns: frozen, typed views of a run, each with a JSON form for `--json`.

The JSON forms use snake_case keys (the paused state keeps exactly the shape of
the reference walkthrough: `pause_reason`, `next_step_hint`, `steps[{id, name,
injected, output}]`). Times are RFC 3339 in UTC, durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

JsonObject = dict[str, Any]

PauseOutcome = Literal["pause_requested", "paused"]

#: The kinds of entries a run's audit trail holds.
AUDIT_TYPES: tuple[str, ...] = (
    "run.pause_requested",
    "run.paused",
    "run.resumed",
    "step.injected",
    "step.dynamic_injection",
    "step.added",
    "step.signalled",
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    to_json = getattr(value, "to_json", None)
    return to_json() if callable(to_json) else value


def _fields_json(obj: Any) -> JsonObject:
    """Every field, by its name: datetimes as RFC 3339, sequences as lists, models as their JSON."""
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


@dataclass(frozen=True, kw_only=True)
class StepInfo:
    """One step of a run as its status shows it."""

    id: str
    name: str
    type: str
    phase: str
    injected: bool = False
    output: JsonObject | None = None
    #: The StepResult holding the output, when it is kept by reference (over 16 KiB).
    output_ref: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    route: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        return _seconds(self.started_at, self.finished_at)

    def to_json(self) -> JsonObject:
        return {**_fields_json(self), "duration_seconds": self.duration_seconds}


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """A run as `list` shows it."""

    name: str
    namespace: str
    workflow: str
    phase: str
    pause_reason: str | None = None
    next_step_hint: str | None = None
    current_step: str | None = None
    progress: str | None = None
    tenant: str | None = None
    message: str | None = None
    created_at: datetime | None = None

    def to_json(self) -> JsonObject:
        return _fields_json(self)


@dataclass(frozen=True, kw_only=True)
class RunDetail(RunSummary):
    """A run with its input and steps: what `get` shows and what `watch` yields."""

    input: JsonObject = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The `retcon.dev/pause` annotation is set (the operator may not have acted on it yet).
    pause_requested: bool = False
    steps: tuple[StepInfo, ...] = ()

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed", "Cancelled")

    def step(self, ref: str) -> StepInfo | None:
        """The step with this id or name, if the run has it."""
        return next((s for s in self.steps if ref in (s.id, s.name)), None)

    def to_json(self) -> JsonObject:
        return _fields_json(self)


@dataclass(frozen=True, kw_only=True)
class PausedStep:
    """A finished step of a paused (or failed) run: what an injection may replace."""

    id: str
    name: str
    phase: str
    injected: bool
    output: JsonObject | None

    def to_json(self) -> JsonObject:
        return {"id": self.id, "name": self.name, "injected": self.injected, "output": self.output}


@dataclass(frozen=True, kw_only=True)
class PausedState:
    run: str
    phase: str
    pause_reason: str | None
    next_step_hint: str | None
    steps: tuple[PausedStep, ...]

    def to_json(self) -> JsonObject:
        """The reference walkthrough's shape: `pause_reason`, `next_step_hint`, `steps`."""
        return {
            "pause_reason": self.pause_reason,
            "next_step_hint": self.next_step_hint,
            "steps": [step.to_json() for step in self.steps],
        }


@dataclass(frozen=True, kw_only=True)
class ResumeResult:
    run: str
    #: The step id the run re-runs from, if one was given.
    from_step: str | None = None
    #: PauseRequests deleted to release the run.
    released: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One entry of a run's audit trail (`status.audit[]`)."""

    type: str
    time: datetime
    actor: str
    step_id: str | None = None
    step_name: str | None = None
    reason: str | None = None
    previous_output: JsonObject | None = None
    new_output: JsonObject | None = None
    details: JsonObject | None = None

    def to_json(self) -> JsonObject:
        return _fields_json(self)


@dataclass(frozen=True, kw_only=True)
class StructureStep:
    """A step of a run's definition; `injected` marks a step inserted at run time."""

    name: str
    type: str
    #: "function package.module:callable", "image busybox", or "" for Sleep and Wait steps.
    work: str
    depends_on: tuple[str, ...]
    id: str | None = None
    injected: bool = False
    inserted_after: str | None = None
    #: The rule (`step/index`) or the user that inserted the step.
    inserted_by: str | None = None
    #: The step's phase in the run, once the run has a status for it.
    phase: str | None = None

    def to_json(self) -> JsonObject:
        return _fields_json(self)


@dataclass(frozen=True, kw_only=True)
class RunStructure:
    """The definition a run uses, what was inserted into it, and the order its steps run in."""

    run: str
    workflow: str
    #: False when the run has no snapshot yet and the Workflow object was read instead.
    from_snapshot: bool
    definition: tuple[StructureStep, ...]
    inserted: tuple[StructureStep, ...]
    execution_order: tuple[StructureStep, ...]

    def to_json(self) -> JsonObject:
        return {
            "run": self.run,
            "workflow": self.workflow,
            "from_snapshot": self.from_snapshot,
            "definition": [step.to_json() for step in self.definition],
            "inserted": [step.to_json() for step in self.inserted],
            "execution_order": [step.to_json() for step in self.execution_order],
        }


@dataclass(frozen=True, kw_only=True)
class PathStep:
    """A step that ran, in the order the steps started."""

    id: str
    name: str
    type: str
    phase: str
    started_at: datetime
    finished_at: datetime | None
    #: Inserted into the run at run time (dynamic injection or add-step).
    injected: bool
    #: Its output was replaced by an Injection.
    output_injected: bool
    attempts: int

    @property
    def duration_seconds(self) -> float | None:
        return _seconds(self.started_at, self.finished_at)

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "phase": self.phase,
            "started_at": _time(self.started_at),
            "finished_at": _time(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "injected": self.injected,
            "output_injected": self.output_injected,
            "attempts": self.attempts,
        }


@dataclass(frozen=True, kw_only=True)
class ExecutionPath:
    run: str
    steps: tuple[PathStep, ...]

    def to_json(self) -> JsonObject:
        return {"run": self.run, "steps": [step.to_json() for step in self.steps]}
