"""The operator's Prometheus metrics move as runs progress, with bounded labels."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from tests.operator_process import OperatorProcess
from tests.support import ClusterHandle, wait_for


def scrape(operator: OperatorProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("retcon_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_runs_steps_and_transitions(
    cluster: ClusterHandle, namespace: str, operator: OperatorProcess
) -> None:
    before = scrape(operator)
    steps = [
        {"name": f"s{i}", "image": "busybox", "command": ["sh", "-c", "echo '{}' > $RETCON_OUTPUT"]}
        for i in range(3)
    ]
    cluster.apply(
        {
            "apiVersion": "retcon.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "m"},
            "spec": {"steps": steps},
        },
        namespace,
    )
    cluster.apply({"apiVersion": "retcon.dev/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": "r"},
                   "spec": {"workflowRef": {"name": "m"}}}, namespace)  # fmt: skip
    wait_for(
        "the run",
        lambda: (
            cluster.get_json("workflowrun", "r", "-n", namespace).get("status", {}).get("phase")
            == "Succeeded"
        ),
        timeout=60,
    )

    def moved() -> dict[str, Any] | None:
        after = scrape(operator)
        delta = lambda key: after.get(key, 0.0) - before.get(key, 0.0)  # noqa: E731
        ok = (
            delta("retcon_runs_started_total") >= 1
            and delta('retcon_runs_finished_total{phase="Succeeded"}') >= 1
            and delta('retcon_steps_finished_total{phase="Succeeded"}') >= 3
            and delta("retcon_step_transition_seconds_count") >= 2
            and delta("retcon_reconcile_seconds_count") >= 3
        )
        return after if ok else None

    after = wait_for("the metrics to move", moved, timeout=20)
    # Labels are bounded: a phase or a reason, never a run or namespace name.
    for name in after:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
        assert set(labels) <= {"phase", "reason", "le", "result"}, name
        assert "r" not in labels.values() and namespace not in labels.values()
