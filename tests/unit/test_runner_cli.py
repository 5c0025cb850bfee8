"""``python -m retcon_runner function``: input file in, output file and StepResult out, the exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retcon_runner import NON_RETRYABLE_EXIT_CODE, RETRYABLE_EXIT_CODE, SUCCESS_EXIT_CODE, run_step
from retcon_runner.__main__ import main
from retcon_runner._api import ApiServer
from tests.unit.test_runner_api import FakeApiServer
from tests.unit.test_runner_report import STEP_ENV

DOCUMENT = {
    "run": {"name": "order-42", "namespace": "shop", "uid": "6f1c2a0e-uid"},
    "step": {"id": "step_003", "name": "charge", "attempt": 2},
    "input": {"amount": 120},
    "state": {"amount": 120, "quote": {"total": 130.5}},
    "steps": {"quote": {"output": {"quote": {"total": 130.5}}, "phase": "Succeeded"}},
}

STEPS_SOURCE = """
import asyncio
from pathlib import Path
from retcon_runner import NonRetryableError

def charge(state, context):
    context.logger.info("Charging %s", state.amount)
    return {"charged": state.quote.total, "attempt": context.attempt}

async def charge_async(state, context):
    await asyncio.sleep(0)
    return {"charged": state.amount}

def explode(state, context):
    raise ValueError(f"card {state.amount} declined")

def refuse(state, context):
    raise NonRetryableError("customer does not exist")

def listing(state, context):
    return [1, 2]

def touch(state, context):
    Path(context.input.marker).write_text("ran")
    return {}
