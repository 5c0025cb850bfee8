"""The kopf layer, kept thin: watch events feed the store and the work queue; admission
requests go to the engine's validation. No decisions are made here.

Run it with ``kopf run -m retcon.handlers`` (or ``python -m retcon.operator_main``).
Only raw event handlers are used for the hot path: kopf keeps no per-object
progress for them, so it adds no writes of its own to runs, Jobs or pods.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from lightkube import AsyncClient
from pydantic import ValidationError

from retcon.api.meta import GROUP, VERSION
from retcon.api.workflow import WorkflowSpec
from retcon.engine.validation import format_problems, validate_workflow
from retcon.kube import webhook
from retcon.kube.config import OperatorConfig
from retcon.kube.observe import Store
from retcon.kube.reconciler import EventSink, Reconciler
from retcon.kube.resources import MANAGED_BY, MANAGER

log = logging.getLogger("retcon.operator")
MANAGED = f"{MANAGED_BY}={MANAGER}"


def _state(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # kopf logs every raw event it hands us, and the HTTP client every request: too much on the hot path.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    settings.posting.enabled = False
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
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
    memo["reconciler"] = reconciler
    memo["tasks"] = [
        asyncio.create_task(reconciler.run(), name="retcon-reconcile"),
        asyncio.create_task(events.run(), name="retcon-events"),
    ]
    log.info("Retcon operator started (runner image %s)", config.runner_image)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
    reconciler = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.api.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event.get("type") == "DELETED"


@kopf.on.event(GROUP, VERSION, "workflowruns")
def run_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_run(dict(event["object"]), deleted=_deleted(event))
    if not _deleted(event):
        reconciler.enqueue(key)


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY: MANAGER})
def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_job(dict(event["object"]), deleted=_deleted(event))
    if key is not None:
        reconciler.enqueue(key)


@kopf.on.event("", "v1", "pods", labels={MANAGED_BY: MANAGER})
def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_pod(dict(event["object"]), deleted=_deleted(event))
    if key is not None:
        reconciler.enqueue(key)


@kopf.on.event(GROUP, VERSION, "stepresults")
def result_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_result(dict(event["object"]), deleted=_deleted(event))
    if key is not None:
        reconciler.enqueue(key)


@kopf.on.event(GROUP, VERSION, "pauserequests")
def pause_request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _state(memo)
    key = reconciler.store.put_pause_request(dict(event["object"]), deleted=_deleted(event))
    if key is not None:
        reconciler.enqueue(key)


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
