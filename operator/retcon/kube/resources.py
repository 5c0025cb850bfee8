"""Resource classes for Retcon's kinds, and the labels that tie children to their run."""

from __future__ import annotations

from typing import Any, cast

from lightkube.generic_resource import create_namespaced_resource

from retcon.api.meta import GROUP, VERSION

Workflow = create_namespaced_resource(GROUP, VERSION, "Workflow", "workflows")
WorkflowRun = create_namespaced_resource(GROUP, VERSION, "WorkflowRun", "workflowruns")
PauseRequest = create_namespaced_resource(GROUP, VERSION, "PauseRequest", "pauserequests")
Injection = create_namespaced_resource(GROUP, VERSION, "Injection", "injections")
StepResult = create_namespaced_resource(GROUP, VERSION, "StepResult", "stepresults")

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "retcon"
RUN_LABEL = f"{GROUP}/run"
STEP_LABEL = f"{GROUP}/step"
STEP_ID_LABEL = f"{GROUP}/step-id"
ATTEMPT_LABEL = f"{GROUP}/attempt"
MAIN_CONTAINER = "step"
REPORTER_CONTAINER = "retcon-report"
INPUT_DIR = "/var/run/retcon/input"
OUTPUT_DIR = "/var/run/retcon/output"
REPORTER_DIR = "/var/run/retcon/reporter"


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube object as the plain dict the rest of the operator works with."""
    return cast(dict[str, Any], obj.to_dict())


async def whoami(api: Any) -> str:
    """The authenticated user name of this client, as the API server sees it."""
    from lightkube.resources.authentication_v1 import SelfSubjectReview  # noqa: PLC0415 - once, at start

    review = await api.create(
        SelfSubjectReview.from_dict({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    )
    return str(review.status.userInfo.username)
