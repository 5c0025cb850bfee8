"""Volume contents and the launch script that mounts them for a container."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from localkube.kubelet.downward import format_map, go_quote, parse_quantity
from localkube.kubelet.objects import Json, MissingReferenceError, PodSpecError
from localkube.kubelet.volumes import (
    MountSpec,
    Tools,
    build_argv,
    build_launch_script,
    build_mounts,
    referenced_volume_objects,
    render_volume_files,
    token_sources,
    volume_kind,
)

POD: Json = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"b": "2", "a": "1"}},
    "spec": {"containers": [{"name": "main", "resources": {"limits": {"memory": "64Mi"}}}]},
}
CONFIG: Json = {
    "data": {"app.conf": "x=1", "other": "y"},
    "binaryData": {"blob": base64.b64encode(b"\x00\x01").decode()},
}
SECRET: Json = {"data": {"password": base64.b64encode(b"hunter2").decode()}}


def _lookup(kind: str, name: str) -> Json | None:
    return {("configmap", "cfg"): CONFIG, ("secret", "sec"): SECRET}.get((kind, name))


def _files(volume: Json, tokens: dict[str, str] | None = None) -> dict[str, tuple[bytes, int]]:
    files = render_volume_files(POD, volume, node_name="n", lookup=_lookup, tokens=tokens or {})
    return {f.path: (f.data, f.mode) for f in files}


def test_a_config_map_volume_holds_every_key_including_binary_data() -> None:
    files = _files({"name": "v", "configMap": {"name": "cfg"}})
    assert files == {"app.conf": (b"x=1", 0o644), "other": (b"y", 0o644), "blob": (b"\x00\x01", 0o644)}


def test_items_select_keys_set_paths_and_modes() -> None:
    volume = {
        "name": "v",
        "configMap": {
            "name": "cfg",
            "defaultMode": 0o600,
            "items": [
                {"key": "app.conf", "path": "conf/app.conf"},
                {"key": "other", "path": "o", "mode": 0o755},
            ],
        },
    }
    assert _files(volume) == {"conf/app.conf": (b"x=1", 0o600), "o": (b"y", 0o755)}


def test_secret_volumes_are_decoded() -> None:
    assert _files({"name": "v", "secret": {"secretName": "sec"}}) == {"password": (b"hunter2", 0o644)}


def test_a_missing_optional_source_is_an_empty_volume_and_a_required_one_waits() -> None:
    assert _files({"name": "v", "secret": {"secretName": "absent", "optional": True}}) == {}
    with pytest.raises(MissingReferenceError, match='secret "absent" not found'):
        _files({"name": "v", "secret": {"secretName": "absent"}})
    with pytest.raises(MissingReferenceError, match="non-existent key: nope"):
        _files({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "n"}]}})


def test_item_paths_cannot_escape_the_volume() -> None:
    with pytest.raises(PodSpecError, match="must be relative"):
        _files(
            {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "other", "path": "../../etc/x"}]}}
        )


def test_downward_api_files_hold_pod_fields() -> None:
    volume = {
        "name": "v",
        "downwardAPI": {
            "items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {
                    "path": "mem",
                    "resourceFieldRef": {
                        "containerName": "main",
                        "resource": "limits.memory",
                        "divisor": "1Mi",
                    },
                },
            ]
        },
    }
    files = _files(volume)
    assert files["labels"][0] == b'a="1"\nb="2"'
    assert files["name"][0] == b"p"
    assert files["mem"][0] == b"64"


def test_the_service_account_volume_gets_token_ca_and_namespace() -> None:
    volume = {
        "name": "kube-api-access-x",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ],
        },
    }
    assert [(s.path, s.expiration_seconds, s.audience) for s in token_sources(volume)] == [
        ("token", 3607, "")
    ]
    assert _files(volume, {"token": "jwt"}) == {
        "token": (b"jwt", 0o644),
        "ca.crt": (b"x=1", 0o644),
        "namespace": (b"ns", 0o644),
    }
    assert referenced_volume_objects([volume]) == {("configmap", "cfg")}


def test_unsupported_volume_kinds_fail_clearly() -> None:
    with pytest.raises(PodSpecError, match="persistentVolumeClaim volumes are not supported"):
        volume_kind({"name": "data", "persistentVolumeClaim": {"claimName": "c"}})


def test_go_quote_matches_go_for_common_cases() -> None:
    assert go_quote('a"b\\c\nd\té') == '"a\\"b\\\\c\\nd\\té"'
    assert go_quote("\x00") == '"\\x00"'
    assert format_map({"z": "1", "a": ""}) == 'a=""\nz="1"'


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("500m", 0.5), ("1Ki", 1024), ("2Gi", 2 * 2**30), ("1k", 1000), ("1e3", 1000), ("1.5", 1.5)],
)
def test_quantities_parse(text: str, value: float) -> None:
    assert parse_quantity(text) == value


# --- mounts -------------------------------------------------------------------------------------


def test_mounts_are_ordered_parents_first_with_sub_paths_and_read_only(tmp_path: Path) -> None:
    volumes = {"data": {"name": "data", "emptyDir": {}}, "cfg": {"name": "cfg", "configMap": {"name": "cfg"}}}
    dirs = {"data": tmp_path / "data", "cfg": tmp_path / "cfg"}
    container = {
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/work/deep/conf"},
            {"name": "data", "mountPath": "/work", "subPath": "$(SUB)"},
            {"name": "data", "mountPath": "/logs", "subPathExpr": "$(SUB)/logs", "readOnly": True},
        ],
        "terminationMessagePath": "/var/term",
    }
    mounts = build_mounts(container, volumes, dirs, {"SUB": "x"}, tmp_path / "term", is_file=lambda p: False)
    assert [(m.target, m.source, m.read_only) for m in mounts] == [
        ("/work", tmp_path / "data" / "$(SUB)", False),
        ("/logs", tmp_path / "data" / "x" / "logs", True),
        ("/var/term", tmp_path / "term", False),
        ("/work/deep/conf", tmp_path / "cfg", True),  # configMap volumes are always read-only
    ]
    assert mounts[2].is_file


def test_a_mount_of_an_unknown_volume_is_a_spec_error(tmp_path: Path) -> None:
    container = {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}
    with pytest.raises(PodSpecError, match="names no volume"):
        build_mounts(container, {}, {}, {}, tmp_path / "t", is_file=lambda p: False)


needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="mount namespaces need root and unshare"
)


def _run(script: str, command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tools = Tools(
        unshare=shutil.which("unshare") or "",
        mount=shutil.which("mount") or "",
        mkdir=shutil.which("mkdir") or "",
    )
    return subprocess.run(
        build_argv(script, command, tools), capture_output=True, text=True, cwd=tmp_path, check=False
    )


@needs_unshare
def test_the_launch_script_mounts_volumes_privately_and_runs_the_command(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello").write_text("from the volume\n")
    term = tmp_path / "term"
    term.write_text("")
    target = tmp_path / "mnt" / "inside"
    mounts = [
        MountSpec(source, str(target), read_only=True, is_file=False, volume="v"),
        MountSpec(term, str(tmp_path / "dev" / "termination-log"), read_only=False, is_file=True, volume="t"),
    ]
    script = build_launch_script(mounts, str(tmp_path / "wd"), error_file=tmp_path / "err", tools=Tools())
    command = [
        "sh",
        "-c",
        f"cat {target}/hello; pwd; echo bye > {tmp_path}/dev/termination-log; "
        f"touch {target}/x 2>/dev/null || echo read-only",
    ]
    result = _run(script, command, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from the volume", str(tmp_path / "wd"), "read-only"]
    assert term.read_text() == "bye\n"
    assert not (target / "hello").exists()  # the host never sees the mount


@needs_unshare
def test_a_failed_mount_or_missing_executable_is_reported_as_a_start_error(tmp_path: Path) -> None:
    mounts = [MountSpec(tmp_path / "absent", str(tmp_path / "t"), read_only=False, is_file=False, volume="v")]
    script = build_launch_script(mounts, None, error_file=tmp_path / "err", tools=Tools())
    assert _run(script, ["true"], tmp_path).returncode == 128
    assert 'cannot mount volume "v"' in (tmp_path / "err").read_text()

    script = build_launch_script([], None, error_file=tmp_path / "err2", tools=Tools())
    assert _run(script, ["no-such-program-here"], tmp_path).returncode == 128
    assert (
        'exec: "no-such-program-here": executable file not found in $PATH' in (tmp_path / "err2").read_text()
    )
