"""Starts, inspects and stops the local control plane.

``up`` is idempotent: it starts only the components that are not running and
waits until the apiserver is ready, the node is Ready and the default
ServiceAccount exists. Each component's PID file records the PID *and* the
process start time, so ``down`` never signals a recycled PID that belongs to
something else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localkube import pki
from localkube.build import ensure_binaries
from localkube.errors import LocalkubeError
from localkube.layout import DEFAULT_API_PORT, DEFAULT_ETCD_PORT, KUBERNETES_VERSION, Layout

NODE_NAME = "localkube"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet")
CONTROLLERS = (
    "job",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "ttl-after-finished",
    "root-ca-cert-publisher",
    "deployment",
    "replicaset",
    "endpoint",
    "endpointslice",
    "podgc",
)
ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Settings:
    """What a cluster was started with; kept in the state home so every command agrees."""

    api_port: int = DEFAULT_API_PORT
    etcd_port: int = DEFAULT_ETCD_PORT

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @classmethod
    def load(cls, layout: Layout) -> Settings:
        if layout.settings.exists():
            data = json.loads(layout.settings.read_text())
            return cls(api_port=int(data["api_port"]), etcd_port=int(data["etcd_port"]))
        return cls(
            api_port=int(os.environ.get("RETCON_LOCALKUBE_PORT", DEFAULT_API_PORT)),
            etcd_port=int(os.environ.get("RETCON_LOCALKUBE_ETCD_PORT", DEFAULT_ETCD_PORT)),
        )

    def save(self, layout: Layout) -> None:
        layout.home.mkdir(parents=True, exist_ok=True)
        layout.settings.write_text(json.dumps({"api_port": self.api_port, "etcd_port": self.etcd_port}))


@dataclass
class ComponentState:
    name: str
    pid: int | None
    running: bool


@dataclass
class Status:
    components: list[ComponentState] = field(default_factory=list)
    api_ready: bool = False
    node_ready: bool = False
    server: str = ""
    kubeconfig: Path | None = None

    @property
    def healthy(self) -> bool:
        return self.api_ready and self.node_ready and all(c.running for c in self.components)


# --- processes -----------------------------------------------------------------------------------

#: Processes this Python process started, kept so they are reaped (not left as zombies or
#: reported as leaked) when `down` runs in the same process, as in a test session.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def _read_pid(layout: Layout, component: str) -> int | None:
    path = layout.pidfile(component)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    if _start_time(pid) != record.get("start"):
        return None  # gone, or the PID now belongs to another process
    return pid


def _spawn(layout: Layout, component: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    layout.run.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    log = layout.log(component).open("ab")
    log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {component}\n".encode())
    log.flush()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives `up`, and `down` can signal the whole group
        env=env,
        cwd=layout.home,
    )
    log.close()
    _CHILDREN[process.pid] = process
    layout.pidfile(component).write_text(
        json.dumps({"pid": process.pid, "start": _start_time(process.pid), "argv": argv[:1]})
    )
    return process.pid


def _stop(layout: Layout, component: str, *, timeout: float = 15.0) -> bool:
    pid = _read_pid(layout, component)
    layout.pidfile(component).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) is None or _is_zombie(pid):
            _reap(pid)
            return True
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_port(port: int, component: str, variable: str) -> None:
    if not _port_free(port):
        raise LocalkubeError(
            f"port {port} on 127.0.0.1 is in use by another process, so {component} cannot start; "
            f"stop that process or choose another port with {variable}=PORT (after `localkube down --purge`)"
        )


# --- API access (stdlib only: the harness must work before anything else is installed) ----------


def _ssl_context(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    context.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return context


def api_get(layout: Layout, settings: Settings, path: str, *, timeout: float = 2.0) -> Any:
    """GET a path from the apiserver as the admin; returns parsed JSON or raw text."""
    request = urllib.request.Request(settings.server + path)  # noqa: S310 - https to loopback only
    # The URL is built from our own settings: always https to loopback.
    with urllib.request.urlopen(  # noqa: S310
        request, context=_ssl_context(layout), timeout=timeout
    ) as response:
        body = response.read().decode()
    try:
        return json.loads(body)
    except ValueError:
        return body


def _probe(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, urllib.error.URLError, ssl.SSLError, ValueError, KeyError):
        return False


def _wait(what: str, check: Callable[[], bool], *, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _probe(check):
            return
        time.sleep(0.1)
    where = f"; see {log}" if log else ""
    raise LocalkubeError(f"timed out after {timeout:.0f}s waiting for {what}{where}")


def _etcd_healthy(settings: Settings) -> bool:
    url = f"http://127.0.0.1:{settings.etcd_port}/health"
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(json.loads(response.read()).get("health") == "true")


def _node_ready(layout: Layout, settings: Settings) -> bool:
    node = api_get(layout, settings, f"/api/v1/nodes/{NODE_NAME}")
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _default_service_account(layout: Layout, settings: Settings) -> bool:
    return bool(api_get(layout, settings, "/api/v1/namespaces/default/serviceaccounts/default"))


# --- commands ------------------------------------------------------------------------------------


def _etcd_argv(layout: Layout, settings: Settings) -> list[str]:
    client = f"http://127.0.0.1:{settings.etcd_port}"
    peer = f"http://127.0.0.1:{settings.etcd_port + 1}"
    return [
        str(layout.binary("etcd")),
        "--name=localkube",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=localkube={peer}",
        "--unsafe-no-fsync",  # throwaway test data: durability costs latency for nothing
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def _apiserver_argv(layout: Layout, settings: Settings) -> list[str]:
    p = layout.pki
    return [
        str(layout.binary("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{settings.etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={settings.api_port}",
        f"--cert-dir={layout.home / 'apiserver'}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--api-audiences={ISSUER}",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        # Otherwise it writes 127.0.0.1 into the `kubernetes` Endpoints, which validation rejects.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def _controller_manager_argv(layout: Layout) -> list[str]:
    kubeconfig = str(layout.kubeconfig)
    return [
        str(layout.binary("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--controllers=" + ",".join(CONTROLLERS),
        "--leader-elect=false",
        "--secure-port=0",
        f"--service-account-private-key-file={layout.pki / 'sa.key'}",
        f"--root-ca-file={layout.pki / 'ca.crt'}",
        "--use-service-account-credentials=false",
        # The stock 20 requests/s limit makes the Job controller, not the operator, the bottleneck.
        "--kube-api-qps=1000",
        "--kube-api-burst=2000",
        "--concurrent-job-syncs=20",
        "--concurrent-gc-syncs=20",
        "--v=1",
    ]


def _kubelet_argv(layout: Layout) -> list[str]:
    return [
        sys.executable,
        "-m",
        "localkube.kubelet",
        f"--kubeconfig={layout.kubeconfig}",
        f"--node-name={NODE_NAME}",
        f"--root={layout.kubelet_root}",
    ]


def up(layout: Layout, *, kubelet: bool = True, timeout: float = 90.0, quiet: bool = False) -> Status:
    """Bring the control plane up (or complete a partial one) and wait until it is usable."""
    ensure_binaries(layout, quiet=quiet)
    settings = Settings.load(layout)
    settings.save(layout)
    pki.ensure_pki(layout.pki)
    pki.write_kubeconfig(
        layout.kubeconfig,
        server=settings.server,
        ca=layout.pki / "ca.crt",
        cert=layout.pki / "admin.crt",
        key=layout.pki / "admin.key",
        user="localkube-admin",
    )

    if _read_pid(layout, "etcd") is None:
        _require_port(settings.etcd_port, "etcd", "RETCON_LOCALKUBE_ETCD_PORT")
        _require_port(settings.etcd_port + 1, "etcd (peer)", "RETCON_LOCALKUBE_ETCD_PORT")
        _spawn(layout, "etcd", _etcd_argv(layout, settings))
    _wait("etcd to report healthy", lambda: _etcd_healthy(settings), timeout=30, log=layout.log("etcd"))

    if _read_pid(layout, "kube-apiserver") is None:
        _require_port(settings.api_port, "kube-apiserver", "RETCON_LOCALKUBE_PORT")
        _spawn(layout, "kube-apiserver", _apiserver_argv(layout, settings))
    _wait(
        "kube-apiserver /readyz",
        lambda: api_get(layout, settings, "/readyz") == "ok",
        timeout=timeout,
        log=layout.log("kube-apiserver"),
    )

    if _read_pid(layout, "kube-controller-manager") is None:
        _spawn(layout, "kube-controller-manager", _controller_manager_argv(layout))
    if kubelet and _read_pid(layout, "kubelet") is None:
        _spawn(layout, "kubelet", _kubelet_argv(layout))

    if kubelet:
        _wait(
            f"node {NODE_NAME} to be Ready",
            lambda: _node_ready(layout, settings),
            timeout=timeout,
            log=layout.log("kubelet"),
        )
    _wait(
        "the default ServiceAccount (made by kube-controller-manager)",
        lambda: _default_service_account(layout, settings),
        timeout=timeout,
        log=layout.log("kube-controller-manager"),
    )
    return status(layout)


def status(layout: Layout) -> Status:
    settings = Settings.load(layout)
    result = Status(
        server=settings.server, kubeconfig=layout.kubeconfig if layout.kubeconfig.exists() else None
    )
    for component in COMPONENTS:
        pid = _read_pid(layout, component)
        result.components.append(ComponentState(component, pid, pid is not None))
    if (layout.pki / "admin.crt").exists():
        result.api_ready = _probe(lambda: api_get(layout, settings, "/readyz") == "ok")
        result.node_ready = result.api_ready and _probe(lambda: _node_ready(layout, settings))
    return result


def down(layout: Layout, *, purge: bool = False) -> list[str]:
    """Stop what `up` started (newest first). With purge, forget the cluster's data and certs."""
    stopped = [component for component in reversed(COMPONENTS) if _stop(layout, component)]
    if purge and layout.home.exists():
        shutil.rmtree(layout.home)
    return stopped


def kubectl_path(layout: Layout) -> Path:
    return layout.binary("kubectl")


def version() -> str:
    return KUBERNETES_VERSION
