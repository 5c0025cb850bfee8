"""`AsyncClient`: each verb reads what it needs, checks it with `_rules`, then makes one change.

This is the only implementation of the verbs; the sync `Client` runs these
coroutines on a private event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from types import TracebackType
from typing import Any, Self

import httpx2
from lightkube import ALL_NS, ApiError
from lightkube import AsyncClient as LightkubeAsyncClient
from lightkube.types import OnErrorAction, OnErrorResult, PatchType

from retcon.client import _rules as rules
from retcon.client._errors import InvalidInput, PermissionDenied, RetconError, RunNotFound, Timeout
from retcon.client._kube import load_config, translated
from retcon.client._models import (
    AuditRecord,
    ExecutionPath,
    JsonObject,
    PausedState,
    PauseOutcome,
    ResumeResult,
    RunDetail,
    RunStructure,
    RunSummary,
)
from retcon.kube.resources import Injection, PauseRequest, StepResult, Workflow, WorkflowRun, as_dict

_WATCH_RETRIES = 5
_RETRYABLE = frozenset({410, 429, 500, 502, 503, 504})


def _retry_watch(error: Exception, count: int) -> OnErrorResult:
    """Reconnect a dropped watch a few times; refusals (403, 404...) are raised at once.

    A 410 Gone (history compacted) makes lightkube restart the watch from the
    current state, which `watch_run` then reports as one more snapshot.
    """
    code: int | None = None
    if isinstance(error, ApiError) and error.status is not None:
        code = error.status.code
    elif isinstance(error, httpx2.HTTPStatusError):
        code = error.response.status_code
    if count > _WATCH_RETRIES or (code is not None and code not in _RETRYABLE):
        return OnErrorResult(OnErrorAction.RAISE)
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(2.0 ** (count - 1), 10.0))


class AsyncClient:
    """Drive Retcon runs from asyncio code.

    `namespace` defaults to the kubeconfig context's namespace (else "default");
    `kubeconfig` and `context` work as kubectl's `--kubeconfig` and `--context`.
    """

    def __init__(
        self,
        namespace: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
    ) -> None:
        config = load_config(kubeconfig, context)
        self.namespace: str = namespace or config.namespace
        self.server: str = config.cluster.server
        self._kube = LightkubeAsyncClient(config, namespace=self.namespace, field_manager="kubectl-retcon")

    async def close(self) -> None:
        await self._kube.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- reading ----------------------------------------------------------------------------------

    def _run_not_found(self, run: str) -> RunNotFound:
        return RunNotFound(
            f"run {run} not found in namespace {self.namespace}", run=run, namespace=self.namespace
        )

    async def _run(self, run: str) -> dict[str, Any]:
        rules.check_name(run, "run name")
        with translated(self.server, not_found=lambda: self._run_not_found(run)):
            return as_dict(await self._kube.get(WorkflowRun, run, namespace=self.namespace))

    async def _outputs(self, refs: Mapping[str, str]) -> dict[str, JsonObject]:
        """Outputs kept by reference, read from their StepResults (a missing one stays None)."""
        outputs: dict[str, JsonObject] = {}
        for step_id, name in refs.items():
            result: dict[str, Any] = {}
            with translated(self.server, missing_ok=True):
                result = as_dict(await self._kube.get(StepResult, name, namespace=self.namespace))
            output = (result.get("spec") or {}).get("output")
            if isinstance(output, dict):
                outputs[step_id] = output
        return outputs

    async def list_runs(self, *, all_namespaces: bool = False) -> list[RunSummary]:
        """Runs of the namespace, or of every namespace, sorted by namespace and name."""
        namespace = ALL_NS if all_namespaces else self.namespace
        with translated(self.server):
            objects = [as_dict(obj) async for obj in self._kube.list(WorkflowRun, namespace=namespace)]
        runs = [rules.build_summary(obj) for obj in objects]
        return sorted(runs, key=lambda run: (run.namespace, run.name))

    async def get_run(self, run: str) -> RunDetail:
        """The run with its input and steps; outputs kept by reference are read from their StepResults."""
        obj = await self._run(run)
        return rules.build_detail(obj, await self._outputs(rules.output_refs(rules.parse_status(obj))))

    async def watch_run(self, run: str) -> AsyncIterator[RunDetail]:
        """Snapshots of the run as it changes, from a watch, until it ends or pauses.

        The first snapshot is the run as it is now. Outputs kept by reference are
        not loaded here (`get_run` loads them).
        """
        obj = await self._run(run)
        last = rules.build_detail(obj)
        yield last
        if rules.watch_is_over(last):
            return
        version = (obj.get("metadata") or {}).get("resourceVersion")
        events = self._kube.watch(
            WorkflowRun,
            namespace=self.namespace,
            fields={"metadata.name": run},
            resource_version=version,
            on_error=_retry_watch,
        )
        with translated(self.server, not_found=lambda: self._run_not_found(run)):
            async for event, item in events:
                raw = as_dict(item)
                if (raw.get("metadata") or {}).get("name") != run:
                    continue
                if event == "DELETED":
                    raise RunNotFound(
                        f"run {run} was deleted from namespace {self.namespace}",
                        run=run,
                        namespace=self.namespace,
                    )
                snapshot = rules.build_detail(raw)
                if snapshot == last:
                    continue
                last = snapshot
                yield snapshot
                if rules.watch_is_over(snapshot):
                    return

    async def get_paused_state(self, run: str) -> PausedState:
        """The finished steps of a Paused, Pausing or Failed run, their outputs, and the next step."""
        status = rules.parse_status(await self._run(run))
        rules.check_paused_state(run, status)
        return rules.build_paused_state(run, status, await self._outputs(rules.output_refs(status)))

    async def audit_trail(self, run: str, type: str | None = None) -> list[AuditRecord]:
        """The run's audit trail, oldest first, optionally only the entries of one type."""
        rules.check_audit_type(type)
        return list(rules.build_audit(rules.parse_status(await self._run(run)), type))

    async def run_structure(self, run: str) -> RunStructure:
        """Definition steps, steps inserted at run time (after what, by whom), and the execution order."""
        obj = await self._run(run)
        status = rules.parse_status(obj)
        workflow = ((obj.get("spec") or {}).get("workflowRef") or {}).get("name", "")
        spec = None
        if status.definition is None:
            missing = (
                f"run {run} has no definition snapshot yet and its workflow {workflow} is not found"
                f" in namespace {self.namespace}"
            )
            with translated(self.server, not_found=lambda: InvalidInput(missing)):
                spec = as_dict(await self._kube.get(Workflow, workflow, namespace=self.namespace)).get("spec")
        return rules.build_structure(run, workflow, status, spec)

    async def execution_path(self, run: str) -> ExecutionPath:
        """The steps that started, in the order they started, with durations and injected flags."""
        return rules.build_path(run, rules.parse_status(await self._run(run)))

    # --- changing ---------------------------------------------------------------------------------

    async def _patch(self, run: str, patch: JsonObject) -> None:
        with translated(self.server, not_found=lambda: self._run_not_found(run)):
            await self._kube.patch(
                WorkflowRun, run, patch, namespace=self.namespace, patch_type=PatchType.MERGE
            )

    async def start_run(
        self,
        workflow: str,
        input: JsonObject | None = None,
        *,
        name: str | None = None,
        tenant: str | None = None,
    ) -> RunDetail:
        """Create a WorkflowRun of `workflow` with `input`; named `name` or `<workflow>-<random>`."""
        rules.check_name(workflow, "workflow name")
        payload = rules.check_json_object({} if input is None else input, "the input")
        if name is not None:
            rules.check_name(name, "run name")
        if tenant is not None and (not isinstance(tenant, str) or not 0 < len(tenant) <= 253):
            raise InvalidInput("the tenant must be a non-empty string of at most 253 characters")
        missing = f"workflow {workflow} not found in namespace {self.namespace}: apply it first"
        # Someone allowed to create runs but not to read Workflows: the operator reports a missing one.
        with suppress(PermissionDenied), translated(self.server, not_found=lambda: InvalidInput(missing)):
            await self._kube.get(Workflow, workflow, namespace=self.namespace)
        body = rules.build_run(workflow, payload, self.namespace, name=name, tenant=tenant)
        exists = f"run {name} already exists in namespace {self.namespace}: choose another name"
        with translated(self.server, conflict=lambda: InvalidInput(exists)):
            created = as_dict(await self._kube.create(WorkflowRun.from_dict(body)))
        return rules.build_detail(created)

    async def pause_run(self, run: str) -> PauseOutcome:
        """Ask the run to pause at its next step boundary. Pausing twice is fine."""
        obj = await self._run(run)
        status = rules.parse_status(obj)
        rules.check_pausable(run, status)
        outcome = rules.pause_outcome(status, rules.annotations_of(obj))
        await self._patch(run, rules.build_pause_patch())
        return outcome

    async def inject_step_output(
        self,
        run: str,
        step: str,
        output: JsonObject,
        reason: str,
        *,
        timeout: float = 30,  # noqa: ASYNC109 - the SDK's contract names it; asyncio.timeout does the work
    ) -> JsonObject | None:
        """Replace a finished step's output in a Paused or Failed run; returns the previous output.

        Creates an Injection and waits up to `timeout` seconds for the operator to
        apply it (InjectionRejected if it refuses, Timeout if it does not answer).
        """
        output = rules.check_json_object(output, "the output")
        reason = rules.check_reason(reason)
        status = rules.parse_status(await self._run(run))
        target = rules.check_injectable(run, status, step, output)
        body = rules.build_injection(run, self.namespace, target.id, output, reason)
        with translated(self.server):
            created = as_dict(await self._kube.create(Injection.from_dict(body)))
        name = created["metadata"]["name"]
        done, previous = rules.decide_injection(created)
        if done:
            return previous
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_for_injection(name)
        except TimeoutError:
            raise Timeout(
                f"injection {name} is still Pending after {timeout:g}s: is the Retcon operator running?"
                f" It applies when the operator gets to it; delete the Injection to call it off"
            ) from None

    async def _wait_for_injection(self, name: str) -> JsonObject | None:
        events = self._kube.watch(
            Injection, namespace=self.namespace, fields={"metadata.name": name}, on_error=_retry_watch
        )
        with translated(self.server):
            async for event, item in events:
                raw = as_dict(item)
                if (raw.get("metadata") or {}).get("name") != name:
                    continue
                if event == "DELETED":
                    raise RetconError(f"injection {name} was deleted before the operator applied it")
                done, previous = rules.decide_injection(raw)
                if done:
                    return previous
        raise RetconError(f"the watch on injection {name} ended before it was applied")  # pragma: no cover

    async def resume_run(
        self, run: str, from_step: str | None = None, *, release: bool = False
    ) -> ResumeResult:
        """Resume a paused run, or re-run it from `from_step` (id or name) and everything downstream.

        PauseRequests that name the run still hold it: this refuses (RunHeld)
        unless `release` is true, which deletes them.
        """
        obj = await self._run(run)
        status = rules.parse_status(obj)
        rules.check_resumable(run, status, rules.annotations_of(obj))
        from_id = rules.find_step(run, status, from_step).id if from_step is not None else None
        with translated(self.server):
            requests = [
                as_dict(item) async for item in self._kube.list(PauseRequest, namespace=self.namespace)
            ]
        holders = rules.holding_pause_requests(run, requests)
        if not release:
            rules.check_not_held(run, holders)
        for holder in holders:
            with translated(self.server, missing_ok=True):  # already gone: just as good
                await self._kube.delete(PauseRequest, holder, namespace=self.namespace)
        await self._patch(run, rules.build_resume_patch(from_id))
        return ResumeResult(run=run, from_step=from_id, released=holders)

    async def signal_step(self, run: str, step: str, data: JsonObject) -> None:
        """Give a Wait step its signal: `data` becomes the step's output."""
        data = rules.check_json_object(data, "the signal data")
        status = rules.parse_status(await self._run(run))
        target = rules.check_signallable(run, status, step, data)
        await self._patch(run, rules.build_signal_patch(target.name, data))

    async def cancel_run(self, run: str) -> None:
        """Cancel the run: running step Jobs are stopped and the run ends Cancelled."""
        rules.check_cancellable(run, rules.parse_status(await self._run(run)))
        await self._patch(run, rules.build_cancel_patch())

    async def add_step(self, run: str, after: str, step: JsonObject, reason: str) -> None:
        """Ask the operator to insert `step` after the step `after` (id or name) of a live run."""
        step = rules.check_json_object(step, "the step")
        reason = rules.check_reason(reason)
        obj = await self._run(run)
        anchor, _ = rules.check_add_step(run, rules.parse_status(obj), rules.annotations_of(obj), after, step)
        await self._patch(run, rules.build_add_step_patch(anchor.name, step, reason))
