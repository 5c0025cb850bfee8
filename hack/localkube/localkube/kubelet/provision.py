"""A pod's host folders: volume contents, ServiceAccount tokens and their refresh.

Reads the ConfigMaps and Secrets a pod needs once per attempt, requests
projected tokens with the TokenRequest API (bound to the pod), writes every
file atomically, and keeps tokens fresh: each is replaced before 80 % of its
lifetime (at most a day) has passed, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from localkube.kubelet.client import ApiClient, ApiError, list_and_watch, retrying
from localkube.kubelet.env import ObjectRef
from localkube.kubelet.objects import Json, MissingReferenceError, PodSpecError, meta, parse_time, utcnow
from localkube.kubelet.volumes import TokenSource, VolumeFile

log = logging.getLogger(__name__)
MAX_TOKEN_REFRESH = timedelta(hours=24)


ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"


class RootCACache:
    """Every namespace's kube-root-ca.crt ConfigMap, kept by a watch.

    Nearly every pod mounts it (the ServiceAccount admission plugin adds it to
    the kube-api-access volume), so reading it from a watch saves a request per pod.
    """

    def __init__(self) -> None:
        self.by_namespace: dict[str, Json] = {}

    async def run(self, client: ApiClient) -> None:
        params = {"fieldSelector": f"metadata.name={ROOT_CA_CONFIG_MAP}"}
        await list_and_watch(client, "/api/v1/configmaps", self._on_list, self._on_event, params=params)

    def _on_list(self, items: list[Json]) -> None:
        self.by_namespace = {str(meta(item).get("namespace")): item for item in items}

    def _on_event(self, kind: str, obj: Json) -> None:
        namespace = str(meta(obj).get("namespace"))
        if kind == "DELETED":
            self.by_namespace.pop(namespace, None)
        else:
            self.by_namespace[namespace] = obj


async def fetch_objects(
    client: ApiClient, namespace: str, refs: Iterable[ObjectRef], *, root_ca: RootCACache | None = None
) -> dict[ObjectRef, Json | None]:
    """ConfigMaps and Secrets by (kind, name), None for those that do not exist."""
    refs = sorted(set(refs))

    async def one(ref: ObjectRef) -> Json | None:
        kind, name = ref
        if root_ca is not None and ref == ("configmap", ROOT_CA_CONFIG_MAP):
            cached = root_ca.by_namespace.get(namespace)
            if cached is not None:
                return cached
        plural = "configmaps" if kind == "configmap" else "secrets"
        path = f"/api/v1/namespaces/{namespace}/{plural}/{name}"
        return await retrying(f"get {kind} {namespace}/{name}", lambda: client.get_or_none(path))

    results = await asyncio.gather(*(one(ref) for ref in refs))
    return dict(zip(refs, results, strict=True))


@dataclass(frozen=True)
class Token:
    value: str
    issued: datetime
    expires: datetime

    @property
    def refresh_at(self) -> datetime:
        return self.issued + min((self.expires - self.issued) * 0.8, MAX_TOKEN_REFRESH)


async def request_token(client: ApiClient, pod: Json, source: TokenSource) -> Token:
    """A ServiceAccount token bound to the pod (TokenRequest API)."""
    m = meta(pod)
    namespace, account = m["namespace"], (pod.get("spec") or {}).get("serviceAccountName") or "default"
    spec: Json = {
        "expirationSeconds": source.expiration_seconds,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": m["name"], "uid": m["uid"]},
    }
    if source.audience:
        spec["audiences"] = [source.audience]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    issued = utcnow()
    try:
        answer = await retrying(f"token for {namespace}/{m['name']}", lambda: client.post(path, body))
    except ApiError as error:
        if error.status == 404:
            raise MissingReferenceError(f'serviceaccount "{account}" not found') from error
        raise
    status = answer.get("status") or {}
    expires = parse_time(str(status["expirationTimestamp"])) if status.get("expirationTimestamp") else issued
    return Token(str(status.get("token", "")), issued, max(expires, issued + timedelta(seconds=10)))


def write_file(path: Path, data: bytes, mode: int, *, make_parent: bool = True) -> None:
    """Replace `path` atomically, so a reader never sees half a token."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    temporary.replace(path)


def write_volume(folder: Path, files: Iterable[VolumeFile]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        write_file(folder / file.path, file.data, file.mode, make_parent="/" in file.path)


def prepare_host_path(volume: Json) -> Path:
    """The host path of a hostPath volume, after its `type` check (creating if asked)."""
    spec = volume.get("hostPath") or {}
    path = Path(str(spec.get("path", "")))
    if not path.is_absolute():
        raise PodSpecError(f"volume {volume.get('name')!r}: hostPath path {str(path)!r} must be absolute")
    kind = str(spec.get("type") or "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    checks = {
        "Directory": path.is_dir,
        "File": path.is_file,
        "Socket": path.is_socket,
        "CharDevice": path.is_char_device,
        "BlockDevice": path.is_block_device,
    }
    if kind in checks and not checks[kind]():
        raise MissingReferenceError(f"hostPath type check failed: {path} is not a {kind}")
    return path


def remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class TokenRefresher:
    """Keeps a pod's projected tokens fresh while the pod runs."""

    def __init__(self, client: ApiClient, pod: Json, folders: dict[str, Path]) -> None:
        self._client = client
        self._pod = pod
        self._folders = folders
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, source: TokenSource, token: Token) -> None:
        self._tasks.append(asyncio.create_task(self._refresh(source, token), name=f"token {source.path}"))

    async def _refresh(self, source: TokenSource, token: Token) -> None:
        while True:
            delay = (token.refresh_at - utcnow()).total_seconds()
            await asyncio.sleep(max(delay, 1.0))
            try:
                token = await request_token(self._client, self._pod, source)
            except (ApiError, MissingReferenceError) as error:
                log.warning(
                    "Cannot refresh token %s of pod %s: %s", source.path, meta(self._pod).get("name"), error
                )
                await asyncio.sleep(10)
                continue
            write_file(self._folders[source.volume] / source.path, token.value.encode(), source.mode)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


def truncate(path: Path, *, make_parent: bool = True) -> None:
    """Empty `path` (created if missing), keeping its inode."""
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
