"""Volumes as host folders, and the shell script that mounts them for a container (pure).

Each pod volume becomes one host folder (emptyDir, configMap, secret,
downwardAPI, projected) or is a host path (hostPath). A container starts as
``unshare --mount --propagation private /bin/sh -c SCRIPT sh ARGV...``: the
script bind-mounts every volumeMount in the container's private mount
namespace, changes to the working directory and ``exec``s the command, so a
start costs one sh and one ``mount`` per volume, and the processes see the
paths their manifest names (``/var/run/secrets/kubernetes.io/serviceaccount``
included) while the host sees none of those mounts.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from localkube.kubelet.downward import resolve_field_ref, resolve_resource_field_ref
from localkube.kubelet.env import ObjectRef, expand
from localkube.kubelet.objects import Json, MissingReferenceError, PodSpecError

DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600
#: Volume kinds that are files the kubelet writes; Kubernetes always mounts them read-only.
FILE_KINDS = ("configMap", "secret", "downwardAPI", "projected")
SUPPORTED_KINDS = ("emptyDir", "hostPath", *FILE_KINDS)
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class VolumeFile:
    """One file of a configMap, secret, downwardAPI or projected volume."""

    path: str  # relative to the volume folder
    data: bytes
    mode: int


@dataclass(frozen=True)
class TokenSource:
    """A projected serviceAccountToken the kubelet must request for the pod."""

    volume: str
    path: str
    audience: str
    expiration_seconds: int
    mode: int


@dataclass(frozen=True)
class MountSpec:
    """A bind mount of a host `source` at `target` in the container's mount namespace."""

    source: Path
    target: str
    read_only: bool
    is_file: bool
    volume: str


def volume_kind(volume: Json) -> str:
    """The source kind of a pod volume; unsupported kinds fail the pod clearly."""
    kinds = [key for key in volume if key != "name"]
    for kind in kinds:
        if kind in SUPPORTED_KINDS:
            return kind
    shown = ", ".join(kinds) or "no source"
    raise PodSpecError(
        f"volume {volume.get('name')!r}: {shown} volumes are not supported by the process kubelet "
        f"(supported: {', '.join(SUPPORTED_KINDS)})"
    )


