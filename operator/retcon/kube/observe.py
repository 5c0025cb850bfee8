"""What the operator knows of the cluster: caches fed by watch events, and views for the engine.

The `Store` keeps the latest version of every object the operator watches,
indexed so that an event on any child finds its run at once. `observe()` turns
the store's view of one run into the engine's `Observed`, and `run_view()`
turns a WorkflowRun object into the engine's `RunView`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from retcon.api.run import StepPhase, WorkflowRunStatus
from retcon.api.stepresult import StepResultSpec
from retcon.engine.model import InjectionRequest, Intent, Observed, ObservedAttempt, PauseHold, RunView
from retcon.kube.admission import CREATED_BY, DELETED_BY, read_intents
from retcon.kube.resources import MAIN_CONTAINER

Key = tuple[str, str]  # (namespace, name)
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def _resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", "0"))
    except (TypeError, ValueError):
        return 0


def owner_run(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "WorkflowRun":
            return str(ref["name"])
    return None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Store:
    runs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: dict[Key, dict[str, Any]] = field(default_factory=dict)  # latest pod by (namespace, job name)
    results: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pause_requests: dict[Key, dict[str, Any]] = field(default_factory=dict)
    injections: dict[Key, dict[str, Any]] = field(default_factory=dict)
    #: Who the operator is (from a SelfSubjectReview): its own changes are not interventions.
    operator_user: str = ""
    #: Job names whose creation the API refused, with why (the attempt then fails).
    creation_errors: dict[Key, str] = field(default_factory=dict)
    #: Jobs a live GET found missing (the watch cache alone is not trusted for that).
    missing_jobs: set[Key] = field(default_factory=set)
    #: StepResults holding outputs by reference that a live GET found missing.
    lost_results: set[Key] = field(default_factory=set)
    #: When (monotonic seconds) each attempt's step container was first seen finished, by Job.
    finished_seen: dict[Key, float] = field(default_factory=dict)

    def put_run(self, obj: dict[str, Any], deleted: bool = False) -> Key:
        key = key_of(obj)
        if deleted:
            self.runs.pop(key, None)
            return key
        current = self.runs.get(key)
        if current is not None and _resource_version(current) > _resource_version(obj) > 0:
            return key  # an echo older than what we wrote ourselves
        self.runs[key] = obj
        return key

    def put_job(self, obj: dict[str, Any], deleted: bool = False) -> Key | None:
        """Cache a Job; the run's key if this event can change a decision, else None."""
        key = key_of(obj)
        previous = self.jobs.get(key)
        if deleted:
            self.jobs.pop(key, None)
        else:
            self.jobs[key] = obj
        run = owner_run(obj)
        if not deleted and previous is not None and _job_signature(previous) == _job_signature(obj):
            return None  # progress counters only: nothing the engine decides on
        return (key[0], run) if run else None

    def put_pod(self, obj: dict[str, Any], deleted: bool = False) -> Key | None:
        namespace = obj["metadata"].get("namespace", "")
        job = (obj["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) or (
            obj["metadata"].get("labels") or {}
        ).get("job-name")
        if not job:
            return None
        key = (namespace, job)
        current = self.pods.get(key)
        relevant = deleted or _pod_signature(current) != _pod_signature(obj)
        if deleted:
            if current is not None and current["metadata"]["name"] == obj["metadata"]["name"]:
                self.pods.pop(key, None)
        elif (
            current is None
            or current["metadata"]["name"] == obj["metadata"]["name"]
            or (
                current["metadata"].get("creationTimestamp", "")
                <= obj["metadata"].get("creationTimestamp", "")
            )
        ):
            self.pods[key] = obj
            if key not in self.finished_seen and "terminated" in _main_container_state(obj):
                self.finished_seen[key] = time.monotonic()
        if not relevant:
            return None  # e.g. Pending -> Running: nothing the engine decides on
        job_obj = self.jobs.get(key)
        run = owner_run(job_obj) if job_obj else None
        if run is None:
            run = _run_from_job_name(self, namespace, job)
        return (namespace, run) if run else None

    def put_result(self, obj: dict[str, Any], deleted: bool = False) -> Key | None:
        key = key_of(obj)
        if deleted:
            self.results.pop(key, None)
        else:
            self.results[key] = obj
        run = obj.get("spec", {}).get("runName")
        return (key[0], str(run)) if run else None

    def put_pause_request(self, obj: dict[str, Any], deleted: bool = False) -> Key | None:
        key = key_of(obj)
        if deleted:
            self.pause_requests.pop(key, None)
        else:
            self.pause_requests[key] = obj
        run = obj.get("spec", {}).get("runName")
        return (key[0], str(run)) if run else None

    def put_injection(self, obj: dict[str, Any], deleted: bool = False) -> Key | None:
        key = key_of(obj)
        if deleted:
            self.injections.pop(key, None)
        else:
            self.injections[key] = obj
        run = obj.get("spec", {}).get("runName")
        return (key[0], str(run)) if run else None


def _job_signature(job: Mapping[str, Any] | None) -> tuple[bool, bool]:
    """What of a Job the engine decides on: a Failed condition, a deletion under way."""
    if job is None:
        return (False, False)
    conditions = (job.get("status") or {}).get("conditions") or []
    failed = any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions)
    return (failed, bool(job["metadata"].get("deletionTimestamp")))


