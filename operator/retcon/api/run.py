"""`WorkflowRun`: one execution of a Workflow; its status is the run's history.

The status is written only by the operator. It carries the definition the run
uses (a snapshot, so editing the Workflow never changes a running run), each
step's phase, output and attempts, the audit trail, and conditions.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field

from retcon.api.meta import DNS_SUBDOMAIN, ApiModel, Condition, JsonObject, StatusModel
from retcon.api.workflow import PauseBehavior, Step, StepDefaults, StepName, cel


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    PAUSING = "Pausing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)


class StepPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"

    @property
    def terminal(self) -> bool:
        return self in (StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED)


class PauseReason(StrEnum):
    INJECTION = "injection"
    SLEEP = "sleep"
    WAIT = "wait"


class WorkflowRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class WorkflowRunSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "a run's spec is immutable: start a new run instead")
            ]
        }
    )

    workflow_ref: WorkflowRef
    input: JsonObject = Field(default_factory=dict, description="Any JSON object; the run's input.")
    tenant: str | None = Field(default=None, min_length=1, max_length=253)


# --- status ----------------------------------------------------------------------------------------


class DefinitionStep(Step):
    """A step of the run's definition snapshot, with the identity the run gave it."""

    id: str = Field(pattern=r"^step_[0-9]{3,}$")
    injected: bool = False
    inserted_after: StepName | None = None
    inserted_by: str | None = Field(default=None, description="The rule (`step/index`) or the actor.")
    model_config = ConfigDict(extra="ignore")


class SourceRef(StatusModel):
    name: str
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class Definition(StatusModel):
    """The snapshot of the Workflow a run uses, resolved: ids assigned, injected steps marked."""

    source: SourceRef
    steps: list[DefinitionStep]
    pause_behavior: PauseBehavior = PauseBehavior.HOLD
    injection_points: list[str] = Field(default_factory=list)
    defaults: StepDefaults = Field(default_factory=StepDefaults)


class ObjectRef(StatusModel):
    """Where a large value is kept outside the run object."""

    kind: str
    name: str
    key: str | None = None
    bytes: int | None = None
    sha256: str | None = None


class Attempt(StatusModel):
    """One try of a step: its own Job, its own immutable input record."""

    number: int = Field(ge=1)
    job: str | None = None
    phase: StepPhase = StepPhase.PENDING
    not_before: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    input_ref: ObjectRef | None = Field(
        default=None, description="The immutable input this attempt was given."
    )


class StepStatus(StatusModel):
    id: str
    name: str
    type: str = "Standard"
    phase: StepPhase = StepPhase.PENDING
    output: JsonObject | None = None
    output_ref: ObjectRef | None = None
    injected: bool = Field(default=False, description="The output was replaced by an injection.")
    attempts: list[Attempt] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    route: str | None = Field(default=None, description="Decision steps: the target taken.")
    wake_at: datetime | None = Field(default=None, description="Sleep steps: when the sleep ends.")
    deadline: datetime | None = Field(default=None, description="Wait steps: when waiting times out.")


class AuditEntry(StatusModel):
    type: str
    time: datetime
    actor: str
    step_id: str | None = None
    step_name: str | None = None
    reason: str | None = None
    previous_output: JsonObject | None = None
    new_output: JsonObject | None = None
    details: JsonObject | None = None


class WorkflowRunStatus(StatusModel):
    phase: RunPhase = RunPhase.PENDING
    pause_reason: PauseReason | None = None
    next_step_hint: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_step: str | None = Field(default=None, description="Names of running steps, for `kubectl get`.")
    progress: str | None = Field(default=None, description="Finished/total steps, e.g. 3/5.")
    definition: Definition | None = None
    steps: list[StepStatus] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    last_intent: int = Field(default=0, description="The last intervention (by sequence) recorded in audit.")
    released_at: datetime | None = Field(
        default=None, description="PauseRequests created before this no longer hold the run (Release)."
    )
