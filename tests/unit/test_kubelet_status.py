"""Pod status as the process kubelet reports it: phases, container states, conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localkube.kubelet.objects import Json
from localkube.kubelet.provision import Token
from localkube.kubelet.status import (
    ContainerRecord,
    PodView,
    Running,
    Terminated,
    Waiting,
    build_container_status,
    build_lost_status,
    build_pod_status,
    decide_phase,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
EARLIER = NOW - timedelta(seconds=30)


def running(name: str = "c", *, ready: bool = True) -> ContainerRecord:
    return ContainerRecord(
        name, "img", Running(EARLIER), ready=ready, started=True, container_id="process://7"
    )


def exited(code: int, name: str = "c") -> ContainerRecord:
    reason = "Completed" if code == 0 else "Error"
    return ContainerRecord(
        name,
        "img",
        Terminated(code, reason, EARLIER, NOW, container_id="process://7"),
        container_id="process://7",
    )


def waiting(name: str = "c", reason: str = "ContainerCreating") -> ContainerRecord:
    return ContainerRecord(name, "img", Waiting(reason))


def backing_off(code: int, name: str = "c") -> ContainerRecord:
    record = ContainerRecord(name, "img", Waiting("CrashLoopBackOff"), restart_count=1)
    record.last_state = Terminated(code, "Error", EARLIER, NOW)
    return record


# --- phase ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "records", "terminal", "phase"),
    [
        ("Never", [waiting()], False, "Pending"),
        ("Never", [running()], False, "Running"),
        ("Never", [running(), exited(0, "d")], False, "Running"),
        ("Never", [exited(0), exited(0, "d")], False, "Succeeded"),
        ("Never", [exited(0), exited(1, "d")], False, "Failed"),
        ("OnFailure", [exited(0), backing_off(1, "d")], False, "Running"),
        ("OnFailure", [exited(0), exited(0, "d")], False, "Succeeded"),
        ("Always", [exited(0)], False, "Running"),
        ("Always", [exited(143)], True, "Failed"),
        ("Always", [exited(0)], True, "Succeeded"),
        ("OnFailure", [backing_off(1)], True, "Failed"),
    ],
)
def test_phase_follows_the_kubelet(
    policy: str, records: list[ContainerRecord], terminal: bool, phase: str
) -> None:
    assert decide_phase(policy, [], records, terminal=terminal) == phase


def test_a_failed_init_container_fails_a_never_pod_and_keeps_others_pending() -> None:
    assert (
        decide_phase("Never", [exited(1, "init")], [waiting(reason="PodInitializing")], terminal=False)
        == "Failed"
    )
    assert decide_phase("OnFailure", [backing_off(1, "init")], [waiting()], terminal=False) == "Pending"
    assert decide_phase("Always", [running("init")], [waiting()], terminal=False) == "Pending"


def test_a_started_sidecar_does_not_hold_the_pod_pending() -> None:
    sidecar = running("side")
    sidecar.sidecar = True
    assert decide_phase("Never", [sidecar], [running()], terminal=False) == "Running"
    assert decide_phase("Never", [sidecar], [exited(0)], terminal=False) == "Succeeded"


STATES = st.sampled_from(["waiting", "running", "ok", "fail", "backoff"])


def _record(kind: str, index: int) -> ContainerRecord:
    name = f"c{index}"
    return {
        "waiting": lambda: waiting(name),
        "running": lambda: running(name),
        "ok": lambda: exited(0, name),
        "fail": lambda: exited(1, name),
        "backoff": lambda: backing_off(1, name),
    }[kind]()


@given(st.sampled_from(["Never", "OnFailure", "Always"]), st.lists(STATES, min_size=1, max_size=5))
def test_a_terminal_pod_whose_containers_all_ran_is_succeeded_or_failed(
    policy: str, kinds: list[str]
) -> None:
    records = [_record(kind, i) for i, kind in enumerate(kinds)]
    phase = decide_phase(policy, [], records, terminal=True)
    if "waiting" in kinds:
        assert phase == "Pending"  # build_pod_status turns this into Failed
    elif "running" in kinds:
        assert phase == "Running"
    else:
        assert phase == ("Succeeded" if set(kinds) == {"ok"} else "Failed")


@given(st.lists(STATES, min_size=1, max_size=5))
def test_a_never_pod_never_reports_success_with_a_failed_container(kinds: list[str]) -> None:
    records = [_record(kind, i) for i, kind in enumerate(kinds)]
    for terminal in (False, True):
        phase = decide_phase("Never", [], records, terminal=terminal)
        if "fail" in kinds:
            assert phase != "Succeeded"


# --- container statuses ----------------------------------------------------------------------


def test_container_status_has_the_fields_clients_read() -> None:
    record = exited(3)
    record.state = Terminated(3, "Error", EARLIER, NOW, "boom", "process://7")
    record.last_state = Terminated(1, "Error", EARLIER, EARLIER)
    record.restart_count = 2
    assert build_container_status(record) == {
        "name": "c",
        "image": "img",
        "imageID": "process://img",
        "containerID": "process://7",
        "ready": False,
        "started": False,
        "restartCount": 2,
        "state": {
            "terminated": {
                "exitCode": 3,
                "reason": "Error",
                "message": "boom",
                "startedAt": "2030-01-02T03:03:35Z",
                "finishedAt": "2030-01-02T03:04:05Z",
                "containerID": "process://7",
            }
        },
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": "2030-01-02T03:03:35Z",
                "finishedAt": "2030-01-02T03:03:35Z",
            }
        },
    }
    assert build_container_status(running())["state"] == {"running": {"startedAt": "2030-01-02T03:03:35Z"}}


# --- pod status --------------------------------------------------------------------------------


def _conditions(status: Json) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _status(view: PodView, current: dict[str, Json] | None = None) -> Json:
    return build_pod_status(view, current or {}, NOW)


def test_a_running_ready_pod() -> None:
    status = _status(PodView("Always", [], [running()], EARLIER, initialized=True))
    assert status["phase"] == "Running"
    assert (status["podIP"], status["hostIP"], status["startTime"]) == (
        "127.0.0.1",
        "127.0.0.1",
        "2030-01-02T03:03:35Z",
    )
    assert _conditions(status) == {
        "PodReadyToStartContainers": ("True", None),
        "Initialized": ("True", None),
        "Ready": ("True", None),
        "ContainersReady": ("True", None),
        "PodScheduled": ("True", None),
    }
    # Reason and message are present as null, so a strategic merge patch clears stale ones.
    assert all("reason" in c and "message" in c for c in status["conditions"])


def test_an_unready_container_names_itself_in_ready_conditions() -> None:
    status = _status(
        PodView("Always", [], [running("a"), running("b", ready=False)], EARLIER, initialized=True)
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "ContainersNotReady",
        "containers with unready status: [b]",
    )


def test_a_succeeded_pod_reports_pod_completed() -> None:
    status = _status(PodView("Never", [], [exited(0)], EARLIER, terminal=True, initialized=True))
    assert status["phase"] == "Succeeded"
    assert _conditions(status)["Ready"] == ("False", "PodCompleted")
    assert _conditions(status)["PodReadyToStartContainers"] == ("False", None)


def test_init_containers_hold_initialized_false_until_done() -> None:
    view = PodView("Never", [exited(0, "i1"), running("i2")], [waiting(reason="PodInitializing")], EARLIER)
    status = _status(view)
    assert status["phase"] == "Pending"
    assert _conditions(status)["Initialized"] == ("False", "ContainersNotInitialized")
    assert [s["name"] for s in status["initContainerStatuses"]] == ["i1", "i2"]


def test_a_terminal_pod_whose_containers_never_ran_is_failed() -> None:
    status = _status(PodView("Never", [], [waiting()], EARLIER, terminal=True))
    assert status["phase"] == "Failed"


def test_a_forced_phase_carries_reason_and_message() -> None:
    view = PodView(
        "Never",
        [],
        [exited(137)],
        EARLIER,
        terminal=True,
        phase="Failed",
        reason="DeadlineExceeded",
        message="late",
    )
    status = _status(view)
    assert (status["phase"], status["reason"], status["message"]) == ("Failed", "DeadlineExceeded", "late")


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    view = PodView("Always", [], [running()], EARLIER, initialized=True)
    before = "2029-12-31T00:00:00Z"
    current = {"Ready": {"type": "Ready", "status": "True", "lastTransitionTime": before}}
    current["Initialized"] = {"type": "Initialized", "status": "False", "lastTransitionTime": before}
    times = {c["type"]: c["lastTransitionTime"] for c in _status(view, current)["conditions"]}
    assert times["Ready"] == before
    assert times["Initialized"] == "2030-01-02T03:04:05Z"


def test_readiness_gates_must_be_true_for_ready() -> None:
    view = PodView("Always", [], [running()], EARLIER, initialized=True, readiness_gates=["example.com/lb"])
    assert _conditions(_status(view))["Ready"] == ("False", "ReadinessGatesNotReady")
    gate = {"example.com/lb": {"type": "example.com/lb", "status": "True"}}
    assert _conditions(_status(view, gate))["Ready"] == ("True", None)
    assert _conditions(_status(view, gate))["ContainersReady"] == ("True", None)


def test_a_pod_lost_to_a_kubelet_restart_fails_with_node_restart() -> None:
    pod = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": True, "state": {"running": {"startedAt": "2030-01-01T00:00:00Z"}}},
                {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            ],
        }
    }
    status = build_lost_status(pod, "node", NOW)
    assert (status["phase"], status["reason"]) == ("Failed", "NodeRestart")
    first, second = status["containerStatuses"]
    assert first["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert first["state"]["terminated"]["exitCode"] == 137
    assert first["ready"] is False
    assert second["state"] == {"terminated": {"exitCode": 0, "reason": "Completed"}}


def test_tokens_are_refreshed_at_80_percent_of_their_life_but_within_a_day() -> None:
    hour = Token("t", NOW, NOW + timedelta(hours=1))
    assert hour.refresh_at == NOW + timedelta(minutes=48)
    year = Token("t", NOW, NOW + timedelta(days=365))
    assert year.refresh_at == NOW + timedelta(hours=24)
