"""Probes and lifecycle hooks: exec (inside the container's mount namespace), httpGet, tcpSocket.

Exec handlers run through ``nsenter --target PID --mount`` so they see the
container's volumes at their mount paths, with the container's environment
and working directory. gRPC probes are checked as a TCP connection to the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from localkube.kubelet.downward import POD_IP
from localkube.kubelet.objects import Json
from localkube.kubelet.process import spawn

log = logging.getLogger(__name__)
NSENTER = "/usr/bin/nsenter"


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Json) -> ProbeTiming:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


def resolve_port(port: object, container: Json) -> int:
    """A numeric port, or a named one looked up in the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for entry in container.get("ports") or []:
        if entry.get("name") == text:
            return int(entry["containerPort"])
    raise ValueError(f"container {container.get('name')!r} has no port named {text!r}")


class Handler:
    """Runs one probe or hook action against a running container."""

    def __init__(
        self,
        action: Json,
        container: Json,
        *,
        pid: int,
        env: Mapping[str, str],
        cwd: Path,
        http: aiohttp.ClientSession,
        nsenter: str = NSENTER,
    ) -> None:
        self.action = action
        self.container = container
        self.pid = pid
        self.env = env
        self.cwd = cwd
        self.http = http
        self.nsenter = nsenter

    async def run(self, seconds: float) -> tuple[bool, str]:
        """(succeeded, message)."""
        try:
            return await asyncio.wait_for(self._run(seconds), timeout=seconds)
        except TimeoutError:
            return False, f"timed out after {seconds:g}s"
        except (OSError, aiohttp.ClientError, ValueError) as error:
            return False, str(error) or type(error).__name__

    async def _run(self, seconds: float) -> tuple[bool, str]:
        if self.action.get("exec"):
            return await self._exec(list(self.action["exec"].get("command") or []))
        if self.action.get("httpGet"):
            return await self._http(self.action["httpGet"], seconds)
        if self.action.get("tcpSocket"):
            return await self._tcp(self.action["tcpSocket"])
        if self.action.get("grpc"):
            return await self._tcp(self.action["grpc"])
        if self.action.get("sleep"):
            await asyncio.sleep(float(self.action["sleep"].get("seconds") or 0))
            return True, ""
        return False, f"unsupported handler {sorted(self.action)}"

    async def _exec(self, command: list[str]) -> tuple[bool, str]:
        if not command:
            return False, "exec handler has no command"
        argv = [self.nsenter, f"--target={self.pid}", "--mount", "--wd", "--", *command]
        process = spawn(argv, env=self.env, cwd=self.cwd, output=None)
        try:
            code = await process.wait()
        finally:
            if process.running:
                process.signal_group(signal.SIGKILL)
        return code == 0, "" if code == 0 else f"command {command!r} exited with {code}"

    async def _http(self, spec: Json, seconds: float) -> tuple[bool, str]:
        port = resolve_port(spec.get("port"), self.container)
        host = spec.get("host") or POD_IP
        scheme = str(spec.get("scheme") or "HTTP").lower()
        path = str(spec.get("path") or "/")
        if not path.startswith("/"):
            path = "/" + path
        headers = {str(h.get("name")): str(h.get("value", "")) for h in spec.get("httpHeaders") or []}
        headers.setdefault("User-Agent", "kube-probe/localkube")
        context: ssl.SSLContext | bool = False
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        url = f"{scheme}://{host}:{port}{path}"
        async with self.http.get(
            url,
            headers=headers,
            ssl=context,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            ok = 200 <= response.status < 400
            return ok, "" if ok else f"HTTP probe failed with statuscode: {response.status}"

    async def _tcp(self, spec: Json) -> tuple[bool, str]:
        port = resolve_port(spec.get("port"), self.container)
        host = spec.get("host") or POD_IP
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, ""
