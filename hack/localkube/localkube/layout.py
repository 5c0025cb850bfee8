"""Where the control plane keeps its binaries, certificates, data, PIDs and logs.

Two roots, both outside the repository:

- the *binary cache* (``$RETCON_LOCALKUBE_CACHE``, default
  ``~/.cache/retcon/localkube``) holds one folder per build key: the pinned
  Kubernetes version plus a hash of everything that shapes the build, so a
  change to ``go.mod`` never reuses stale binaries;
- the *state home* (``$RETCON_LOCALKUBE_HOME``, default
  ``~/.local/state/retcon/localkube``) holds one running cluster.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

GOBUILD_DIR = Path(__file__).resolve().parent.parent / "gobuild"


def _pinned_version() -> str:
    text = (GOBUILD_DIR / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\d+\.\d+\.\d+)\s*$", text, re.MULTILINE)
    if match is None:  # pragma: no cover - guards an edit of go.mod
        raise RuntimeError(f"{GOBUILD_DIR / 'go.mod'} does not pin k8s.io/kubernetes")
    return match.group(1)


#: The one place the Kubernetes release is pinned is ``gobuild/go.mod``.
KUBERNETES_VERSION = _pinned_version()

BINARIES = ("kube-apiserver", "kube-controller-manager", "kubectl", "etcd")

DEFAULT_API_PORT = 16443
DEFAULT_ETCD_PORT = 12379


def build_ldflags(version: str = KUBERNETES_VERSION) -> str:
    """Version stamps, so the servers report the real release rather than v0.0.0."""
    major, minor, _ = version.lstrip("v").split(".")
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/component-base/version.gitTreeState": "clean",
        "k8s.io/client-go/pkg/version.gitVersion": version,
        "k8s.io/client-go/pkg/version.gitMajor": major,
        "k8s.io/client-go/pkg/version.gitMinor": minor,
    }
    return "-s -w " + " ".join(f"-X {key}={value}" for key, value in stamps.items())


def build_key() -> str:
    """Names the cache folder: version plus a hash of the build's inputs."""
    digest = hashlib.sha256()
    for relative in ("go.mod", "go.sum", "cmd/etcd/main.go"):
        digest.update((GOBUILD_DIR / relative).read_bytes())
    digest.update(build_ldflags().encode())
    return f"{KUBERNETES_VERSION}-{digest.hexdigest()[:12]}"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Layout:
    """Every path the control plane uses, derived from two roots."""

    cache: Path
    home: Path

    @classmethod
    def from_env(cls) -> Layout:
        return cls(
            cache=_env_path("RETCON_LOCALKUBE_CACHE", Path.home() / ".cache/retcon/localkube"),
            home=_env_path("RETCON_LOCALKUBE_HOME", Path.home() / ".local/state/retcon/localkube"),
        )

    @property
    def bin_dir(self) -> Path:
        return self.cache / build_key() / "bin"

    @property
    def build_log(self) -> Path:
        return self.cache / build_key() / "build.log"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def pki(self) -> Path:
        return self.home / "pki"

    @property
    def users(self) -> Path:
        return self.home / "users"

    @property
    def etcd_data(self) -> Path:
        return self.home / "etcd"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def kubelet_root(self) -> Path:
        return self.home / "kubelet"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "admin.kubeconfig"

    @property
    def settings(self) -> Path:
        return self.home / "settings.json"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"
