"""Carry out an engine decision against the API, idempotently.

Children first (each attempt's input record and Job, created concurrently;
an existing one of the same name is adopted), then one status write guarded
by the run's resourceVersion, then Events. A conflict on the status write
means someone else changed the run: the caller re-reads and decides again,
which is safe because every child has a deterministic name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.resources.batch_v1 import Job
from lightkube.types import CascadeType, PatchType

from retcon.api.workflow import StepDefaults
from retcon.engine.model import (
    Decision,
    InjectionResult,
    PauseRequestResult,
    RecordEvent,
    StartAttempt,
    StopAttempt,
)
from retcon.kube.admission import CREATED_BY, RELEASE_FINALIZER
from retcon.kube.config import OperatorConfig
from retcon.kube.observe import Store
from retcon.kube.render import render_event, render_input, render_job, render_step_rbac
from retcon.kube.resources import Injection, PauseRequest, WorkflowRun, as_dict

log = logging.getLogger("retcon.kube")


class Conflict(Exception):
    """The run changed since it was read; decide again from a fresh copy."""


class Gone(Exception):
    """The run no longer exists."""


async def create_or_adopt(api: AsyncClient, manifest: dict[str, Any]) -> None:
    """Create an object; an existing one of that name is taken as ours (names are deterministic)."""
    try:
        await api.create(codecs.from_dict(manifest))
    except ApiError as error:
        if error.status.code != 409:
            raise


class StepRbac:
    """Ensures, once per namespace, the ServiceAccount and Role that step pods run with."""

    def __init__(self, api: AsyncClient, config: OperatorConfig) -> None:
        self._api = api
        self._config = config
        self._done: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, namespace: str) -> None:
        if not self._config.manage_step_rbac or namespace in self._done:
            return
        async with self._lock:
            if namespace in self._done:
                return
            for manifest in render_step_rbac(namespace, self._config.step_service_account):
                await create_or_adopt(self._api, manifest)
            self._done.add(namespace)


async def _start(
    api: AsyncClient,
    store: Store,
    run: dict[str, Any],
    decision: Decision,
    action: StartAttempt,
    config: OperatorConfig,
) -> None:
    meta = run["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    definition = decision.status.definition
    defaults = definition.defaults if definition is not None else StepDefaults()
    try:
        await asyncio.gather(
            create_or_adopt(api, render_input(name, namespace, uid, action)),
            create_or_adopt(api, render_job(name, namespace, uid, action, defaults, config)),
        )
    except ApiError as error:
        if error.status.code in (400, 403, 404, 422):
            # A permanent refusal (an invalid env entry, a quota): the attempt fails with the API's words.
            store.creation_errors[(namespace, action.job_name)] = (
                f"could not create Job: {error.status.message}"
            )
            log.warning("Could not create Job %s/%s: %s", namespace, action.job_name, error.status.message)
            return
        raise


async def _stop(api: AsyncClient, namespace: str, action: StopAttempt) -> None:
    try:
        await api.delete(Job, action.job_name, namespace=namespace, cascade=CascadeType.BACKGROUND)
    except ApiError as error:
        if error.status.code != 404:
            raise


async def apply_decision(
    api: AsyncClient,
    store: Store,
    run: dict[str, Any],
    decision: Decision,
    config: OperatorConfig,
    rbac: StepRbac,
    emit: Callable[[dict[str, Any]], Awaitable[None] | None],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply `decision` to `run`; returns the run as written. Raises Conflict or Gone."""
    meta = run["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    starts = [a for a in decision.actions if isinstance(a, StartAttempt)]
    if starts:
        await rbac.ensure(namespace)
    children: list[Awaitable[None]] = [_start(api, store, run, decision, action, config) for action in starts]
    children += [_stop(api, namespace, a) for a in decision.actions if isinstance(a, StopAttempt)]
    if children:
        await asyncio.gather(*children)

    status = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    written = run
    if status != (run.get("status") or {}):
        body = {**run, "status": status}
        try:
            updated = await api.replace(WorkflowRun.Status.from_dict(body), name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 409:
                raise Conflict(name) from error
            if error.status.code == 404:
                raise Gone(name) from error
            raise
        written = as_dict(updated)
    if decision.consumed_annotations or decision.set_annotations:
        changes: dict[str, str | None] = dict.fromkeys(decision.consumed_annotations)
        changes.update(decision.set_annotations)
        patch = {"metadata": {"annotations": changes}}
        try:
            patched = await api.patch(
                WorkflowRun, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
            written = as_dict(patched)
        except ApiError as error:
            if error.status.code != 404:
                raise
    moment = now or datetime.now(UTC)
    await asyncio.gather(
        *(_injection_status(api, store, namespace, result, moment) for result in decision.injections),
        *(_pause_request_status(api, store, namespace, result) for result in decision.pause_requests),
        *(release_pause_request(api, namespace, pr) for pr in decision.finalize_pause_requests),
    )
    involved = {
        "apiVersion": run.get("apiVersion", "retcon.dev/v1alpha1"),
        "kind": "WorkflowRun",
        "name": name,
        "namespace": namespace,
        "uid": meta["uid"],
    }
    for sequence, action in enumerate(a for a in decision.actions if isinstance(a, RecordEvent)):
        emit(
            render_event(
                namespace=namespace,
                involved=involved,
                type=action.type,
                reason=action.reason,
                message=action.message,
                now=moment,
                sequence=sequence,
            )
        )
    return written


async def _patch_status(
    api: AsyncClient, kind: Any, namespace: str, name: str, status: dict[str, Any]
) -> None:
    try:
        await api.patch(
            kind.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
    except ApiError as error:
        if error.status.code != 404:  # deleted meanwhile: nothing to report on
            raise


async def _injection_status(
    api: AsyncClient, store: Store, namespace: str, result: InjectionResult, now: datetime
) -> None:
    current = (store.injections.get((namespace, result.name)) or {}).get("status") or {}
    if current.get("phase") == result.phase:
        return
    status: dict[str, Any] = {"phase": result.phase, "message": result.message}
    if result.phase == "Applied":
        status.update(
            stepId=result.step_id,
            stepName=result.step_name,
            previousOutput=dict(result.previous_output) if result.previous_output is not None else None,
            appliedAt=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            appliedBy=result.actor,
        )
    await _patch_status(api, Injection, namespace, result.name, status)


async def _pause_request_status(
    api: AsyncClient, store: Store, namespace: str, result: PauseRequestResult
) -> None:
    obj = store.pause_requests.get((namespace, result.name)) or {}
    current = obj.get("status") or {}
    if current.get("phase") == result.phase and current.get("message") == result.message:
        return
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    status = {"phase": result.phase, "message": result.message, "requestedBy": annotations.get(CREATED_BY)}
    await _patch_status(api, PauseRequest, namespace, result.name, status)


async def release_pause_request(api: AsyncClient, namespace: str, name: str) -> None:
    """Let a deleted PauseRequest go, once its release is in the run's audit trail."""
    try:
        current = as_dict(await api.get(PauseRequest, name, namespace=namespace))
    except ApiError as error:
        if error.status.code == 404:
            return
        raise
    finalizers = [f for f in current["metadata"].get("finalizers") or [] if f != RELEASE_FINALIZER]
    patch = {
        "metadata": {"finalizers": finalizers, "resourceVersion": current["metadata"]["resourceVersion"]}
    }
    try:
        await api.patch(PauseRequest, name, patch, namespace=namespace, patch_type=PatchType.MERGE)
    except ApiError as error:
        if error.status.code not in (404, 409):  # gone, or changed: the next event brings it back
            raise
