"""Where the process kubelet keeps container logs, and finding one by pod and container.

Each container's stdout and stderr are appended (restarts included) to
``ROOT/pods/<namespace>_<pod>_<uid>/<container>.log``. Names of namespaces and
pods cannot contain ``_``, so the folder name splits without ambiguity.
"""

from __future__ import annotations

from pathlib import Path

from localkube.errors import LocalkubeError

LOG_SUFFIX = ".log"


def pods_dir(root: Path) -> Path:
    return root / "pods"


def pod_dir(root: Path, namespace: str, pod: str, uid: str) -> Path:
    return pods_dir(root) / f"{namespace}_{pod}_{uid}"


def log_path(root: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    return pod_dir(root, namespace, pod, uid) / f"{container}{LOG_SUFFIX}"


def find_log(root: Path, namespace: str, pod: str, container: str | None = None) -> Path:
    """The log file of a container of the newest pod named `namespace/pod`.

    Without `container`, the pod must have exactly one container log.
    """
    prefix = f"{namespace}_{pod}_"
    folder = pods_dir(root)
    candidates = [p for p in folder.glob(f"{prefix}*") if p.is_dir() and "_" not in p.name[len(prefix) :]]
    if not candidates:
        raise LocalkubeError(f"no logs for pod {namespace}/{pod} under {folder}: the kubelet never ran it")
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    available = sorted(p.name[: -len(LOG_SUFFIX)] for p in newest.glob(f"*{LOG_SUFFIX}") if p.is_file())
    listed = ", ".join(available) or "none yet"
    if container is None:
        if len(available) == 1:
            return newest / f"{available[0]}{LOG_SUFFIX}"
        if not available:
            raise LocalkubeError(f"pod {namespace}/{pod} has no container logs yet")
        raise LocalkubeError(f"pod {namespace}/{pod} has several containers; choose one with -c: {listed}")
    path = newest / f"{container}{LOG_SUFFIX}"
    if not path.is_file():
        raise LocalkubeError(
            f"pod {namespace}/{pod} has no log for container {container!r}; available: {listed}"
        )
    return path