def _relative_path(path: str, what: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts:
        raise PodSpecError(f"{what}: path {path!r} must be relative and must not contain '..'")
    return str(pure)


def referenced_volume_objects(volumes: list[Json]) -> set[ObjectRef]:
    """The ConfigMaps and Secrets that the pod's volumes read."""
    refs: set[ObjectRef] = set()
    for volume in volumes:
        if volume.get("configMap"):
            refs.add(("configmap", str(volume["configMap"].get("name", ""))))
        if volume.get("secret"):
            refs.add(("secret", str(volume["secret"].get("secretName", ""))))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("configMap"):
                refs.add(("configmap", str(source["configMap"].get("name", ""))))
            if source.get("secret"):
                refs.add(("secret", str(source["secret"].get("name", ""))))
    return refs


def _key_data(kind: str, obj: Json) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    if kind == "configmap":
        for key, value in (obj.get("data") or {}).items():
            data[str(key)] = str(value).encode()
    encoded = (obj.get("binaryData") if kind == "configmap" else obj.get("data")) or {}
    for key, value in encoded.items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as error:
            raise PodSpecError(f"{kind} key {key!r} is not valid base64: {error}") from error
    return data


def render_key_files(
    *, kind: str, name: str, items: list[Json] | None, optional: bool, obj: Json | None, mode: int
) -> list[VolumeFile]:
    """Files of a configMap or secret volume (or projected source): all keys, or `items`."""
    if obj is None:
        if optional:
            return []
        raise MissingReferenceError(f'{kind} "{name}" not found')
    data = _key_data(kind, obj)
    if not items:
        return [VolumeFile(_relative_path(key, f"{kind} {name}"), value, mode) for key, value in data.items()]
    files = []
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if optional:
                continue
            raise MissingReferenceError(f"{kind} {name} references non-existent key: {key}")
        path = _relative_path(str(item.get("path") or key), f"{kind} {name}")
        files.append(VolumeFile(path, data[key], int(item.get("mode") or mode)))
    return files


def render_downward_files(pod: Json, items: list[Json], *, node_name: str, mode: int) -> list[VolumeFile]:
    """Files of a downwardAPI volume (or projected source)."""
    containers = {str(c.get("name")): c for c in (pod.get("spec") or {}).get("containers") or []}
    files = []
    for item in items:
        path = _relative_path(str(item.get("path", "")), "downwardAPI")
        if item.get("fieldRef"):
            value = resolve_field_ref(pod, str(item["fieldRef"].get("fieldPath", "")), node_name=node_name)
        elif item.get("resourceFieldRef"):
            ref = item["resourceFieldRef"]
            container = containers.get(str(ref.get("containerName", "")))
            if container is None:
                raise PodSpecError(f"downwardAPI {path}: unknown containerName {ref.get('containerName')!r}")
            value = resolve_resource_field_ref(container, ref)
        else:
            raise PodSpecError(f"downwardAPI {path}: needs fieldRef or resourceFieldRef")
        files.append(VolumeFile(path, value.encode(), int(item.get("mode") or mode)))
    return files


def token_sources(volume: Json) -> list[TokenSource]:
    """The serviceAccountToken sources of a projected volume."""
    projected = volume.get("projected") or {}
    mode = int(projected.get("defaultMode") or DEFAULT_MODE)
    tokens = []
    for source in projected.get("sources") or []:
        token = source.get("serviceAccountToken")
        if token:
            tokens.append(
                TokenSource(
                    volume=str(volume.get("name")),
                    path=_relative_path(str(token.get("path", "")), "serviceAccountToken"),
                    audience=str(token.get("audience") or ""),
                    expiration_seconds=int(token.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
                    mode=mode,
                )
            )
    return tokens


def render_volume_files(
    pod: Json,
    volume: Json,
    *,
    node_name: str,
    lookup: Callable[[str, str], Json | None],
    tokens: Mapping[str, str],
) -> list[VolumeFile]:
    """Every file of a configMap, secret, downwardAPI or projected volume.

    `tokens` maps a serviceAccountToken source's path to the token obtained for it.
    """
    kind = volume_kind(volume)
    source: Json = volume.get(kind) or {}
    mode = int(source.get("defaultMode") or DEFAULT_MODE)
    if kind in ("configMap", "secret"):
        return _key_source(kind, source, lookup, mode)
    if kind == "downwardAPI":
        return render_downward_files(pod, source.get("items") or [], node_name=node_name, mode=mode)
    if kind != "projected":
        return []
    files: list[VolumeFile] = []
    for part in source.get("sources") or []:
        if part.get("serviceAccountToken"):
            path = _relative_path(str(part["serviceAccountToken"].get("path", "")), "serviceAccountToken")
            files.append(VolumeFile(path, tokens[path].encode(), mode))
        elif part.get("configMap") or part.get("secret"):
            kind = "configMap" if part.get("configMap") else "secret"
            files += _key_source(kind, part[kind], lookup, mode)
        elif part.get("downwardAPI"):
            items = part["downwardAPI"].get("items") or []
            files += render_downward_files(pod, items, node_name=node_name, mode=mode)
        else:
            shown = ", ".join(sorted(part)) or "an empty source"
            raise PodSpecError(
                f"volume {volume.get('name')!r}: projected {shown} is not supported by the process kubelet"
            )
    return files


def _key_source(
    kind: str, source: Json, lookup: Callable[[str, str], Json | None], mode: int
) -> list[VolumeFile]:
    """A configMap or secret volume, or projected source (a secret volume names it `secretName`)."""
    lower = kind.lower()
    name = str(source.get("name") or source.get("secretName") or "")
    return render_key_files(
        kind=lower,
        name=name,
        items=source.get("items"),
        optional=bool(source.get("optional")),
        obj=lookup(lower, name),
        mode=mode,
    )


def build_mounts(
    container: Json,
    volumes: Mapping[str, Json],
    volume_dirs: Mapping[str, Path],
    env: Mapping[str, str],
    termination_file: Path,
    *,
    is_file: Callable[[Path], bool],
) -> list[MountSpec]:
    """The container's bind mounts, parents before children; the termination file included."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        name = str(mount.get("name", ""))
        if name not in volume_dirs:
            raise PodSpecError(f"volumeMount {name!r} names no volume of the pod")
        target = str(mount.get("mountPath", ""))
        if not target.startswith("/"):
            raise PodSpecError(f"volumeMount {name!r}: mountPath {target!r} must be absolute")
        source = volume_dirs[name]
        sub_path = str(mount.get("subPath") or "")
        if mount.get("subPathExpr"):
            sub_path = expand(str(mount["subPathExpr"]), env)
        if sub_path:
            source = source / _relative_path(sub_path, f"volumeMount {name!r} subPath")
        kind = volume_kind(volumes[name])
        read_only = bool(mount.get("readOnly")) or kind in FILE_KINDS
        mounts.append(MountSpec(source, target, read_only, bool(sub_path) and is_file(source), name))
    termination_path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)
    mounts.append(MountSpec(termination_file, termination_path, False, True, "termination-log"))
    return sorted(mounts, key=lambda m: len(PurePosixPath(m.target).parts))


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the tools the launch script runs (a container's PATH may lack them)."""

    unshare: str = "/usr/bin/unshare"
    sh: str = "/bin/sh"
    mount: str = "/usr/bin/mount"
    mkdir: str = "/usr/bin/mkdir"
    nsenter: str = "/usr/bin/nsenter"


def build_launch_script(
    mounts: list[MountSpec], working_dir: str | None, *, error_file: Path, tools: Tools
) -> str:
    """The sh script that mounts, changes directory and execs "$@".

    A failure before the exec writes its reason to `error_file` and exits 128,
    which the kubelet reports as the container's StartError message.
    """
    q = shlex.quote
    err = q(str(error_file))
    lines = [
        f'fail() {{ printf \'%s: %s\\n\' "$1" "$(cat {err}.out 2>/dev/null)" > {err}; exit 128; }}',
    ]
    for mount in mounts:
        target = q(mount.target)
        what = q(f'cannot mount volume "{mount.volume}" at {mount.target}')
        if mount.is_file:
            parent = q(str(PurePosixPath(mount.target).parent))
            make_parent = f"{{ [ -d {parent} ] || {tools.mkdir} -p {parent}; }}"
            prepare = f"{{ [ -e {target} ] || {{ {make_parent} && : > {target}; }}; }}"
        else:
            # `test` is a shell builtin: after the first pod the target usually exists,
            # and skipping mkdir saves a process per mount.
            prepare = f"{{ [ -d {target} ] || {tools.mkdir} -p {target}; }}"
        options = " -o ro" if mount.read_only else ""
        lines.append(
            f"{prepare} 2>{err}.out && {tools.mount} --bind{options} {q(str(mount.source))} {target} "
            f"2>{err}.out || fail {what}"
        )
    if working_dir:
        wd = q(working_dir)
        what = q(f"cannot enter workingDir {working_dir}")
        lines.append(f"{{ {tools.mkdir} -p {wd} && cd {wd}; }} 2>{err}.out || fail {what}")
    lines.append(
        'command -v "$1" >/dev/null 2>&1 || '
        '{ printf \'exec: "%s": executable file not found in $PATH\\n\' "$1" > ' + err + "; exit 128; }"
    )
    lines.append('exec "$@"')
    return "\n".join(lines)


def build_argv(script: str, command: list[str], tools: Tools) -> list[str]:
    """The argv the kubelet spawns for a container."""
    return [tools.unshare, "--mount", "--propagation", "private", tools.sh, "-c", script, "sh", *command]
