"""`kubectl retcon` on the real control plane: start a run, watch the operator execute it, list
and read it; a mistake or a missing permission is one line from the real API server's answer.

History editing (pause, inject, resume) is covered once the operator supports it end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retcon.cli import cli
from retcon.client import Client
from tests.support import ClusterHandle

pytestmark = pytest.mark.usefixtures("operator")

REPO = Path(__file__).resolve().parents[2]
OK_SCRIPT = "echo '{\"ok\": true}' > $RETCON_OUTPUT"


def workflow(name: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": list(steps)},
    }


def sh_step(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script]}


def kr(cluster: ClusterHandle, namespace: str, *args: str, kubeconfig: Path | None = None) -> Result:
    """`kubectl retcon --kubeconfig ... -n NAMESPACE ARGS`, in process."""
    config = str(kubeconfig or cluster.kubeconfig)
    result = CliRunner().invoke(cli, ["--kubeconfig", config, "-n", namespace, *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_start_watch_list_and_get_a_run(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("hello", sh_step("s", OK_SCRIPT)), namespace)
    started = kr(
        cluster, namespace, "start", "hello", "--input", '{"who": "retcon"}', "--name", "hello-1", "--watch"
    )
    assert started.exit_code == 0, started.output
    lines = started.stdout.splitlines()
    assert lines[0] == f"Started run hello-1 (workflow hello, namespace {namespace})"
    assert any(
        line.endswith("step_001 s: Succeeded") or " step_001 s: Succeeded in " in line for line in lines
    )
    assert lines[-1].endswith("run hello-1: Succeeded")

    (listed,) = json.loads(kr(cluster, namespace, "list", "--json").stdout)
    assert (listed["name"], listed["workflow"], listed["phase"], listed["progress"]) == (
        "hello-1",
        "hello",
        "Succeeded",
        "1/1",
    )
    assert "hello-1" in kr(cluster, namespace, "list", "-A").stdout

    detail = json.loads(kr(cluster, namespace, "get", "hello-1", "--json").stdout)
    assert detail["input"] == {"who": "retcon"}
    (only,) = detail["steps"]
    assert (only["id"], only["name"], only["phase"], only["output"]) == (
        "step_001",
        "s",
        "Succeeded",
        {"ok": True},
    )
    assert only["duration_seconds"] is not None
    table = kr(cluster, namespace, "get", "hello-1").stdout
    assert "Succeeded" in table
    assert '{"ok":true}' in table

    (path_step,) = json.loads(kr(cluster, namespace, "run", "path", "hello-1", "--json").stdout)["steps"]
    assert (path_step["name"], path_step["injected"]) == ("s", False)
    structure = json.loads(kr(cluster, namespace, "run", "structure", "hello-1", "--json").stdout)
    assert structure["from_snapshot"] is True
    assert [step["name"] for step in structure["execution_order"]] == ["s"]
    assert structure["inserted"] == []


def test_the_sdk_watches_a_run_with_a_real_watch_until_it_ends(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(workflow("two", sh_step("a", OK_SCRIPT), sh_step("b", OK_SCRIPT)), namespace)
    with Client(namespace=namespace, kubeconfig=cluster.kubeconfig) as client:
        run = client.start_run("two", {"n": 1})
        assert run.name.startswith("two-")
        phases = [snapshot.phase for snapshot in client.watch_run(run.name)]
        assert phases[-1] == "Succeeded"
        assert set(phases) <= {"Pending", "Running", "Succeeded"}
        assert [step.phase for step in client.get_run(run.name).steps] == ["Succeeded", "Succeeded"]
        assert client.audit_trail(run.name, type="step.injected") == []


def test_watch_exits_1_when_the_run_fails(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("boom", sh_step("fail", "echo nope > /dev/termination-log; exit 42")), namespace)
    assert kr(cluster, namespace, "start", "boom", "--name", "boom-1").exit_code == 0
    watched = kr(cluster, namespace, "watch", "boom-1")
    assert watched.exit_code == 1
    assert "run boom-1: Failed" in watched.stdout.splitlines()[-1]


def test_mistakes_are_one_line_and_create_nothing(cluster: ClusterHandle, namespace: str) -> None:
    missing = kr(cluster, namespace, "get", "nope")
    assert (missing.exit_code, missing.stderr) == (1, f"error: run nope not found in namespace {namespace}\n")
    no_workflow = kr(cluster, namespace, "start", "ghost")
    assert no_workflow.exit_code == 1
    assert no_workflow.stderr == f"error: workflow ghost not found in namespace {namespace}: apply it first\n"
    cluster.apply(workflow("hello", sh_step("s", OK_SCRIPT)), namespace)
    bad_input = kr(cluster, namespace, "start", "hello", "--input", '["not", "an", "object"]')
    assert (bad_input.exit_code, bad_input.stderr) == (
        1,
        "error: the input must be a JSON object, got an array\n",
    )
    assert cluster.get_json("workflowruns", "-n", namespace)["items"] == []


def test_a_user_without_rights_gets_the_api_servers_refusal_on_one_line(
    cluster: ClusterHandle, namespace: str
) -> None:
    outsider = cluster.user("outsider")
    denied = kr(cluster, namespace, "list", kubeconfig=outsider)
    assert denied.exit_code == 1
    assert denied.stderr.startswith(
        'error: permission denied: workflowruns.retcon.dev is forbidden: User "outsider"'
    )
    assert denied.stderr.count("\n") == 1


def test_it_runs_as_a_kubectl_plugin(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> None:
    plugin = tmp_path / "kubectl-retcon"
    plugin.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m retcon.cli "$@"\n')
    plugin.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [str(cluster.kubectl_bin), "retcon", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "list"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "No runs found.\n", "")
