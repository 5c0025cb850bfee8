"""Report mode, the sidecar of image steps: what it reports for each output file, and when."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from retcon_runner import Outcome
from retcon_runner.__main__ import main
from retcon_runner._api import ApiServer
from retcon_runner._output import MAX_OUTPUT_FILE_BYTES
from retcon_runner._report import read_output_file
from tests.unit.test_runner_api import FakeApiServer

STEP_ENV = {
    "RETCON_RESULT_NAME": "order-42-step-003-a2",
    "RETCON_NAMESPACE": "shop",
    "RETCON_RUN": "order-42",
    "RETCON_RUN_UID": "6f1c2a0e-uid",
    "RETCON_STEP_ID": "step_003",
    "RETCON_STEP_NAME": "charge",
    "RETCON_ATTEMPT": "2",
    "RETCON_POD_NAME": "order-42-step-003-a2-x7k2p",
}


@pytest.fixture
def fake_api() -> Any:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def api(fake_api: FakeApiServer, tmp_path: Path) -> ApiServer:
    token = tmp_path / "token"
    token.write_text("sidecar-token")
    return ApiServer(base_url=fake_api.url, token_path=token)


@pytest.fixture
def output_file(tmp_path: Path) -> Path:
    return tmp_path / "out" / "output.json"


@pytest.fixture
def environ(output_file: Path) -> dict[str, str]:
    output_file.parent.mkdir()
    return {**STEP_ENV, "RETCON_OUTPUT": str(output_file)}


def _spec(fake_api: FakeApiServer) -> dict[str, Any]:
    [request] = fake_api.requests
    spec: dict[str, Any] = request.json()["spec"]
    return spec


def test_a_json_object_is_reported_as_the_output(
    fake_api: FakeApiServer, api: ApiServer, environ: dict[str, str], output_file: Path
) -> None:
    output_file.write_text('{"rows": 3, "file": "s3://bucket/rows.csv"}\n')
    assert main(["report", "--once"], environ=environ, server=api) == 0
    [request] = fake_api.requests
    assert request.headers["authorization"] == "Bearer sidecar-token"
    assert request.json() == {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "StepResult",
        "metadata": {
            "name": "order-42-step-003-a2",
            "namespace": "shop",
            "labels": {
                "retcon.dev/run": "order-42",
                "retcon.dev/step": "step_003",
                "retcon.dev/attempt": "2",
            },
            "ownerReferences": [
                {
                    "apiVersion": "retcon.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "name": "order-42",
                    "uid": "6f1c2a0e-uid",
                }
            ],
        },
        "spec": {
            "runName": "order-42",
            "stepId": "step_003",
            "stepName": "charge",
            "attempt": 2,
            "podName": "order-42-step-003-a2-x7k2p",
            "outcome": "Succeeded",
            "output": {"rows": 3, "file": "s3://bucket/rows.csv"},
            "outputBytes": len(b'{"rows":3,"file":"s3://bucket/rows.csv"}'),
        },
    }


def test_a_missing_file_is_an_empty_output_marked_missing(
    fake_api: FakeApiServer, api: ApiServer, environ: dict[str, str]
) -> None:
    assert main(["report", "--once"], environ=environ, server=api) == 0
    spec = _spec(fake_api)
    assert spec["outcome"] == "Succeeded"
    assert spec["output"] == {}
    assert spec["outputMissing"] is True
    assert spec["outputBytes"] == 2
    assert "error" not in spec


@pytest.mark.parametrize(
    ("content", "error_type", "message"),
    [
        (
            b"rows=3\n",
            "InvalidOutput",
            "step output file is not valid JSON: Expecting value: line 1 column 1",
        ),
        (b"[1, 2, 3]", "InvalidOutput", "step output must be a JSON object, got an array"),
        (b'{"ratio": NaN}', "InvalidOutput", "step output file is not valid JSON: NaN is not a JSON number"),
        (b"", "InvalidOutput", "step output file is empty"),
        (
            json.dumps({"blob": "x" * 1_400_000}).encode(),
            "OutputTooLarge",
            "step output is 1.3 MiB (1,400,011 bytes); the limit is 1 MiB — store large data elsewhere",
        ),
    ],
)
def test_an_unusable_file_is_reported_non_retryable(
    fake_api: FakeApiServer,
    api: ApiServer,
    environ: dict[str, str],
    output_file: Path,
    content: bytes,
    error_type: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output_file.write_bytes(content)
    assert main(["report", "--once"], environ=environ, server=api) == 0
    spec = _spec(fake_api)
    assert spec["outcome"] == "NonRetryable"
    assert spec["error"]["type"] == error_type
    assert spec["error"]["message"].startswith(message)
    assert "output" not in spec
    assert spec["outputBytes"] == 0
    assert message in capsys.readouterr().err


def test_a_huge_file_is_refused_without_reading_it(output_file: Path) -> None:
    output_file.parent.mkdir()
    with output_file.open("wb") as handle:
        handle.truncate(MAX_OUTPUT_FILE_BYTES + 1024 * 1024)  # sparse: nothing is written
    outcome = read_output_file(output_file)
    assert outcome.error is not None
    assert outcome.error.message.startswith(
        "step output file is 17.0 MiB (17,825,792 bytes); the limit is 1 MiB"
    )


def test_an_unreadable_output_path_is_non_retryable(tmp_path: Path) -> None:
    outcome = read_output_file(tmp_path)
    assert outcome.outcome is Outcome.NON_RETRYABLE
    assert outcome.error is not None
    assert outcome.error.message.startswith("cannot read the step output file:")


def test_a_refused_report_exits_1_with_the_api_message(
    fake_api: FakeApiServer, api: ApiServer, environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.status_reply(403, "Forbidden", 'stepresults.retcon.dev is forbidden: User "x" cannot create')
    assert main(["report", "--once"], environ=environ, server=api) == 1
    err = capsys.readouterr().err
    assert "Failed to create StepResult shop/order-42-step-003-a2: 403 Forbidden: " in err
    assert 'stepresults.retcon.dev is forbidden: User "x" cannot create' in err


def test_an_earlier_report_of_the_same_attempt_is_success(
    fake_api: FakeApiServer, api: ApiServer, environ: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.status_reply(409, "AlreadyExists", "already exists")
    assert main(["report", "--once"], environ=environ, server=api) == 0
    assert "StepResult shop/order-42-step-003-a2 already exists" in capsys.readouterr().err


def test_without_the_operator_settings_nothing_is_reported(
    fake_api: FakeApiServer, api: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {
        key: value for key, value in STEP_ENV.items() if key not in ("RETCON_RUN_UID", "RETCON_ATTEMPT")
    }
    assert main(["report", "--once"], environ=environ, server=api) == 42
    assert "RETCON_RUN_UID, RETCON_ATTEMPT are not set" in capsys.readouterr().err
    assert fake_api.requests == []


def test_report_mode_needs_the_output_path(
    fake_api: FakeApiServer, api: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--once"], environ=STEP_ENV, server=api) == 42
    assert "RETCON_OUTPUT is not set" in capsys.readouterr().err


# Waiting for the signal, in a process of its own.

_DRIVER = """
import sys
from pathlib import Path
from retcon_runner.__main__ import main
from retcon_runner._api import ApiServer
sys.exit(main(sys.argv[3:], server=ApiServer(base_url=sys.argv[1], token_path=Path(sys.argv[2]))))
"""


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the runner exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the runner did not get ready: {process.communicate()}")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param([signal.SIGTERM], id="SIGTERM"),
        pytest.param([signal.SIGINT], id="SIGINT"),
        pytest.param([signal.SIGTERM, signal.SIGINT, signal.SIGTERM], id="repeated"),
    ],
)
def test_the_sidecar_waits_for_a_stop_signal_then_reports_once(
    fake_api: FakeApiServer,
    environ: dict[str, str],
    output_file: Path,
    tmp_path: Path,
    signals: list[signal.Signals],
) -> None:
    token = tmp_path / "token"
    token.write_text("sidecar-token")
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, fake_api.url, str(token), "report", "--ready-file", str(ready)],
        env={**os.environ, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, process)
        output_file.write_text('{"done": true}')
        time.sleep(0.2)
        assert process.poll() is None
        assert fake_api.requests == []
        for number in signals:
            process.send_signal(number)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    received = [line for line in err.splitlines() if "; reporting the output of step charge" in line]
    assert len(received) == 1
    assert any(f"Received {number.name};" in received[0] for number in signals)
    assert len(fake_api.requests) == 1
    assert _spec(fake_api)["output"] == {"done": True}
