"""`find_log` finds a container's log by namespace, pod and container, or says what exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localkube.errors import LocalkubeError
from localkube.kubelet import find_log
from localkube.kubelet.logs import log_path


def _log(root: Path, pod: str, uid: str, container: str, mtime: float | None = None) -> Path:
    path = log_path(root, "ns", pod, uid, container)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{container} output\n")
    if mtime is not None:
        os.utime(path.parent, (mtime, mtime))
    return path


def test_the_only_container_needs_no_name(tmp_path: Path) -> None:
    path = _log(tmp_path, "web", "u1", "main")
    assert find_log(tmp_path, "ns", "web") == path


def test_a_named_container_of_the_newest_pod_with_that_name(tmp_path: Path) -> None:
    _log(tmp_path, "web", "old", "main", mtime=1_000)
    newest = _log(tmp_path, "web", "new", "main", mtime=2_000)
    _log(tmp_path, "web-2", "other", "main", mtime=3_000)  # a longer name is another pod
    assert find_log(tmp_path, "ns", "web", "main") == newest


def test_several_containers_need_a_choice(tmp_path: Path) -> None:
    _log(tmp_path, "web", "u1", "main")
    _log(tmp_path, "web", "u1", "sidecar")
    with pytest.raises(LocalkubeError, match="choose one with -c: main, sidecar"):
        find_log(tmp_path, "ns", "web")


def test_an_unknown_container_lists_the_available_ones(tmp_path: Path) -> None:
    _log(tmp_path, "web", "u1", "main")
    with pytest.raises(LocalkubeError, match="no log for container 'nope'; available: main"):
        find_log(tmp_path, "ns", "web", "nope")


def test_an_unknown_pod_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalkubeError, match="no logs for pod ns/ghost"):
        find_log(tmp_path, "ns", "ghost")
