"""Builds the control plane's binaries from Go modules, once per build key.

The build runs in the dedicated module ``gobuild/`` (``go.mod`` requires
``k8s.io/kubernetes`` and replaces every staging module with its published
version). Results land in the binary cache, so a warm machine never rebuilds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localkube.errors import LocalkubeError
from localkube.layout import BINARIES, GOBUILD_DIR, KUBERNETES_VERSION, Layout, build_ldflags

PACKAGES = (
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kubectl",
    "./cmd/etcd",
)


def binaries_present(layout: Layout) -> bool:
    return all(os.access(layout.binary(name), os.X_OK) for name in BINARIES)


def _required_go() -> tuple[int, int]:
    text = (GOBUILD_DIR / "go.mod").read_text()
    match = re.search(r"^go (\d+)\.(\d+)", text, re.MULTILINE)
    return (int(match.group(1)), int(match.group(2))) if match else (1, 0)


def check_go() -> str:
    """The path of a Go toolchain new enough for the pinned release, or a clear error."""
    go = shutil.which("go")
    need = _required_go()
    hint = f"install Go {need[0]}.{need[1]} or newer and put it on PATH"
    if go is None:
        raise LocalkubeError(
            f"Go toolchain not found on PATH: localkube builds Kubernetes {KUBERNETES_VERSION} "
            f"from Go modules; {hint}"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"go(\d+)\.(\d+)", out.strip())
    if match is None or (int(match.group(1)), int(match.group(2))) < need:
        raise LocalkubeError(
            f"{go} is {out.strip() or 'unknown'}, too old for Kubernetes {KUBERNETES_VERSION}: {hint}"
        )
    return go


def ensure_binaries(layout: Layout, *, quiet: bool = False) -> float:
    """Build the binaries if the cache lacks them. Returns seconds spent building (0 if cached)."""
    if binaries_present(layout):
        return 0.0
    go = check_go()
    key_dir = layout.bin_dir.parent
    key_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="bin-", dir=key_dir))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false -mod=readonly")
    argv = [go, "build", "-trimpath", "-ldflags", build_ldflags(), "-o", f"{staging}/", *PACKAGES]
    if not quiet:
        print(
            f"Building Kubernetes {KUBERNETES_VERSION} and etcd from Go modules "
            f"(a few minutes on a cold cache; log: {layout.build_log})",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    with layout.build_log.open("w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        result = subprocess.run(
            argv, cwd=GOBUILD_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = layout.build_log.read_text().strip().splitlines()[-5:]
        raise LocalkubeError(
            f"building Kubernetes {KUBERNETES_VERSION} failed (go build exit {result.returncode}); "
            f"full log: {layout.build_log}; last lines: " + " | ".join(tail)
        )
    missing = [name for name in BINARIES if not (staging / name).exists()]
    if missing:  # pragma: no cover - go build succeeded but wrote other names
        raise LocalkubeError(f"go build did not produce {missing}; see {layout.build_log}")
    # Rename into place atomically, so a crash mid-build never leaves a half cache.
    if layout.bin_dir.exists():
        shutil.rmtree(layout.bin_dir)
    staging.rename(layout.bin_dir)
    with layout.build_log.open("a") as log:
        log.write(f"built in {elapsed:.1f}s\n")
    return elapsed
