"""`Workflow`: a reusable definition — steps, defaults, pause behaviour, injection rules.

These models are the schema: the CRD in `crds/` is generated from them. Rules
that need the whole workflow (dependencies exist, no cycles, conditions
compile) live in `retcon.engine.validation` and run in the admission webhook;
the simple ones are also CEL rules here, so they hold even without it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict, JsonValue

from retcon.api.meta import DNS_LABEL, FUNCTION_REF, ApiModel, JsonObject

StepName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Expression = Annotated[str, Field(min_length=1, max_length=2048)]
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def cel(rule: str, message: str, *, message_expression: str | None = None) -> JsonDict:
    """An `x-kubernetes-validations` entry: a CEL rule the apiserver checks at apply time."""
    entry: JsonDict = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    return entry


class StepType(StrEnum):
    STANDARD = "Standard"
    DECISION = "Decision"
    SLEEP = "Sleep"
    WAIT = "Wait"


class PauseBehavior(StrEnum):
    HOLD = "Hold"
    RELEASE = "Release"


class Backoff(ApiModel):
    """Delay before attempt n+1: `durationSeconds * factor**(n-1)`, capped."""

    duration_seconds: float = Field(default=1.0, ge=0, le=86400)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_duration_seconds: float = Field(default=300.0, ge=0, le=86400)


class RetryPolicy(ApiModel):
    limit: int = Field(default=0, ge=0, le=100, description="Retries after the first attempt.")
    backoff: Backoff = Field(default_factory=Backoff)


class Route(ApiModel):
    condition: Expression = Field(description="CEL over `input`, `steps` and `state`.")
    target: StepName


_STEP_RULES: list[JsonValue] = [
    cel(
        "!(has(self.function) && has(self.image))",
        "a step runs either a function or an image, not both",
    ),
    cel(
        "self.type != 'Standard' || has(self.function) || has(self.image)",
        "a Standard step needs a function or an image",
    ),
    cel(
        "!(self.type == 'Sleep' || self.type == 'Wait') || (!has(self.function) && !has(self.image))",
        "Sleep and Wait steps run no code: remove function and image",
    ),
    cel("self.type != 'Sleep' || has(self.duration)", "a Sleep step needs a duration, e.g. 30s"),
    cel("!has(self.duration) || self.type == 'Sleep'", "only Sleep steps have a duration"),
    cel(
        "self.type != 'Decision' || (has(self.routes) && size(self.routes) > 0)",
        "a Decision step needs at least one route",
    ),
    cel(
        "(!has(self.routes) && !has(self.default)) || self.type == 'Decision'",
        "only Decision steps have routes and a default",
    ),
    cel(
        "!has(self.command) && !has(self.args) || has(self.image)",
        "command and args go with an image; a function step runs in the step-runner image",
    ),
]


class StepTemplate(ApiModel):
    """One step. `Step` adds the dynamic injection rules; inserted steps cannot nest them."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _STEP_RULES})

    name: StepName
    type: StepType = StepType.STANDARD
    description: str | None = Field(default=None, max_length=1024)
    function: str | None = Field(
        default=None,
        max_length=512,
        pattern=FUNCTION_REF,
        description='A Python callable run by the step runner: "package.module:callable".',
    )
    image: str | None = Field(default=None, min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    depends_on: list[StepName] | None = Field(
        default=None,
        max_length=50,
        description="Steps that must finish first. Omitted: the previous step in the list; []: a root.",
    )
    retry: RetryPolicy | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    env: list[JsonObject] | None = Field(default=None, max_length=128, description="Kubernetes EnvVar list.")
    resources: JsonObject | None = Field(default=None, description="Kubernetes ResourceRequirements.")
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL)
    routes: list[Route] | None = Field(default=None, max_length=50)
    default: StepName | None = Field(default=None, description="Decision: the target when no route holds.")
    duration: str | None = Field(default=None, max_length=64, pattern=DURATION)

    @model_validator(mode="after")
    def _one_kind_of_work(self) -> StepTemplate:
        if self.function and self.image:
            raise ValueError(f"step {self.name}: a step runs either a function or an image, not both")
        if self.type is StepType.STANDARD and not (self.function or self.image):
            raise ValueError(f"step {self.name}: a Standard step needs a function or an image")
        if self.type is StepType.SLEEP and not self.duration:
            raise ValueError(f"step {self.name}: a Sleep step needs a duration, e.g. 30s")
        if self.type is StepType.DECISION and not self.routes:
            raise ValueError(f"step {self.name}: a Decision step needs at least one route")
        return self


class DynamicInjection(ApiModel):
    """Steps to insert after `insertAfter` when `condition` holds as this step finishes."""

    condition: Expression
    steps: list[StepTemplate] = Field(min_length=1, max_length=20)
    insert_after: StepName | None = Field(default=None, description="Default: the step carrying the rule.")
    allowed_tenants: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None, max_length=100, description="Omitted: every tenant. Runs of other tenants are skipped."
    )
    reason: str = Field(min_length=1, max_length=1024, description="Why this workflow needs dynamic steps.")


class Step(StepTemplate):
    dynamic_injection: list[DynamicInjection] | None = Field(default=None, max_length=10)


class StepDefaults(ApiModel):
    """Applied to every step that does not set its own."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Image for function steps (a step-runner image).",
    )
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL)
    retry: RetryPolicy | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    env: list[JsonObject] | None = Field(default=None, max_length=128)
    resources: JsonObject | None = None


class WorkflowSpec(ApiModel):
    # Whether each dynamicInjection.insertAfter is listed is checked by the admission webhook,
    # which names the step: as a CEL rule it is over the apiserver's cost budget.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.injectionPoints)"
                    " || self.injectionPoints.all(p, self.steps.exists(s, s.name == p))",
                    "every spec.injectionPoints entry must name a step of this workflow",
                ),
            ]
        }
    )

    description: str | None = Field(default=None, max_length=4096)
    steps: list[Step] = Field(
        min_length=1,
        max_length=200,
        # A map keyed by name: the apiserver itself refuses a duplicate step name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    defaults: StepDefaults | None = None
    pause_behavior: PauseBehavior = PauseBehavior.HOLD
    injection_points: list[StepName] | None = Field(
        default=None,
        max_length=50,
        description="The only steps after which steps may be inserted, by a rule or at run time.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> WorkflowSpec:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice; step names must be unique")
            seen.add(step.name)
        return self
