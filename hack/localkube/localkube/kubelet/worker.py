"""One pod's life on this node: prepare, run init containers, run containers, report, stop.

A `PodWorker` owns a pod from the moment it is bound here until it is
terminal (or gone). Its containers are `ContainerRunner`s, each a restart loop
around one process at a time. Every change of state marks the status dirty;
the `StatusWriter` sends the newest status at once when no write is in flight,
so a quiet pod's transitions reach the API within milliseconds and a busy
one's coalesce into fewer writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp

from localkube.kubelet.client import ApiClient, ApiError, retrying
from localkube.kubelet.env import build_command, build_container_env, build_process_env, referenced_objects
from localkube.kubelet.logs import log_path, pod_dir
from localkube.kubelet.objects import (
    Json,
    MissingReferenceError,
    PodSpecError,
    meta,
    pod_uid,
    utcnow,
)
from localkube.kubelet.probes import Handler, ProbeTiming
from localkube.kubelet.process import Process, spawn
from localkube.kubelet.provision import (
    RootCACache,
    Token,
    TokenRefresher,
    fetch_objects,
    prepare_host_path,
    request_token,
    truncate,
    write_volume,
)
from localkube.kubelet.status import (
    TERMINAL_PHASES,
    ContainerRecord,
    PodView,
    Running,
    Terminated,
    Waiting,
    build_pod_status,
)
from localkube.kubelet.volumes import (
    TokenSource,
    Tools,
    build_argv,
    build_launch_script,
    build_mounts,
    referenced_volume_objects,
    render_volume_files,
    token_sources,
    volume_kind,
)

log = logging.getLogger("localkube.kubelet")
T = TypeVar("T")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
#: A container that ran this long without trouble restarts without delay next time.
BACKOFF_RESET_AFTER = 2 * BACKOFF_MAX
TERMINATION_MESSAGE_MAX = 4096
LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 2048
DEFAULT_GRACE = 30.0


@dataclass
class KubeletContext:
    """What every pod worker shares."""

    client: ApiClient
    node_name: str
    root: Path
    inherited_env: dict[str, str]
    services: dict[str, str]
    tools: Tools
    http: aiohttp.ClientSession
    root_ca: RootCACache = field(default_factory=RootCACache)
    shutting_down: bool = False


@dataclass
class Launch:
    """How to start a container, resolved once per pod start."""

    env: dict[str, str] = field(default_factory=dict)
    process_env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    command_error: str = ""
    script: str = ""


def _grace_of(pod: Json) -> float:
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return float(DEFAULT_GRACE if value is None else value)


class StatusWriter:
    """Writes a pod's newest status with pods/status; at most one write in flight."""

    def __init__(self, worker: PodWorker) -> None:
        self._worker = worker
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.gone = False

    def publish(self) -> None:
        if self.gone or self._worker.ctx.shutting_down:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._idle.clear()
            self._task = asyncio.create_task(self._drain(), name=f"status {self._worker.key}")

    async def flush(self) -> None:
        await self._idle.wait()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._idle.set()

    async def _drain(self) -> None:
        try:
            while self._dirty and not self.gone:
                self._dirty = False
                await self._write()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Cannot write status of pod %s", self._worker.key)
        finally:
            self._idle.set()

    async def _write(self) -> None:
        worker = self._worker
        client = worker.ctx.client
        path = f"/api/v1/namespaces/{worker.namespace}/pods/{worker.name}/status"

        def patch() -> Awaitable[Json]:
            # Built afresh on every attempt, so a retry never sends a stale status. The
            # uid makes the patch fail on a pod recreated under the same name.
            return client.patch(path, {"metadata": {"uid": worker.uid}, "status": worker.build_status()})

        for _attempt in range(5):
            try:
                pod = await retrying(f"status of {worker.key}", patch)
            except ApiError as error:
                if error.status == 404:
                    self.gone = True
                    return
                if error.status not in (409, 422):
                    raise
                current = await retrying(
                    f"get {worker.key}",
                    lambda: client.get_or_none(f"/api/v1/namespaces/{worker.namespace}/pods/{worker.name}"),
                )
                if current is None or pod_uid(current) != worker.uid:
                    self.gone = True
                    return
                if error.status == 422:
                    raise
                worker.observe(current)
                continue
            worker.observe_written(pod)
            return


