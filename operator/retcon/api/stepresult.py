"""`StepResult`: the narrow channel through which a step pod reports its result.

A step pod's ServiceAccount may only *create* these; it never touches the run.
The operator accepts a result only from the pod of the attempt it expects
(the object names its pod, and admission checks that the pod named is the one
whose token created it), then folds it into the run's status.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from retcon.api.meta import ApiModel, JsonObject
from retcon.api.workflow import cel

MAX_OUTPUT_BYTES = 1024 * 1024


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NON_RETRYABLE = "NonRetryable"


class StepError(ApiModel):
    type: str = Field(max_length=256)
    message: str = Field(max_length=8192)


class StepResultSpec(ApiModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "x-kubernetes-validations": [cel("self == oldSelf", "a step result is immutable")]
        },
    )

    run_name: str = Field(max_length=253)
    step_id: str = Field(max_length=63)
    step_name: str = Field(max_length=63)
    attempt: int = Field(ge=1)
    pod_name: str = Field(max_length=253)
    outcome: Outcome
    output: JsonObject | None = None
    output_bytes: int | None = Field(default=None, ge=0)
    output_missing: bool | None = None
    error: StepError | None = None