"""


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def api(fake_api: FakeApiServer, tmp_path: Path) -> ApiServer:
    token = tmp_path / "token"
    token.write_text("function-token")
    return ApiServer(base_url=fake_api.url, token_path=token)


@pytest.fixture
def steps_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"retcon_cli_steps_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(STEPS_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "input" / "input.json"
    path.parent.mkdir()
    path.write_text(json.dumps(DOCUMENT))
    return path


@pytest.fixture
def output_file(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "output.json"
    path.parent.mkdir()
    return path


def _environ(input_file: Path, output_file: Path, function: str) -> dict[str, str]:
    return {
        **STEP_ENV,
        "RETCON_INPUT": str(input_file),
        "RETCON_OUTPUT": str(output_file),
        "RETCON_FUNCTION": function,
    }


def _spec(fake_api: FakeApiServer) -> dict[str, Any]:
    [request] = fake_api.requests
    spec: dict[str, Any] = request.json()["spec"]
    return spec


def test_a_successful_step_writes_its_output_reports_it_and_exits_0(
    fake_api: FakeApiServer,
    api: ApiServer,
    steps_module: str,
    input_file: Path,
    output_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = _environ(input_file, output_file, f"{steps_module}:charge")
    assert main(["function"], environ=environ, server=api) == SUCCESS_EXIT_CODE
    assert json.loads(output_file.read_text()) == {"charged": 130.5, "attempt": 2}
    [request] = fake_api.requests
    assert request.headers["authorization"] == "Bearer function-token"
    assert request.path == "/apis/retcon.dev/v1alpha1/namespaces/shop/stepresults"
    body = request.json()
    assert body["metadata"]["name"] == "order-42-step-003-a2"
    assert body["spec"] == {
        "runName": "order-42",
        "stepId": "step_003",
        "stepName": "charge",
        "attempt": 2,
        "podName": "order-42-step-003-a2-x7k2p",
        "outcome": "Succeeded",
        "output": {"charged": 130.5, "attempt": 2},
        "outputBytes": len(b'{"charged":130.5,"attempt":2}'),
    }
    err = capsys.readouterr().err
    assert "INFO retcon.step.charge: Charging 120" in err
    assert "Created StepResult shop/order-42-step-003-a2 (outcome Succeeded)" in err


def test_an_async_step_runs_from_the_command_line(
    fake_api: FakeApiServer, api: ApiServer, steps_module: str, input_file: Path, output_file: Path
) -> None:
    environ = _environ(input_file, output_file, f"{steps_module}:charge_async")
    assert main(["function"], environ=environ, server=api) == 0
    assert _spec(fake_api)["output"] == {"charged": 120}


def test_an_exception_exits_1_and_reports_the_message(
    fake_api: FakeApiServer,
    api: ApiServer,
    steps_module: str,
    input_file: Path,
    output_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = _environ(input_file, output_file, f"{steps_module}:explode")
    assert main(["function"], environ=environ, server=api) == RETRYABLE_EXIT_CODE
    spec = _spec(fake_api)
    assert spec["outcome"] == "Failed"
    assert spec["error"]["type"] == "ValueError"
    assert spec["error"]["message"].startswith("ValueError: card 120 declined\n\nTraceback")
    assert "output" not in spec
    assert not output_file.exists()
    err = capsys.readouterr().err
    assert "ERROR retcon.runner: Step charge ended Failed: ValueError: card 120 declined" in err
    assert 'in explode\n    raise ValueError(f"card {state.amount} declined")' in err


@pytest.mark.parametrize(
    ("function", "error_type", "message"),
    [
        ("refuse", "retcon_runner.NonRetryableError", "customer does not exist"),
        ("listing", "InvalidOutput", "step output must be a JSON object, got list"),
        ("nothing_here", "InvalidFunction", "has no attribute 'nothing_here'"),
    ],
)
def test_a_non_retryable_failure_exits_42(
    fake_api: FakeApiServer,
    api: ApiServer,
    steps_module: str,
    input_file: Path,
    output_file: Path,
    function: str,
    error_type: str,
    message: str,
) -> None:
    environ = _environ(input_file, output_file, f"{steps_module}:{function}")
    assert main(["function"], environ=environ, server=api) == NON_RETRYABLE_EXIT_CODE == 42
    spec = _spec(fake_api)
    assert spec["outcome"] == "NonRetryable"
    assert spec["error"]["type"] == error_type
    assert message in spec["error"]["message"]


def test_a_missing_function_setting_is_reported_non_retryable(
    fake_api: FakeApiServer, api: ApiServer, input_file: Path, output_file: Path
) -> None:
    environ = _environ(input_file, output_file, "")
    assert main(["function"], environ=environ, server=api) == 42
    assert _spec(fake_api)["error"] == {
        "type": "InvalidFunction",
        "message": "RETCON_FUNCTION is not set; name the step's callable as 'package.module:callable'",
    }


def test_an_unreadable_input_is_reported_non_retryable(
    fake_api: FakeApiServer, api: ApiServer, steps_module: str, tmp_path: Path, output_file: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (tmp_path / "absent.json", broken):
        fake_api.requests.clear()
        environ = _environ(path, output_file, f"{steps_module}:charge")
        assert main(["function"], environ=environ, server=api) == 42
        error = _spec(fake_api)["error"]
        assert error["type"] == "InvalidInput"
        assert error["message"].startswith(f"cannot read the input document {path}: ")


def test_a_refused_report_exits_1_even_when_the_step_succeeded(
    fake_api: FakeApiServer,
    api: ApiServer,
    steps_module: str,
    input_file: Path,
    output_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_api.status_reply(403, "Forbidden", "stepresults.retcon.dev is forbidden")
    environ = _environ(input_file, output_file, f"{steps_module}:charge")
    assert main(["function"], environ=environ, server=api) == 1
    err = capsys.readouterr().err
    assert "Failed to create StepResult shop/order-42-step-003-a2: 403 Forbidden: " in err
    assert "stepresults.retcon.dev is forbidden" in err


def test_an_earlier_report_of_the_same_attempt_keeps_the_step_exit_code(
    fake_api: FakeApiServer, api: ApiServer, steps_module: str, input_file: Path, output_file: Path
) -> None:
    fake_api.status_reply(409, "AlreadyExists", "already exists")
    environ = _environ(input_file, output_file, f"{steps_module}:refuse")
    assert main(["function"], environ=environ, server=api) == 42


def test_without_the_operator_settings_the_function_is_not_called(
    fake_api: FakeApiServer,
    api: ApiServer,
    steps_module: str,
    input_file: Path,
    output_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "marker"
    input_file.write_text(json.dumps({**DOCUMENT, "input": {"marker": str(marker)}}))
    environ = _environ(input_file, output_file, f"{steps_module}:touch")
    del environ["RETCON_RESULT_NAME"]
    assert main(["function"], environ=environ, server=api) == 42
    assert "RETCON_RESULT_NAME is not set; this container must be started by the Retcon operator" in (
        capsys.readouterr().err
    )
    assert not marker.exists()
    assert fake_api.requests == []


def test_outside_a_pod_the_function_is_not_called(
    steps_module: str, input_file: Path, output_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    input_file.write_text(json.dumps({**DOCUMENT, "input": {"marker": str(marker)}}))
    environ = _environ(input_file, output_file, f"{steps_module}:touch")
    assert main(["function"], environ=environ) == 42
    assert "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set" in capsys.readouterr().err
    assert not marker.exists()


def test_the_step_logs_reach_callers_again_after_the_command(
    api: ApiServer, steps_module: str, input_file: Path, output_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main(["function"], environ=_environ(input_file, output_file, f"{steps_module}:charge"), server=api)
    with caplog.at_level("INFO", logger="retcon.step"):
        run_step(f"{steps_module}:charge", DOCUMENT)
    assert [record.getMessage() for record in caplog.records] == ["Charging 120"]


def _run_module(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value for key, value in os.environ.items() if not key.startswith(("RETCON_", "KUBERNETES_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "retcon_runner", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_module_runs_and_documents_its_exit_codes() -> None:
    result = _run_module("--help", env={})
    assert result.returncode == 0
    assert "function" in result.stdout
    assert "report" in result.stdout
    assert "42 failure that must not be retried" in " ".join(result.stdout.split())


def test_the_module_refuses_to_run_outside_a_pod(input_file: Path, output_file: Path) -> None:
    result = _run_module("function", env=_environ(input_file, output_file, "json:loads"))
    assert result.returncode == 42
    assert "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set" in result.stderr
    result = _run_module("report", "--once", env=_environ(input_file, output_file, ""))
    assert result.returncode == 42


def test_an_unknown_mode_is_a_usage_error() -> None:
    result = _run_module("sideways", env={})
    assert result.returncode == 2
    assert "invalid choice: 'sideways'" in result.stderr


_DRIVER = """
import sys
from pathlib import Path
from retcon_runner.__main__ import main
from retcon_runner._api import ApiServer
sys.exit(main(["function"], server=ApiServer(base_url=sys.argv[1], token_path=Path(sys.argv[2]))))
"""


def test_sigterm_stops_a_running_step_promptly_without_a_report(
    fake_api: FakeApiServer, input_file: Path, output_file: Path, tmp_path: Path
) -> None:
    name = f"retcon_cli_slow_{uuid.uuid4().hex[:12]}"
    started = tmp_path / "started"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import time
            from pathlib import Path

            def wait(state, context):
                Path({str(started)!r}).write_text("started")
                time.sleep(60)
                return {{}}
            """
        )
    )
    token = tmp_path / "token"
    token.write_text("function-token")
    env = {
        **os.environ,
        **_environ(input_file, output_file, f"{name}:wait"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, fake_api.url, str(token)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not started.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.02)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143
    assert time.monotonic() - began < 10
    assert "Received SIGTERM; step charge was stopped before it finished" in err
    assert fake_api.requests == []
