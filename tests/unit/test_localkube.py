"""The control plane tool's own rules: build keys, certificates, PID safety, clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localkube import build, cluster, layout, pki
from localkube.errors import LocalkubeError


def _tmp_layout(tmp_path: Path) -> layout.Layout:
    return layout.Layout(cache=tmp_path / "cache", home=tmp_path / "home")


def test_the_pinned_release_is_current_and_read_from_go_mod() -> None:
    major, minor, _ = layout.KUBERNETES_VERSION.lstrip("v").split(".")
    assert (int(major), int(minor)) >= (1, 33)
    assert f"k8s.io/kubernetes {layout.KUBERNETES_VERSION}" in (layout.GOBUILD_DIR / "go.mod").read_text()


def test_every_staging_module_is_replaced_by_its_published_version() -> None:
    text = (layout.GOBUILD_DIR / "go.mod").read_text()
    minor = layout.KUBERNETES_VERSION.split(".", 1)[1]
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/kubectl", "k8s.io/kubelet"):
        assert f"{module} => {module} v0.{minor}" in text


def test_version_stamps_name_the_release() -> None:
    flags = layout.build_ldflags("v1.36.3")
    assert "k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "k8s.io/component-base/version.gitMinor=36" in flags


def test_the_cache_key_names_the_version(tmp_path: Path) -> None:
    key = layout.build_key()
    assert key.startswith(layout.KUBERNETES_VERSION + "-")
    assert _tmp_layout(tmp_path).bin_dir == tmp_path / "cache" / key / "bin"


def test_a_missing_go_toolchain_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    with pytest.raises(LocalkubeError, match="Go toolchain not found on PATH"):
        build.check_go()


def test_a_too_old_go_toolchain_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.19.8\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalkubeError, match=r"go1\.19\.8, too old"):
        build.check_go()


def test_a_failed_build_names_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = env ]; then echo go1.99.0; exit 0; fi\n'
        'echo "compile error: boom" >&2\nexit 2\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    where = _tmp_layout(tmp_path)
    with pytest.raises(LocalkubeError) as caught:
        build.ensure_binaries(where, quiet=True)
    message = str(caught.value)
    assert str(where.build_log) in message
    assert "boom" in message
    assert not where.bin_dir.exists()  # no half-built cache is left behind


def test_certificates_carry_the_sans_and_identities_the_apiserver_needs(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    serving = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "apiserver.crt"), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for san in ("DNS:kubernetes.default.svc", "IP Address:127.0.0.1", "IP Address:10.0.0.1"):
        assert san in serving
    admin = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "admin.crt"), "-noout", "-subject"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "O = system:masters" in admin
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "admin.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    before = (tmp_path / "ca.crt").read_bytes()
    pki.ensure_pki(tmp_path)  # idempotent: the CA is not replaced
    assert (tmp_path / "ca.crt").read_bytes() == before


def test_a_user_name_with_a_slash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalkubeError, match="invalid user name"):
        pki.user_kubeconfig(tmp_path, tmp_path / "u", name="../x", groups=(), server="https://127.0.0.1:1")


def test_a_pid_file_whose_process_was_replaced_is_not_trusted(tmp_path: Path) -> None:
    where = _tmp_layout(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        where.run.mkdir(parents=True)
        where.pidfile("etcd").write_text(
            f'{{"pid": {child.pid}, "start": "{cluster._start_time(child.pid)}"}}'
        )
        assert cluster._read_pid(where, "etcd") == child.pid
        # Same PID, other start time: a recycled PID must never be signalled.
        where.pidfile("etcd").write_text(f'{{"pid": {child.pid}, "start": "1"}}')
        assert cluster._read_pid(where, "etcd") is None
        assert cluster._stop(where, "etcd") is False
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            LocalkubeError, match=f"port {port} on 127.0.0.1 is in use.*RETCON_LOCALKUBE_PORT"
        ):
            cluster._require_port(port, "kube-apiserver", "RETCON_LOCALKUBE_PORT")


def test_status_of_a_cluster_never_started_reports_everything_stopped(tmp_path: Path) -> None:
    state = cluster.status(_tmp_layout(tmp_path))
    assert not state.healthy
    assert [c.running for c in state.components] == [False] * len(cluster.COMPONENTS)


def test_the_cli_reports_user_errors_on_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, RETCON_LOCALKUBE_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "localkube", "kubeconfig"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "localkube: no local cluster yet: run `localkube up` first"
    status = subprocess.run(
        [sys.executable, "-m", "localkube", "status"], capture_output=True, text=True, env=env, check=False
    )
    assert status.returncode == 3
