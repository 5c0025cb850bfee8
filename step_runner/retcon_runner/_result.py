"""The StepResult object: who is reporting (from the environment), its body, and publishing it.

``StepIdentity.from_env`` reads what the operator's Job renderer sets;
``build_step_result`` is pure and gives the exact object to POST;
``publish_result`` creates it and says how that went on stderr.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retcon_runner._api import DEFAULT_DEADLINE_SECONDS, ApiError, ApiServer, create_step_result
from retcon_runner._errors import RunnerConfigError
from retcon_runner._outcome import StepOutcome

GROUP = "retcon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "StepResult"
PLURAL = "stepresults"
RUN_KIND = "WorkflowRun"

RUN_LABEL = f"{GROUP}/run"
STEP_LABEL = f"{GROUP}/step"
ATTEMPT_LABEL = f"{GROUP}/attempt"

_REQUIRED = (
    "RETCON_RESULT_NAME",
    "RETCON_NAMESPACE",
    "RETCON_RUN",
    "RETCON_RUN_UID",
    "RETCON_STEP_ID",
    "RETCON_STEP_NAME",
    "RETCON_ATTEMPT",
)


@dataclass(frozen=True)
class StepIdentity:
    """The attempt being reported, as the operator named it in the step container's environment."""

    result_name: str
    namespace: str
    run_name: str
    run_uid: str
    step_id: str
    step_name: str
    attempt: int
    pod_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StepIdentity:
        missing = [name for name in _REQUIRED if not environ.get(name)]
        if missing:
            raise RunnerConfigError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; "
                "this container must be started by the Retcon operator"
            )
        raw_attempt = environ["RETCON_ATTEMPT"]
        try:
            attempt = int(raw_attempt)
        except ValueError:
            raise RunnerConfigError(f"RETCON_ATTEMPT must be an integer, got {raw_attempt!r}") from None
        return cls(
            result_name=environ["RETCON_RESULT_NAME"],
            namespace=environ["RETCON_NAMESPACE"],
            run_name=environ["RETCON_RUN"],
            run_uid=environ["RETCON_RUN_UID"],
            step_id=environ["RETCON_STEP_ID"],
            step_name=environ["RETCON_STEP_NAME"],
            attempt=attempt,
            # The downward API sets it; a pod's hostname is its name otherwise.
            pod_name=environ.get("RETCON_POD_NAME") or socket.gethostname(),
        )


def build_step_result(identity: StepIdentity, outcome: StepOutcome) -> dict[str, Any]:
    """The StepResult to create for ``outcome``. Pure."""
    spec: dict[str, Any] = {
        "runName": identity.run_name,
        "stepId": identity.step_id,
        "stepName": identity.step_name,
        "attempt": identity.attempt,
        "podName": identity.pod_name,
        "outcome": outcome.outcome.value,
    }
    if outcome.succeeded:
        spec["output"] = outcome.output if outcome.output is not None else {}
    elif outcome.error is not None:
        spec["error"] = {"type": outcome.error.type, "message": outcome.error.message}
    spec["outputBytes"] = outcome.output_bytes
    if outcome.output_missing:
        spec["outputMissing"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": identity.result_name,
            "namespace": identity.namespace,
            "labels": {
                RUN_LABEL: identity.run_name,
                STEP_LABEL: identity.step_id,
                ATTEMPT_LABEL: str(identity.attempt),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": RUN_KIND,
                    "name": identity.run_name,
                    "uid": identity.run_uid,
                }
            ],
        },
        "spec": spec,
    }


log = logging.getLogger("retcon.runner")


def publish_result(
    server: ApiServer,
    identity: StepIdentity,
    outcome: StepOutcome,
    *,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> bool:
    """Create the StepResult for ``outcome``; False (with the reason on stderr) if that failed."""
    body = build_step_result(identity, outcome)
    name = f"{identity.namespace}/{identity.result_name}"
    try:
        created = create_step_result(server, body, deadline=deadline)
    except ApiError as exc:
        log.error("Failed to create StepResult %s: %s", name, exc)
        return False
    if created:
        log.info("Created StepResult %s (outcome %s)", name, outcome.outcome.value)
    else:
        log.info("StepResult %s already exists: an earlier try of this attempt reported it", name)
    return True
