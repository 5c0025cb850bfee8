"""The kubelet's main loop: one watch of all pods, binding, and a worker per pod bound here.

Level-based: every pod event is judged on the pod as it is now. An unbound
pod (no ``spec.nodeName``, no scheduling gates) is bound to this node through
pods/binding; a pod bound here gets a `PodWorker` unless it is terminal; a
deletion is passed to its worker (or, for a terminal pod, finished at once);
a pod that disappears has its processes killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from localkube.errors import LocalkubeError
from localkube.kubelet.client import ApiClient, ApiError, list_and_watch, load_kubeconfig, retrying
from localkube.kubelet.env import inherited_env, service_env
from localkube.kubelet.logs import pod_dir
from localkube.kubelet.node import NodeAgent
from localkube.kubelet.objects import Json, meta, pod_key, pod_uid, utcnow
from localkube.kubelet.process import stop_all
from localkube.kubelet.provision import remove_tree
from localkube.kubelet.status import build_lost_status
from localkube.kubelet.volumes import Tools
from localkube.kubelet.worker import KubeletContext, PodWorker, delete_pod, is_terminal

log = logging.getLogger("localkube.kubelet")
SHUTDOWN_GRACE = 2.0


@dataclass(frozen=True)
class KubeletConfig:
    kubeconfig: Path
    node_name: str
    root: Path
    pass_env: Sequence[str] = ()


def _identity(pod: Json) -> Json:
    m = meta(pod)
    keep = ("name", "namespace", "uid", "deletionTimestamp")
    return {"metadata": {key: m[key] for key in keep if key in m}}


def find_tools() -> Tools:
    """Absolute paths of the tools containers start with; missing ones stop the kubelet early."""
    found = {}
    for name in ("unshare", "mount", "mkdir", "nsenter"):
        path = shutil.which(name)
        if path is None:
            raise LocalkubeError(
                f"{name} not found on PATH: the process kubelet needs util-linux and coreutils"
            )
        found[name] = path
    if os.geteuid() != 0:
        raise LocalkubeError("the process kubelet must run as root: it mounts volumes with unshare --mount")
    return Tools(
        unshare=found["unshare"],
        sh="/bin/sh",
        mount=found["mount"],
        mkdir=found["mkdir"],
        nsenter=found["nsenter"],
    )


class Kubelet:
    def __init__(self, config: KubeletConfig, client: ApiClient, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.client = client
        self.node = NodeAgent(client, config.node_name)
        self.ctx = KubeletContext(
            client=client,
            node_name=config.node_name,
            root=config.root,
            inherited_env=inherited_env(os.environ, config.pass_env),
            services=service_env(client.config.port),
            tools=find_tools(),
            http=http,
        )
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids of pods that are terminal here, until they are gone
        self.binding: set[str] = set()
        self.deleting: set[str] = set()
        # uid -> identity of every pod bound here until it is gone (metadata only: a
        # finished Job's pod may stay for days, and its spec is no longer needed).
        self.known: dict[str, Json] = {}
        self._first_list = True
        self._tasks: set[asyncio.Task[None]] = set()

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        self.config.root.mkdir(parents=True, exist_ok=True)
        await self.node.register()
        self._spawn(self.node.keep_alive(), "node keep-alive")
        self._spawn(self.ctx.root_ca.run(self.client), "kube-root-ca.crt watch")
        await list_and_watch(self.client, "/api/v1/pods", self._on_list, self._on_event_safely)

    async def shutdown(self) -> None:
        """Stop every process this kubelet started; write nothing more to the API."""
        self.ctx.shutting_down = True
        log.info("Stopping: ending the processes of %d pods", len(self.workers))
        for worker in list(self.workers.values()):
            if worker.task is not None:
                worker.task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await stop_all(SHUTDOWN_GRACE)
        pending = [w.task for w in self.workers.values() if w.task is not None]
        await asyncio.gather(*pending, *self._tasks, return_exceptions=True)

    def _spawn(self, work: object, name: str) -> None:
        async def guarded() -> None:
            try:
                await work  # type: ignore[misc]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Kubelet task %r failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- events -----------------------------------------------------------------------------

    def _on_list(self, pods: list[Json]) -> None:
        present = {pod_uid(pod) for pod in pods}
        for uid in list(self.known):
            if uid not in present:
                self._gone(uid)
        first, self._first_list = self._first_list, False
        for pod in pods:
            if first and self._lost_on_restart(pod):
                continue
            self._on_event_safely("ADDED", pod)

    def _on_event_safely(self, kind: str, pod: Json) -> None:
        try:
            self._on_event(kind, pod)
        except Exception:
            log.exception("Cannot handle %s event of pod %s", kind, pod_key(pod))

    def _on_event(self, kind: str, pod: Json) -> None:
        uid = pod_uid(pod)
        if kind == "DELETED":
            self._gone(uid)
            return
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        deleting = bool(meta(pod).get("deletionTimestamp"))
        if not node:
            if not deleting and not is_terminal(pod) and not spec.get("schedulingGates"):
                self._bind(pod)
            return
        self.binding.discard(uid)
        if node != self.config.node_name:
            return
        self.known[uid] = _identity(pod)
        worker = self.workers.get(uid)
        if worker is not None:
            worker.observe(pod)
            return
        if uid in self.finished or is_terminal(pod) or deleting:
            self.finished.add(uid)
            if deleting:
                self._delete(pod)
            return
        worker = PodWorker(self.ctx, pod, self._worker_done)
        self.workers[uid] = worker
        worker.start()

    def _worker_done(self, worker: PodWorker) -> None:
        self.workers.pop(worker.uid, None)
        if worker.uid in self.known:
            self.finished.add(worker.uid)
            newest = self.known[worker.uid]
            if meta(newest).get("deletionTimestamp") and not worker.delete_requested:
                self._delete(newest)

    def _gone(self, uid: str) -> None:
        pod = self.known.pop(uid, None)
        self.finished.discard(uid)
        self.deleting.discard(uid)
        self.binding.discard(uid)
        worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.vanish()
        if pod is not None:
            m = meta(pod)
            # Secrets and tokens go with the pod; logs stay for `localkube logs`.
            remove_tree(pod_dir(self.config.root, m["namespace"], m["name"], uid) / "volumes")

    # --- actions ----------------------------------------------------------------------------

    def _bind(self, pod: Json) -> None:
        uid = pod_uid(pod)
        if uid in self.binding:
            return
        self.binding.add(uid)
        m = meta(pod)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
        }
        path = f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/binding"

        async def bind() -> None:
            try:
                await retrying(f"bind {pod_key(pod)}", lambda: self.client.post(path, body))
            except ApiError as error:
                self.binding.discard(uid)
                if error.status not in (404, 409):
                    log.warning("Cannot bind pod %s: %s", pod_key(pod), error)
                return
            log.info("Bound pod %s to node %s", pod_key(pod), self.config.node_name)

        self._spawn(bind(), f"bind {pod_key(pod)}")

    def _delete(self, pod: Json) -> None:
        uid = pod_uid(pod)
        if uid in self.deleting:
            return
        self.deleting.add(uid)
        self._spawn(delete_pod(self.client, pod), f"delete {pod_key(pod)}")

    def _lost_on_restart(self, pod: Json) -> bool:
        """A pod that ran here before this kubelet started: its processes are gone, so it failed."""
        spec = pod.get("spec") or {}
        if spec.get("nodeName") != self.config.node_name or is_terminal(pod):
            return False
        if meta(pod).get("deletionTimestamp"):
            return False
        status = pod.get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        ran = status.get("phase") == "Running" or any(
            "running" in (s.get("state") or {}) or "terminated" in (s.get("state") or {}) for s in statuses
        )
        if not ran:
            return False
        uid = pod_uid(pod)
        self.known[uid] = _identity(pod)
        self.finished.add(uid)
        self._spawn(self._mark_lost(pod), f"mark lost {pod_key(pod)}")
        return True

    async def _mark_lost(self, pod: Json) -> None:
        m = meta(pod)
        path = f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status"
        body = {
            "metadata": {"uid": m["uid"]},
            "status": build_lost_status(pod, self.config.node_name, utcnow()),
        }
        try:
            await retrying(f"status of {pod_key(pod)}", lambda: self.client.patch(path, body))
        except ApiError as error:
            if error.status not in (404, 409, 422):
                raise
            return
        log.info("Pod %s Failed: its processes were lost when the kubelet restarted", pod_key(pod))


async def run_kubelet(config: KubeletConfig, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then end every process started."""
    client = ApiClient(load_kubeconfig(config.kubeconfig))
    http = aiohttp.ClientSession()
    kubelet = Kubelet(config, client, http)
    main = asyncio.create_task(kubelet.run(), name="kubelet")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main.done():
            main.result()  # the kubelet stopped by itself: surface why
    finally:
        stopper.cancel()
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        await kubelet.shutdown()
        await http.close()
        await client.close()
