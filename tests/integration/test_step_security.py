"""Step pods can report their own result and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from retcon.kube.render import render_step_rbac
from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("crds")

REPORT = r"""
import json, os, ssl, sys, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
ns = open(f"{sa}/namespace").read()
base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()).get("message", "")

def result(name, pod):
    return {"apiVersion": "retcon.dev/v1alpha1", "kind": "StepResult", "metadata": {"name": name},
            "spec": {"runName": "r", "stepId": "step_001", "stepName": "s", "attempt": 1, "podName": pod,
                     "outcome": "Succeeded", "output": {}}}

out = {
    "own": call("POST", f"/apis/retcon.dev/v1alpha1/namespaces/{ns}/stepresults", result("own", os.environ["POD"])),
    "forged": call("POST", f"/apis/retcon.dev/v1alpha1/namespaces/{ns}/stepresults", result("forged", "someone-else")),
    "read_runs": call("GET", f"/apis/retcon.dev/v1alpha1/namespaces/{ns}/workflowruns"),
    "patch_run": call("PATCH", f"/apis/retcon.dev/v1alpha1/namespaces/{ns}/workflowruns/r/status", {"status": {}}),
    "read_results": call("GET", f"/apis/retcon.dev/v1alpha1/namespaces/{ns}/stepresults"),
}
open("/dev/termination-log", "w").write(json.dumps(out))
"""


def test_a_step_pod_may_only_create_its_own_result(cluster: ClusterHandle, namespace: str) -> None:
    for manifest in render_step_rbac(namespace, "retcon-step"):
        cluster.apply(manifest)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "step-pod"},
        "spec": {
            "serviceAccountName": "retcon-step",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "step",
                    "image": "ignored",
                    "command": ["python3", "-c", REPORT],
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                }
            ],
        },
    }
    cluster.apply(pod, namespace)
    done = wait_for(
        "the pod to finish",
        lambda: (
            (p := cluster.get_json("pod", "step-pod", "-n", namespace))["status"].get("phase")
            in ("Succeeded", "Failed")
            and p
        ),
    )
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0, terminated
    out = json.loads(terminated["message"])
    assert out["own"][0] == 201
    assert out["forged"][0] == 403
    assert "may report only its own result" in out["forged"][1]
    assert "pod step-pod" in out["forged"][1]
    # Its ServiceAccount can create results, and do nothing else with Retcon's objects.
    assert out["read_runs"][0] == 403
    assert out["patch_run"][0] == 403
    assert out["read_results"][0] == 403
