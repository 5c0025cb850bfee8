"""The review examples: dynamic injection and its Decision alternative, both paths each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("operator")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(cluster: ClusterHandle, namespace: str, folder: str, run_file: str) -> dict[str, Any]:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / folder / "workflow.yaml"))
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / folder / run_file))
    name = yaml.safe_load((EXAMPLES / folder / run_file).read_text())["metadata"]["name"]
    obj: dict[str, Any] = wait_for(
        f"run {name} to finish",
        lambda: (
            (o := cluster.get_json("workflowrun", name, "-n", namespace)).get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and o
        ),
        timeout=90,
    )
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    return obj


def executed(obj: dict[str, Any]) -> list[str]:
    ran = [
        s
        for s in obj["status"]["steps"]
        if s.get("startedAt") and s["phase"] == "Succeeded" and s.get("attempts")
    ]
    return [s["name"] for s in sorted(ran, key=lambda s: s["startedAt"])]


def test_a_low_value_order_gets_no_inserted_step(cluster: ClusterHandle, namespace: str) -> None:
    obj = run_example(cluster, namespace, "dynamic-review", "run-low.yaml")
    assert executed(obj) == ["process-order", "ship-order"]
    assert not any(s.get("injected") for s in obj["status"]["definition"]["steps"])
    assert not [e for e in obj["status"]["audit"] if e["type"] == "step.dynamic_injection"]


def test_a_high_value_order_of_an_allowed_tenant_gets_the_review_inserted(
    cluster: ClusterHandle, namespace: str
) -> None:
    obj = run_example(cluster, namespace, "dynamic-review", "run-high.yaml")
    assert executed(obj) == ["process-order", "high-value-review", "ship-order"]
    review = next(s for s in obj["status"]["definition"]["steps"] if s["name"] == "high-value-review")
    assert (review["id"], review["injected"], review["insertedAfter"]) == ("step_003", True, "process-order")
    assert review["insertedBy"] == "process-order/dynamicInjection[0]"
    ship = next(s for s in obj["status"]["definition"]["steps"] if s["name"] == "ship-order")
    assert ship["dependsOn"] == ["high-value-review"]
    (entry,) = [e for e in obj["status"]["audit"] if e["type"] == "step.dynamic_injection"]
    assert entry["details"]["inserted"] is True
    assert entry["details"]["conditionValue"] is True
    assert entry["details"]["condition"] == "state.amount > 10000"
    assert entry["details"]["steps"] == [
        {"name": "high-value-review", "type": "Standard", "function": "retcon_examples.review:review"}
    ]
    assert entry["reason"].startswith("Multi-tenant SaaS")
    shipped = next(s for s in obj["status"]["steps"] if s["name"] == "ship-order")
    assert shipped["output"]["reviewed"] is True


def test_a_tenant_not_on_the_allow_list_does_not_get_the_steps(
    cluster: ClusterHandle, namespace: str
) -> None:
    obj = run_example(cluster, namespace, "dynamic-review", "run-other-tenant.yaml")
    assert executed(obj) == ["process-order", "ship-order"]
    (entry,) = [e for e in obj["status"]["audit"] if e["type"] == "step.dynamic_injection"]
    assert entry["details"]["inserted"] is False
    assert "tenant 'initech' is not in allowedTenants" in entry["details"]["why"]


@pytest.mark.parametrize(("run_file", "path"), [
    ("run-low.yaml", ["process-order", "standard-processing", "ship-order"]),
    ("run-high.yaml", ["process-order", "high-value-review", "ship-order"]),
])  # fmt: skip
def test_the_decision_alternative_takes_the_same_paths_with_every_step_in_the_file(
    cluster: ClusterHandle, namespace: str, run_file: str, path: list[str]
) -> None:
    obj = run_example(cluster, namespace, "decision-review", run_file)
    assert executed(obj) == path
    assert not any(s.get("injected") for s in obj["status"]["definition"]["steps"])


def test_structure_and_path_show_what_ran_with_the_inserted_step_marked(
    cluster: ClusterHandle, namespace: str
) -> None:
    run_example(cluster, namespace, "dynamic-review", "run-high.yaml")
    base = [sys.executable, "-m", "retcon.cli", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]
    structure = json.loads(
        subprocess.run(
            [*base, "run", "structure", "dynamic-high", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [s["name"] for s in structure["definition"]] == ["process-order", "ship-order"]
    (inserted,) = structure["inserted"]
    assert (inserted["name"], inserted["inserted_after"], inserted["inserted_by"]) == (
        "high-value-review", "process-order", "process-order/dynamicInjection[0]")  # fmt: skip
    assert [(s["name"], s["injected"]) for s in structure["execution_order"]] == [
        ("process-order", False), ("high-value-review", True), ("ship-order", False)]  # fmt: skip
    table = subprocess.run(
        [*base, "run", "structure", "dynamic-high"], capture_output=True, text=True, check=True
    ).stdout
    marked = [line for line in table.splitlines() if "[INJECTED]" in line]
    assert marked and all("high-value-review" in line for line in marked)
    path = json.loads(
        subprocess.run(
            [*base, "run", "path", "dynamic-high", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [(s["name"], s["injected"]) for s in path["steps"]] == [
        ("process-order", False), ("high-value-review", True), ("ship-order", False)]  # fmt: skip
    assert all(s["duration_seconds"] >= 0 for s in path["steps"])
