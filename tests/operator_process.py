"""Runs the real operator (`retcon-operator`) as a child process for cluster tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    namespaces: tuple[str, ...] = ()
    webhook: str = "local"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        self.health_port = free_port()
        self.metrics_port = free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            RETCON_WEBHOOK=self.webhook,
            # The process kubelet ignores images: step pods run this interpreter, found without
            # going through any shims on PATH.
            RETCON_RUNNER_PYTHON=os.environ.get("RETCON_RUNNER_PYTHON", sys.executable),
            RETCON_LOG_LEVEL="DEBUG" if os.environ.get("RETCON_TEST_DEBUG") else "INFO",
            RETCON_METRICS_PORT=str(self.metrics_port),
        )
        env.update(self.extra_env)
        argv = [
            sys.executable,
            "-m",
            "retcon.operator_main",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
        ]
        for namespace in self.namespaces:
            argv.append(f"--namespace={namespace}")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the operator did not become healthy in {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no cleanup at all."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
