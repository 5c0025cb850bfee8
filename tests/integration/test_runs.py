"""Runs on the real control plane: Jobs per step, outputs in status, retries, timeouts,
cancellation, snapshots, apply-time validation, garbage collection."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.operator_process import OperatorProcess
from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("operator")

EX = "retcon_examples.order_processing"


def workflow(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": steps, **spec},
    }


def run(name: str, workflow_name: str, input: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow_name}, "input": input or {}, **spec},
    }


def get_run(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json("workflowrun", name, "-n", namespace))


def wait_phase(
    cluster: ClusterHandle, namespace: str, name: str, *phases: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_run(cluster, namespace, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    result: dict[str, Any] = wait_for(f"run {name} to be {'/'.join(phases)}", check, timeout=timeout)
    return result


def steps_by_name(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in obj["status"]["steps"]}


def sh_step(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def test_a_sequential_run_passes_outputs_downstream(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(
        workflow(
            "chain",
            [
                sh_step("one", 'echo \'{"n": 1, "who": "one"}\' > "$RETCON_OUTPUT"'),
                # An image step sees every earlier output in its input file, without Python in the image.
                sh_step(
                    "two",
                    "python3 -c \"import json,os; d=json.load(open(os.environ['RETCON_INPUT']));"
                    " json.dump({'n': d['state']['n'] + 1, 'saw': d['steps']['one']['output']},"
                    " open(os.environ['RETCON_OUTPUT'], 'w'))\"",
                ),
            ],
        ),
        namespace,
    )
    cluster.apply(run("r", "chain", {"start": True}), namespace)
    obj = wait_phase(cluster, namespace, "r", "Succeeded", "Failed")
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    steps = steps_by_name(obj)
    assert steps["one"]["output"] == {"n": 1, "who": "one"}
    assert steps["two"]["output"] == {"n": 2, "saw": {"n": 1, "who": "one"}}
    assert [steps["one"]["id"], steps["two"]["id"]] == ["step_001", "step_002"]
    assert obj["status"]["progress"] == "2/2"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    # One Job per step, owned by the run.
    jobs = cluster.get_json("jobs", "-n", namespace, "-l", "retcon.dev/run=r")["items"]
    assert sorted(job["metadata"]["labels"]["retcon.dev/step"] for job in jobs) == ["one", "two"]
    assert all(job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"] for job in jobs)


def test_each_attempt_keeps_an_immutable_record_of_its_input(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("rec", [sh_step("only", "echo '{}' > $RETCON_OUTPUT")]), namespace)
    cluster.apply(run("r", "rec", {"amount": 7}), namespace)
    obj = wait_phase(cluster, namespace, "r", "Succeeded")
    ref = steps_by_name(obj)["only"]["attempts"][0]["inputRef"]
    record = cluster.get_json("configmap", ref["name"], "-n", namespace)
    assert record["immutable"] is True
    document = json.loads(record["data"]["input.json"])
    assert document["input"] == {"amount": 7}
    assert document["step"] == {"id": "step_001", "name": "only", "attempt": 1}
    canonical = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == ref["sha256"]
    refused = cluster.kubectl(
        "patch", "configmap", ref["name"], "-n", namespace, "--type=merge", "-p", '{"data": {"input.json": "{}"}}',
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "immutable" in refused.stderr


def test_parallel_roots_run_at_the_same_time_and_a_join_waits_for_both(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(
        workflow(
            "diamond",
            [
                sh_step("left", "sleep 1; echo '{\"left\": true}' > $RETCON_OUTPUT", dependsOn=[]),
                sh_step("right", "sleep 1; echo '{\"right\": true}' > $RETCON_OUTPUT", dependsOn=[]),
                sh_step(
                    "join",
                    "cat $RETCON_INPUT > /dev/null; echo '{}' > $RETCON_OUTPUT",
                    dependsOn=["left", "right"],
                ),
            ],
        ),
        namespace,
    )
    cluster.apply(run("r", "diamond"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Succeeded")
    steps = steps_by_name(obj)
    # Both roots started before either finished.
    assert steps["left"]["startedAt"] < steps["right"]["finishedAt"]
    assert steps["right"]["startedAt"] < steps["left"]["finishedAt"]
    assert steps["join"]["startedAt"] >= max(steps["left"]["finishedAt"], steps["right"]["finishedAt"])


def test_a_failed_step_is_retried_as_new_jobs_then_fails_the_run(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(
        workflow(
            "flaky",
            [sh_step("boom", "echo 'upstream said no' > /dev/termination-log; exit 3",
                     retry={"limit": 2, "backoff": {"durationSeconds": 0.2, "factor": 1}})],
        ),
        namespace,
    )  # fmt: skip
    cluster.apply(run("r", "flaky"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Failed")
    step = steps_by_name(obj)["boom"]
    assert step["phase"] == "Failed"
    assert [a["number"] for a in step["attempts"]] == [1, 2, 3]
    assert len({a["job"] for a in step["attempts"]}) == 3
    assert all(a["exitCode"] == 3 for a in step["attempts"])
    assert "upstream said no" in step["message"]
    assert "step boom failed" in obj["status"]["message"]
    completed = next(c for c in obj["status"]["conditions"] if c["type"] == "Completed")
    assert (completed["status"], completed["reason"]) == ("True", "Failed")


def test_the_non_retryable_exit_code_is_not_retried(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("hard", [sh_step("stop", "exit 42", retry={"limit": 3})]), namespace)
    cluster.apply(run("r", "hard"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Failed")
    step = steps_by_name(obj)["stop"]
    assert len(step["attempts"]) == 1
    assert step["attempts"][0]["reason"] == "NonRetryable"
    assert "not retryable" in step["message"]


def test_a_function_raising_non_retryable_error_fails_at_once(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(
        workflow("fn", [{"name": "fetch", "function": f"{EX}:fetch_order", "retry": {"limit": 3}}]), namespace
    )
    cluster.apply(run("r", "fn", {"orderId": "NOPE"}), namespace)
    obj = wait_phase(cluster, namespace, "r", "Failed")
    step = steps_by_name(obj)["fetch"]
    assert len(step["attempts"]) == 1
    assert "order NOPE does not exist" in step["message"]


def test_a_step_over_its_timeout_is_stopped_and_failed(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("slow", [sh_step("nap", "sleep 120", timeoutSeconds=2)]), namespace)
    cluster.apply(run("r", "slow"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Failed", timeout=30)
    step = steps_by_name(obj)["nap"]
    assert step["attempts"][0]["reason"] == "Timeout"
    assert "timed out after 2s" in step["message"]
    job = step["attempts"][0]["job"]
    wait_for("the timed-out Job to be deleted",
             lambda: cluster.kubectl("get", "job", job, "-n", namespace, check=False).returncode != 0)  # fmt: skip


def test_cancelling_a_run_stops_its_jobs(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("long", [sh_step("forever", "sleep 300")]), namespace)
    cluster.apply(run("r", "long"), namespace)
    obj = wait_for(
        "the step to run",
        lambda: (
            (o := get_run(cluster, namespace, "r")).get("status", {}).get("currentStep") == "forever" and o
        ),
    )
    job = steps_by_name(obj)["forever"]["attempts"][0]["job"]
    cluster.kubectl("annotate", "workflowrun", "r", "-n", namespace, "retcon.dev/cancel=true")
    obj = wait_phase(cluster, namespace, "r", "Cancelled")
    assert steps_by_name(obj)["forever"]["phase"] == "Failed"
    wait_for("the Job to be deleted",
             lambda: cluster.kubectl("get", "job", job, "-n", namespace, check=False).returncode != 0)  # fmt: skip
    wait_for("its pod to be gone",
             lambda: not cluster.get_json("pods", "-n", namespace, "-l", f"job-name={job}")["items"], timeout=60)  # fmt: skip


def test_editing_the_workflow_does_not_change_a_running_run(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(
        workflow("edit", [sh_step("first", "sleep 2; echo '{}' > $RETCON_OUTPUT"), sh_step("second", "echo '{\"v\": 1}' > $RETCON_OUTPUT")]),
        namespace,
    )  # fmt: skip
    cluster.apply(run("r", "edit"), namespace)
    wait_for("the snapshot", lambda: get_run(cluster, namespace, "r").get("status", {}).get("definition"))
    cluster.apply(workflow("edit", [sh_step("first", "echo '{}' > $RETCON_OUTPUT"), sh_step("second", "echo '{\"v\": 2}' > $RETCON_OUTPUT"), sh_step("third", "true")]), namespace)  # fmt: skip
    obj = wait_phase(cluster, namespace, "r", "Succeeded")
    assert steps_by_name(obj)["second"]["output"] == {"v": 1}
    assert [s["name"] for s in obj["status"]["definition"]["steps"]] == ["first", "second"]
    assert obj["status"]["definition"]["source"]["generation"] == 1


def test_a_run_waits_for_its_workflow_to_appear(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(run("r", "later"), namespace)
    obj = wait_for(
        "the run to say its Workflow is missing",
        lambda: (o := get_run(cluster, namespace, "r")).get("status", {}).get("message") and o,
    )
    assert obj["status"]["phase"] == "Pending"
    assert "Workflow later not found" in obj["status"]["message"]
    cluster.apply(workflow("later", [sh_step("only", "echo '{}' > $RETCON_OUTPUT")]), namespace)
    wait_phase(cluster, namespace, "r", "Succeeded", timeout=45)


def test_a_run_spec_is_immutable(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("imm", [sh_step("only", "echo '{}' > $RETCON_OUTPUT")]), namespace)
    cluster.apply(run("r", "imm", {"a": 1}), namespace)
    changed = cluster.kubectl(
        "patch",
        "workflowrun",
        "r",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"input": {"a": 2}}}',
        check=False,
    )
    assert changed.returncode != 0
    assert "a run's spec is immutable" in changed.stderr


def test_outputs_that_are_not_json_objects_fail_the_step_clearly(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.apply(
        workflow("bad-out", [sh_step("list", "echo '[1, 2]' > $RETCON_OUTPUT", retry={"limit": 2})]),
        namespace,
    )
    cluster.apply(run("r", "bad-out"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Failed")
    step = steps_by_name(obj)["list"]
    assert "must be a JSON object" in step["message"]
    assert len(step["attempts"]) == 1  # a malformed output is not retried


def test_large_outputs_are_kept_outside_the_run_and_still_reach_downstream_steps(
    cluster: ClusterHandle, namespace: str
) -> None:
    big = "python3 -c \"import json,os; json.dump({'blob': 'x' * 200000}, open(os.environ['RETCON_OUTPUT'], 'w'))\""
    size = "python3 -c \"import json,os; d=json.load(open(os.environ['RETCON_INPUT'])); json.dump({'seen': len(d['state']['blob'])}, open(os.environ['RETCON_OUTPUT'], 'w'))\""
    cluster.apply(workflow("big", [sh_step("make", big), sh_step("measure", size)]), namespace)
    cluster.apply(run("r", "big"), namespace)
    obj = wait_phase(cluster, namespace, "r", "Succeeded", "Failed")
    steps = steps_by_name(obj)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    assert "output" not in steps["make"]
    assert steps["make"]["outputRef"]["kind"] == "StepResult"
    assert steps["make"]["outputRef"]["bytes"] > 200000
    assert steps["measure"]["output"] == {"seen": 200000}


def test_deleting_a_run_deletes_its_jobs_inputs_and_results(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("gc", [sh_step("only", "echo '{}' > $RETCON_OUTPUT")]), namespace)
    cluster.apply(run("r", "gc"), namespace)
    wait_phase(cluster, namespace, "r", "Succeeded")
    assert cluster.get_json("jobs,configmaps,stepresults", "-n", namespace, "-l", "retcon.dev/run=r")["items"]
    cluster.kubectl("delete", "workflowrun", "r", "-n", namespace)
    wait_for(
        "the garbage collector to remove the run's children",
        lambda: (
            not cluster.get_json("jobs,configmaps,stepresults", "-n", namespace, "-l", "retcon.dev/run=r")[
                "items"
            ]
        ),
        timeout=60,
    )


def test_step_events_are_recorded_on_the_run(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(workflow("ev", [sh_step("only", "echo '{}' > $RETCON_OUTPUT")]), namespace)
    cluster.apply(run("r", "ev"), namespace)
    wait_phase(cluster, namespace, "r", "Succeeded")

    def reasons() -> set[str]:
        events = cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=r")[
            "items"
        ]
        return {e["reason"] for e in events}

    wait_for("Events", lambda: {"Started", "StepStarted", "StepSucceeded", "RunSucceeded"} <= reasons())


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"name": "a", "function": "m:f", "dependsOn": ["ghost"]}],
            'depends on "ghost", which is not a step',
        ),
        (
            [{"name": "a", "function": "m:f", "dependsOn": ["b"]}, {"name": "b", "function": "m:f"}],
            "dependency cycle a -> b -> a",
        ),
        (
            [{"name": "d", "type": "Decision", "routes": [{"condition": "true", "target": "nowhere"}]}],
            'routes to "nowhere"',
        ),
        (
            [
                {"name": "d", "type": "Decision", "routes": [{"condition": "state.amount >", "target": "t"}]},
                {"name": "t", "function": "m:f"},
            ],
            "does not compile",
        ),
        ([{"name": "s", "type": "Sleep"}], "a Sleep step needs a duration"),
        ([{"name": "a", "function": "m:f"}, {"name": "a", "function": "m:f"}], "Duplicate value"),
    ],
    ids=[
        "unknown-dependency",
        "cycle",
        "unknown-target",
        "bad-cel",
        "sleep-without-duration",
        "duplicate-name",
    ],
)
def test_invalid_workflows_are_refused_at_apply_time(
    cluster: ClusterHandle, namespace: str, steps: list[dict[str, Any]], message: str
) -> None:
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(workflow("bad", steps)), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert cluster.kubectl("get", "workflow", "bad", "-n", namespace, check=False).returncode != 0


def test_the_operator_survives_kill_9_and_runs_no_step_twice(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory, operator: OperatorProcess
) -> None:
    """A separate operator owns an isolated namespace; it is killed mid-run and restarted."""
    namespace = "iso-restart"
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", check=False, timeout=120)
    cluster.kubectl("create", "namespace", namespace)
    journal = tmp_path_factory.mktemp("journal") / "steps.log"
    journal.touch()
    journal.chmod(0o666)
    steps = [
        sh_step(f"s{i}", f"echo s{i} >> {journal}; sleep 0.3; echo '{{}}' > $RETCON_OUTPUT") for i in range(8)
    ]
    cluster.apply(workflow("appender", steps), namespace)
    log = tmp_path_factory.mktemp("iso-operator") / "operator.log"
    # The session operator ignores this namespace, so exactly one operator drives the run.
    operator_args = {
        "kubeconfig": cluster.kubeconfig,
        "log": log,
        "namespaces": (namespace,),
        "webhook": "off",
    }
    isolated: OperatorProcess | None = None
    try:
        operator.stop()
        isolated = OperatorProcess(**operator_args).start()  # type: ignore[arg-type]
        cluster.apply(run("r", "appender"), namespace)
        wait_for("a few steps to run", lambda: len(journal.read_text().split()) >= 3, timeout=60)
        isolated.kill()
        isolated = OperatorProcess(**operator_args).start()  # type: ignore[arg-type]
        for _ in range(2):  # and once more, later in the run
            wait_for("more steps", lambda: len(journal.read_text().split()) >= 6, timeout=60)
            isolated.kill()
            isolated = OperatorProcess(**operator_args).start()  # type: ignore[arg-type]
        obj = wait_phase(cluster, namespace, "r", "Succeeded", "Failed", timeout=90)
        isolated.stop()
    finally:
        if isolated is not None:
            isolated.stop()
        operator.start()
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    lines = journal.read_text().split()
    assert sorted(lines) == sorted(f"s{i}" for i in range(8)), lines  # each step exactly once
    assert lines == [f"s{i}" for i in range(8)]  # and in order
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
