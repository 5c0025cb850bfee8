"""The control plane is real: Jobs run, CRDs work, garbage collection and RBAC apply."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

from localkube import KUBERNETES_VERSION
from tests.support import ClusterHandle, wait_for


def _job(name: str, command: list[str], **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ignored", "command": command}],
                }
            },
            **spec,
        },
    }


def _job_condition(cluster: ClusterHandle, namespace: str, name: str) -> str | None:
    job = cluster.get_json("job", name, "-n", namespace)
    for condition in job.get("status", {}).get("conditions", []):
        if condition["status"] == "True" and condition["type"] in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def test_server_reports_the_pinned_release(cluster: ClusterHandle) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_node_is_ready(cluster: ClusterHandle) -> None:
    node = cluster.get_json("node", cluster.node_name)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"


def test_a_job_completes_through_the_job_controller(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(_job("ok", ["sh", "-c", "echo hello from a pod"]), namespace)
    assert wait_for("Job ok to finish", lambda: _job_condition(cluster, namespace, "ok")) == "Complete"
    job = cluster.get_json("job", "ok", "-n", namespace)
    assert job["status"]["succeeded"] == 1
    pod = cluster.get_json("pods", "-n", namespace, "-l", "job-name=ok")["items"][0]
    assert pod["spec"]["nodeName"] == cluster.node_name
    assert pod["status"]["phase"] == "Succeeded"


def test_a_failing_job_fails_with_the_exit_code_in_pod_status(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(_job("bad", ["sh", "-c", "exit 3"]), namespace)
    assert wait_for("Job bad to finish", lambda: _job_condition(cluster, namespace, "bad")) == "Failed"
    pod = cluster.get_json("pods", "-n", namespace, "-l", "job-name=bad")["items"][0]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_a_crd_with_a_status_subresource_accepts_objects_and_status_patches(
    cluster: ClusterHandle, namespace: str
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.harness.retcon.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.apply(crd)
    try:
        wait_for(
            "the CRD to be Established",
            lambda: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in cluster.get_json("crd", f"widgets.{group}").get("status", {}).get("conditions", [])
            ),
        )
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 2},
        }
        cluster.apply(widget, namespace)
        # A status change through the main resource is ignored; the subresource takes it.
        cluster.kubectl(
            "patch", f"widgets.{group}", "w", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", '{"status": {"phase": "Shiny"}}',
        )  # fmt: skip
        got = cluster.get_json(f"widgets.{group}", "w", "-n", namespace)
        assert got["status"]["phase"] == "Shiny"
        assert got["spec"]["size"] == 2
        # The structural schema is enforced by the real apiserver.
        bad = dict(widget, spec={"size": 0})
        rejected = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
        assert rejected.returncode != 0
        assert "spec.size" in rejected.stderr
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_deleting_an_owner_deletes_its_jobs(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = cluster.get_json("configmap", "owner", "-n", namespace)
    job = _job("owned", ["sleep", "60"])
    job["metadata"] = {
        "name": "owned",
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        ],
    }
    cluster.apply(job, namespace)
    wait_for(
        "the Job's pod", lambda: cluster.get_json("pods", "-n", namespace, "-l", "job-name=owned")["items"]
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        "the garbage collector to delete the Job and its pod",
        lambda: (
            cluster.kubectl("get", "job", "owned", "-n", namespace, check=False).returncode != 0
            and not cluster.get_json("pods", "-n", namespace, "-l", "job-name=owned")["items"]
        ),
        timeout=60,
    )


def test_rbac_denies_an_unprivileged_service_account(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    as_nobody = cluster.token_kubeconfig(token, tmp_path / "nobody.kubeconfig")
    # The token authenticates (the apiserver names the user) but RBAC grants nothing.
    denied = cluster.kubectl("get", "pods", "-n", namespace, as_user=as_nobody, check=False)
    assert denied.returncode != 0
    assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr
    assert "forbidden" in denied.stderr.lower()
    # Granting a Role changes the answer, so the denial above was RBAC's doing.
    cluster.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create", "rolebinding", "nobody-reads", "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody", "-n", namespace,
    )  # fmt: skip
    wait_for(
        "the RoleBinding to take effect",
        lambda: (
            cluster.kubectl("get", "pods", "-n", namespace, as_user=as_nobody, check=False).returncode == 0
        ),
    )


def test_client_certificate_users_are_authenticated_by_name_and_group(cluster: ClusterHandle) -> None:
    kubeconfig = cluster.user("alice", "retcon-testers")
    review = cluster.kubectl("auth", "whoami", "-o", "json", as_user=kubeconfig)
    user = json.loads(review.stdout)["status"]["userInfo"]
    assert user["username"] == "alice"
    assert "retcon-testers" in user["groups"]
    # The embedded certificate really is the user's, not the admin's.
    config = cluster.kubectl("config", "view", "--raw", "-o", "json", as_user=kubeconfig).stdout
    cert = base64.b64decode(json.loads(config)["users"][0]["user"]["client-certificate-data"])
    assert b"BEGIN CERTIFICATE" in cert
