"""Declarative interventions: `PauseRequest` holds a run, `Injection` replaces a step's output.

Both are GitOps-friendly: applying the same object again changes nothing more,
and each reports in its status what it did (or why it could not).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from retcon.api.meta import DNS_SUBDOMAIN, ApiModel, Condition, JsonObject, StatusModel
from retcon.api.workflow import cel

RunName = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
Reason = Field(min_length=1, max_length=1024)
IMMUTABLE: JsonDict = {
    "x-kubernetes-validations": [
        cel("self == oldSelf", "the spec is immutable: delete the object and create a new one")
    ]
}


class PauseRequestSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=IMMUTABLE)

    run_name: str = RunName
    reason: str = Reason


class PauseRequestPhase(StrEnum):
    PENDING = "Pending"
    HOLDING = "Holding"
    RELEASED = "Released"
    REJECTED = "Rejected"


class PauseRequestStatus(StatusModel):
    phase: PauseRequestPhase = PauseRequestPhase.PENDING
    message: str | None = None
    requested_by: str | None = None
    holding_since: datetime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class InjectionSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=IMMUTABLE)

    run_name: str = RunName
    step: str = Field(min_length=1, max_length=63, description="Step id (step_002) or name.")
    output: JsonObject = Field(description="The new output: a JSON object.")
    reason: str = Reason


class InjectionPhase(StrEnum):
    PENDING = "Pending"
    APPLIED = "Applied"
    REJECTED = "Rejected"


class InjectionStatus(StatusModel):
    phase: InjectionPhase = InjectionPhase.PENDING
    message: str | None = None
    step_id: str | None = None
    step_name: str | None = None
    previous_output: JsonObject | None = None
    applied_at: datetime | None = None
    applied_by: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
