"""Helpers shared by the cluster tests: a handle on the cluster, and waiting for a condition."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localkube import cluster as localkube_cluster
from localkube import pki
from localkube.layout import Layout


@dataclass(frozen=True)
class ClusterHandle:
    kubeconfig: Path
    kubectl_bin: Path
    kubelet_root: Path
    api_port: int
    node_name: str
    layout: Layout | None  # None for an allow-listed external cluster

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        as_user: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        kubeconfig = as_user or self.kubeconfig
        result = subprocess.run(
            [str(self.kubectl_bin), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True, text=True, input=input, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], namespace: str | None = None) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        extra = ["-n", namespace] if namespace else []
        self.kubectl("apply", *extra, "-f", "-", input=yaml.safe_dump_all(docs))

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with `token` alone (no client certificate)."""
        admin = yaml.safe_load(self.kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": "token-user", "user": {"token": token}}],
            "contexts": [
                {"name": "t", "context": {"cluster": admin["clusters"][0]["name"], "user": "token-user"}}
            ],
            "current-context": "t",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def user(self, name: str, *groups: str) -> Path:
        """A kubeconfig for a client-certificate user of the local cluster."""
        if self.layout is None:
            pytest.skip("client-certificate users need the local control plane")
        settings = localkube_cluster.Settings.load(self.layout)
        return pki.user_kubeconfig(
            self.layout.pki, self.layout.users, name=name, groups=groups, server=settings.server
        )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
