"""The pure builders of a run's children: what each attempt's Job and input record look like."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from retcon.api.run import DefinitionStep
from retcon.api.workflow import StepDefaults
from retcon.engine.model import StartAttempt
from retcon.engine.naming import input_name, job_name
from retcon.kube.config import OperatorConfig
from retcon.kube.render import render_event, render_input, render_job, render_step_rbac

UID = "5b0c8c2e-1111-2222-3333-444455556666"
CONFIG = OperatorConfig(runner_image="example.com/runner:1")


def start(**step: Any) -> StartAttempt:
    definition = DefinitionStep.model_validate({"id": "step_002", "name": "pay", "dependsOn": [], **step})
    job = job_name("order-1", UID, "step_002", 3)
    return StartAttempt(definition, 3, job, input_name(job), {"input": {"a": 1}, "state": {"a": 1}})


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_job_names_are_deterministic_dns_labels_unique_per_attempt() -> None:
    name = job_name("order-1", UID, "step_002", 3)
    assert name == "order-1-002-a3-5b0c8"
    assert job_name("order-1", UID, "step_002", 4) != name
    long = job_name("a" * 200 + ".x", UID, "step_123", 12)
    assert len(long) <= 63
    assert long.endswith("-123-a12-5b0c8")
    assert all(c.isalnum() or c == "-" for c in long)


def test_a_function_step_runs_the_step_runner_in_the_runner_image() -> None:
    job = render_job("order-1", "shop", UID, start(function="pkg.mod:pay"), StepDefaults(), CONFIG)
    pod = job["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert main["image"] == "example.com/runner:1"
    assert main["command"] == ["python", "-m", "retcon_runner", "function"]
    env = env_of(main)
    assert env["RETCON_FUNCTION"] == "pkg.mod:pay"
    assert env["RETCON_RESULT_NAME"] == job["metadata"]["name"]
    assert env["RETCON_ATTEMPT"] == "3"
    assert env["RETCON_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "initContainers" not in pod
    assert job["spec"]["backoffLimit"] == 0
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "retcon-step"


def test_an_image_step_gets_a_reporting_sidecar_held_back_until_it_listens() -> None:
    job = render_job(
        "order-1", "shop", UID, start(image="alpine:3", command=["sh", "-c"], args=["echo {} > $RETCON_OUTPUT"]),
        StepDefaults(), CONFIG,
    )  # fmt: skip
    pod = job["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert (main["image"], main["command"], main["args"]) == (
        "alpine:3",
        ["sh", "-c"],
        ["echo {} > $RETCON_OUTPUT"],
    )
    (reporter,) = pod["initContainers"]
    assert reporter["restartPolicy"] == "Always"  # a native sidecar
    assert reporter["image"] == "example.com/runner:1"
    assert reporter["startupProbe"]["exec"]["command"][0] == "test"
    assert any(m["mountPath"] == "/var/run/retcon/output" and m["readOnly"] for m in reporter["volumeMounts"])
    assert pod["terminationGracePeriodSeconds"] > 20


def test_defaults_apply_and_a_step_overrides_them() -> None:
    defaults = StepDefaults.model_validate(
        {
            "image": "mine:2",
            "serviceAccountName": "steps",
            "timeoutSeconds": 60,
            "env": [{"name": "A", "value": "default"}, {"name": "B", "value": "kept"}],
            "resources": {"limits": {"cpu": "1"}},
        }
    )
    job = render_job(
        "r", "ns", UID, start(function="m:f", env=[{"name": "A", "value": "step"}]), defaults, CONFIG
    )
    pod = job["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert (env["A"], env["B"]) == ("step", "kept")
    assert pod["containers"][0]["image"] == "mine:2"
    assert pod["serviceAccountName"] == "steps"
    assert pod["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    assert pod["activeDeadlineSeconds"] == 60 + CONFIG.deadline_slack_seconds


def test_children_are_owned_by_the_run_and_labelled_for_the_watches() -> None:
    attempt = start(function="m:f")
    job = render_job("r", "ns", UID, attempt, StepDefaults(), CONFIG)
    record = render_input("r", "ns", UID, attempt)
    for obj in (job, record):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("WorkflowRun", UID)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "retcon"
        assert (labels["retcon.dev/run"], labels["retcon.dev/step-id"], labels["retcon.dev/attempt"]) == (
            "r",
            "step_002",
            "3",
        )
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert record["metadata"]["ownerReferences"][0]["controller"] is False


def test_a_long_run_name_still_makes_valid_label_values() -> None:
    name = "r" * 200
    labels = render_job(name, "ns", UID, start(function="m:f"), StepDefaults(), CONFIG)["metadata"]["labels"]
    assert len(labels["retcon.dev/run"]) <= 63
    other = render_job("r" * 199 + "s", "ns", UID, start(function="m:f"), StepDefaults(), CONFIG)["metadata"][
        "labels"
    ]
    assert other["retcon.dev/run"] != labels["retcon.dev/run"]


def test_the_input_record_is_immutable_canonical_json() -> None:
    record = render_input("r", "ns", UID, start(function="m:f"))
    assert record["immutable"] is True
    assert json.loads(record["data"]["input.json"]) == {"input": {"a": 1}, "state": {"a": 1}}
    assert record["data"]["input.json"] == '{"input":{"a":1},"state":{"a":1}}'


def test_step_pods_may_only_create_step_results() -> None:
    account, role, binding = render_step_rbac("ns", "retcon-step")
    assert account["kind"] == "ServiceAccount"
    assert role["rules"] == [{"apiGroups": ["retcon.dev"], "resources": ["stepresults"], "verbs": ["create"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "retcon-step", "namespace": "ns"}]


def test_events_reference_the_run_and_have_unique_names() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    involved = {
        "kind": "WorkflowRun",
        "name": "r",
        "namespace": "ns",
        "uid": UID,
        "apiVersion": "retcon.dev/v1alpha1",
    }
    first = render_event(
        namespace="ns",
        involved=involved,
        type="Normal",
        reason="StepStarted",
        message="m",
        now=now,
        sequence=0,
    )
    second = render_event(
        namespace="ns",
        involved=involved,
        type="Normal",
        reason="StepStarted",
        message="m",
        now=now,
        sequence=1,
    )
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["involvedObject"] == involved
    assert first["lastTimestamp"] == "2026-01-02T03:04:05Z"
