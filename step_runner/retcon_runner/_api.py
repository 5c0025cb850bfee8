"""The runner's only conversation with the Kubernetes API: creating its StepResult.

Standard library only (urllib, ssl, json). In a pod the server, token and CA
come from the in-cluster settings; the token is read again for every request
because the kubelet rotates it. Transient trouble (connection errors, 429,
5xx) is retried with capped exponential backoff until a deadline; 409
AlreadyExists means an earlier try of this attempt got through.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retcon_runner._errors import RunnerConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_DEADLINE_SECONDS = 60.0
USER_AGENT = "retcon-runner"

_FIRST_DELAY = 0.5
_MAX_DELAY = 8.0
_REQUEST_TIMEOUT = 10.0
_MIN_REQUEST_TIMEOUT = 1.0
_MAX_SHOWN_BODY = 500

log = logging.getLogger("retcon.runner")


class ApiError(Exception):
    """The StepResult could not be created; ``status`` is the HTTP status if there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to authenticate to it."""

    base_url: str
    token_path: Path | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str], account_dir: Path = SERVICE_ACCOUNT_DIR) -> ApiServer:
        """The API server as seen from a pod: service env vars, the mounted token and CA."""
        host = environ.get("KUBERNETES_SERVICE_HOST", "")
        port = environ.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise RunnerConfigError(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set; "
                "the runner reports through the Kubernetes API and must run in a pod"
            )
        token_path = account_dir / "token"
        ca_path = account_dir / "ca.crt"
        if not token_path.is_file():
            raise RunnerConfigError(
                f"no service account token at {token_path}; the step pod needs one "
                "(automountServiceAccountToken) to create its StepResult"
            )
        try:
            context = ssl.create_default_context(cafile=str(ca_path))
        except (OSError, ssl.SSLError) as exc:
            raise RunnerConfigError(f"cannot load the cluster CA from {ca_path}: {exc}") from exc
        # Cluster CAs are checked the way Kubernetes' own Go clients check them;
        # Python 3.13's stricter default rejects some that they accept.
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        if ":" in host:
            host = f"[{host}]"
        return cls(base_url=f"https://{host}:{port}", token_path=token_path, ssl_context=context)

    def bearer_token(self) -> str | None:
        if self.token_path is None:
            return None
        try:
            return self.token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(f"cannot read the service account token at {self.token_path}: {exc}") from exc


def step_results_path(namespace: str) -> str:
    return f"/apis/retcon.dev/v1alpha1/namespaces/{urllib.parse.quote(namespace, safe='')}/stepresults"


def create_step_result(
    server: ApiServer,
    body: Mapping[str, Any],
    *,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> bool:
    """Create the StepResult ``body``; True if created, False if it already existed.

    Raises ``ApiError`` on a refusal (a 4xx other than 409 and 429), or when
    transient errors outlast ``deadline`` seconds.
    """
    namespace = str(body["metadata"]["namespace"])
    url = server.base_url.rstrip("/") + step_results_path(namespace)
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    start = clock()
    delay = _FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        remaining = deadline - (clock() - start)
        timeout = max(min(_REQUEST_TIMEOUT, remaining), _MIN_REQUEST_TIMEOUT)
        retry_after: float | None = None
        try:
            status, payload, headers = _post(server, url, data, timeout)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"cannot reach the API server at {server.base_url}: {_reason(exc)}"
        else:
            if 200 <= status < 300:
                return True
            if status == 409:
                return False
            problem = _status_message(status, payload)
            if status != 429 and status < 500:
                raise ApiError(problem, status)
            retry_after = _retry_after(headers)
        pause = min(delay, _MAX_DELAY) * (0.5 + jitter() / 2)
        if retry_after is not None:
            pause = max(pause, min(retry_after, _MAX_DELAY))
        elapsed = clock() - start
        if elapsed + pause > deadline:
            raise ApiError(f"gave up after {tries} tries in {elapsed:.0f}s; last error: {problem}")
        log.warning("Retrying in %.1fs: %s", pause, problem)
        sleep(pause)
        delay *= 2


def _post(server: ApiServer, url: str, data: bytes, timeout: float) -> tuple[int, bytes, dict[str, str]]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    token = server.bearer_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310  # The URL is built from the in-cluster settings, never user input.
    # No proxy: the API server is reached directly, as Kubernetes clients in pods do.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if server.ssl_context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=server.ssl_context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(), _lower_keys(response.headers.items())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read(), _lower_keys(exc.headers.items())
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise ApiError(f"cannot trust the API server at {server.base_url}: {exc.reason}") from exc
        raise


def _lower_keys(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {key.lower(): value for key, value in items}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    return str(exc) or type(exc).__name__


def _status_message(status: int, payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        detail = document["message"]
    else:
        detail = text.strip()[:_MAX_SHOWN_BODY] or "(no body)"
    reason = http.client.responses.get(status, "")
    return f"{status} {reason}: {detail}" if reason else f"{status}: {detail}"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # An HTTP date: the backoff is good enough.
    return seconds if seconds >= 0 else None
