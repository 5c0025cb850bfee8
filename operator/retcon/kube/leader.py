"""Leader election on a coordination.k8s.io Lease, so that of several replicas one acts.

Every replica watches and keeps its caches warm, and every replica serves
admission requests; only the holder of the Lease reconciles runs. A holder
that stops renewing (killed, partitioned) loses the Lease once it expires, and
another replica takes it over and reconciles every run it knows. Because every
child has a deterministic name and every status write is guarded by the run's
resourceVersion, even a brief overlap of two leaders cannot run a step twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.resources.coordination_v1 import Lease

from retcon.kube.resources import as_dict

log = logging.getLogger("retcon.leader")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class LeaderElector:
    def __init__(
        self,
        api: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.leading = asyncio.Event()
        self.transitions = 0
        self._on_gain: list[Any] = []

    def on_gain(self, callback: Any) -> None:
        """Call `callback()` each time this replica becomes the leader."""
        self._on_gain.append(callback)

    async def run(self) -> None:
        last_renewal = datetime.min.replace(tzinfo=UTC)
        while True:
            now = datetime.now(UTC)
            try:
                held = await self._try_acquire_or_renew(now)
            except ApiError as error:
                log.warning(
                    "Could not renew the lease %s/%s: %s", self.namespace, self.name, error.status.message
                )
                held = False
            except OSError as error:
                log.warning("Could not reach the API server for the lease: %s", error)
                held = False
            if held:
                last_renewal = now
                if not self.leading.is_set():
                    self.transitions += 1
                    log.info("Became the leader (%s); reconciling", self.identity)
                    self.leading.set()
                    for callback in self._on_gain:
                        callback()
            elif self.leading.is_set() and (now - last_renewal).total_seconds() >= self.lease_seconds * 0.8:
                log.warning("Lost the lease %s/%s; standing by", self.namespace, self.name)
                self.leading.clear()
            await asyncio.sleep(self.renew_seconds)

    async def _try_acquire_or_renew(self, now: datetime) -> bool:
        try:
            lease = as_dict(await self.api.get(Lease, self.name, namespace=self.namespace))
        except ApiError as error:
            if error.status.code != 404:
                raise
            return await self._create(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = renewed is None or now > renewed + timedelta(seconds=duration)
        if holder != self.identity and not expired:
            return False
        taking_over = holder != self.identity
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_seconds),
            renewTime=_stamp(now),
        )
        if taking_over:
            spec["acquireTime"] = _stamp(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = spec
        try:
            await self.api.replace(codecs.from_dict(lease))  # guarded by the lease's resourceVersion
        except ApiError as error:
            if error.status.code == 409:  # someone else renewed or took it first
                return False
            raise
        return True

    async def release(self) -> None:
        """On a graceful stop: hand the Lease back at once, so a rolling update waits for nobody."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = as_dict(await self.api.get(Lease, self.name, namespace=self.namespace))
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["renewTime"] = _stamp(datetime.now(UTC) - timedelta(seconds=self.lease_seconds * 2))
            await self.api.replace(codecs.from_dict(lease))
        except (ApiError, OSError) as error:
            log.warning("Could not release the lease %s/%s: %s", self.namespace, self.name, error)

    async def _create(self, now: datetime) -> bool:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": _stamp(now),
                "renewTime": _stamp(now),
                "leaseTransitions": 0,
            },
        }
        try:
            await self.api.create(codecs.from_dict(lease))
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True