class ContainerRunner:
    """One container: a restart loop around one process at a time, with probes."""

    def __init__(
        self, worker: PodWorker, spec: Json, record: ContainerRecord, launch: Launch, *, restart: str
    ) -> None:
        self.worker = worker
        self.spec = spec
        self.record = record
        self.launch = launch
        self.restart = restart
        self.name = record.name
        self.process: Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        self.started_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._backoff = BACKOFF_INITIAL
        self._run_started = utcnow()
        self._log_offset = 0
        self._probes: list[asyncio.Task[None]] = []
        self._terminator: asyncio.Task[None] | None = None
        self._kill_at = 0.0
        self._hurry = asyncio.Event()
        folder = worker.dir / "containers" / self.name
        self.termination_file = folder / "termination-log"
        self.error_file = folder / "start-error"
        self.log_file = log_path(worker.ctx.root, worker.namespace, worker.name, worker.uid, self.name)

    @property
    def key(self) -> str:
        return f"{self.worker.key}/{self.name}"

    # --- starting ---------------------------------------------------------------------------

    def spawn(self) -> bool:
        """Start one instance; a failure to start is recorded as a StartError exit."""
        truncate(self.termination_file, make_parent=False)  # made when the launch was built
        self.error_file.unlink(missing_ok=True)
        self.record.ready = False
        self.record.started = False
        self.started_event.clear()
        if self.launch.command_error:
            self._start_failed(self.launch.command_error)
            return False
        argv = build_argv(self.launch.script, self.launch.command, self.worker.ctx.tools)
        try:
            self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            self.process = spawn(argv, env=self.launch.process_env, cwd=self.worker.dir, output=self.log_file)
        except OSError as error:
            self._start_failed(f"cannot start {self.launch.command[0]!r}: {error}")
            return False
        self._run_started = utcnow()
        self.record.state = Running(self._run_started)
        self.record.container_id = f"process://{self.process.pid}"
        if not self._needs_watch():
            # Nothing to wait for: started and ready now, in the same status write.
            self.record.started = True
            self.record.ready = True
            self.started_event.set()
        log.info("Started container %s (pid %d)", self.key, self.process.pid)
        return True

    def _needs_watch(self) -> bool:
        lifecycle = self.spec.get("lifecycle") or {}
        return any(self.spec.get(key) for key in ("startupProbe", "readinessProbe", "livenessProbe")) or bool(
            lifecycle.get("postStart")
        )

    def _start_failed(self, message: str) -> None:
        now = utcnow()
        self.process = None
        self.record.state = Terminated(128, "StartError", now, now, message)
        log.info("Container %s failed to start: %s", self.key, message)

    def begin(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"container {self.key}")

    # --- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if self.process is not None:
                await self._supervise(self.process)
            if self._halted() or not self._should_restart():
                return
            delay = self._next_backoff()
            finished = self.record.state
            assert isinstance(finished, Terminated)  # noqa: S101 - loop invariant
            earlier = self.record.last_state
            self.record.last_state = finished
            self.record.state = Waiting(
                "CrashLoopBackOff",
                f"back-off {delay:g}s restarting failed container={self.name} "
                f"pod={self.worker.name}_{self.worker.namespace}({self.worker.uid})",
            )
            self.worker.publish()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            if self._halted():
                self.record.state, self.record.last_state = finished, earlier
                return
            self.record.restart_count += 1
            self.spawn()
            self.worker.publish()

    def _halted(self) -> bool:
        """Stopped for good (a method, so type checkers re-read it after an await)."""
        return self.stopping or self.worker.ctx.shutting_down

    def _should_restart(self) -> bool:
        state = self.record.state
        if not isinstance(state, Terminated):
            return False
        if self.restart == "Always":
            return True
        return self.restart == "OnFailure" and state.exit_code != 0

    def _next_backoff(self) -> float:
        state = self.record.state
        if isinstance(state, Terminated) and state.started_at is not None:
            ran = (state.finished_at - state.started_at).total_seconds()
            if ran >= BACKOFF_RESET_AFTER:
                self._backoff = BACKOFF_INITIAL
        delay = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        return delay

    async def _supervise(self, process: Process) -> None:
        if self._needs_watch():
            self._probes = [asyncio.create_task(self._after_start(process), name=f"probes {self.key}")]
        try:
            code = await process.wait()
        finally:
            for task in self._probes:
                task.cancel()
            self._probes = []
        self._record_exit(code)

    def _record_exit(self, code: int) -> None:
        now = utcnow()
        reason = "Completed" if code == 0 else "Error"
        message = self._read_termination_message(code)
        if code == 128 and self.error_file.exists():
            reason = "StartError"
            message = self.error_file.read_text(errors="replace").strip()
        self.record.state = Terminated(
            code, reason, self._run_started, now, message, container_id=self.record.container_id
        )
        self.record.ready = False
        self.record.started = False
        self.process = None
        log.info("Container %s exited with code %d", self.key, code)

    def _read_termination_message(self, code: int) -> str:
        try:
            with self.termination_file.open("rb") as handle:
                message = handle.read(TERMINATION_MESSAGE_MAX)
        except OSError:
            message = b""
        if (
            not message.strip()
            and code != 0
            and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = self._log_tail()
        return message.decode(errors="replace")

    def _log_tail(self) -> bytes:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                start = max(self._log_offset, size - LOG_TAIL_BYTES)
                handle.seek(start)
                data = handle.read()
        except OSError:
            return b""
        return b"\n".join(data.split(b"\n")[-LOG_TAIL_LINES - 1 :])

    # --- hooks and probes -------------------------------------------------------------------

    def _handler(self, action: Json, process: Process) -> Handler:
        return Handler(
            action,
            self.spec,
            pid=process.pid,
            env=self.launch.process_env,
            cwd=self.worker.dir,
            http=self.worker.ctx.http,
            nsenter=self.worker.ctx.tools.nsenter,
        )

    async def _after_start(self, process: Process) -> None:
        lifecycle = self.spec.get("lifecycle") or {}
        if lifecycle.get("postStart"):
            ok, message = await self._handler(lifecycle["postStart"], process).run(_grace_of(self.worker.pod))
            if not ok:
                log.info("PostStart hook of %s failed: %s", self.key, message)
                self.kill(0)
                return
        startup = self.spec.get("startupProbe")
        if startup and not await self._probe_startup(startup, process):
            return
        self._set_started()
        tasks = []
        readiness = self.spec.get("readinessProbe")
        if readiness:
            tasks.append(self._probe_readiness(readiness, process))
        else:
            self._set_ready(True)
        if self.spec.get("livenessProbe"):
            tasks.append(self._probe_liveness(self.spec["livenessProbe"], process))
        if tasks:
            await asyncio.gather(*tasks)

    def _set_started(self) -> None:
        self.started_event.set()
        if not self.record.started:
            self.record.started = True
            self.worker.publish_if_running()

    def _set_ready(self, ready: bool) -> None:
        if self.record.ready != ready:
            self.record.ready = ready
            self.worker.publish_if_running()

    async def _probe_startup(self, probe: Json, process: Process) -> bool:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while process.running:
            ok, message = await self._handler(probe, process).run(timing.timeout)
            if ok:
                return True
            failures += 1
            if failures >= timing.failure_threshold:
                log.info("Startup probe of %s failed: %s", self.key, message)
                self.kill(self._probe_grace(probe))
                return False
            await asyncio.sleep(timing.period)
        return False

    async def _probe_readiness(self, probe: Json, process: Process) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        successes = failures = 0
        while process.running:
            ok, _message = await self._handler(probe, process).run(timing.timeout)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if successes >= timing.success_threshold:
                self._set_ready(True)
            elif failures >= timing.failure_threshold:
                self._set_ready(False)
            await asyncio.sleep(timing.period)

    async def _probe_liveness(self, probe: Json, process: Process) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while process.running:
            ok, message = await self._handler(probe, process).run(timing.timeout)
            failures = 0 if ok else failures + 1
            if failures >= timing.failure_threshold:
                log.info("Liveness probe of %s failed: %s; killing it", self.key, message)
                self.kill(self._probe_grace(probe))
                return
            await asyncio.sleep(timing.period)

    def _probe_grace(self, probe: Json) -> float:
        value = probe.get("terminationGracePeriodSeconds")
        return float(value) if value is not None else _grace_of(self.worker.pod)

    # --- stopping ---------------------------------------------------------------------------

    def kill(self, grace: float) -> None:
        """Terminate the current process (the loop then restarts it or not, per policy)."""
        process = self.process
        if process is None or not process.running:
            return
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + max(grace, 0.0)
        if self._terminator is not None and not self._terminator.done():
            if kill_at < self._kill_at:
                self._kill_at = kill_at
                self._hurry.set()
            return
        self._kill_at = kill_at
        self._terminator = asyncio.create_task(self._terminate(process), name=f"stop {self.key}")

    def stop(self, grace: float) -> None:
        """Terminate for good: no restart after this."""
        self.stopping = True
        self._wake.set()
        self.kill(grace)

    def kill_now(self) -> None:
        self.stopping = True
        self._wake.set()
        if self.process is not None:
            self.process.signal_group(signal.SIGKILL)

    async def _terminate(self, process: Process) -> None:
        loop = asyncio.get_running_loop()
        pre_stop = (self.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop and self.stopping:
            remaining = self._kill_at - loop.time()
            if remaining > 0:
                await self._handler(pre_stop, process).run(remaining)
        process.signal_group(signal.SIGTERM)
        waiter = asyncio.ensure_future(process.wait())
        try:
            while process.running:
                remaining = self._kill_at - loop.time()
                if remaining <= 0:
                    process.signal_group(signal.SIGKILL)
                    break
                self._hurry.clear()
                hurry = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait({waiter, hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                hurry.cancel()
        finally:
            waiter.cancel()

    def cancel(self) -> None:
        for task in (self.task, self._terminator, *self._probes):
            if task is not None:
                task.cancel()


class PodWorker:
    """Runs one pod bound to this node until it is terminal, deleted or gone."""

    def __init__(self, ctx: KubeletContext, pod: Json, on_done: Callable[[PodWorker], None]) -> None:
        self.ctx = ctx
        self.pod = pod
        m = meta(pod)
        self.uid = str(m["uid"])
        self.namespace = str(m["namespace"])
        self.name = str(m["name"])
        self.key = f"{self.namespace}/{self.name}"
        self.spec: Json = pod.get("spec") or {}
        self.restart_policy = str(self.spec.get("restartPolicy") or "Always")
        self.dir = pod_dir(ctx.root, self.namespace, self.name, self.uid)
        self.init_specs: list[Json] = list(self.spec.get("initContainers") or [])
        self.specs: list[Json] = list(self.spec.get("containers") or [])
        self.init_records = [
            ContainerRecord(
                str(c["name"]),
                str(c.get("image", "")),
                Waiting("PodInitializing"),
                sidecar=c.get("restartPolicy") == "Always",
            )
            for c in self.init_specs
        ]
        first = "PodInitializing" if self.init_specs else "ContainerCreating"
        self.records = [
            ContainerRecord(str(c["name"]), str(c.get("image", "")), Waiting(first)) for c in self.specs
        ]
        self.conditions: dict[str, Json] = {}
        self.observe_written(pod)
        self.start_time = utcnow()
        self.initialized = not self.init_specs
        self.terminal = False
        self.phase: str | None = None
        self.reason = ""
        self.message = ""
        self.runners: dict[str, ContainerRunner] = {}
        self.launches: dict[str, Launch] = {}
        self.volume_dirs: dict[str, Path] = {}
        self.stop_requested = asyncio.Event()
        self.stop_grace = _grace_of(pod)
        self.delete_requested = False
        self.running = False
        self.writer = StatusWriter(self)
        self.tokens: TokenRefresher | None = None
        self.task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._on_done = on_done

    # --- inputs from the kubelet ------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"pod {self.key}")

    def observe(self, pod: Json) -> None:
        """A newer version of the pod from the API (watch event or read)."""
        self.pod = pod
        before = {gate: self.conditions.get(gate, {}).get("status") for gate in self._gates()}
        for condition in (pod.get("status") or {}).get("conditions") or []:
            self.conditions[str(condition.get("type"))] = condition
        after = {gate: self.conditions.get(gate, {}).get("status") for gate in self._gates()}
        if before != after and self.running:
            self.publish()
        if meta(pod).get("deletionTimestamp") and not self.terminal:
            grace = meta(pod).get("deletionGracePeriodSeconds")
            self.request_delete(float(grace) if grace is not None else _grace_of(pod))

    def observe_written(self, pod: Json) -> None:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            self.conditions[str(condition.get("type"))] = condition

    def request_delete(self, grace: float) -> None:
        if not self.delete_requested:
            log.info("Stopping pod %s for deletion (grace %gs)", self.key, grace)
        self.delete_requested = True
        self._request_stop(grace)

    def vanish(self) -> None:
        """The pod is gone from the API: kill its processes, write nothing."""
        self.writer.gone = True
        for runner in self.runners.values():
            runner.kill_now()
        if self.task is not None and not self.terminal:
            self.task.cancel()

    def _gates(self) -> list[str]:
        return [str(g.get("conditionType")) for g in self.spec.get("readinessGates") or []]

    # --- status -----------------------------------------------------------------------------

    def publish(self) -> None:
        self.writer.publish()

    def publish_if_running(self) -> None:
        if self.running and not self.terminal:
            self.publish()

    def build_status(self) -> Json:
        view = PodView(
            restart_policy=self.restart_policy,
            init_records=self.init_records,
            records=self.records,
            start_time=self.start_time,
            terminal=self.terminal,
            phase=self.phase,
            reason=self.reason,
            message=self.message,
            readiness_gates=self._gates(),
            initialized=self.initialized,
            observed_generation=meta(self.pod).get("generation"),
        )
        return build_pod_status(view, self.conditions, utcnow())

    # --- the life of the pod ----------------------------------------------------------------

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            self._cancel_children()
            raise
        except PodSpecError as error:
            log.info("Pod %s cannot run: %s", self.key, error)
            await self._fail("UnsupportedPodSpec", str(error))
        except Exception as error:
            log.exception("Pod %s failed in the kubelet", self.key)
            await self._fail("KubeletError", f"process kubelet error: {error}")
        finally:
            if self.tokens is not None:
                self.tokens.cancel()
            if self._deadline is not None:
                self._deadline.cancel()
        try:
            await self._after_terminal()
        finally:
            self._on_done(self)

    async def _run(self) -> None:
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is not None:
            self._deadline = asyncio.get_running_loop().call_later(float(deadline), self._deadline_exceeded)
        prepared = await self._until_stopped(self._prepare())
        if prepared and await self._run_init() and not self.stop_requested.is_set():
            await self._run_containers()
        await self._finish()

    async def _until_stopped(self, work: Awaitable[T]) -> bool:
        """Run `work` unless a stop comes first (then cancel it); True if it completed."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

    async def _prepare(self) -> None:
        """Volumes and environments, retried with backoff while a reference is missing."""
        self.dir.mkdir(parents=True, exist_ok=True)
        volumes: list[Json] = list(self.spec.get("volumes") or [])
        for volume in volumes:
            volume_kind(volume)
        delay = BACKOFF_INITIAL
        while True:
            try:
                await self._prepare_once(volumes)
                return
            except MissingReferenceError as error:
                log.info("Pod %s waits: %s", self.key, error)
                self.publish()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _prepare_once(self, volumes: list[Json]) -> None:
        containers = [*self.init_specs, *self.specs]
        refs = referenced_volume_objects(volumes)
        for container in containers:
            refs |= referenced_objects(container)
        sources = [source for volume in volumes for source in token_sources(volume)]
        fetched, tokens = await asyncio.gather(
            fetch_objects(self.ctx.client, self.namespace, refs, root_ca=self.ctx.root_ca),
            asyncio.gather(*(request_token(self.ctx.client, self.pod, s) for s in sources)),
        )

        def lookup(kind: str, name: str) -> Json | None:
            return fetched.get((kind, name))

        try:
            self._write_volumes(volumes, lookup, sources, tokens)
        except MissingReferenceError as error:
            for record in [*self.init_records, *self.records]:
                reason = record.state.reason if isinstance(record.state, Waiting) else "ContainerCreating"
                record.state = Waiting(reason, f"MountVolume.SetUp failed: {error}")
            raise
        missing = []
        for container, record in zip(containers, [*self.init_records, *self.records], strict=True):
            try:
                self.launches[record.name] = self._build_launch(container, lookup)
            except MissingReferenceError as error:
                record.state = Waiting("CreateContainerConfigError", str(error))
                missing.append(str(error))
        if missing:
            raise MissingReferenceError("; ".join(missing))
        if sources:
            self.tokens = TokenRefresher(self.ctx.client, self.pod, self.volume_dirs)
            for source, token in zip(sources, tokens, strict=True):
                self.tokens.watch(source, token)

    def _write_volumes(
        self,
        volumes: list[Json],
        lookup: Callable[[str, str], Json | None],
        sources: list[TokenSource],
        tokens: list[Token],
    ) -> None:
        by_volume: dict[str, dict[str, str]] = {}
        for source, token in zip(sources, tokens, strict=True):
            by_volume.setdefault(source.volume, {})[source.path] = token.value
        for volume in volumes:
            name = str(volume.get("name"))
            kind = volume_kind(volume)
            if kind == "hostPath":
                self.volume_dirs[name] = prepare_host_path(volume)
                continue
            folder = self.dir / "volumes" / name
            if kind == "emptyDir":
                folder.mkdir(parents=True, exist_ok=True)
            else:
                files = render_volume_files(
                    self.pod,
                    volume,
                    node_name=self.ctx.node_name,
                    lookup=lookup,
                    tokens=by_volume.get(name, {}),
                )
                write_volume(folder, files)
            self.volume_dirs[name] = folder

    def _build_launch(self, container: Json, lookup: Callable[[str, str], Json | None]) -> Launch:
        env = build_container_env(
            self.pod, container, node_name=self.ctx.node_name, services=self.ctx.services, lookup=lookup
        )
        process_env = build_process_env({**self.ctx.inherited_env, "HOSTNAME": self.name}, env)
        launch = Launch(env=env, process_env=process_env)
        try:
            launch.command = build_command(container, env)
        except PodSpecError as error:
            launch.command_error = str(error)
        volumes = {str(v.get("name")): v for v in self.spec.get("volumes") or []}
        termination_file = self.dir / "containers" / str(container["name"]) / "termination-log"
        truncate(termination_file)
        mounts = build_mounts(
            container, volumes, self.volume_dirs, env, termination_file, is_file=lambda p: p.is_file()
        )
        for mount in mounts:
            if not mount.source.exists() and mount.volume in volumes:
                # Like the kubelet, a missing subPath of a volume is created as a folder.
                mount.source.mkdir(parents=True, exist_ok=True)
        launch.script = build_launch_script(
            mounts,
            str(container.get("workingDir") or "") or None,
            error_file=self.dir / "containers" / str(container["name"]) / "start-error",
            tools=self.ctx.tools,
        )
        return launch

    def _runner(self, spec: Json, record: ContainerRecord, restart: str) -> ContainerRunner:
        runner = ContainerRunner(self, spec, record, self.launches[record.name], restart=restart)
        self.runners[record.name] = runner
        return runner

    async def _run_init(self) -> bool:
        """Init containers in order; False if one failed for good or the pod is stopping."""
        init_restart = "Never" if self.restart_policy == "Never" else "OnFailure"
        for spec, record in zip(self.init_specs, self.init_records, strict=True):
            if self.stop_requested.is_set():
                return False
            self.running = True
            if record.sidecar:
                runner = self._runner(spec, record, "Always")
                runner.spawn()
                self.publish()
                runner.begin()
                if not await self._until_stopped(runner.started_event.wait()):
                    return False
                continue
            runner = self._runner(spec, record, init_restart)
            runner.spawn()
            self.publish()
            runner.begin()
            assert runner.task is not None  # noqa: S101 - begin() sets it
            await runner.task
            state = record.state
            if not isinstance(state, Terminated) or state.exit_code != 0:
                return False
        self.initialized = True
        return True

    async def _run_containers(self) -> None:
        runners = [
            self._runner(spec, record, self.restart_policy)
            for spec, record in zip(self.specs, self.records, strict=True)
        ]
        for runner in runners:
            runner.spawn()
        self.running = True
        self.publish()
        for runner in runners:
            runner.begin()
        pending = {runner.task for runner in runners if runner.task is not None}
        while pending:
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                self.publish()
        sidecars = [self.runners[r.name] for r in self.init_records if r.sidecar and r.name in self.runners]
        for runner in sidecars:
            runner.stop(self.stop_grace)
        await asyncio.gather(*(r.task for r in sidecars if r.task is not None))

    async def _finish(self) -> None:
        """Every process has ended: report the terminal status."""
        for runner in self.runners.values():
            runner.stop(self.stop_grace)
        await asyncio.gather(*(r.task for r in self.runners.values() if r.task is not None))
        self.terminal = True
        if self.delete_requested and not self.runners:
            return  # deleted before anything ran: nothing to report, just remove it
        self.publish()
        await self.writer.flush()
        log.info("Pod %s %s", self.key, self.build_status()["phase"])

    async def _fail(self, reason: str, message: str) -> None:
        for runner in self.runners.values():
            runner.kill_now()
        await asyncio.gather(
            *(r.task for r in self.runners.values() if r.task is not None), return_exceptions=True
        )
        self.terminal = True
        self.phase = "Failed"
        self.reason = reason
        self.message = message
        for record in [*self.init_records, *self.records]:
            if isinstance(record.state, Waiting) and not record.state.message:
                record.state = Waiting(record.state.reason, message)
        self.publish()
        await self.writer.flush()
        log.info("Pod %s Failed: %s", self.key, message)

    async def _after_terminal(self) -> None:
        if self.delete_requested and not self.writer.gone:
            await delete_pod(self.ctx.client, self.pod)

    def _request_stop(self, grace: float) -> None:
        self.stop_grace = min(self.stop_grace, grace) if self.stop_requested.is_set() else grace
        self.stop_requested.set()
        for runner in self.runners.values():
            runner.stop(self.stop_grace)

    def _deadline_exceeded(self) -> None:
        if self.terminal:
            return
        log.info("Pod %s exceeded its activeDeadlineSeconds", self.key)
        self.phase = "Failed"
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self._request_stop(_grace_of(self.pod))

    def _cancel_children(self) -> None:
        self.writer.cancel()
        for runner in self.runners.values():
            runner.cancel()
            if not self.ctx.shutting_down:
                runner.kill_now()


async def delete_pod(client: ApiClient, pod: Json) -> None:
    """Delete now (grace 0) if it is still the same pod, as a kubelet finishing a deletion does."""
    m = meta(pod)
    path = f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}"
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": m["uid"]},
    }
    try:
        await retrying(f"delete {m['namespace']}/{m['name']}", lambda: client.delete(path, body))
    except ApiError as error:
        if error.status not in (404, 409):
            raise
    log.info("Deleted pod %s/%s", m["namespace"], m["name"])


def is_terminal(pod: Json) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES
