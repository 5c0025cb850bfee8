"""The kopf layer, kept thin: watch events feed the store and the work queue; admission
requests go to the engine's validation. No decisions are made here.

Run it with ``kopf run -m retcon.handlers`` (or ``python -m retcon.operator_main``).
Only raw event handlers are used for the hot path: kopf keeps no per-object
progress for them, so it adds no writes of its own to runs, Jobs or pods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType
from pydantic import ValidationError

from retcon.api.meta import GROUP, VERSION
from retcon.api.workflow import WorkflowSpec
from retcon.engine.model import INTENTS_ANNOTATION
from retcon.engine.validation import format_problems, validate_workflow
from retcon.kube import admission, webhook
from retcon.kube.config import OperatorConfig
from retcon.kube.leader import LeaderElector
from retcon.kube.observe import Key, Store
from retcon.kube.reconciler import EventSink, Reconciler
from retcon.kube.resources import MANAGED_BY, MANAGER, PauseRequest, WorkflowRun, as_dict, whoami

log = logging.getLogger("retcon.operator")
MANAGED = f"{MANAGED_BY}={MANAGER}"


def _state(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing: kopf then computes no per-event essence."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Find the API server as client-go does: in a pod, at KUBERNETES_SERVICE_HOST and _PORT.

    kopf's own in-cluster login assumes https://kubernetes.default.svc, which needs cluster
    DNS; the environment variables the kubelet sets are what every Kubernetes client uses.
    Outside a pod (or with KUBECONFIG set), the kubeconfig is used.
    """
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if host and not os.environ.get("KUBECONFIG"):
        info = kopf.login_with_service_account(settings=settings, **kwargs)
        if info is not None:
            host = f"[{host}]" if ":" in host else host
            return dataclasses.replace(info, server=f"https://{host}:{port}")
    return kopf.login_with_kubeconfig(settings=settings, **kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # kopf logs every raw event it hands us, and the HTTP client every request: too much on the hot path.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    settings.posting.enabled = False
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # Retcon uses no change-detecting handlers (only raw events and admission), so kopf's
    # per-event diff-base (a deep copy of every object, on every event) is pure overhead.
    settings.persistence.diffbase_storage = NoDiffBase()
    # Server-side filters: never stream pods and Jobs that are not ours.
    settings.watching.label_selectors["batch", "v1", "jobs"] = MANAGED
    settings.watching.label_selectors["", "v1", "pods"] = MANAGED
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    webhook.configure(settings)
    api = AsyncClient(field_manager="retcon")
    store = Store()
    events = EventSink(api)
    reconciler = Reconciler(api, store, config, events)
    store.operator_user = await whoami(api)
    memo["reconciler"] = reconciler
    memo["tasks"] = [
        asyncio.create_task(reconciler.run(), name="retcon-reconcile"),
        asyncio.create_task(events.run(), name="retcon-events"),
    ]
    if config.leader_elect:
        elector = LeaderElector(
            api,
            namespace=config.lease_namespace,
            name=config.lease_name,
            identity=f"{socket.gethostname()}-{os.getpid()}",
            lease_seconds=config.lease_seconds,
            renew_seconds=max(1.0, config.lease_seconds / 3),
        )
        elector.on_gain(reconciler.enqueue_all)
        reconciler.leader = elector
        memo["tasks"].append(asyncio.create_task(elector.run(), name="retcon-leader"))
    log.info("Retcon operator started as %s (runner image %s)", store.operator_user, config.runner_image)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    reconciler = memo.get("reconciler")
    if reconciler is not None and reconciler.leader is not None:
        await reconciler.leader.release()
    for task in memo.get("tasks", []):
        task.cancel()
    if reconciler is not None:
        await reconciler.api.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


def _feed(memo: kopf.Memo, event: kopf.RawEvent, put: Callable[..., Key | None]) -> None:
    """Cache a child object; reconcile its run if the change can matter to it."""
    key = put(dict(event["object"]), deleted=_deleted(event))
    if key is not None:
        _state(memo).enqueue(key)


@kopf.on.event(GROUP, VERSION, "workflowruns")
def run_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_run(dict(event["object"]), deleted=_deleted(event))
    if not _deleted(event):
        reconciler.enqueue(key)


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: MANAGER})
def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, event, _state(memo).store.put_job)


@kopf.on.event("", "v1", "pods", labels={MANAGED_BY: MANAGER})
def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, event, _state(memo).store.put_pod)


@kopf.on.event(GROUP, VERSION, "stepresults")
def result_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, event, _state(memo).store.put_result)


@kopf.on.event(GROUP, VERSION, "pauserequests")
def pause_request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, event, _state(memo).store.put_pause_request)


@kopf.on.validate(GROUP, VERSION, "workflows", operations=["CREATE", "UPDATE"])
def validate_workflow_admission(spec: kopf.Spec, name: str | None, **_: Any) -> None:
    """Refuse a Workflow whose steps cannot run, naming the step and the problem."""
    try:
        parsed = WorkflowSpec.model_validate(dict(spec))
    except ValidationError as error:
        problem = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise kopf.AdmissionError(f"Workflow {name} is invalid: {problem}", code=422) from None
    problems = validate_workflow(parsed)
    if problems:
        raise kopf.AdmissionError(f"Workflow {name} is invalid:\n{format_problems(problems)}", code=422)


@kopf.on.event(GROUP, VERSION, "injections")
def injection_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(memo, event, _state(memo).store.put_injection)


# --- admission: who intervened, taken from authentication ----------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


@kopf.on.mutate(GROUP, VERSION, "workflowruns", operations=["CREATE", "UPDATE"])
def record_run_intents(
    patch: kopf.Patch,
    userinfo: kopf.UserInfo,
    body: kopf.Body,
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    """Append each intervention an annotation change amounts to, with its authenticated actor."""
    before = dict(old.metadata.annotations) if old is not None else None
    after = dict(body.metadata.annotations)
    value = admission.run_intents_value(
        before,
        after,
        actor=admission.actor_of(userinfo),
        now=_now(),
        operator_user=_state(memo).store.operator_user,
    )
    if value is not None:
        patch.metadata.annotations[INTENTS_ANNOTATION] = value or None


@kopf.on.validate(GROUP, VERSION, "workflowruns", operations=["UPDATE"])
def validate_run_annotations(body: kopf.Body, old: kopf.Body | None = None, **_: Any) -> None:
    problem = admission.validate_run_annotations(dict(old) if old is not None else None, dict(body))
    if problem:
        raise kopf.AdmissionError(problem, code=422)


def _stamp_creator(patch: kopf.Patch, userinfo: kopf.UserInfo, old: kopf.Body | None, body: kopf.Body,
                   memo: kopf.Memo, *, keep: tuple[str, ...]) -> None:  # fmt: skip
    """Stamp the creator at CREATE; on UPDATE keep what was stamped, whatever the client sent."""
    if old is None:
        patch.metadata.annotations[admission.CREATED_BY] = admission.actor_of(userinfo)
        return
    if admission.actor_of(userinfo) == _state(memo).store.operator_user:
        return
    previous = old.metadata.annotations
    for key in keep:
        if body.metadata.annotations.get(key) != previous.get(key):
            patch.metadata.annotations[key] = previous.get(key)


@kopf.on.mutate(GROUP, VERSION, "pauserequests", operations=["CREATE", "UPDATE"])
def stamp_pause_request(
    patch: kopf.Patch,
    userinfo: kopf.UserInfo,
    body: kopf.Body,
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    _stamp_creator(patch, userinfo, old, body, memo, keep=(admission.CREATED_BY, admission.DELETED_BY))
    if old is None:
        # Deletion then waits for the operator, which audits who released the run.
        finalizers = list(body.get("metadata", {}).get("finalizers") or [])
        patch.metadata["finalizers"] = [*finalizers, admission.RELEASE_FINALIZER]


@kopf.on.validate(GROUP, VERSION, "pauserequests", operations=["DELETE"], side_effects=True)
async def stamp_pause_request_deleter(
    userinfo: kopf.UserInfo, dryrun: bool, memo: kopf.Memo, old: kopf.Body | None = None, **_: Any
) -> None:
    """Record who deletes a PauseRequest (who resumes the run) on the object, before it goes."""
    if (
        dryrun
        or old is None
        or admission.RELEASE_FINALIZER not in (old.get("metadata", {}).get("finalizers") or [])
    ):
        return
    patch = {"metadata": {"annotations": {admission.DELETED_BY: admission.actor_of(userinfo)}}}
    await _state(memo).api.patch(
        PauseRequest, old.metadata.name, patch, namespace=old.metadata.namespace, patch_type=PatchType.MERGE
    )


@kopf.on.mutate(GROUP, VERSION, "injections", operations=["CREATE", "UPDATE"])
def stamp_injection(
    patch: kopf.Patch,
    userinfo: kopf.UserInfo,
    body: kopf.Body,
    memo: kopf.Memo,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    _stamp_creator(patch, userinfo, old, body, memo, keep=(admission.CREATED_BY,))


@kopf.on.validate(GROUP, VERSION, "injections", operations=["CREATE"])
async def validate_injection(spec: kopf.Spec, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Refuse at apply time what can never apply: an unknown run or step, a finished run."""
    reconciler = _state(memo)
    run_name, namespace = str(spec.get("runName", "")), namespace or "default"
    run = reconciler.store.runs.get((namespace, run_name))
    if run is None:
        try:
            run = as_dict(await reconciler.api.get(WorkflowRun, run_name, namespace=namespace))
        except ApiError as error:
            if error.status.code != 404:
                raise
    problem = admission.validate_injection(dict(spec), run, namespace)
    if problem:
        raise kopf.AdmissionError(problem, code=422)