def _pod_signature(pod: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What of a pod the engine decides on: its end, its step container's end or wait, a deadline."""
    if pod is None:
        return (None,)
    status = pod.get("status") or {}
    state = _main_container_state(pod)
    waiting = (state.get("waiting") or {}).get("reason")
    terminated = state.get("terminated") or {}
    phase = status.get("phase")
    return (
        pod["metadata"].get("name"),
        phase if phase in ("Succeeded", "Failed") else None,
        terminated.get("exitCode"),
        waiting if waiting not in (None, "ContainerCreating", "PodInitializing") else None,
        status.get("reason"),
    )


def _run_from_job_name(store: Store, namespace: str, job: str) -> str | None:
    """A pod may arrive before its Job: find the run whose status names that Job."""
    for (ns, name), run in store.runs.items():
        if ns != namespace:
            continue
        for step in (run.get("status") or {}).get("steps") or []:
            for attempt in step.get("attempts") or []:
                if attempt.get("job") == job:
                    return name
    return None


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _created(obj: Mapping[str, Any]) -> datetime:
    return _parse_time(obj["metadata"].get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)


def _holds(store: Store, namespace: str, name: str) -> tuple[PauseHold, ...]:
    holds = []
    for (ns, _), request in sorted(store.pause_requests.items()):
        if ns != namespace or request.get("spec", {}).get("runName") != name:
            continue
        annotations = _annotations(request)
        deleting = bool(request["metadata"].get("deletionTimestamp"))
        holds.append(
            PauseHold(
                name=request["metadata"]["name"],
                uid=request["metadata"].get("uid", ""),
                reason=str(request.get("spec", {}).get("reason", "")),
                actor=annotations.get(CREATED_BY, "unknown"),
                created=_created(request),
                deleted_by=(annotations.get(DELETED_BY) or "unknown") if deleting else None,
            )
        )
    return tuple(holds)


def _injections(store: Store, namespace: str, name: str) -> tuple[InjectionRequest, ...]:
    pending = []
    for (ns, _), injection in store.injections.items():
        if ns != namespace or injection.get("spec", {}).get("runName") != name:
            continue
        if (injection.get("status") or {}).get("phase") in ("Applied", "Rejected"):
            continue
        if injection["metadata"].get("deletionTimestamp"):
            continue
        spec = injection.get("spec") or {}
        pending.append(
            InjectionRequest(
                name=injection["metadata"]["name"],
                uid=injection["metadata"].get("uid", ""),
                step=str(spec.get("step", "")),
                output=output if isinstance(output := spec.get("output"), dict) else {},
                reason=str(spec.get("reason", "")),
                actor=_annotations(injection).get(CREATED_BY, "unknown"),
                created=_created(injection),
            )
        )
    return tuple(pending)


def _intents(annotations: Mapping[str, str]) -> tuple[Intent, ...]:
    intents = []
    for item in read_intents(annotations):
        try:
            intents.append(
                Intent(
                    seq=int(item["seq"]),
                    type=str(item["type"]),
                    actor=str(item.get("actor", "unknown")),
                    time=_parse_time(item.get("time")) or datetime.fromtimestamp(0, UTC),
                    data=item.get("data") or {},
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(intents)


def run_view(obj: Mapping[str, Any], store: Store) -> RunView:
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    namespace, name = meta.get("namespace", ""), meta["name"]
    holds = _holds(store, namespace, name)
    holding = tuple(hold.name for hold in holds if hold.deleted_by is None)
    return RunView(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        input=spec.get("input") or {},
        tenant=spec.get("tenant"),
        status=WorkflowRunStatus.model_validate(obj.get("status") or {}),
        annotations=dict(meta.get("annotations") or {}),
        pause_requests=holding,
        holds=holds,
        intents=_intents(meta.get("annotations") or {}),
        injections=_injections(store, namespace, name),
        operator_user=store.operator_user,
    )


def _main_container_state(pod: Mapping[str, Any]) -> dict[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == MAIN_CONTAINER:
            return dict(container.get("state") or {})
    return {}


def observe_attempt(store: Store, namespace: str, job_name: str) -> ObservedAttempt:
    job = store.jobs.get((namespace, job_name))
    pod = store.pods.get((namespace, job_name))
    result_obj = store.results.get((namespace, job_name))
    result: StepResultSpec | None = None
    if result_obj is not None:
        try:
            result = StepResultSpec.model_validate(result_obj.get("spec") or {})
        except ValidationError:
            result = None
    if result is not None and (pod is None or result.pod_name != pod["metadata"]["name"]):
        # Only the attempt's own pod may speak for it (admission also checks the sender's pod).
        result = None
    job_failed = store.creation_errors.get((namespace, job_name))
    if job is not None and job_failed is None:
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                job_failed = (
                    f"the Job failed: {condition.get('reason')}: {condition.get('message', '')}".strip()
                )
    state = _main_container_state(pod) if pod else {}
    terminated = state.get("terminated")
    waiting = state.get("waiting")
    waiting_reason = None
    if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
        waiting_reason = f"{waiting.get('reason')}: {waiting.get('message', '')}".rstrip(": ")
    return ObservedAttempt(
        job_name=job_name,
        job_exists=job is not None,
        job_missing=job is None and (namespace, job_name) in store.missing_jobs,
        job_failed=job_failed,
        pod_phase=(pod.get("status") or {}).get("phase") if pod else None,
        exit_code=int(terminated["exitCode"]) if terminated and "exitCode" in terminated else None,
        termination_reason=terminated.get("reason") if terminated else None,
        termination_message=terminated.get("message") if terminated else None,
        waiting_reason=waiting_reason,
        finished_at=_parse_time(terminated.get("finishedAt")) if terminated else None,
        pod_reason=(pod.get("status") or {}).get("reason") if pod else None,
        result=result,
        result_name=job_name if result_obj is not None else None,
    )


def unseen_jobs(store: Store, view: RunView, now: datetime, grace: float) -> list[str]:
    """Jobs of running attempts older than `grace` that the cache does not hold."""
    unseen = []
    for step in view.status.steps:
        last = step.attempts[-1] if step.attempts else None
        if last is None or last.job is None or last.phase is not StepPhase.RUNNING or last.started_at is None:
            continue
        if (view.namespace, last.job) not in store.jobs and (now - last.started_at).total_seconds() > grace:
            unseen.append(last.job)
    return unseen


def observe(store: Store, view: RunView) -> Observed:
    attempts: dict[str, ObservedAttempt] = {}
    outputs: dict[str, dict[str, Any]] = {}
    lost: set[str] = set()
    for step in view.status.steps:
        if step.attempts:
            last = step.attempts[-1]
            if last.job and last.phase is StepPhase.RUNNING:
                attempts[last.job] = observe_attempt(store, view.namespace, last.job)
        ref = step.output_ref
        if ref is not None and ref.kind == "Injection":
            injection = store.injections.get((view.namespace, ref.name))
            if injection is not None:
                outputs[step.id] = (injection.get("spec") or {}).get("output") or {}
            else:
                lost.add(step.id)
        if ref is not None and ref.kind == "StepResult":
            result = store.results.get((view.namespace, ref.name))
            if result is not None:
                outputs[step.id] = (result.get("spec") or {}).get("output") or {}
            elif (view.namespace, ref.name) in store.lost_results:
                lost.add(step.id)
    return Observed(attempts=attempts, outputs=outputs, lost_outputs=frozenset(lost))


def unloaded_results(store: Store, view: RunView) -> list[str]:
    """StepResults that hold outputs by reference and are not in the cache."""
    return [
        step.output_ref.name
        for step in view.status.steps
        if step.output_ref is not None
        and step.output_ref.kind == "StepResult"
        and (view.namespace, step.output_ref.name) not in store.results
        and (view.namespace, step.output_ref.name) not in store.lost_results
    ]
