"""Pure builders for a run's children: an attempt's input record and Job, Events, step RBAC.

No I/O and no clock here: everything a builder needs comes in as arguments,
so the output can be tested byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from retcon.api.meta import API_VERSION
from retcon.api.run import DefinitionStep
from retcon.api.workflow import StepDefaults
from retcon.engine.model import StartAttempt
from retcon.kube.config import OperatorConfig
from retcon.kube.resources import (
    ATTEMPT_LABEL,
    INPUT_DIR,
    MAIN_CONTAINER,
    MANAGED_BY,
    MANAGER,
    OUTPUT_DIR,
    REPORTER_CONTAINER,
    REPORTER_DIR,
    RUN_LABEL,
    STEP_ID_LABEL,
    STEP_LABEL,
)

#: How long the reporter may keep trying to create its StepResult.
REPORT_DEADLINE_SECONDS = 20


def owner_reference(run_name: str, run_uid: str, *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "name": run_name,
        "uid": run_uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def attempt_labels(run_name: str, start: StartAttempt) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        RUN_LABEL: _label_value(run_name),
        STEP_LABEL: start.step.name,
        STEP_ID_LABEL: start.step.id,
        ATTEMPT_LABEL: str(start.attempt),
    }


def _label_value(text: str) -> str:
    """Run names may be 253 characters; label values only 63. Long ones get a stable hash."""
    if len(text) <= 63:
        return text
    return text[:52] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def render_input(run_name: str, namespace: str, run_uid: str, start: StartAttempt) -> dict[str, Any]:
    """The attempt's input record: an immutable ConfigMap, so what a step saw can be proven later."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": start.input_name,
            "namespace": namespace,
            "labels": attempt_labels(run_name, start),
            "ownerReferences": [owner_reference(run_name, run_uid, controller=False)],
        },
        "immutable": True,
        "data": {"input.json": json.dumps(start.input_document, separators=(",", ":"), sort_keys=True)},
    }


def _env(run_name: str, namespace: str, run_uid: str, start: StartAttempt) -> list[dict[str, Any]]:
    return [
        {"name": "RETCON_RUN", "value": run_name},
        {"name": "RETCON_RUN_UID", "value": run_uid},
        {"name": "RETCON_STEP_ID", "value": start.step.id},
        {"name": "RETCON_STEP_NAME", "value": start.step.name},
        {"name": "RETCON_ATTEMPT", "value": str(start.attempt)},
        {"name": "RETCON_RESULT_NAME", "value": start.job_name},
        {"name": "RETCON_INPUT", "value": f"{INPUT_DIR}/input.json"},
        {"name": "RETCON_OUTPUT", "value": f"{OUTPUT_DIR}/output.json"},
        {"name": "RETCON_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "RETCON_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def _merged_env(defaults: StepDefaults, step: DefinitionStep) -> list[dict[str, Any]]:
    """Workflow defaults first, then the step's own; a step's variable replaces a default of that name."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in [*(defaults.env or []), *(step.env or [])]:
        merged[str(entry.get("name"))] = entry
    return list(merged.values())


def render_job(
    run_name: str,
    namespace: str,
    run_uid: str,
    start: StartAttempt,
    defaults: StepDefaults,
    config: OperatorConfig,
) -> dict[str, Any]:
    """One attempt's Job: `backoffLimit: 0`, because retries are the engine's, each its own Job."""
    step = start.step
    labels = attempt_labels(run_name, start)
    env = _env(run_name, namespace, run_uid, start)
    user_env = _merged_env(defaults, step)
    timeout = step.timeout_seconds or defaults.timeout_seconds
    volumes = [
        {"name": "retcon-input", "configMap": {"name": start.input_name}},
        {"name": "retcon-output", "emptyDir": {}},
    ]
    mounts = [
        {"name": "retcon-input", "mountPath": INPUT_DIR, "readOnly": True},
        {"name": "retcon-output", "mountPath": OUTPUT_DIR},
    ]
    main: dict[str, Any] = {
        "name": MAIN_CONTAINER,
        "env": [*env, *user_env],
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    init_containers: list[dict[str, Any]] = []
    if step.function is not None:
        main["image"] = defaults.image or config.runner_image
        main["command"] = [config.python, "-m", "retcon_runner", "function"]
        main["env"].append({"name": "RETCON_FUNCTION", "value": step.function})
    else:
        main["image"] = step.image
        if step.command:
            main["command"] = list(step.command)
        if step.args:
            main["args"] = list(step.args)
        # A native sidecar: started first, told to stop (SIGTERM) once the step's container
        # has exited; it then reports the output file. The step's image needs no Python.
        # Its startup probe holds the step's container back until the reporter is listening for
        # that signal, so even a step that exits at once cannot beat it.
        volumes.append({"name": "retcon-reporter", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
        init_containers.append(
            {
                "name": REPORTER_CONTAINER,
                "image": config.runner_image,
                "restartPolicy": "Always",
                "command": [
                    config.python, "-m", "retcon_runner", "report",
                    f"--ready-file={REPORTER_DIR}/ready", f"--deadline={REPORT_DEADLINE_SECONDS}",
                ],
                "env": env,
                "volumeMounts": [
                    {"name": "retcon-output", "mountPath": OUTPUT_DIR, "readOnly": True},
                    {"name": "retcon-reporter", "mountPath": REPORTER_DIR},
                ],
                "startupProbe": {
                    "exec": {"command": ["test", "-e", f"{REPORTER_DIR}/ready"]},
                    "periodSeconds": 1,
                    "failureThreshold": 120,
                },
            }
        )  # fmt: skip
    resources = step.resources or defaults.resources
    if resources:
        main["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Room for the reporter to finish within its deadline after the step's container exits.
        "terminationGracePeriodSeconds": REPORT_DEADLINE_SECONDS + 10,
        "serviceAccountName": step.service_account_name
        or defaults.service_account_name
        or config.step_service_account,
        "enableServiceLinks": False,
        "containers": [main],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if timeout:
        pod_spec["activeDeadlineSeconds"] = int(timeout) + config.deadline_slack_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": start.job_name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(run_name, run_uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def render_event(
    *,
    namespace: str,
    involved: dict[str, Any],
    type: str,
    reason: str,
    message: str,
    now: datetime,
    sequence: int,
) -> dict[str, Any]:
    """A core/v1 Event about `involved` (an object reference), as `kubectl describe` shows it."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved['name']}.{int(now.timestamp() * 1e6):x}{sequence:03d}",
            "namespace": namespace,
        },
        "involvedObject": involved,
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": micro,
        "count": 1,
        "source": {"component": "retcon-operator"},
        "reportingComponent": "retcon.dev/operator",
        "reportingInstance": "retcon-operator",
        "action": reason,
    }


def render_step_rbac(namespace: str, service_account: str) -> list[dict[str, Any]]:
    """What step pods need, and no more: create StepResults in their own namespace."""
    labels = {MANAGED_BY: MANAGER}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "retcon-step", "namespace": namespace, "labels": labels},
            "rules": [{"apiGroups": ["retcon.dev"], "resources": ["stepresults"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": f"retcon-step-{service_account}"[:253],
                "namespace": namespace,
                "labels": labels,
            },
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "retcon-step"},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]
