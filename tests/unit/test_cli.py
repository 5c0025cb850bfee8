"""`kubectl retcon` against kmock's emulator: what each command prints, sends, and exits with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from retcon.cli import cli, main
from tests.unit.test_client import (
    AUDIT,
    FRAUD,
    NS,
    PAUSED_STEPS,
    RUN_PATH,
    WAITING,
    FakeCluster,
    annotations_patch,
    definition,
    fake_cluster,
    make_run,
    pause_request,
    step,
    workflow_object,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path) as fake:
        yield fake


def kr(cluster: FakeCluster, *args: str, input: str | None = None) -> Result:
    """`kubectl retcon --kubeconfig <fake> ARGS`, in process."""
    result = CliRunner().invoke(cli, ["--kubeconfig", str(cluster.kubeconfig), *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


# --- start-up ----------------------------------------------------------------------------------------


def test_help_is_fast_and_loads_neither_the_sdk_nor_rich() -> None:
    script = (
        "import sys, time; start = time.perf_counter()\n"
        "from retcon.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'lightkube', 'rich', 'pydantic', 'httpx2', 'yaml'})\n"
        "print(repr((heavy, time.perf_counter() - start)), file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    total = time.perf_counter() - started
    heavy, importing = eval(done.stderr.strip().splitlines()[-1])  # noqa: S307 - our own repr, just above
    assert heavy == []
    assert "Usage: kubectl retcon [OPTIONS] COMMAND [ARGS]..." in done.stdout
    assert importing < 0.3
    assert total < 2.0  # the interpreter's own start-up is most of it, and varies by machine


@pytest.mark.parametrize(
    "command",
    [
        ["start"], ["list"], ["get"], ["watch"], ["run"], ["run", "pause"], ["run", "paused-state"],
        ["run", "inject"], ["run", "resume"], ["run", "signal"], ["run", "cancel"], ["run", "add-step"],
        ["run", "structure"], ["run", "path"], ["audit"], ["audit", "trail"],
    ],
)  # fmt: skip
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "--namespace" in result.output or command in (["run"], ["audit"])


def test_main_is_the_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "kubectl retcon" in capsys.readouterr().out
    assert 'kubectl-retcon = "retcon.cli:main"' in (REPO / "pyproject.toml").read_text()


# --- the walkthrough ---------------------------------------------------------------------------------


def test_run_pause_prints_pause_requested_and_sets_the_annotation(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(phase="Running"))
    assert ok(kr(cluster, "run", "pause", "order-1")) == "Run order-1: pause_requested\n"
    assert cluster.writes() == [("PATCH", RUN_PATH, annotations_patch(**{"retcon.dev/pause": "true"}))]


def test_run_paused_state_json_is_the_walkthroughs_shape(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    assert json.loads(ok(kr(cluster, "run", "paused-state", "order-1", "--json"))) == {
        "pause_reason": "injection",
        "next_step_hint": "send-notification",
        "steps": [
            {"id": "step_001", "name": "fetch-order", "injected": False, "output": {"orderId": "123"}},
            {
                "id": "step_002",
                "name": "validate-payment",
                "injected": False,
                "output": {"valid": True, "amount": 99},
            },
        ],
    }


def test_run_paused_state_table_shows_finished_steps_and_the_next_one(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    out = ok(kr(cluster, "run", "paused-state", "order-1"))
    assert "Run order-1 is Paused (injection)" in out
    assert "Next step: send-notification" in out
    assert "step_002" in out
    assert '{"valid":true,"amount":99}' in out
    assert "step_003" not in out


def test_run_inject_prints_the_step_and_the_previous_output(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    cluster.api.injection_answer = {"phase": "Applied", "previousOutput": {"valid": True, "amount": 99}}
    out = ok(
        kr(cluster, "run", "inject", "order-1", "step_002", "--output", '{"valid": true, "amount": 50}',
           "--reason", "Corrected amount for partial refund test")
    )  # fmt: skip
    assert out == 'Injected step step_002\nPrevious output: {"valid":true,"amount":99}\n'
    ((method, _, body),) = cluster.writes()
    assert method == "POST"
    assert body["spec"] == {
        "runName": "order-1",
        "step": "step_002",
        "output": {"valid": True, "amount": 50},
        "reason": "Corrected amount for partial refund test",
    }


def test_run_inject_reads_the_output_from_a_file_or_stdin(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.put("workflowruns", make_run())
    cluster.api.injection_answer = {"phase": "Applied"}
    (tmp_path / "out.json").write_text('{"from": "file"}')
    (tmp_path / "out.yaml").write_text("from: yaml\n")
    ok(
        kr(
            cluster,
            "run",
            "inject",
            "order-1",
            "step_002",
            "--output",
            f"@{tmp_path / 'out.json'}",
            "--reason",
            "r",
        )
    )
    ok(
        kr(
            cluster,
            "run",
            "inject",
            "order-1",
            "step_002",
            "--output",
            f"@{tmp_path / 'out.yaml'}",
            "--reason",
            "r",
        )
    )
    out = ok(
        kr(
            cluster,
            "run",
            "inject",
            "order-1",
            "step_001",
            "--output",
            "@-",
            "--reason",
            "r",
            input='{"a": 1}',
        )
    )
    assert out.endswith("Previous output: null\n")
    assert [body["spec"]["output"] for _, _, body in cluster.writes()] == [
        {"from": "file"},
        {"from": "yaml"},
        {"a": 1},
    ]


def test_run_resume_and_resume_from_a_step(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    assert ok(kr(cluster, "run", "resume", "order-1")) == "Run order-1: resume_requested\n"
    assert ok(kr(cluster, "run", "resume", "order-1", "--from-step", "step_003")) == (
        "Run order-1: resume_requested from step_003\n"
    )
    assert [body for _, _, body in cluster.writes()] == [
        annotations_patch(**{"retcon.dev/pause": None}),
        annotations_patch(**{"retcon.dev/pause": None, "retcon.dev/resume-from-step": "step_003"}),
    ]


def test_run_resume_of_a_held_run_fails_unless_released(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    cluster.put("pauserequests", pause_request("freeze-a", "order-1"))
    cluster.put("pauserequests", pause_request("freeze-b", "order-1"))
    held = kr(cluster, "run", "resume", "order-1")
    assert held.exit_code == 1
    assert (
        held.stderr
        == "error: run order-1 is held by PauseRequest(s) freeze-a, freeze-b; delete them to resume\n"
    )
    assert cluster.writes() == []
    out = ok(kr(cluster, "run", "resume", "order-1", "--release"))
    assert (
        out == "Deleted PauseRequest freeze-a\nDeleted PauseRequest freeze-b\nRun order-1: resume_requested\n"
    )


def test_run_signal_cancel_and_add_step(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(steps=WAITING, pauseReason="wait", nextStepHint="approve"))
    assert ok(kr(cluster, "run", "signal", "order-1", "approve", "--data", '{"approved": true}')) == (
        "Signalled step approve\n"
    )
    cluster.put("workflowruns", make_run(phase="Running"))
    step_json = '{"name": "fraud-check", "function": "shop.steps:fraud"}'
    assert ok(
        kr(
            cluster,
            "run",
            "add-step",
            "order-1",
            "--after",
            "validate-payment",
            "--step",
            step_json,
            "--reason",
            "why",
        )
    ) == ("Run order-1: add_step_requested (fraud-check after validate-payment)\n")
    assert ok(kr(cluster, "run", "cancel", "order-1")) == "Run order-1: cancel_requested\n"
    assert [body for _, _, body in cluster.writes()] == [
        annotations_patch(**{"signal.retcon.dev/approve": '{"approved":true}'}),
        annotations_patch(
            **{
                "retcon.dev/add-step": '{"after":"validate-payment","step":{"name":"fraud-check",'
                '"function":"shop.steps:fraud"},"reason":"why"}'
            }
        ),
        annotations_patch(**{"retcon.dev/cancel": "true"}),
    ]


# --- reading -----------------------------------------------------------------------------------------


def test_list_shows_a_table_or_json(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    cluster.put("workflowruns", make_run("elsewhere", "Running", namespace="other"))
    out = ok(kr(cluster, "list"))
    assert out.splitlines()[0].split() == ["NAME", "WORKFLOW", "PHASE", "PROGRESS", "CURRENT/NEXT", "AGE"]
    assert "order-1" in out
    assert "Paused (injection)" in out
    assert "elsewhere" not in out
    everywhere = ok(kr(cluster, "list", "-A"))
    assert everywhere.splitlines()[0].split()[0] == "NAMESPACE"
    assert "elsewhere" in everywhere
    assert [run["name"] for run in json.loads(ok(kr(cluster, "list", "-A", "--json")))] == [
        "elsewhere",
        "order-1",
    ]


def test_list_of_an_empty_namespace_says_so(cluster: FakeCluster) -> None:
    assert ok(kr(cluster, "list")) == "No runs found.\n"


def test_get_shows_the_run_and_its_steps(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    out = ok(kr(cluster, "get", "order-1"))
    for expected in (
        "Run:",
        "order-1",
        "Paused (injection)",
        "send-notification",
        '{"orderId":"123"}',
        "step_003",
    ):
        assert expected in out
    document = json.loads(ok(kr(cluster, "get", "order-1", "--json")))
    assert document["name"] == "order-1"
    assert [s["phase"] for s in document["steps"]] == ["Succeeded", "Succeeded", "Pending"]


def test_structure_marks_inserted_steps_injected(cluster: FakeCluster) -> None:
    snapshot = definition(FRAUD)
    snapshot["steps"][2]["dependsOn"] = ["fraud-check"]
    cluster.put(
        "workflowruns",
        make_run(steps=[*PAUSED_STEPS, step("step_004", "fraud-check", "Pending")], definition=snapshot),
    )
    out = ok(kr(cluster, "run", "structure", "order-1"))
    assert "Inserted at run time" in out
    order = out[out.index("Execution order") :].splitlines()[1:]
    assert [line.split()[1] for line in order] == [
        "fetch-order",
        "validate-payment",
        "fraud-check",
        "send-notification",
    ]
    assert "[INJECTED]" in order[2]
    assert "[INJECTED]" not in "".join(order[:2] + order[3:])
    assert (
        json.loads(ok(kr(cluster, "run", "structure", "order-1", "--json")))["inserted"][0]["name"]
        == "fraud-check"
    )


def test_path_lists_executed_steps_with_duration_and_injected(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run())
    out = ok(kr(cluster, "run", "path", "order-1"))
    assert out.splitlines()[0].split() == ["#", "STEP", "TYPE", "PHASE", "DURATION", "INJECTED?", "OUTPUT"]
    assert "2.0s" in out
    assert "1.5s" in out
    assert "NO" in out
    steps = json.loads(ok(kr(cluster, "run", "path", "order-1", "--json")))["steps"]
    assert [(s["name"], s["duration_seconds"], s["injected"]) for s in steps] == [
        ("fetch-order", 2.0, False),
        ("validate-payment", 1.5, False),
    ]


def test_audit_trail_table_json_and_type_filter(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(audit=AUDIT))
    out = ok(kr(cluster, "audit", "trail", "order-1"))
    assert "run.pause_requested" in out
    assert "Corrected amount" in out
    entries = json.loads(ok(kr(cluster, "audit", "trail", "order-1", "--type", "step.injected", "--json")))
    assert [(e["type"], e["previous_output"], e["new_output"]) for e in entries] == [
        ("step.injected", {"valid": True, "amount": 99}, {"valid": True, "amount": 50})
    ]


def test_watch_prints_changes_until_the_run_pauses(cluster: FakeCluster) -> None:
    running = [PAUSED_STEPS[0], step("step_002", "validate-payment", "Running"), PAUSED_STEPS[2]]
    cluster.put("workflowruns", make_run(phase="Paused", steps=running, pauseReason=None))
    out = ok(kr(cluster, "watch", "order-1"))
    lines = [line.split(maxsplit=1)[1] for line in out.splitlines()[:-2]]
    assert lines == [
        "step_001 fetch-order: Succeeded in 2.0s",
        "step_002 validate-payment: Running",
        "run order-1: Paused",
    ]
    assert out.splitlines()[-1] == "Inspect it: kubectl retcon run paused-state order-1"


def test_watch_exits_1_when_the_run_failed(cluster: FakeCluster) -> None:
    steps = [step("step_001", "fetch-order", "Failed", message="boom")]
    cluster.put(
        "workflowruns", make_run(phase="Failed", steps=steps, message="step fetch-order failed: boom")
    )
    result = kr(cluster, "watch", "order-1")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].endswith("run order-1: Failed: step fetch-order failed: boom")
    assert json.loads(kr(cluster, "watch", "order-1", "--json").stdout)["phase"] == "Failed"


def test_start_creates_a_run_from_an_input_file(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.put("workflows", workflow_object())
    (tmp_path / "input.json").write_text('{"orderId": "123", "amount": 20000}')
    out = ok(
        kr(cluster, "start", "order-processing", "--input", f"@{tmp_path / 'input.json'}", "--tenant", "acme")
    )
    assert out == f"Started run order-processing-00001 (workflow order-processing, namespace {NS})\n"
    ((_, _, body),) = cluster.writes()
    assert body["spec"] == {
        "workflowRef": {"name": "order-processing"},
        "input": {"orderId": "123", "amount": 20000},
        "tenant": "acme",
    }


def test_the_namespace_can_follow_the_command(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run("r", "Running", namespace="other"))
    assert ok(kr(cluster, "run", "pause", "r", "-n", "other")) == "Run r: pause_requested\n"
    assert ok(kr(cluster, "-n", "other", "run", "pause", "r")) == "Run r: pause_requested\n"
    assert [path for _, path, _ in cluster.writes()] == [
        "/apis/retcon.dev/v1alpha1/namespaces/other/workflowruns/r",
    ] * 2


# --- mistakes: one line on stderr, exit 1, nothing changed -------------------------------------------


MISTAKES: list[tuple[list[str], str]] = [
    (["get", "nope"], "run nope not found in namespace shop"),
    (["run", "pause", "done"], "run done is Succeeded: a finished run cannot be paused"),
    (["run", "paused-state", "busy"], "run busy is Running, not paused: pause it first"),
    (["run", "inject", "order-1", "step_002", "--output", "{bad", "--reason", "r"],
     "--output is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    (["run", "inject", "order-1", "step_002", "--output", "[1, 2]", "--reason", "r"],
     "the output must be a JSON object, got an array"),
    (["run", "inject", "order-1", "step_002", "--output", "@/nonexistent/out.json", "--reason", "r"],
     "--output @/nonexistent/out.json: cannot read the file: No such file or directory"),
    (["run", "inject", "order-1", "step_002", "--output", "{}", "--reason", ""],
     "a reason is required: say why, it goes into the audit trail"),
    (["run", "inject", "order-1", "charge", "--output", "{}", "--reason", "r"],
     "step 'charge' not found in run order-1; valid steps: step_001 (fetch-order), step_002 (validate-payment),"
     " step_003 (send-notification)"),
    (["run", "inject", "order-1", "send-notification", "--output", "{}", "--reason", "r"],
     "step step_003 (send-notification) is Pending: only a Succeeded or Failed step can be injected into;"
     " it has not run yet, so it has no output to replace"),
    (["run", "inject", "busy", "step_001", "--output", "{}", "--reason", "r"],
     "run busy is Running: pause it first, then inject once it is Paused"),
    (["run", "resume", "busy"], "run busy is Running: there is nothing to resume"),
    (["run", "resume", "order-1", "--from-step", "nope"], "step 'nope' not found in run order-1; valid steps: "
     "step_001 (fetch-order), step_002 (validate-payment), step_003 (send-notification)"),
    (["run", "signal", "order-1", "step_001", "--data", "yes"],
     "--data is not valid JSON: Expecting value at line 1 column 1"),
    (["run", "signal", "order-1", "step_001", "--data", "{}"],
     "step step_001 (fetch-order) is a Standard step: only a Wait step takes a signal"),
    (["run", "cancel", "done"], "run done is already Succeeded: there is nothing to cancel"),
    (["run", "add-step", "busy", "--after", "fetch-order", "--step", '{"name": "x", "image": "b"}', "--reason", "r"],
     "step fetch-order is not an injection point of run busy (its workflow's spec.injectionPoints: validate-payment);"
     " steps can only be added after one of those"),
    (["audit", "trail", "order-1", "--type", "bogus"],
     "unknown audit entry type 'bogus'; use one of run.pause_requested, run.paused, run.resumed, step.injected,"
     " step.dynamic_injection, step.added, step.signalled"),
    (["start", "order-processing", "--input", "[]"], "the input must be a JSON object, got an array"),
    (["start", "missing"], "workflow missing not found in namespace shop: apply it first"),
    (["--context", "elsewhere", "list"], "cannot use the kubeconfig: Context 'elsewhere' not found"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[" ".join(args)[:60] for args, _ in MISTAKES])
def test_a_mistake_is_one_line_on_stderr_exit_1_and_changes_nothing(
    cluster: FakeCluster, args: list[str], message: str
) -> None:
    cluster.put("workflowruns", make_run())
    cluster.put("workflowruns", make_run("busy", "Running"))
    cluster.put("workflowruns", make_run("done", "Succeeded"))
    cluster.put("workflows", workflow_object())
    result = kr(cluster, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: {message}\n")
    assert cluster.writes() == []


@pytest.mark.parametrize(
    "args",
    [
        ["run", "inject", "order-1", "step_002", "--output", "{}"],
        ["run", "signal", "order-1", "approve"],
        ["run", "frobnicate", "order-1"],
        ["run", "inject", "order-1", "step_002", "--output", "{}", "--reason", "r", "--timeout", "-1"],
    ],
)
def test_a_usage_error_exits_2(cluster: FakeCluster, args: list[str]) -> None:
    result = kr(cluster, *args)
    assert result.exit_code == 2
    assert "Usage: " in result.stderr
    assert list(cluster.api) == []
