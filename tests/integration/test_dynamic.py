"""Dynamic step injection's guard rails on the real control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("operator")


def sh(name: str, script: str = "echo '{}' > $RETCON_OUTPUT", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def workflow(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": steps, **spec},
    }


def test_a_rule_inserting_after_an_unlisted_point_is_refused_at_apply_time(
    cluster: ClusterHandle, namespace: str
) -> None:
    bad = workflow(
        "plugins",
        [
            sh("validate-input", dynamicInjection=[{"condition": "true", "reason": "plugins", "insertAfter": "process-data",
                                                     "steps": [{"name": "plugin", "function": "m:f"}]}]),
            sh("process-data"),
        ],
        injectionPoints=["validate-input"],
    )  # fmt: skip
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert (
        'step "validate-input" inserts steps after "process-data", which is not listed in spec.injectionPoints'
        in result.stderr
    )


def test_a_rule_without_a_reason_is_refused(cluster: ClusterHandle, namespace: str) -> None:
    bad = workflow("plugins", [sh("a", dynamicInjection=[{"condition": "true", "steps": [{"name": "p", "function": "m:f"}]}])],
                   injectionPoints=["a"])  # fmt: skip
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "reason" in result.stderr and "Required value" in result.stderr


@pytest.fixture
def paused_run(cluster: ClusterHandle, namespace: str) -> tuple[str, Path]:
    alice = cluster.user("alice")
    cluster.kubectl(
        "create", "rolebinding", "alice", "--clusterrole=retcon-intervene", "--user=alice", "-n", namespace
    )
    cluster.apply(
        workflow("pluggable", [sh("validate-input", "sleep 2; echo '{\"ok\": true}' > $RETCON_OUTPUT"), sh("process-data")],
                 injectionPoints=["validate-input"]),
        namespace,
    )  # fmt: skip
    cluster.apply({"apiVersion": "retcon.dev/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": "r"},
                   "spec": {"workflowRef": {"name": "pluggable"}, "tenant": "acme"}}, namespace)  # fmt: skip
    wait_for(
        "the first step to run",
        lambda: (
            cluster.get_json("workflowrun", "r", "-n", namespace).get("status", {}).get("currentStep")
            == "validate-input"
        ),
    )
    cluster.kubectl("annotate", "workflowrun", "r", "retcon.dev/pause=true", "-n", namespace, as_user=alice)
    wait_for(
        "the pause",
        lambda: cluster.get_json("workflowrun", "r", "-n", namespace)["status"]["phase"] == "Paused",
    )
    return "r", alice


def add_step_annotation(after: str, name: str, reason: str = "tenant acme's custom validation") -> str:
    step = {
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", "echo '{\"custom\": true}' > $RETCON_OUTPUT"],
    }
    return "retcon.dev/add-step=" + json.dumps({"after": after, "step": step, "reason": reason})


def test_a_step_added_to_a_paused_run_at_an_allowed_point_runs_and_is_audited(
    cluster: ClusterHandle, namespace: str, paused_run: tuple[str, Path]
) -> None:
    run, alice = paused_run
    cluster.kubectl(
        "annotate",
        "workflowrun",
        run,
        add_step_annotation("validate-input", "custom-validation"),
        "-n",
        namespace,
        as_user=alice,
    )
    added = wait_for("the step to be added", lambda: any(
        s["name"] == "custom-validation" for s in cluster.get_json("workflowrun", run, "-n", namespace)["status"]["definition"]["steps"]))  # fmt: skip
    assert added
    cluster.kubectl("annotate", "workflowrun", run, "retcon.dev/pause-", "-n", namespace, as_user=alice)
    done = wait_for(
        "the run to finish",
        lambda: (
            (o := cluster.get_json("workflowrun", run, "-n", namespace))["status"]["phase"]
            in ("Succeeded", "Failed")
            and o
        ),
        timeout=60,
    )
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    definition = {s["name"]: s for s in done["status"]["definition"]["steps"]}
    assert definition["custom-validation"]["injected"] is True
    assert definition["custom-validation"]["insertedBy"] == "alice"
    assert definition["process-data"]["dependsOn"] == ["custom-validation"]
    (entry,) = [e for e in done["status"]["audit"] if e["type"] == "step.added"]
    assert (entry["actor"], entry["stepName"], entry["reason"]) == (
        "alice",
        "custom-validation",
        "tenant acme's custom validation",
    )
    assert entry["details"]["insertAfter"] == "validate-input"
    steps = {s["name"]: s for s in done["status"]["steps"]}
    assert steps["custom-validation"]["output"] == {"custom": True}
    assert steps["custom-validation"]["finishedAt"] <= steps["process-data"]["startedAt"]
    assert "retcon.dev/add-step" not in done["metadata"].get("annotations", {})


def test_adding_a_step_outside_the_allowed_points_is_refused(
    cluster: ClusterHandle, namespace: str, paused_run: tuple[str, Path]
) -> None:
    run, alice = paused_run
    result = cluster.kubectl("annotate", "workflowrun", run, add_step_annotation("process-data", "sneaky"), "-n", namespace,
                             as_user=alice, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "cannot add step sneaky" in result.stderr
    assert "validate-input" in result.stderr  # it says where steps may go
    definition = cluster.get_json("workflowrun", run, "-n", namespace)["status"]["definition"]["steps"]
    assert [s["name"] for s in definition] == ["validate-input", "process-data"]
