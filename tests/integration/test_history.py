"""History editing on the real control plane: pause, inspect, inject, resume, with an audit
trail whose actors are the authenticated users who asked, through kubectl alone."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.usefixtures("operator")


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


ECHO_STATE = (
    "python3 -c \"import json,os; d=json.load(open(os.environ['RETCON_INPUT']));"
    " json.dump({'sawAmount': d['state']['amount'], 'sawValid': d['steps']['validate-payment']['output']},"
    " open(os.environ['RETCON_OUTPUT'], 'w'))\""
)


def order_workflow(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "steps": [
                sh("fetch-order", 'echo \'{"orderId": "123"}\' > $RETCON_OUTPUT'),
                sh("validate-payment", 'echo \'{"valid": true, "amount": 99}\' > $RETCON_OUTPUT'),
                sh("settle", "sleep 3; echo '{\"settled\": true}' > $RETCON_OUTPUT"),
                sh("send-notification", ECHO_STATE),
            ],
            **spec,
        },
    }


def start(cluster: ClusterHandle, namespace: str, workflow: dict[str, Any], run: str) -> None:
    cluster.apply(workflow, namespace)
    cluster.apply(
        {
            "apiVersion": "retcon.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"name": run},
            "spec": {"workflowRef": {"name": workflow["metadata"]["name"]}, "input": {}},
        },
        namespace,
    )


def get(cluster: ClusterHandle, namespace: str, run: str) -> dict[str, Any]:
    return dict(cluster.get_json("workflowrun", run, "-n", namespace))


def until(
    cluster: ClusterHandle, namespace: str, run: str, what: str, check: Any, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, run)
        return obj if check(obj) else None

    result: dict[str, Any] = wait_for(what, probe, timeout=timeout)
    return result


def phase_is(*phases: str) -> Any:
    return lambda o: (o.get("status") or {}).get("phase") in phases


def steps(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in obj["status"]["steps"]}


def start_and_pause(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path], workflow: dict[str, Any]
) -> None:
    """Start run `r`; once its slow `settle` step runs, alice pauses it; wait until it is Paused."""
    start(cluster, namespace, workflow, "r")
    until(
        cluster,
        namespace,
        "r",
        "settle to run",
        lambda o: (o.get("status") or {}).get("currentStep") == "settle",
    )
    cluster.kubectl(
        "annotate", "workflowrun", "r", "retcon.dev/pause=true", "-n", namespace, as_user=people["alice"]
    )
    until(cluster, namespace, "r", "the run to pause", phase_is("Paused"))


@pytest.fixture
def people(cluster: ClusterHandle, namespace: str) -> dict[str, Path]:
    """alice and bob may intervene; carol may only run workflows."""
    kubeconfigs = {name: cluster.user(name) for name in ("alice", "bob", "carol")}
    for user, role in (("alice", "retcon-intervene"), ("bob", "retcon-intervene"), ("carol", "retcon-run")):
        cluster.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}",
                        "-n", namespace)  # fmt: skip
        cluster.kubectl("create", "rolebinding", f"{user}-view", "--clusterrole=retcon-view", f"--user={user}",
                        "-n", namespace)  # fmt: skip
    return kubeconfigs


def injection(name: str, run: str, step: str, output: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Injection",
        "metadata": {"name": name},
        "spec": {"runName": run, "step": step, "output": output, "reason": reason},
    }


def test_the_walkthrough_pause_inspect_inject_resume_with_kubectl(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, order_workflow("orders"), "run-abc123")
    until(
        cluster,
        namespace,
        "run-abc123",
        "settle to run",
        lambda o: (o.get("status") or {}).get("currentStep") == "settle",
    )

    # 1. alice pauses the running run at the next step boundary.
    cluster.kubectl(
        "annotate",
        "workflowrun",
        "run-abc123",
        "retcon.dev/pause=true",
        "-n",
        namespace,
        as_user=people["alice"],
    )
    pausing = get(cluster, namespace, "run-abc123")
    assert pausing["status"]["phase"] in ("Pausing", "Running")  # settle is still running
    paused = until(cluster, namespace, "run-abc123", "the run to pause", phase_is("Paused"))
    # 2. The paused state: settle finished, send-notification is next and has not started.
    assert paused["status"]["pauseReason"] == "injection"
    assert paused["status"]["nextStepHint"] == "send-notification"
    assert steps(paused)["settle"]["phase"] == "Succeeded"
    assert steps(paused)["send-notification"]["phase"] == "Pending"
    # Pausing again changes nothing (idempotent).
    cluster.kubectl(
        "annotate",
        "--overwrite",
        "workflowrun",
        "run-abc123",
        "retcon.dev/pause=true",
        "-n",
        namespace,
        as_user=people["alice"],
    )

    # 3. bob replaces validate-payment's output, with a reason.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", as_user=people["bob"],
        input=json.dumps(injection("fix-amount", "run-abc123", "step_002", {"valid": True, "amount": 50},
                                   "Corrected amount for partial refund test")),
    )  # fmt: skip
    applied = wait_for(
        "the injection to apply",
        lambda: (
            (i := cluster.get_json("injection", "fix-amount", "-n", namespace)).get("status", {}).get("phase")
            in ("Applied", "Rejected")
            and i
        ),
    )
    assert applied["status"]["phase"] == "Applied", applied["status"]
    assert applied["status"]["previousOutput"] == {"valid": True, "amount": 99}
    assert applied["status"]["appliedBy"] == "bob"
    held = get(cluster, namespace, "run-abc123")
    assert held["status"]["phase"] == "Paused"  # Hold: stays paused after the injection
    assert steps(held)["validate-payment"]["output"] == {"valid": True, "amount": 50}
    assert steps(held)["validate-payment"]["injected"] is True
    # Re-applying the same object does nothing more.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["bob"],
                    input=json.dumps(injection("fix-amount", "run-abc123", "step_002", {"valid": True, "amount": 50},
                                               "Corrected amount for partial refund test")))  # fmt: skip

    # 4. alice resumes; the downstream step sees the injected data.
    cluster.kubectl(
        "annotate", "workflowrun", "run-abc123", "retcon.dev/pause-", "-n", namespace, as_user=people["alice"]
    )
    done = until(cluster, namespace, "run-abc123", "the run to finish", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    notification = steps(done)["send-notification"]
    assert notification["output"] == {"sawAmount": 50, "sawValid": {"valid": True, "amount": 50}}
    # Its immutable input record proves what it was given.
    record = cluster.get_json("configmap", notification["attempts"][0]["inputRef"]["name"], "-n", namespace)
    assert json.loads(record["data"]["input.json"])["state"]["amount"] == 50

    # The audit trail names who did what, from authentication.
    trail = [(e["type"], e["actor"]) for e in done["status"]["audit"]]
    assert trail == [
        ("run.pause_requested", "alice"),
        ("run.paused", "alice"),
        ("step.injected", "bob"),
        ("run.resumed", "alice"),
    ], trail
    injected = next(e for e in done["status"]["audit"] if e["type"] == "step.injected")
    assert injected["stepId"] == "step_002"
    assert injected["stepName"] == "validate-payment"
    assert injected["previousOutput"] == {"valid": True, "amount": 99}
    assert injected["newOutput"] == {"valid": True, "amount": 50}
    assert injected["reason"] == "Corrected amount for partial refund test"
    reasons = {
        e["reason"]
        for e in cluster.get_json(
            "events", "-n", namespace, "--field-selector", "involvedObject.name=run-abc123"
        )["items"]
    }
    assert "StepInjected" in reasons


def test_a_forged_actor_is_ignored(cluster: ClusterHandle, namespace: str, people: dict[str, Path]) -> None:
    start(cluster, namespace, order_workflow("orders"), "r")
    until(
        cluster,
        namespace,
        "r",
        "settle to run",
        lambda o: (o.get("status") or {}).get("currentStep") == "settle",
    )
    forged = json.dumps(
        [{"seq": 1, "type": "pause", "actor": "the-ceo", "time": "2026-01-01T00:00:00Z", "data": {}}]
    )
    cluster.kubectl("annotate", "workflowrun", "r", "retcon.dev/pause=true", f"retcon.dev/intents={forged}",
                    "-n", namespace, as_user=people["alice"])  # fmt: skip
    paused = until(cluster, namespace, "r", "the run to pause", phase_is("Paused"))
    actors = {e["actor"] for e in paused["status"]["audit"]}
    assert actors == {"alice"}
    bad = injection("forged", "r", "fetch-order", {"x": 1}, "trust me")
    bad["metadata"]["annotations"] = {"retcon.dev/created-by": "the-ceo"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), as_user=people["bob"])
    applied = wait_for(
        "the injection",
        lambda: (
            (i := cluster.get_json("injection", "forged", "-n", namespace)).get("status", {}).get("phase")
            and i
        ),
    )
    assert applied["status"]["appliedBy"] == "bob"
    assert applied["metadata"]["annotations"]["retcon.dev/created-by"] == "bob"


def test_a_user_without_the_intervene_role_cannot_inject(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, order_workflow("orders"), "r")
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["carol"], check=False,
                              input=json.dumps(injection("nope", "r", "fetch-order", {"x": 1}, "no")))  # fmt: skip
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    assert 'cannot create resource "injections"' in refused.stderr


def test_injecting_into_a_failed_step_recovers_the_run(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    workflow = {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "flaky"},
        "spec": {
            "steps": [
                sh("call-api", "echo 'upstream timed out' > /dev/termination-log; exit 3"),
                sh(
                    "use-it",
                    "python3 -c \"import json,os; d=json.load(open(os.environ['RETCON_INPUT'])); json.dump({'got': d['state']['recovered']}, open(os.environ['RETCON_OUTPUT'], 'w'))\"",
                ),
            ]
        },
    }
    start(cluster, namespace, workflow, "r")
    failed = until(cluster, namespace, "r", "the run to fail", phase_is("Failed"))
    assert steps(failed)["call-api"]["phase"] == "Failed"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["bob"],
                    input=json.dumps(injection("recover", "r", "call-api", {"recovered": True},
                                               "Recovered from external API timeout")))  # fmt: skip
    held = until(cluster, namespace, "r", "the run to be held", phase_is("Paused"))
    step = steps(held)["call-api"]
    assert (step["phase"], step["injected"], step["output"]) == ("Succeeded", True, {"recovered": True})
    assert held["metadata"]["annotations"]["retcon.dev/pause"] == "true"  # Hold: held until resumed
    injected = next(e for e in held["status"]["audit"] if e["type"] == "step.injected")
    assert injected["details"]["recoveredFailure"] is True
    assert "previousOutput" not in injected  # a failed step had no output
    cluster.kubectl(
        "annotate", "workflowrun", "r", "retcon.dev/pause-", "-n", namespace, as_user=people["alice"]
    )
    done = until(cluster, namespace, "r", "the run to finish", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    assert steps(done)["use-it"]["output"] == {"got": True}


def test_release_resumes_by_itself_after_an_injection(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start_and_pause(cluster, namespace, people, order_workflow("orders", pauseBehavior="Release"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["bob"],
                    input=json.dumps(injection("fix", "r", "validate-payment", {"valid": True, "amount": 7}, "quick fix")))  # fmt: skip
    done = until(cluster, namespace, "r", "the run to finish", phase_is("Succeeded", "Failed"))
    assert steps(done)["send-notification"]["output"]["sawAmount"] == 7
    assert "retcon.dev/pause" not in done["metadata"].get("annotations", {})
    assert [e["type"] for e in done["status"]["audit"]][-2:] == ["step.injected", "run.resumed"]


@pytest.mark.parametrize(
    ("step", "phase_words"),
    [("send-notification", "is Pending: it has not run yet"), ("step_009", "has no step 'step_009'")],
)
def test_an_injection_into_a_step_without_output_is_refused_with_a_reason(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path], step: str, phase_words: str
) -> None:
    start_and_pause(cluster, namespace, people, order_workflow("orders"))
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["bob"], check=False,
                             input=json.dumps(injection("bad", "r", step, {"x": 1}, "why not")))  # fmt: skip
    if result.returncode != 0:  # refused at apply time
        assert phase_words in result.stderr
        return
    rejected = wait_for(
        "the rejection",
        lambda: (
            (i := cluster.get_json("injection", "bad", "-n", namespace)).get("status", {}).get("phase") and i
        ),
    )
    assert rejected["status"]["phase"] == "Rejected"
    assert phase_words in rejected["status"]["message"]
    assert steps(get(cluster, namespace, "r"))["send-notification"]["phase"] == "Pending"


def test_a_pause_request_holds_the_run_while_it_exists(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, order_workflow("orders"), "r")
    until(
        cluster,
        namespace,
        "r",
        "settle to run",
        lambda o: (o.get("status") or {}).get("currentStep") == "settle",
    )
    hold = {"apiVersion": "retcon.dev/v1alpha1", "kind": "PauseRequest", "metadata": {"name": "freeze"},
            "spec": {"runName": "r", "reason": "change freeze"}}  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(hold), as_user=people["alice"])
    until(cluster, namespace, "r", "the run to pause", phase_is("Paused"))
    request = wait_for(
        "its status",
        lambda: (
            (p := cluster.get_json("pauserequest", "freeze", "-n", namespace)).get("status", {}).get("phase")
            == "Holding"
            and p
        ),
    )
    assert request["status"]["requestedBy"] == "alice"
    cluster.kubectl("delete", "pauserequest", "freeze", "-n", namespace, as_user=people["bob"])
    done = until(cluster, namespace, "r", "the run to finish", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    audit = [(e["type"], e["actor"], e.get("reason")) for e in done["status"]["audit"]]
    assert audit[0] == ("run.pause_requested", "alice", "change freeze")
    assert ("run.resumed", "bob", "PauseRequest freeze deleted") in audit
    assert cluster.kubectl("get", "pauserequest", "freeze", "-n", namespace, check=False).returncode != 0


def test_resume_from_a_step_reruns_it_and_everything_downstream(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start_and_pause(cluster, namespace, people, order_workflow("orders"))
    cluster.kubectl("annotate", "workflowrun", "r", "retcon.dev/pause-", "retcon.dev/resume-from-step=validate-payment",
                    "-n", namespace, as_user=people["alice"])  # fmt: skip
    done = until(cluster, namespace, "r", "the run to finish", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    by_name = steps(done)
    assert len(by_name["fetch-order"]["attempts"]) == 1
    assert [a["number"] for a in by_name["validate-payment"]["attempts"]] == [1, 2]
    assert [a["number"] for a in by_name["settle"]["attempts"]] == [1, 2]
    assert len(by_name["send-notification"]["attempts"]) == 1
    resumed = next(e for e in done["status"]["audit"] if e["type"] == "run.resumed")
    assert resumed["actor"] == "alice"
    assert resumed["details"]["rerun"] == ["validate-payment", "settle", "send-notification"]
    assert "retcon.dev/resume-from-step" not in done["metadata"].get("annotations", {})


def test_mistyped_annotations_are_refused_and_change_nothing(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, order_workflow("orders"), "r")
    until(cluster, namespace, "r", "the snapshot", lambda o: (o.get("status") or {}).get("definition"))
    for annotation, words in (
        ("retcon.dev/pause=yes", 'must be "true"'),
        ("retcon.dev/resume-from-step=nope", "has no step 'nope'"),
        ("signal.retcon.dev/settle={not json", "not JSON"),
    ):
        result = cluster.kubectl(
            "annotate", "workflowrun", "r", annotation, "-n", namespace, as_user=people["alice"], check=False
        )
        assert result.returncode != 0
        assert words in result.stderr
    annotations = get(cluster, namespace, "r")["metadata"].get("annotations", {})
    assert not any(
        key.startswith(("retcon.dev/pause", "retcon.dev/resume", "signal.")) for key in annotations
    )


def sleepy_workflow(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "steps": [
                sh("before", "echo '{\"n\": 1}' > $RETCON_OUTPUT"),
                {"name": "nap", "type": "Sleep", "duration": "4s"},
                {"name": "approval", "type": "Wait", "timeoutSeconds": 120},
                sh("after", "cat $RETCON_INPUT > /dev/null; echo '{\"done\": true}' > $RETCON_OUTPUT"),
            ]
        },
    }


def test_sleep_and_wait_steps_pause_the_run_and_a_signal_completes_the_wait(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, sleepy_workflow("sleepy"), "r")
    sleeping = until(cluster, namespace, "r", "the sleep", phase_is("Paused"))
    assert (sleeping["status"]["pauseReason"], sleeping["status"]["nextStepHint"]) == ("sleep", "nap")
    waiting = until(
        cluster, namespace, "r", "the wait", lambda o: (o.get("status") or {}).get("pauseReason") == "wait"
    )
    assert steps(waiting)["nap"]["output"] == {"sleptSeconds": 4.0}
    assert steps(waiting)["approval"]["phase"] == "Waiting"
    cluster.kubectl("annotate", "workflowrun", "r", 'signal.retcon.dev/approval={"approved": true, "by": "risk"}',
                    "-n", namespace, as_user=people["carol"])  # fmt: skip
    done = until(cluster, namespace, "r", "the run to finish", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert steps(done)["approval"]["output"] == {"approved": True, "by": "risk"}
    signalled = next(e for e in done["status"]["audit"] if e["type"] == "step.signalled")
    assert (signalled["actor"], signalled["stepName"]) == ("carol", "approval")
    assert not any(k.startswith("signal.") for k in done["metadata"].get("annotations", {}))


def test_pausing_a_sleeping_run_keeps_it_held_after_the_sleep(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, sleepy_workflow("sleepy"), "r")
    until(
        cluster, namespace, "r", "the sleep", lambda o: (o.get("status") or {}).get("pauseReason") == "sleep"
    )
    cluster.kubectl(
        "annotate", "workflowrun", "r", "retcon.dev/pause=true", "-n", namespace, as_user=people["alice"]
    )
    upgraded = until(
        cluster,
        namespace,
        "r",
        "the reason to change",
        lambda o: o["status"].get("pauseReason") == "injection",
    )
    assert upgraded["status"]["phase"] == "Paused"
    # The sleep ends, but the run stays held: the Wait step does not start.
    slept = until(
        cluster,
        namespace,
        "r",
        "the sleep to end",
        lambda o: steps(o)["nap"]["phase"] == "Succeeded",
        timeout=30,
    )
    assert slept["status"]["phase"] == "Paused"
    assert slept["status"]["pauseReason"] == "injection"
    assert steps(slept)["approval"]["phase"] == "Pending"
    cluster.kubectl(
        "annotate", "workflowrun", "r", "retcon.dev/pause-", "-n", namespace, as_user=people["alice"]
    )
    until(cluster, namespace, "r", "the wait", lambda o: (o.get("status") or {}).get("pauseReason") == "wait")


def test_racing_injections_and_progress_never_lose_an_update(
    cluster: ClusterHandle, namespace: str, people: dict[str, Path]
) -> None:
    start(cluster, namespace, order_workflow("orders"), "r")
    until(
        cluster,
        namespace,
        "r",
        "settle to run",
        lambda o: (o.get("status") or {}).get("currentStep") == "settle",
    )
    cluster.kubectl(
        "annotate", "workflowrun", "r", "retcon.dev/pause=true", "-n", namespace, as_user=people["alice"]
    )
    # Five injections into one step, applied at once while the run is still finishing its step.
    documents = [
        injection(f"race-{i}", "r", "validate-payment", {"valid": True, "amount": i}, f"race {i}")
        for i in range(5)
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", as_user=people["bob"],
                    input="\n---\n".join(json.dumps(d) for d in documents))  # fmt: skip

    def all_applied() -> list[dict[str, Any]] | None:
        items = [cluster.get_json("injection", f"race-{i}", "-n", namespace) for i in range(5)]
        return items if all((i.get("status") or {}).get("phase") == "Applied" for i in items) else None

    applied = wait_for("every injection to apply", all_applied, timeout=60)
    run = until(cluster, namespace, "r", "the pause", phase_is("Paused"))
    entries = [e for e in run["status"]["audit"] if e["type"] == "step.injected"]
    assert len(entries) == 5
    # Applied one after another: each saw the previous one's output, and the audit agrees with the step.
    chain = [entries[0]["previousOutput"]["amount"]] + [e["newOutput"]["amount"] for e in entries]
    assert chain[0] == 99
    for earlier, later in itertools.pairwise(entries):
        assert later["previousOutput"] == earlier["newOutput"]
    assert steps(run)["validate-payment"]["output"] == entries[-1]["newOutput"]
    by_name = {i["metadata"]["name"]: i["status"]["previousOutput"] for i in applied}
    assert sorted(p["amount"] for p in by_name.values()) == sorted(chain[:-1])
