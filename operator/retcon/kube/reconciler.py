"""The reconcile loop: a work queue of runs, each reconciled by one worker at a time.

Watch events only update the store and enqueue the run's key; workers take a
key, build the engine's inputs from the store, decide, and apply. A key
enqueued while it is being reconciled is reconciled again afterwards, so no
event is lost and no run is worked on twice at once (the controller-runtime
work-queue semantics). Requeues (retries, sleeps, timeouts) are timers, not
polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.resources.batch_v1 import Job
from pydantic import ValidationError

from retcon.api.run import RunPhase, SourceRef
from retcon.api.workflow import WorkflowSpec
from retcon.engine.decide import decide, start_run, workflow_missing
from retcon.engine.model import LOST_JOB_GRACE_SECONDS, Decision, RunView
from retcon.engine.validation import format_problems, validate_workflow
from retcon.kube import metrics
from retcon.kube.apply import Conflict, Gone, StepRbac, apply_decision
from retcon.kube.config import OperatorConfig
from retcon.kube.leader import LeaderElector
from retcon.kube.observe import Key, Store, observe, run_view, unloaded_results, unseen_jobs
from retcon.kube.resources import StepResult, Workflow, WorkflowRun, as_dict

log = logging.getLogger("retcon.reconciler")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _count(key: Key, view: RunView, decision: Decision, active: set[Key]) -> None:
    """Metrics from what this decision changed."""
    old, new = view.status, decision.status
    if old.definition is None and new.definition is not None:
        metrics.RUNS_STARTED.inc()
    if new.phase.terminal:
        active.discard(key)
        if new.phase is not old.phase:
            metrics.RUNS_FINISHED.labels(new.phase.value).inc()
    else:
        active.add(key)
    metrics.ACTIVE_RUNS.set(len(active))
    if new.phase is RunPhase.PAUSED and old.phase is not RunPhase.PAUSED and new.pause_reason is not None:
        metrics.PAUSES.labels(new.pause_reason.value).inc()
    before = {step.id: step.phase for step in old.steps}
    for step in new.steps:
        if step.phase.terminal and before.get(step.id) is not step.phase:
            metrics.STEPS_FINISHED.labels(step.phase.value).inc()
            last = step.attempts[-1] if step.attempts else None
            if last is not None and last.started_at and last.finished_at:
                seconds = (last.finished_at - last.started_at).total_seconds()
                metrics.STEP_DURATION.labels(step.phase.value).observe(seconds)


class EventSink:
    """Posts Events in the background, off the reconcile path; losing one never blocks a run."""

    def __init__(self, api: AsyncClient, limit: int = 10_000) -> None:
        self._api = api
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit)
        self.posted = 0
        self.dropped = 0

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._api.create(codecs.from_dict(event))
                self.posted += 1
            except ApiError as error:
                if error.status.code not in (404, 409):  # namespace going away, or a duplicate
                    log.warning("Could not post Event %s: %s", event["reason"], error.status.message)
            except Exception:
                log.exception("Could not post Event %s", event["reason"])
            finally:
                self._queue.task_done()


class Reconciler:
    def __init__(
        self,
        api: AsyncClient,
        store: Store,
        config: OperatorConfig,
        events: EventSink,
        clock: Clock = _utcnow,
    ) -> None:
        self.api = api
        self.store = store
        self.config = config
        self.events = events
        self.clock = clock
        self.rbac = StepRbac(api, config)
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._active_runs: set[Key] = set()
        self.leader: LeaderElector | None = None
        self.trace = metrics.TransitionTrace()
        self.reconciles = 0
        self.conflicts = 0
        self.errors = 0

    # --- the queue -------------------------------------------------------------------------------

    def enqueue(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + seconds
        if existing is not None:
            if existing.when() <= when:
                return
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    async def run(self, workers: int = 8) -> None:
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    def enqueue_all(self) -> None:
        """Reconcile every run known: on becoming the leader, nothing may be missed."""
        for key in list(self.store.runs):
            self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            if self.leader is not None:
                await self.leader.leading.wait()
            key = await self._queue.get()
            if self.leader is not None and not self.leader.leading.is_set():
                self._queued.discard(key)
                self._queue.task_done()
                self.enqueue(key)  # kept for when this replica leads again
                await self.leader.leading.wait()
                continue
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self.reconcile(key)
            except Exception:
                self.errors += 1
                metrics.RECONCILE_ERRORS.inc()
                log.exception("Reconcile of %s/%s failed; retrying in 5s", *key)
                self.enqueue_after(key, 5.0)
            finally:
                self._active.discard(key)
                self._queue.task_done()
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    # --- one reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        for _ in range(5):
            run = self.store.runs.get(key)
            if run is None or run["metadata"].get("deletionTimestamp"):
                return
            try:
                await self._reconcile_once(key, run)
                return
            except Conflict:
                self.conflicts += 1
                metrics.CONFLICTS.inc()
                await self._refresh(key)
            except Gone:
                self.store.runs.pop(key, None)
                return
        self.enqueue_after(key, 1.0)

    async def _refresh(self, key: Key) -> None:
        try:
            fresh = await self.api.get(WorkflowRun, key[1], namespace=key[0])
        except ApiError as error:
            if error.status.code == 404:
                self.store.runs.pop(key, None)
                return
            raise
        self.store.runs[key] = as_dict(fresh)

    async def _reconcile_once(self, key: Key, run: dict[str, Any]) -> None:
        self.reconciles += 1
        started = time.perf_counter()
        t_start = time.monotonic()
        view = run_view(run, self.store)
        now = self.clock()
        if view.status.definition is None:
            if view.status.phase.terminal:
                return
            decision = await self._start(view, run, now)
        else:
            if view.status.phase is RunPhase.CANCELLED:
                return
            await self._confirm_missing_jobs(view, now)
            await self._load_results(view)
            observed = observe(self.store, view)
            finished = [job for job, seen in observed.attempts.items() if seen.exit_code is not None]
            decision = decide(view, observed, now)
        written = await apply_decision(
            self.api, self.store, run, decision, self.config, self.rbac, self.events.emit, now
        )
        self.store.put_run(written)
        if view.status.definition is not None and decision.starts and finished:
            seen = [self.store.finished_seen.get((key[0], job)) for job in finished]
            moments = [moment for moment in seen if moment is not None]
            if moments:
                self.trace.record(time.monotonic() - max(moments), len(self._active))
                log.debug(
                    "Transition of %s/%s: seen %.1f ms before reconcile start, reconcile took %.1f ms",
                    *key,
                    (t_start - max(moments)) * 1000,
                    (time.monotonic() - t_start) * 1000,
                )
        _count(key, view, decision, self._active_runs)
        metrics.RECONCILE.observe(time.perf_counter() - started)
        if decision.requeue_after is not None:
            self.enqueue_after(key, decision.requeue_after)

    async def _confirm_missing_jobs(self, view: RunView, now: datetime) -> None:
        """A Job absent from the cache may just not be listed yet (after a restart): ask the API."""
        for job in unseen_jobs(self.store, view, now, LOST_JOB_GRACE_SECONDS):
            try:
                found = await self.api.get(Job, job, namespace=view.namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
                self.store.missing_jobs.add((view.namespace, job))
            else:
                self.store.put_job(as_dict(found))

    async def _load_results(self, view: RunView) -> None:
        """Outputs kept by reference must be at hand before any step that may read them starts."""
        for name in unloaded_results(self.store, view):
            try:
                found = await self.api.get(StepResult, name, namespace=view.namespace)
            except ApiError as error:
                if error.status.code != 404:
                    raise
                self.store.lost_results.add((view.namespace, name))
            else:
                self.store.put_result(as_dict(found))

    async def _start(self, view: RunView, run: dict[str, Any], now: datetime) -> Decision:
        ref = ((run.get("spec") or {}).get("workflowRef") or {}).get("name", "")
        try:
            workflow = as_dict(await self.api.get(Workflow, ref, namespace=view.namespace))
        except ApiError as error:
            if error.status.code == 404:
                return workflow_missing(view, ref, now)
            raise
        try:
            spec = WorkflowSpec.model_validate(workflow.get("spec") or {})
        except ValidationError as error:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            return workflow_missing(view, ref, now, f"Workflow {ref} is invalid: {problem}")
        problems = validate_workflow(spec)
        if problems:
            return workflow_missing(view, ref, now, f"Workflow {ref} is invalid: {format_problems(problems)}")
        meta = workflow["metadata"]
        source = SourceRef(
            name=ref,
            uid=meta.get("uid"),
            generation=meta.get("generation"),
            resource_version=meta.get("resourceVersion"),
        )
        return start_run(view, spec, source, now)
