"""`kubectl retcon` on the real control plane: start a run, watch the operator execute it, list
and read it; a mistake or a missing permission is one line from the real API server's answer.

The reference walkthrough runs through the plugin and through the SDK: pause, paused state,
inject (a completed step, then a failed one), resume and resume from a step, structure and path.
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


WALK = (
    sh_step("fetch-order", 'echo \'{"orderId": "123"}\' > $RETCON_OUTPUT'),
    sh_step("validate-payment", 'echo \'{"valid": true, "amount": 99}\' > $RETCON_OUTPUT'),
    sh_step("settle", "sleep 2; echo '{}' > $RETCON_OUTPUT"),
    sh_step(
        "send-notification",
        "python3 -c \"import json,os; d=json.load(open(os.environ['RETCON_INPUT']));"
        " json.dump({'amount': d['state']['amount']}, open(os.environ['RETCON_OUTPUT'], 'w'))\"",
    ),
)


def _wait_phase(client: Client, run: str, *phases: str, timeout: float = 60) -> Any:
    from tests.support import wait_for  # noqa: PLC0415 - local to the walkthrough helpers

    return wait_for(
        f"{run} to be {phases}", lambda: (d := client.get_run(run)).phase in phases and d, timeout=timeout
    )


def test_the_walkthrough_through_the_plugin(
    cluster: ClusterHandle, namespace: str, request: pytest.FixtureRequest
) -> None:
    alice = cluster.user("alice")
    for role in ("retcon-run", "retcon-intervene", "retcon-view"):
        cluster.kubectl(
            "create", "rolebinding", f"alice-{role}", f"--clusterrole={role}", "--user=alice", "-n", namespace
        )
    cluster.apply(workflow("orders", *WALK), namespace)
    assert kr(cluster, namespace, "start", "orders", "--name", "run-abc123", kubeconfig=alice).exit_code == 0
    client = Client(namespace=namespace, kubeconfig=str(alice))
    request.addfinalizer(client.close)
    from tests.support import wait_for  # noqa: PLC0415

    wait_for("settle to run", lambda: client.get_run("run-abc123").phase == "Running"
             and any(s.name == "settle" and s.phase == "Running" for s in client.get_run("run-abc123").steps))  # fmt: skip
    paused = kr(cluster, namespace, "run", "pause", "run-abc123", kubeconfig=alice)
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == "Run run-abc123: pause_requested"
    _wait_phase(client, "run-abc123", "Paused")
    state = kr(cluster, namespace, "run", "paused-state", "run-abc123", "--json", kubeconfig=alice)
    document = json.loads(state.stdout)
    assert document["pause_reason"] == "injection"
    assert document["next_step_hint"] == "send-notification"
    assert document["steps"][1] == {"id": "step_002", "name": "validate-payment", "injected": False,
                                    "output": {"valid": True, "amount": 99}}  # fmt: skip
    injected = kr(cluster, namespace, "run", "inject", "run-abc123", "step_002", "--output",
                  '{"valid": true, "amount": 50}', "--reason", "Corrected amount for partial refund test", kubeconfig=alice)  # fmt: skip
    assert injected.exit_code == 0, injected.output
    first, second = injected.stdout.splitlines()
    assert first == "Injected step step_002"
    assert second.startswith("Previous output: ")
    assert json.loads(second.removeprefix("Previous output: ")) == {"valid": True, "amount": 99}
    resumed = kr(cluster, namespace, "run", "resume", "run-abc123", kubeconfig=alice)
    assert resumed.exit_code == 0, resumed.output
    done = _wait_phase(client, "run-abc123", "Succeeded", "Failed")
    assert done.phase == "Succeeded"
    assert next(s for s in done.steps if s.name == "send-notification").output == {"amount": 50}
    trail = json.loads(
        kr(cluster, namespace, "audit", "trail", "run-abc123", "--type", "step.injected", "--json").stdout
    )
    assert [(e["type"], e["actor"], e["step_id"]) for e in trail] == [("step.injected", "alice", "step_002")]
    path = json.loads(kr(cluster, namespace, "run", "path", "run-abc123", "--json").stdout)
    assert [p["name"] for p in path["steps"]] == [
        "fetch-order",
        "validate-payment",
        "settle",
        "send-notification",
    ]
    # Bad input: one line, non-zero, nothing changes.
    for args, words in (
        (("run", "inject", "run-abc123", "step_002", "--output", "[1]", "--reason", "x"), "JSON object"),
        (("run", "inject", "run-abc123", "step_009", "--output", "{}", "--reason", "x"), "cannot be edited"),
        (("run", "resume", "no-such-run"), "no-such-run"),
    ):
        result = kr(cluster, namespace, *args, kubeconfig=alice)
        assert result.exit_code == 1, result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert words in result.stderr


def test_the_sdk_recovers_a_failed_step_and_resumes_from_a_step(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(
        workflow("flaky", sh_step("call-api", "exit 3"),
                 sh_step("use-it", "cat $RETCON_INPUT > /dev/null; echo '{\"used\": true}' > $RETCON_OUTPUT")),
        namespace,
    )  # fmt: skip
    with Client(namespace=namespace, kubeconfig=str(cluster.kubeconfig)) as client:
        client.start_run("flaky", {}, name="r")
        _wait_phase(client, "r", "Failed")
        previous = client.inject_step_output(
            "r", "call-api", {"recovered": True}, "Recovered from external API timeout"
        )
        assert previous is None  # a failed step had no output
        _wait_phase(client, "r", "Paused")  # Hold
        client.resume_run("r")
        done = _wait_phase(client, "r", "Succeeded", "Failed")
        assert done.phase == "Succeeded"
        audit = [(e.type, e.actor) for e in client.audit_trail("r")]
        # The injection held the run (Hold), and the resume released it: both by the person.
        assert audit == [
            ("step.injected", "localkube-admin"),
            ("run.paused", "localkube-admin"),
            ("run.resumed", "localkube-admin"),
        ], audit
