"""The kubelet's only way to the apiserver: JSON over HTTPS with aiohttp, and list+watch.

Deliberately thin: the kubelet touches a few paths (pods, pods/binding,
pods/status, serviceaccounts/token, configmaps, secrets, nodes, leases) and
parses pods as plain dicts. Transient trouble (connection errors, 429, 5xx) is
retried with backoff by `retrying`; everything else surfaces as `ApiError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import yaml

from localkube.errors import LocalkubeError
from localkube.kubelet.objects import Json

log = logging.getLogger(__name__)
T = TypeVar("T")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca_data: bytes | None
    cert_data: bytes | None
    key_data: bytes | None
    token: str | None
    insecure: bool = False

    @property
    def port(self) -> int:
        parts = urlsplit(self.server)
        return parts.port or (443 if parts.scheme == "https" else 80)


def _data(section: dict[str, Any], key: str, base: Path) -> bytes | None:
    if section.get(f"{key}-data"):
        return base64.b64decode(section[f"{key}-data"])
    if section.get(key):
        path = Path(section[key])
        return (path if path.is_absolute() else base / path).read_bytes()
    return None


def load_kubeconfig(path: Path) -> KubeConfig:
    """The current context's server and credentials (certificates or token)."""
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as error:
        raise LocalkubeError(f"cannot read kubeconfig {path}: {error}") from error
    try:
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        context = contexts[config["current-context"]]
        cluster = clusters[context["cluster"]]
        user = users.get(context.get("user", ""), {})
    except (KeyError, TypeError) as error:
        raise LocalkubeError(f"kubeconfig {path} has no usable current context: missing {error}") from error
    if user.get("exec") or user.get("auth-provider"):
        raise LocalkubeError(f"kubeconfig {path}: exec and auth-provider credentials are not supported")
    base = path.parent
    return KubeConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_data=_data(cluster, "certificate-authority", base),
        cert_data=_data(user, "client-certificate", base),
        key_data=_data(user, "client-key", base),
        token=user.get("token"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def _ssl_context(config: KubeConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=config.ca_data.decode() if config.ca_data else None)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_data and config.key_data:
        # load_cert_chain reads files only; they live just long enough to be read.
        with tempfile.TemporaryDirectory(prefix="localkube-kubelet-") as folder:
            cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
            cert.write_bytes(config.cert_data)
            key.touch(mode=0o600)
            key.write_bytes(config.key_data)
            context.load_cert_chain(str(cert), str(key))
    return context


def _error_from(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
        return ApiError(status, str(body.get("reason", "")), str(body.get("message", text)))
    except ValueError:
        return ApiError(status, "", text.strip()[:500])


class ApiClient:
    """JSON requests to one apiserver with one connection pool."""

    def __init__(self, config: KubeConfig, *, user_agent: str = "localkube-kubelet") -> None:
        self.config = config
        self._ssl = _ssl_context(config) if config.server.startswith("https") else False
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=128, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        async with self.session.request(
            method, self.config.server + path, params=params, data=data, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise _error_from(response.status, text)
        result: Json = json.loads(text) if text else {}
        return result

    async def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Json | None:
        try:
            return await self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def post(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Json, *, content_type: str = STRATEGIC_MERGE) -> Json:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[Json]:
        """Raw watch events, one per line; ends when the server closes the stream."""
        query = {**params, "watch": "1"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        async with self.session.get(self.config.server + path, params=query, timeout=timeout) as response:
            if response.status >= 400:
                raise _error_from(response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ApiError):
        return error.status in TRANSIENT_STATUSES
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


async def retrying(what: str, call: Callable[[], Awaitable[T]], *, attempts: int | None = None) -> T:
    """`call()` until it succeeds or fails permanently; transient errors back off up to 5 s."""
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as error:
            if not is_transient(error) or (attempts is not None and attempt >= attempts):
                raise
            level = logging.WARNING if attempt >= 3 else logging.DEBUG
            log.log(level, "Retrying %s after error: %s", what, error or type(error).__name__)
        await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, 5.0)


async def list_and_watch(
    client: ApiClient,
    path: str,
    on_list: Callable[[list[Json]], None],
    on_event: Callable[[str, Json], None],
    *,
    params: dict[str, str] | None = None,
) -> None:
    """List `path`, then watch it from the list's resourceVersion, forever.

    Reconnects from the last seen resourceVersion (bookmarks included); lists
    again when the server says that version is gone (410).
    """
    base = dict(params or {})
    while True:
        listing = await retrying(f"list {path}", lambda: client.get(path, base))
        version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
        on_list(list(listing.get("items") or []))
        delay = 0.1
        while True:
            query = {
                **base,
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(random.randint(240, 360)),  # noqa: S311 - spreads reconnects
            }
            try:
                async for event in client.watch(path, query):
                    kind = str(event.get("type", ""))
                    obj: Json = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpiredError
                        raise ApiError(
                            int(obj.get("code") or 500),
                            str(obj.get("reason", "")),
                            str(obj.get("message", "")),
                        )
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        on_event(kind, obj)
                delay = 0.1
            except WatchExpiredError:
                log.info("Watch of %s expired at resourceVersion %s; listing again", path, version)
                break
            except Exception as error:
                if isinstance(error, ApiError) and error.status == 410:
                    break
                if not is_transient(error) and not isinstance(error, ApiError | ValueError):
                    raise
                log.warning("Watch of %s failed (%s); reconnecting", path, error or type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
