"""Two replicas: one reconciles (it holds the Lease); killing it hands the runs to the other."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.operator_process import OperatorProcess
from tests.support import ClusterHandle, wait_for


def sh(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script]}


def test_killing_the_leader_lets_the_other_replica_finish_the_run_with_no_step_twice(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory, operator: OperatorProcess
) -> None:
    namespace = f"iso-failover-{uuid.uuid4().hex[:5]}"
    lease = f"retcon-test-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    journal = tmp_path_factory.mktemp("failover") / "steps.log"
    journal.touch()
    steps = [
        sh(f"s{i}", f"echo s{i} >> {journal}; sleep 0.5; echo '{{}}' > $RETCON_OUTPUT") for i in range(8)
    ]
    cluster.apply(
        {
            "apiVersion": "retcon.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "w"},
            "spec": {"steps": steps},
        },
        namespace,
    )
    env = {"RETCON_LEADER_ELECT": "true", "RETCON_LEASE_NAME": lease, "RETCON_LEASE_NAMESPACE": namespace,
           "RETCON_LEASE_SECONDS": "4"}  # fmt: skip
    logs = tmp_path_factory.mktemp("replicas")
    replicas: list[OperatorProcess] = []
    operator.stop()  # the session's operator would be a third, unelected replica
    try:
        for index in range(2):
            replicas.append(
                OperatorProcess(
                    kubeconfig=cluster.kubeconfig,
                    log=logs / f"replica-{index}.log",
                    namespaces=(namespace,),
                    webhook="off",
                    extra_env=env,
                ).start()
            )
        holder = wait_for("a leader", lambda: cluster.get_json("lease", lease, "-n", namespace)["spec"].get("holderIdentity")
                          if cluster.kubectl("get", "lease", lease, "-n", namespace, check=False).returncode == 0 else None)  # fmt: skip
        cluster.apply({"apiVersion": "retcon.dev/v1alpha1", "kind": "WorkflowRun", "metadata": {"name": "r"},
                       "spec": {"workflowRef": {"name": "w"}}}, namespace)  # fmt: skip
        wait_for("three steps", lambda: len(journal.read_text().split()) >= 3, timeout=60)
        leader = next(r for r in replicas if r.process is not None and holder.endswith(f"-{r.process.pid}"))
        follower = next(r for r in replicas if r is not leader)
        leader.kill()
        obj = wait_for(
            "the run to finish on the other replica",
            lambda: (
                (o := cluster.get_json("workflowrun", "r", "-n", namespace)).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                and o
            ),
            timeout=90,
        )
        new_holder = cluster.get_json("lease", lease, "-n", namespace)["spec"]["holderIdentity"]
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    assert follower.process is not None and new_holder.endswith(f"-{follower.process.pid}")
    lines = journal.read_text().split()
    assert lines == [f"s{i}" for i in range(8)], lines  # every step once, in order
    assert "Became the leader" in (logs / f"replica-{replicas.index(follower)}.log").read_text()
