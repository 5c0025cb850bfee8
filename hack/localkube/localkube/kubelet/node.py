"""The Node this kubelet registers, its heartbeat, and its Lease in kube-node-lease."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
from datetime import datetime

from localkube.kubelet.client import MERGE, ApiClient, ApiError, retrying
from localkube.kubelet.downward import HOST_IP, NODE_ALLOCATABLE
from localkube.kubelet.objects import Json, format_micro_time, format_time, utcnow

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.36.3"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
HEARTBEAT_SECONDS = 40.0


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def build_node_status(now: datetime, since: datetime) -> Json:
    """Ready, no pressure, loopback addresses and generous capacity."""
    beat, start = format_time(now), format_time(since)

    def condition(kind: str, status: str, reason: str, message: str) -> Json:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": beat,
            "lastTransitionTime": start,
        }

    return {
        "capacity": dict(NODE_ALLOCATABLE),
        "allocatable": dict(NODE_ALLOCATABLE),
        "conditions": [
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition(
                "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
            ),
            condition("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        ],
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": _arch(),
            "containerRuntimeVersion": "process://localkube",
            "kernelVersion": platform.release(),
            "osImage": "localkube process kubelet",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }


def build_node(name: str, now: datetime) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(),
                "node.kubernetes.io/instance-type": "localkube",
            },
        },
        "spec": {},
        "status": {
            **build_node_status(now, now),
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": name}],
        },
    }


def build_lease(name: str, node_uid: str, now: datetime) -> Json:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": format_micro_time(now),
        },
    }


class NodeAgent:
    """Registers the node, then keeps its Lease and Ready heartbeat fresh."""

    def __init__(self, client: ApiClient, name: str) -> None:
        self.client = client
        self.name = name
        self.uid = ""
        self.since = utcnow()

    async def register(self) -> None:
        """Create the Node, or take over an existing one; either way post a fresh status."""
        node = build_node(self.name, self.since)
        try:
            created = await retrying("create node", lambda: self.client.post("/api/v1/nodes", node))
        except ApiError as error:
            if error.status != 409:
                raise
            created = await retrying("get node", lambda: self.client.get(f"/api/v1/nodes/{self.name}"))
            labels = node["metadata"]["labels"]
            await retrying(
                "label node",
                lambda: self.client.patch(
                    f"/api/v1/nodes/{self.name}", {"metadata": {"labels": labels}}, content_type=MERGE
                ),
            )
        self.uid = str(created["metadata"]["uid"])
        await self._post_status(node["status"])
        log.info("Registered node %s (pid %d)", self.name, os.getpid())

    async def _post_status(self, status: Json) -> None:
        path = f"/api/v1/nodes/{self.name}/status"
        await retrying("update node status", lambda: self.client.patch(path, {"status": status}))

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.name}"
        patch = {"spec": {"holderIdentity": self.name, "renewTime": format_micro_time(utcnow())}}
        try:
            await retrying("renew lease", lambda: self.client.patch(path, patch, content_type=MERGE))
        except ApiError as error:
            if error.status != 404:
                raise
            # No lease: first start, or the Node was deleted and the garbage collector
            # took its lease along. Either way (re-)register before leasing.
            node = await retrying("get node", lambda: self.client.get_or_none(f"/api/v1/nodes/{self.name}"))
            if node is None or str(node["metadata"]["uid"]) != self.uid:
                await self.register()
            lease = build_lease(self.name, self.uid, utcnow())
            collection = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
            await retrying("create lease", lambda: self.client.post(collection, lease))

    async def _register_quietly(self) -> None:
        try:
            await self.register()
        except ApiError as error:
            log.warning("Cannot register node %s: %s", self.name, error)

    async def keep_alive(self) -> None:
        """Renew the Lease every 10 s and the Ready heartbeat every 40 s, forever."""
        last_beat = asyncio.get_running_loop().time()
        while True:
            try:
                await self.renew_lease()
                now = asyncio.get_running_loop().time()
                if now - last_beat >= HEARTBEAT_SECONDS:
                    await self._post_status(build_node_status(utcnow(), self.since))
                    last_beat = now
            except ApiError as error:
                log.warning("Node heartbeat failed: %s", error)
                if error.status == 404:
                    await self._register_quietly()
            await asyncio.sleep(LEASE_RENEW_SECONDS)
