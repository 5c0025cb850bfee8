"""Shared pieces of the API: the group, the base model, and Kubernetes-style conditions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "retcon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A DNS-1123 label: what Kubernetes accepts as a container or Job name part.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS-1123 subdomain: what Kubernetes accepts as an object name.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: "package.module:callable", as the step runner imports it.
FUNCTION_REF = (
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python.

    Unknown fields are refused, so a typo is an error rather than silently
    dropped; the CRD's structural schema enforces the same at `kubectl apply`.
    """

    model_config = ConfigDict(
        alias_generator=AliasGenerator(to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        validate_assignment=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase keys, nothing unset or None."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status is written by the operator; reading an older or newer one must not fail."""

    model_config = ConfigDict(extra="ignore")


JsonObject = dict[str, Any]
"""Any JSON object: schemas mark it `x-kubernetes-preserve-unknown-fields`."""


class Condition(StatusModel):
    """A `metav1.Condition`."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None
