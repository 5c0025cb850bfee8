"""The runner's API client against a fake API server on 127.0.0.1: body, token, retries, refusals.

``FakeApiServer`` is also used by the report and command-line tests.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from retcon_runner import StepOutcome
from retcon_runner._api import ApiError, ApiServer, create_step_result
from retcon_runner._errors import RunnerConfigError
from retcon_runner._result import StepIdentity, build_step_result

STEP_RESULTS = "/apis/retcon.dev/v1alpha1/namespaces/shop/stepresults"

IDENTITY = StepIdentity(
    result_name="order-42-step-003-a2",
    namespace="shop",
    run_name="order-42",
    run_uid="6f1c2a0e-uid",
    step_id="step_003",
    step_name="charge",
    attempt=2,
    pod_name="order-42-step-003-a2-x7k2p",
)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class FakeApiServer:
    """An HTTP(S) server on 127.0.0.1 that records requests and answers from a script.

    With no scripted reply left it answers 201 with the request body, as the
    API server does for a create.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self._replies: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        # A short poll keeps shutdown (once per test) quick.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name="fake-api", daemon=True)
        self.scheme = "https" if tls is not None else "http"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        self._replies.append(_Reply(status, payload, headers or {}))

    def drop_connection(self) -> None:
        self._replies.append(_Reply(0, b"", drop=True))

    def status_reply(self, status: int, reason: str, message: str) -> None:
        self.reply(
            status,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message},
        )

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _next_reply(self, request: RecordedRequest) -> _Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        return _Reply(201, request.body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                reply = fake._next_reply(RecordedRequest("POST", self.path, headers, body))
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class FakeTime:
    """A clock that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("token-one\n")
    return path


@pytest.fixture
def api(fake_api: FakeApiServer, token_file: Path) -> ApiServer:
    return ApiServer(base_url=fake_api.url, token_path=token_file)


def _body() -> dict[str, Any]:
    return build_step_result(IDENTITY, StepOutcome.success({"charged": 120}, 14))


def _create(api: ApiServer, time: FakeTime | None = None, deadline: float = 60.0) -> bool:
    clock = time or FakeTime()
    return create_step_result(
        api, _body(), deadline=deadline, sleep=clock.sleep, clock=clock.clock, jitter=lambda: 1.0
    )


def test_the_result_is_posted_with_the_bearer_token(fake_api: FakeApiServer, api: ApiServer) -> None:
    assert _create(api) is True
    [request] = fake_api.requests
    assert request.method == "POST"
    assert request.path == STEP_RESULTS
    assert request.headers["authorization"] == "Bearer token-one"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
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
            "output": {"charged": 120},
            "outputBytes": 14,
        },
    }


def test_the_body_is_compact_utf8(fake_api: FakeApiServer, api: ApiServer) -> None:
    body = build_step_result(IDENTITY, StepOutcome.success({"name": "café"}, 16))
    create_step_result(api, body)
    assert b'"name":"caf\xc3\xa9"' in fake_api.requests[0].body


def test_already_exists_is_success(fake_api: FakeApiServer, api: ApiServer) -> None:
    fake_api.status_reply(
        409, "AlreadyExists", 'stepresults.retcon.dev "order-42-step-003-a2" already exists'
    )
    time = FakeTime()
    assert _create(api, time) is False
    assert len(fake_api.requests) == 1
    assert time.sleeps == []


def test_unavailable_is_retried_with_growing_delays(fake_api: FakeApiServer, api: ApiServer) -> None:
    for _ in range(3):
        fake_api.status_reply(503, "ServiceUnavailable", "etcd is unavailable")
    time = FakeTime()
    assert _create(api, time) is True
    assert len(fake_api.requests) == 4
    assert time.sleeps == [0.5, 1.0, 2.0]
    assert all(request.body == fake_api.requests[0].body for request in fake_api.requests)


def test_the_token_is_read_again_for_every_request(
    fake_api: FakeApiServer, api: ApiServer, token_file: Path
) -> None:
    fake_api.status_reply(503, "ServiceUnavailable", "try later")
    time = FakeTime()

    def rotate_then_sleep(seconds: float) -> None:
        token_file.write_text("token-two")
        time.sleep(seconds)

    create_step_result(api, _body(), sleep=rotate_then_sleep, clock=time.clock)
    assert [r.headers["authorization"] for r in fake_api.requests] == ["Bearer token-one", "Bearer token-two"]


def test_too_many_requests_waits_as_long_as_asked(fake_api: FakeApiServer, api: ApiServer) -> None:
    fake_api.reply(429, {"kind": "Status", "message": "slow down"}, headers={"Retry-After": "5"})
    time = FakeTime()
    assert _create(api, time) is True
    assert time.sleeps == [5.0]


def test_a_dropped_connection_is_retried(fake_api: FakeApiServer, api: ApiServer) -> None:
    fake_api.drop_connection()
    time = FakeTime()
    assert _create(api, time) is True
    assert len(fake_api.requests) == 2
    assert time.sleeps == [0.5]


def test_the_backoff_is_capped_and_gives_up_at_the_deadline(fake_api: FakeApiServer, api: ApiServer) -> None:
    for _ in range(50):
        fake_api.status_reply(500, "InternalError", "boom")
    time = FakeTime()
    with pytest.raises(
        ApiError, match=r"gave up after 11 tries in 56s; last error: 500 Internal Server Error: boom"
    ):
        _create(api, time)
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert sum(time.sleeps) <= 60


def test_jitter_shortens_delays_by_at_most_half(fake_api: FakeApiServer, api: ApiServer) -> None:
    fake_api.status_reply(503, "ServiceUnavailable", "busy")
    fake_api.status_reply(503, "ServiceUnavailable", "busy")
    time = FakeTime()
    create_step_result(api, _body(), sleep=time.sleep, clock=time.clock, jitter=lambda: 0.0)
    assert time.sleeps == [0.25, 0.5]


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (
            403,
            "Forbidden",
            'stepresults.retcon.dev is forbidden: User "system:serviceaccount:shop:step" cannot create '
            'resource "stepresults" in API group "retcon.dev" in the namespace "shop"',
        ),
        (422, "Invalid", 'StepResult.retcon.dev "x" is invalid: spec.attempt: Invalid value: 0'),
        (404, "NotFound", "the server could not find the requested resource"),
    ],
)
def test_a_refusal_is_fatal_at_once_with_the_api_message(
    fake_api: FakeApiServer, api: ApiServer, status: int, reason: str, message: str
) -> None:
    fake_api.status_reply(status, reason, message)
    time = FakeTime()
    with pytest.raises(ApiError) as caught:
        _create(api, time)
    assert caught.value.status == status
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{status} ")
    assert len(fake_api.requests) == 1
    assert time.sleeps == []


def test_a_refusal_without_a_status_object_shows_the_body(fake_api: FakeApiServer, api: ApiServer) -> None:
    fake_api.reply(401, b"Unauthorized\n")
    with pytest.raises(ApiError, match=r"^401 Unauthorized: Unauthorized$"):
        _create(api)


def test_an_unreachable_server_is_retried_then_reported(token_file: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    api = ApiServer(base_url=f"http://127.0.0.1:{closed_port}", token_path=token_file)
    time = FakeTime()
    with pytest.raises(
        ApiError, match=r"gave up after \d+ tries .* cannot reach the API server at http://127"
    ):
        _create(api, time, deadline=5.0)
    assert time.sleeps == [0.5, 1.0, 2.0]


def test_an_unreadable_token_is_fatal(fake_api: FakeApiServer, tmp_path: Path) -> None:
    api = ApiServer(base_url=fake_api.url, token_path=tmp_path / "missing-token")
    with pytest.raises(ApiError, match="cannot read the service account token"):
        _create(api)
    assert fake_api.requests == []


def test_the_namespace_is_escaped_in_the_path(fake_api: FakeApiServer, api: ApiServer) -> None:
    body = _body()
    body["metadata"]["namespace"] = "a/b"
    create_step_result(api, body)
    assert fake_api.requests[0].path == "/apis/retcon.dev/v1alpha1/namespaces/a%2Fb/stepresults"


# In-cluster settings


def _account_dir(tmp_path: Path, ca: bytes | None) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("in-cluster-token")
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca)
    return directory


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    other_cert: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate for the TLS tests")
    directory = tmp_path_factory.mktemp("tls")
    for name in ("server", "other"):
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1,IP:::1",
                "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.crt"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return TlsFiles(directory / "server.crt", directory / "server.key", directory / "other.crt")


@pytest.fixture
def tls_api(tls_files: TlsFiles) -> Iterator[FakeApiServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    with FakeApiServer(tls=context) as server:
        yield server


def test_in_cluster_settings_reach_the_server_over_verified_tls(
    tls_api: FakeApiServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_api.port)}
    api = ApiServer.in_cluster(environ, account_dir=_account_dir(tmp_path, tls_files.cert.read_bytes()))
    assert api.base_url == f"https://127.0.0.1:{tls_api.port}"
    assert _create(api) is True
    assert tls_api.requests[0].headers["authorization"] == "Bearer in-cluster-token"


def test_a_server_the_cluster_ca_did_not_sign_is_fatal_at_once(
    tls_api: FakeApiServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_api.port)}
    api = ApiServer.in_cluster(environ, account_dir=_account_dir(tmp_path, tls_files.other_cert.read_bytes()))
    time = FakeTime()
    with pytest.raises(ApiError, match=r"cannot trust the API server at https://127\.0\.0\.1"):
        _create(api, time)
    assert time.sleeps == []


def test_an_ipv6_service_host_is_bracketed(tls_files: TlsFiles, tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    api = ApiServer.in_cluster(environ, account_dir=_account_dir(tmp_path, tls_files.cert.read_bytes()))
    assert api.base_url == "https://[fd00::1]:443"


def test_in_cluster_settings_need_the_service_env(tmp_path: Path) -> None:
    with pytest.raises(
        RunnerConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"
    ):
        ApiServer.in_cluster({}, account_dir=_account_dir(tmp_path, b""))


def test_in_cluster_settings_need_the_token(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(
        RunnerConfigError, match=r"no service account token at .*automountServiceAccountToken"
    ):
        ApiServer.in_cluster(environ, account_dir=tmp_path)


def test_in_cluster_settings_need_a_readable_ca(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(RunnerConfigError, match="cannot load the cluster CA from"):
        ApiServer.in_cluster(environ, account_dir=_account_dir(tmp_path, b"not a certificate"))
