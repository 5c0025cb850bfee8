"""Pod status as a kubelet reports it, built from what the kubelet knows (pure; `now` is given).

The pod worker keeps one `ContainerRecord` per container; `build_pod_status`
turns those records into the `status` the kubelet writes with the pods/status
subresource. `decide_phase` is the kubelet's getPhase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from localkube.kubelet.downward import HOST_IP, POD_IP
from localkube.kubelet.objects import Json, format_time

TERMINAL_PHASES = ("Succeeded", "Failed")
CONTAINER_ID_SCHEME = "process://"


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: datetime | None
    finished_at: datetime
    message: str = ""
    container_id: str = ""


State = Waiting | Running | Terminated


@dataclass
class ContainerRecord:
    """What the kubelet knows about one container of a pod."""

    name: str
    image: str
    state: State = field(default_factory=lambda: Waiting("ContainerCreating"))
    last_state: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""
    sidecar: bool = False  # a restartable init container


def build_state(state: State | None) -> Json:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        waiting: Json = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": format_time(state.started_at)}}
    terminated: Json = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "startedAt": format_time(state.started_at) if state.started_at else None,
        "finishedAt": format_time(state.finished_at),
    }
    if state.message:
        terminated["message"] = state.message
    if state.container_id:
        terminated["containerID"] = state.container_id
    return {"terminated": terminated}


def build_container_status(record: ContainerRecord) -> Json:
    status: Json = {
        "name": record.name,
        "image": record.image,
        "imageID": CONTAINER_ID_SCHEME + record.image,
        "ready": record.ready,
        "started": record.started,
        "restartCount": record.restart_count,
        "state": build_state(record.state),
        "lastState": build_state(record.last_state),
    }
    if record.container_id:
        status["containerID"] = record.container_id
    return status


def _count_init(init_records: Sequence[ContainerRecord]) -> tuple[int, int]:
    """(pending, failed) init containers; a started sidecar is neither."""
    pending = failed = 0
    for record in init_records:
        state = record.state
        if record.sidecar:
            pending += not record.started and not isinstance(state, Terminated)
        elif isinstance(state, Running):
            pending += 1
        elif isinstance(state, Terminated):
            failed += state.exit_code != 0
        elif record.last_state is not None:
            failed += record.last_state.exit_code != 0
        else:
            pending += 1
    return pending, failed


def _count_containers(records: Sequence[ContainerRecord]) -> tuple[int, int, int, int]:
    """(running, stopped, succeeded, waiting) regular containers."""
    running = stopped = succeeded = waiting = 0
    for record in records:
        state = record.state
        if isinstance(state, Running):
            running += 1
        elif isinstance(state, Terminated):
            stopped += 1
            succeeded += state.exit_code == 0
        elif record.last_state is not None:
            stopped += 1
        else:
            waiting += 1
    return running, stopped, succeeded, waiting


def decide_phase(
    restart_policy: str,
    init_records: Sequence[ContainerRecord],
    records: Sequence[ContainerRecord],
    *,
    terminal: bool,
) -> str:
    """The pod phase from its containers' states (the kubelet's getPhase).

    `terminal` says the kubelet will restart nothing any more (deletion,
    deadline, or every container finished for good).
    """
    pending_init, failed_init = _count_init(init_records)
    running, stopped, succeeded, waiting = _count_containers(records)
    any_started = any(r.last_state is not None or not isinstance(r.state, Waiting) for r in records)
    if failed_init and restart_policy == "Never":
        phase = "Failed"
    elif (pending_init and not any_started) or waiting:
        phase = "Pending"
    elif running:
        phase = "Running"
    elif not stopped:
        phase = "Pending"
    elif terminal or restart_policy != "Always":
        all_succeeded = stopped == succeeded
        if all_succeeded:
            phase = "Succeeded"
        elif terminal or restart_policy == "Never":
            phase = "Failed"
        else:
            phase = "Running"  # OnFailure: the failed ones are restarting
    else:
        phase = "Running"  # Always: every container is restarting
    return phase


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> Json:
    # Reason and message are always present (None clears them): the status is a
    # strategic merge patch, which would otherwise keep a stale reason.
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason or None,
        "message": message or None,
    }


def _init_complete(record: ContainerRecord) -> bool:
    if record.sidecar:
        return record.started
    return isinstance(record.state, Terminated) and record.state.exit_code == 0


def _names(records: Sequence[ContainerRecord]) -> str:
    return "[" + " ".join(r.name for r in records) + "]"


def build_conditions(
    phase: str,
    init_records: Sequence[ContainerRecord],
    records: Sequence[ContainerRecord],
    readiness_gates: Sequence[str],
    current: Mapping[str, Json],
    *,
    initialized_done: bool = False,
) -> list[Json]:
    """PodReadyToStartContainers, Initialized, ContainersReady, Ready and PodScheduled.

    `current` holds the pod's conditions as last seen or written, by type: the
    source of readiness-gate conditions (owned by others). `initialized_done`
    says every init container has completed once (Initialized never reverts).
    """
    incomplete = [r for r in init_records if not _init_complete(r)]
    if phase == "Succeeded" and not incomplete:
        initialized = _condition("Initialized", True, "PodCompleted")
    elif initialized_done or not incomplete:
        initialized = _condition("Initialized", True)
    else:
        message = f"containers with incomplete status: {_names(incomplete)}"
        initialized = _condition("Initialized", False, "ContainersNotInitialized", message)
    unready = [r for r in (*[i for i in init_records if i.sidecar], *records) if not r.ready]
    if phase == "Succeeded":
        containers_ready = _condition("ContainersReady", False, "PodCompleted")
    elif unready:
        containers_ready = _condition(
            "ContainersReady",
            False,
            "ContainersNotReady",
            f"containers with unready status: {_names(unready)}",
        )
    else:
        containers_ready = _condition("ContainersReady", True)
    ready = dict(containers_ready, type="Ready")
    if containers_ready["status"] == "True":
        for gate in readiness_gates:
            gate_condition = current.get(gate)
            if gate_condition is None:
                ready = _condition(
                    "Ready",
                    False,
                    "ReadinessGatesNotReady",
                    f'corresponding condition of pod readiness gate "{gate}" does not exist.',
                )
                break
            if gate_condition.get("status") != "True":
                ready = _condition(
                    "Ready",
                    False,
                    "ReadinessGatesNotReady",
                    f'the status of pod readiness gate "{gate}" is not "True", '
                    f"but {gate_condition.get('status')}",
                )
                break
    sandbox = _condition("PodReadyToStartContainers", phase not in TERMINAL_PHASES)
    return [sandbox, initialized, ready, containers_ready, _condition("PodScheduled", True)]


def stamp_conditions(conditions: list[Json], previous: Mapping[str, Json], now: datetime) -> list[Json]:
    """Set lastTransitionTime: kept from `previous` when the status did not change."""
    stamped = []
    for condition in conditions:
        before = previous.get(condition["type"])
        if (
            before is not None
            and before.get("status") == condition["status"]
            and before.get("lastTransitionTime")
        ):
            moment = before["lastTransitionTime"]
        else:
            moment = format_time(now)
        stamped.append({**condition, "lastProbeTime": None, "lastTransitionTime": moment})
    return stamped


@dataclass
class PodView:
    """Everything `build_pod_status` needs to know about a pod."""

    restart_policy: str
    init_records: Sequence[ContainerRecord]
    records: Sequence[ContainerRecord]
    start_time: datetime | None
    terminal: bool = False
    phase: str | None = None  # forced (DeadlineExceeded, NodeRestart, spec errors)
    reason: str = ""
    message: str = ""
    readiness_gates: Sequence[str] = ()
    initialized: bool = False
    observed_generation: int | None = None


def build_pod_status(view: PodView, current_conditions: Mapping[str, Json], now: datetime) -> Json:
    """The `status` to write for a pod; conditions keep their transition times when unchanged."""
    phase = view.phase or decide_phase(
        view.restart_policy, view.init_records, view.records, terminal=view.terminal
    )
    if view.terminal and phase not in TERMINAL_PHASES:
        phase = "Failed"  # stopped for good before its containers ran (or while they waited)
    conditions = build_conditions(
        phase,
        view.init_records,
        view.records,
        view.readiness_gates,
        current_conditions,
        initialized_done=view.initialized,
    )
    status: Json = {
        "phase": phase,
        "conditions": stamp_conditions(conditions, current_conditions, now),
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": POD_IP,
        "podIPs": [{"ip": POD_IP}],
        "startTime": format_time(view.start_time) if view.start_time else None,
        "containerStatuses": [build_container_status(r) for r in view.records],
        "reason": view.reason or None,
        "message": view.message or None,
    }
    if view.init_records:
        status["initContainerStatuses"] = [build_container_status(r) for r in view.init_records]
    if view.observed_generation is not None:
        status["observedGeneration"] = view.observed_generation
    return status


LOST_MESSAGE = "The container could not be located when the pod was terminated"


def build_lost_status(pod: Json, node_name: str, now: datetime) -> Json:
    """Failed with reason NodeRestart: the pod ran under an earlier kubelet whose processes are gone."""
    status = pod.get("status") or {}
    moment = format_time(now)

    def lost(entries: list[Json]) -> list[Json]:
        result = []
        for original in entries:
            state = original.get("state") or {}
            entry = original
            if "running" in state or not state:
                started = (state.get("running") or {}).get("startedAt")
                entry = {
                    **original,
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": LOST_MESSAGE,
                            "startedAt": started,
                            "finishedAt": moment,
                        }
                    },
                }
            result.append(entry)
        return result

    unready = [
        {
            "type": kind,
            "status": "False",
            "reason": "PodFailed",
            "message": None,
            "lastProbeTime": None,
            "lastTransitionTime": moment,
        }
        for kind in ("Ready", "ContainersReady", "PodReadyToStartContainers")
    ]
    result: Json = {
        "phase": "Failed",
        "reason": "NodeRestart",
        "message": f"The kubelet on node {node_name} restarted and lost this pod's processes",
        "conditions": unready,
        "containerStatuses": lost(list(status.get("containerStatuses") or [])),
    }
    if status.get("initContainerStatuses"):
        result["initContainerStatuses"] = lost(list(status["initContainerStatuses"]))
    return result
