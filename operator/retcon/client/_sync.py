"""`Client`: the same verbs without asyncio, run by `AsyncClient` on a private event loop.

The loop lives on a daemon thread of its own, so the sync client works the same
from a script, a thread, or code that already runs an event loop (a notebook).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from retcon.client._async import AsyncClient
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

T = TypeVar("T")


class _Portal:
    """An event loop on a daemon thread, started on first use; `call` runs a coroutine there."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="retcon-client", daemon=True
                )
                self._thread.start()
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        done = threading.Event()
        tasks: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coro)
            task.add_done_callback(lambda _: done.set())
            tasks.append(task)

        loop.call_soon_threadsafe(start)
        try:
            done.wait()
        except BaseException:
            # Ctrl-C (or any interruption) while waiting: stop the coroutine too, and let it unwind.
            loop.call_soon_threadsafe(tasks[0].cancel)
            done.wait(timeout=5)
            raise
        return tasks[0].result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        _stop(loop, thread)


def _stop(loop: asyncio.AbstractEventLoop | None, thread: threading.Thread | None) -> None:
    if loop is None or thread is None or loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not thread.is_alive():
        loop.close()


async def _next(snapshots: AsyncIterator[T]) -> T:
    return await anext(snapshots)


async def _close(snapshots: AsyncIterator[Any]) -> None:
    aclose = getattr(snapshots, "aclose", None)
    if aclose is not None:
        await aclose()


class Client:
    """Drive Retcon runs from ordinary (synchronous) Python.

    `namespace` defaults to the kubeconfig context's namespace (else "default");
    `kubeconfig` and `context` work as kubectl's `--kubeconfig` and `--context`.
    Use it as a context manager, or call `close()`, to release the connection.
    """

    def __init__(
        self,
        namespace: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
    ) -> None:
        self._async = AsyncClient(namespace=namespace, kubeconfig=kubeconfig, context=context)
        self._portal = _Portal()
        self._finalizer = weakref.finalize(self, self._portal.close)

    @property
    def namespace(self) -> str:
        return self._async.namespace

    def close(self) -> None:
        if self._finalizer.alive:
            self._portal.call(self._async.close())
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start_run(
        self,
        workflow: str,
        input: JsonObject | None = None,
        *,
        name: str | None = None,
        tenant: str | None = None,
    ) -> RunDetail:
        return self._portal.call(self._async.start_run(workflow, input, name=name, tenant=tenant))

    def list_runs(self, *, all_namespaces: bool = False) -> list[RunSummary]:
        return self._portal.call(self._async.list_runs(all_namespaces=all_namespaces))

    def get_run(self, run: str) -> RunDetail:
        return self._portal.call(self._async.get_run(run))

    def watch_run(self, run: str) -> Iterator[RunDetail]:
        snapshots = self._async.watch_run(run)
        try:
            while True:
                try:
                    snapshot = self._portal.call(_next(snapshots))
                except StopAsyncIteration:
                    return
                yield snapshot
        finally:
            self._portal.call(_close(snapshots))

    def pause_run(self, run: str) -> PauseOutcome:
        return self._portal.call(self._async.pause_run(run))

    def get_paused_state(self, run: str) -> PausedState:
        return self._portal.call(self._async.get_paused_state(run))

    def inject_step_output(
        self, run: str, step: str, output: JsonObject, reason: str, *, timeout: float = 30
    ) -> JsonObject | None:
        return self._portal.call(self._async.inject_step_output(run, step, output, reason, timeout=timeout))

    def resume_run(self, run: str, from_step: str | None = None, *, release: bool = False) -> ResumeResult:
        return self._portal.call(self._async.resume_run(run, from_step, release=release))

    def signal_step(self, run: str, step: str, data: JsonObject) -> None:
        self._portal.call(self._async.signal_step(run, step, data))

    def cancel_run(self, run: str) -> None:
        self._portal.call(self._async.cancel_run(run))

    def add_step(self, run: str, after: str, step: JsonObject, reason: str) -> None:
        self._portal.call(self._async.add_step(run, after, step, reason))

    def audit_trail(self, run: str, type: str | None = None) -> list[AuditRecord]:
        return self._portal.call(self._async.audit_trail(run, type))

    def run_structure(self, run: str) -> RunStructure:
        return self._portal.call(self._async.run_structure(run))

    def execution_path(self, run: str) -> ExecutionPath:
        return self._portal.call(self._async.execution_path(run))


# The docstrings of the verbs live once, on AsyncClient.
for _name, _method in list(vars(Client).items()):
    _source = getattr(AsyncClient, _name, None)
    if callable(_method) and not _name.startswith("_") and _source is not None and _method.__doc__ is None:
        _method.__doc__ = _source.__doc__
