"""Every example in examples/ runs end to end on the real control plane, as a user would apply it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("operator")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _apply_file(cluster: ClusterHandle, namespace: str, path: Path) -> list[dict[str, Any]]:
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _finish(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = wait_for(
        f"run {name} to finish",
        lambda: (
            (o := cluster.get_json("workflowrun", name, "-n", namespace)).get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and o
        ),
        timeout=90,
    )
    return obj


def _steps(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in obj["status"]["steps"]}


def test_every_example_folder_has_a_workflow_and_runs() -> None:
    for folder in sorted(
        p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith(("_", "retcon_"))
    ):
        assert (folder / "workflow.yaml").exists(), folder
        assert list(folder.glob("run-*.yaml")), folder


@pytest.mark.parametrize(
    ("run_file", "taken", "skipped"),
    [
        ("run-standard.yaml", "standard-processing", "high-value-review"),
        ("run-high-value.yaml", "high-value-review", "standard-processing"),
    ],
)
def test_order_processing_takes_the_route_its_amount_calls_for(
    cluster: ClusterHandle, namespace: str, run_file: str, taken: str, skipped: str
) -> None:
    folder = EXAMPLES / "order-processing"
    _apply_file(cluster, namespace, folder / "workflow.yaml")
    (run,) = _apply_file(cluster, namespace, folder / run_file)
    obj = _finish(cluster, namespace, run["metadata"]["name"])
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    steps = _steps(obj)
    assert steps["check-amount"]["route"] == taken
    assert steps[taken]["phase"] == "Succeeded"
    assert steps[skipped]["phase"] == "Skipped"
    assert "not chosen by decision check-amount" in steps[skipped]["message"]
    notification = steps["send-notification"]["output"]
    assert notification["amount"] == steps["validate-payment"]["output"]["amount"]
    assert ("reviewed" if taken == "high-value-review" else "standard") in notification["message"]
