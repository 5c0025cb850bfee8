"""`helm install` into the local control plane: the operator runs in-cluster (its pod through
the process kubelet, with the chart's ServiceAccount and RBAC), runs the example with a
pause, an injection and a resume; `helm upgrade` keeps a running run going; `helm uninstall`
leaves the CRDs and the runs in place."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from localkube.helm import ensure_helm
from tests.operator_process import OperatorProcess
from tests.support import ClusterHandle, wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE = "retcon"
SYSTEM = f"retcon-system-{uuid.uuid4().hex[:5]}"


def helm(cluster: ClusterHandle, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(ensure_helm()), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def values(extra: dict[str, Any] | None = None) -> list[str]:
    settings = {
        "replicas": 1,
        # No kube-proxy here: the API server calls the webhook on the pod's (host) address.
        "webhook.url": "https://127.0.0.1:9443",
        "extraEnv[0].name": "RETCON_RUNNER_PYTHON",
        "extraEnv[0].value": sys.executable,
        **(extra or {}),
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def operator_pods(cluster: ClusterHandle) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=retcon")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def run_phase(cluster: ClusterHandle, namespace: str, run: str) -> str | None:
    return (cluster.get_json("workflowrun", run, "-n", namespace).get("status") or {}).get("phase")


def retcon(cluster: ClusterHandle, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retcon.cli", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_install_run_upgrade_and_uninstall_with_helm(
    cluster: ClusterHandle, operator: OperatorProcess
) -> None:
    if cluster.layout is None:
        pytest.skip("installs into the local control plane")
    namespace = f"helm-{uuid.uuid4().hex[:6]}"
    operator.stop()  # the chart's operator is the only one for this test
    # The cluster-wide objects the test session applied from deploy/ are the chart's to own now.
    cluster.kubectl("delete", "-f", str(REPO / "deploy" / "user-roles.yaml"), "-f",
                    str(REPO / "deploy" / "stepresult-policy.yaml"), "--ignore-not-found")  # fmt: skip
    try:
        helm(cluster, "install", RELEASE, str(REPO / "charts" / "retcon"), "-n", SYSTEM, "--create-namespace",
             *values(), "--wait", "--timeout=180s")  # fmt: skip
        (pod,) = operator_pods(cluster)
        assert pod["spec"]["serviceAccountName"] == "retcon-operator"
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl(
            "apply", "-n", namespace, "-f", str(REPO / "examples" / "order-processing" / "workflow.yaml")
        )

        # The example, end to end, through the in-cluster operator: a declined card fails the
        # run; an injection recovers it (held: pauseBehavior Hold); a resume finishes it.
        retcon(
            cluster,
            namespace,
            "start",
            "order-processing",
            "--name",
            "c300",
            "--input",
            '{"orderId": "C-300"}',
        )
        wait_for("the run to fail", lambda: run_phase(cluster, namespace, "c300") == "Failed", timeout=90)
        retcon(cluster, namespace, "run", "inject", "c300", "validate-payment", "--output",
               '{"valid": true, "amount": 40}', "--reason", "Confirmed by phone")  # fmt: skip
        wait_for("the hold", lambda: run_phase(cluster, namespace, "c300") == "Paused", timeout=60)
        retcon(cluster, namespace, "run", "resume", "c300")
        wait_for(
            "the run to succeed", lambda: run_phase(cluster, namespace, "c300") == "Succeeded", timeout=90
        )
        run = cluster.get_json("workflowrun", "c300", "-n", namespace)
        injected = next(e for e in run["status"]["audit"] if e["type"] == "step.injected")
        assert injected["actor"] == "localkube-admin"  # the person, not the operator's ServiceAccount
        resumed = next(e for e in run["status"]["audit"] if e["type"] == "run.resumed")
        assert resumed["actor"] == "localkube-admin"

        # helm upgrade while a run is going: the new pod takes it over and finishes it.
        slow = {"apiVersion": "retcon.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "slow"},
                "spec": {"steps": [{"name": f"s{i}", "image": "busybox", "command": ["sh", "-c", "sleep 1; echo '{}' > $RETCON_OUTPUT"]} for i in range(6)]}}  # fmt: skip
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(slow))
        retcon(cluster, namespace, "start", "slow", "--name", "slow-1")
        wait_for("the run to start", lambda: run_phase(cluster, namespace, "slow-1") == "Running", timeout=60)
        helm(cluster, "upgrade", RELEASE, str(REPO / "charts" / "retcon"), "-n", SYSTEM,
             *values({"logLevel": "DEBUG"}), "--wait", "--timeout=180s")  # fmt: skip
        wait_for(
            "the run to finish after the upgrade",
            lambda: run_phase(cluster, namespace, "slow-1") in ("Succeeded", "Failed"),
            timeout=120,
        )
        slow_run = cluster.get_json("workflowrun", "slow-1", "-n", namespace)
        assert slow_run["status"]["phase"] == "Succeeded", slow_run["status"].get("message")
        assert all(len(s["attempts"]) == 1 for s in slow_run["status"]["steps"])

        # helm uninstall: the CRDs and the runs stay, as Helm users expect.
        helm(cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait")
        assert cluster.kubectl("get", "crd", "workflowruns.retcon.dev", check=False).returncode == 0
        assert cluster.get_json("workflowrun", "c300", "-n", namespace)["status"]["phase"] == "Succeeded"
    finally:
        helm(cluster, "uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, SYSTEM, "--wait=false", check=False)
        cluster.kubectl("apply", "-f", str(REPO / "deploy" / "user-roles.yaml"), "-f",
                        str(REPO / "deploy" / "stepresult-policy.yaml"))  # fmt: skip
        operator.start()
