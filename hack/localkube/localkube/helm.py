"""Builds the ``helm`` v3 binary from Go modules, once per build key, for the chart's checks.

The build runs in the dedicated module ``hack/helm/`` (``go.mod`` requires
``helm.sh/helm/v3``; ``tools.go`` pins ``cmd/helm``), the same way the control
plane's binaries are built from ``gobuild/``. The binary lands in
``~/.cache/retcon/helm/<version>-<hash>/helm`` (``$RETCON_HELM_CACHE``), never in
the repository, so a warm machine never rebuilds. ``$RETCON_HELM`` names an
existing helm binary to use instead.

``python3 -m localkube.helm`` prints the binary's path, building it if needed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localkube.errors import LocalkubeError

HELM_BUILD_DIR = Path(__file__).resolve().parent.parent.parent / "helm"
PACKAGE = "helm.sh/helm/v3/cmd/helm"


def _go_mod() -> str:
    path = HELM_BUILD_DIR / "go.mod"
    try:
        return path.read_text()
    except FileNotFoundError:
        raise LocalkubeError(
            f"{path} is missing: helm is built from the repository's hack/helm module "
            "(run from a checkout of Retcon, or set RETCON_HELM to a helm binary)"
        ) from None


def _module_version(module: str, text: str) -> str | None:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v[^\s]+)", text, re.MULTILINE)
    return match.group(1) if match else None


def helm_version() -> str:
    """The helm release pinned in ``hack/helm/go.mod``: the one place it is pinned."""
    version = _module_version("helm.sh/helm/v3", _go_mod())
    if version is None:  # pragma: no cover - guards an edit of go.mod
        raise LocalkubeError(f"{HELM_BUILD_DIR / 'go.mod'} does not pin helm.sh/helm/v3")
    return version


def build_ldflags() -> str:
    """What helm's own Makefile stamps: its version, and the Kubernetes version of its client-go.

    Without the latter, ``helm template`` and ``helm lint`` assume Kubernetes 1.20 and
    refuse any chart whose ``kubeVersion`` asks for more.
    """
    text = _go_mod()
    client_go = _module_version("k8s.io/client-go", text) or "v0.20.0"
    minor = client_go.lstrip("v").split(".")[1]
    stamps = {
        "helm.sh/helm/v3/internal/version.version": helm_version(),
        "helm.sh/helm/v3/internal/version.gitTreeState": "clean",
        "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor": "1",
        "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor": minor,
        "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor": "1",
        "helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor": minor,
    }
    return "-s -w " + " ".join(f"-X {key}={value}" for key, value in stamps.items())


def build_key() -> str:
    """Names the cache folder: the helm version plus a hash of everything that shapes the build."""
    digest = hashlib.sha256()
    for relative in ("go.mod", "go.sum", "tools.go"):
        digest.update((HELM_BUILD_DIR / relative).read_bytes())
    digest.update(build_ldflags().encode())
    return f"{helm_version()}-{digest.hexdigest()[:12]}"


def cache_root() -> Path:
    value = os.environ.get("RETCON_HELM_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache/retcon/helm"


def helm_path() -> Path:
    """Where the built binary lives (it may not exist yet)."""
    return cache_root() / build_key() / "helm"


def _check_go() -> str:
    go = shutil.which("go")
    match = re.search(r"^go (\d+)\.(\d+)", _go_mod(), re.MULTILINE)
    need = (int(match.group(1)), int(match.group(2))) if match else (1, 0)
    hint = f"install Go {need[0]}.{need[1]} or newer and put it on PATH, or set RETCON_HELM to a helm binary"
    if go is None:
        raise LocalkubeError(
            f"Go toolchain not found on PATH: helm {helm_version()} is built from Go modules; {hint}"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    found = re.match(r"go(\d+)\.(\d+)", out.strip())
    if found is None or (int(found.group(1)), int(found.group(2))) < need:
        raise LocalkubeError(f"{go} is {out.strip() or 'unknown'}, too old for helm {helm_version()}: {hint}")
    return go


def ensure_helm(*, quiet: bool = False) -> Path:
    """The path of a helm binary: ``$RETCON_HELM``, the cached build, or a fresh build."""
    override = os.environ.get("RETCON_HELM")
    if override:
        path = Path(override).expanduser()
        if not os.access(path, os.X_OK):
            raise LocalkubeError(f"RETCON_HELM={override} is not an executable file")
        return path
    target = helm_path()
    if os.access(target, os.X_OK):
        return target
    go = _check_go()
    key_dir = target.parent
    key_dir.mkdir(parents=True, exist_ok=True)
    build_log = key_dir / "build.log"
    staging = Path(tempfile.mkdtemp(prefix="bin-", dir=key_dir))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false -mod=readonly")
    argv = [go, "build", "-trimpath", "-ldflags", build_ldflags(), "-o", str(staging / "helm"), PACKAGE]
    if not quiet:
        print(
            f"Building helm {helm_version()} from Go modules "
            f"(a few minutes on a cold cache; log: {build_log})",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    with build_log.open("w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        result = subprocess.run(
            argv, cwd=HELM_BUILD_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0 or not (staging / "helm").exists():
        shutil.rmtree(staging, ignore_errors=True)
        tail = build_log.read_text().strip().splitlines()[-5:]
        raise LocalkubeError(
            f"building helm {helm_version()} failed (go build exit {result.returncode}); "
            f"full log: {build_log}; last lines: " + " | ".join(tail)
        )
    # A rename is atomic: a crash or a concurrent build never leaves a half-written binary in place.
    (staging / "helm").replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    with build_log.open("a") as log:
        log.write(f"built in {time.monotonic() - started:.1f}s\n")
    return target


def main() -> int:
    try:
        print(ensure_helm())
    except LocalkubeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
