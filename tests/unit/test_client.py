"""The SDK (`retcon.client`) against kmock's Kubernetes emulator: what it reads, what it sends.

The emulator runs on its own thread and event loop, so the sync `Client` (whose
own loop runs on another thread) and `AsyncClient` both talk to it over HTTP,
as they would to a real API server. A fake operator answers Injections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from retcon.client import (
    AsyncClient,
    Client,
    InjectionRejected,
    InvalidInput,
    NotPaused,
    PermissionDenied,
    RetconError,
    RunHeld,
    RunNotFound,
    StepNotFound,
    Timeout,
)

GV = "retcon.dev/v1alpha1"
PLURALS = ("workflows", "workflowruns", "pauserequests", "injections", "stepresults")
NS = "shop"
WRITES = ("POST", "PATCH", "PUT", "DELETE")
OPERATOR = {"X-Fake-Operator": "yes"}


class RetconApi(kmock.KubernetesEmulator):
    """kmock's emulator, plus what the SDK relies on from the API server (generateName)
    and from the operator (it answers each Injection with `injection_answer`)."""

    injection_answer: dict[str, Any] | None
    names: Iterator[int]

    async def _handle(self, request: kmock.Request) -> Any:
        created = request.action == kmock.action.CREATE and isinstance(request.data, dict)
        if created:
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self.names):05d}"
        response = await super()._handle(request)
        resource = request.resource
        if created and resource is not None and resource.plural == "injections" and self.injection_answer:
            name = request.data["metadata"]["name"]
            asyncio.get_running_loop().create_task(self._answer(request.namespace or NS, name))
        return response

    async def _answer(self, namespace: str, name: str) -> None:
        await asyncio.sleep(0.05)
        path = f"/apis/{GV}/namespaces/{namespace}/injections/{name}"
        response = await self.patch(path, json={"status": self.injection_answer}, headers=OPERATOR)
        response.release()


@dataclass
class FakeCluster:
    api: RetconApi
    loop: asyncio.AbstractEventLoop
    url: str
    kubeconfig: Path

    def put(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.api.objects[f"{GV}/{plural}", meta.get("namespace", NS), meta["name"]] = obj

    def get(self, plural: str, name: str, namespace: str = NS) -> dict[str, Any]:
        return dict(self.api.objects[f"{GV}/{plural}", namespace, name].raw)

    def exists(self, plural: str, name: str, namespace: str = NS) -> bool:
        key = (f"{GV}/{plural}", namespace, name)
        return key in self.api.objects and not self.api.objects[key].deleted

    def writes(self) -> list[tuple[str, str, Any]]:
        """What the client asked to change: (method, path, body), in order (the fake operator's excluded)."""
        return [
            (request.method.value, request.url.path, request.data)
            for request in list(self.api)
            if request.method.value in WRITES and "X-Fake-Operator" not in request.headers
        ]

    def requests(self, action: kmock.action, plural: str) -> list[kmock.Request]:
        return [
            request
            for request in list(self.api)
            if request.action == action and request.resource is not None and request.resource.plural == plural
        ]

    def set_status(self, run: str, status: dict[str, Any]) -> None:
        """Change a run's status as the operator would: through the API, so watchers see it."""
        path = f"/apis/{GV}/namespaces/{NS}/workflowruns/{run}"

        async def patch() -> None:
            response = await self.api.patch(path, json={"status": status}, headers=OPERATOR)
            response.release()

        asyncio.run_coroutine_threadsafe(patch(), self.loop).result(timeout=10)


def write_kubeconfig(path: Path, server: str, namespace: str | None = NS) -> Path:
    context: dict[str, Any] = {"cluster": "fake", "user": "alice"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "alice", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": context}],
                "current-context": "fake",
            }
        )
    )
    return path


@contextmanager
def fake_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """The emulator on a thread of its own, and a kubeconfig (namespace `shop`) pointing at it."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        api = RetconApi()
        api.injection_answer = None
        api.names = itertools.count(1)
        for plural in PLURALS:
            api.resources[f"{GV}/{plural}"] = {}
        async with api, kmock.Server(api) as server:
            box.update(api=api, url=str(server.url).rstrip("/"), stop=asyncio.Event())
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the fake API server did not start"
    yield FakeCluster(box["api"], loop, box["url"], write_kubeconfig(tmp_path / "kubeconfig", box["url"]))
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(10)
    loop.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path) as fake:
        yield fake


@pytest.fixture
def client(cluster: FakeCluster) -> Iterator[Client]:
    with Client(kubeconfig=cluster.kubeconfig) as sdk:
        yield sdk


# --- objects as the operator writes them -------------------------------------------------------------


def definition(*extra: dict[str, Any], points: list[str] | None = None) -> dict[str, Any]:
    steps = [
        {"id": "step_001", "name": "fetch-order", "function": "shop.steps:fetch", "dependsOn": []},
        {
            "id": "step_002",
            "name": "validate-payment",
            "function": "shop.steps:validate",
            "dependsOn": ["fetch-order"],
        },
        {
            "id": "step_003",
            "name": "send-notification",
            "image": "busybox",
            "command": ["true"],
            "dependsOn": ["validate-payment"],
        },
        *extra,
    ]
    return {
        "source": {"name": "order-processing", "generation": 3},
        "steps": steps,
        "injectionPoints": ["validate-payment"] if points is None else points,
    }


def step(
    id: str, name: str, phase: str, output: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {"id": id, "name": name, "phase": phase, **extra}
    if output is not None:
        result["output"] = output
    return result


PAUSED_STEPS = [
    step("step_001", "fetch-order", "Succeeded", {"orderId": "123"},
         startedAt="2025-03-01T10:00:00Z", finishedAt="2025-03-01T10:00:02Z", attempts=[{"number": 1}]),
    step("step_002", "validate-payment", "Succeeded", {"valid": True, "amount": 99},
         startedAt="2025-03-01T10:00:03Z", finishedAt="2025-03-01T10:00:04.500000Z", attempts=[{"number": 1}]),
    step("step_003", "send-notification", "Pending"),
]  # fmt: skip


def make_run(
    name: str = "order-1",
    phase: str = "Paused",
    *,
    steps: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = NS,
    **status: Any,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"definition": definition(), "progress": "2/3"}
    if phase == "Paused":
        defaults |= {"pauseReason": "injection", "nextStepHint": "send-notification"}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "creationTimestamp": "2025-03-01T09:59:58Z"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": GV,
        "kind": "WorkflowRun",
        "metadata": meta,
        "spec": {"workflowRef": {"name": "order-processing"}, "input": {"orderId": "123"}},
        "status": {"phase": phase, "steps": PAUSED_STEPS if steps is None else steps, **defaults, **status},
    }


def annotations_patch(**annotations: str | None) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations}}


RUN_PATH = f"/apis/{GV}/namespaces/{NS}/workflowruns/order-1"


# --- connecting --------------------------------------------------------------------------------------


def test_the_namespace_is_the_kubeconfig_contexts_unless_given(cluster: FakeCluster, tmp_path: Path) -> None:
    assert Client(kubeconfig=cluster.kubeconfig).namespace == NS
    assert Client(namespace="other", kubeconfig=cluster.kubeconfig).namespace == "other"
    plain = write_kubeconfig(tmp_path / "plain", cluster.url, namespace=None)
    assert Client(kubeconfig=plain).namespace == "default"


def test_a_missing_kubeconfig_or_context_is_a_one_line_error(cluster: FakeCluster, tmp_path: Path) -> None:
    with pytest.raises(RetconError, match=r"^cannot use the kubeconfig: .*not found"):
        Client(kubeconfig=tmp_path / "nope")
    with pytest.raises(RetconError, match="Context 'elsewhere' not found"):
        Client(kubeconfig=cluster.kubeconfig, context="elsewhere")


def test_an_unreachable_api_server_is_a_one_line_error(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    with Client(kubeconfig=config) as sdk, pytest.raises(RetconError) as caught:
        sdk.get_run("order-1")
    assert str(caught.value).startswith("cannot reach the Kubernetes API server at http://127.0.0.1:9")
    assert "\n" not in str(caught.value)


def test_a_forbidden_request_is_permission_denied_with_the_servers_words(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run())
    message = (
        'workflowruns.retcon.dev "order-1" is forbidden: User "alice" cannot patch resource "workflowruns"'
    )
    cluster.api["patch"] << kmock.KubernetesError(status=403, reason="Forbidden", message=message)
    with pytest.raises(PermissionDenied, match=f"^permission denied: {message}"):
        client.pause_run("order-1")


# --- reading -----------------------------------------------------------------------------------------


def test_list_runs_summarises_runs_of_the_namespace_or_all(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run("b-run", "Running", currentStep="validate-payment"))
    cluster.put("workflowruns", make_run("a-run"))
    cluster.put("workflowruns", make_run("elsewhere", "Succeeded", namespace="other"))
    runs = client.list_runs()
    assert [run.name for run in runs] == ["a-run", "b-run"]
    assert runs[0].to_json() == {
        "name": "a-run",
        "namespace": NS,
        "workflow": "order-processing",
        "phase": "Paused",
        "pause_reason": "injection",
        "next_step_hint": "send-notification",
        "current_step": None,
        "progress": "2/3",
        "tenant": None,
        "message": None,
        "created_at": "2025-03-01T09:59:58Z",
    }
    assert [(run.namespace, run.name) for run in client.list_runs(all_namespaces=True)] == [
        ("other", "elsewhere"),
        (NS, "a-run"),
        (NS, "b-run"),
    ]


def test_get_run_shows_steps_and_loads_outputs_kept_by_reference(
    cluster: FakeCluster, client: Client
) -> None:
    big = step(
        "step_002",
        "validate-payment",
        "Succeeded",
        outputRef={"kind": "StepResult", "name": "order-1-002-a1"},
    )
    cluster.put("workflowruns", make_run(steps=[PAUSED_STEPS[0], big, PAUSED_STEPS[2]]))
    cluster.put(
        "stepresults",
        {"apiVersion": GV, "kind": "StepResult", "metadata": {"name": "order-1-002-a1", "namespace": NS},
         "spec": {"output": {"blob": "x" * 100}}},
    )  # fmt: skip
    run = client.get_run("order-1")
    assert run.input == {"orderId": "123"}
    assert [(s.id, s.name, s.phase) for s in run.steps] == [
        ("step_001", "fetch-order", "Succeeded"),
        ("step_002", "validate-payment", "Succeeded"),
        ("step_003", "send-notification", "Pending"),
    ]
    assert run.steps[1].output == {"blob": "x" * 100}
    assert run.steps[1].output_ref == "order-1-002-a1"
    assert run.steps[0].duration_seconds == 2.0
    assert run.to_json()["steps"][0]["duration_seconds"] == 2.0


def test_get_run_of_an_unknown_run_is_run_not_found(client: Client) -> None:
    with pytest.raises(RunNotFound, match=r"^run nope not found in namespace shop$"):
        client.get_run("nope")


def test_a_run_name_that_cannot_exist_is_refused_before_asking(cluster: FakeCluster, client: Client) -> None:
    with pytest.raises(InvalidInput, match="'Order_1' is not a valid Kubernetes name"):
        client.get_run("Order_1")
    assert list(cluster.api) == []


def test_paused_state_has_the_walkthroughs_json_shape(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run())
    state = client.get_paused_state("order-1")
    assert state.to_json() == {
        "pause_reason": "injection",
        "next_step_hint": "send-notification",
        "steps": [
            {"id": "step_001", "name": "fetch-order", "injected": False, "output": {"orderId": "123"}},
            {
                "id": "step_002",
                "name": "validate-payment",
                "injected": False,
                "output": {"valid": True, "amount": 99},
            },
        ],
    }


def test_paused_state_of_a_failed_run_lists_the_failed_step(cluster: FakeCluster, client: Client) -> None:
    steps = [
        PAUSED_STEPS[0],
        step("step_002", "validate-payment", "Failed", message="timeout"),
        PAUSED_STEPS[2],
    ]
    cluster.put("workflowruns", make_run(phase="Failed", steps=steps))
    state = client.get_paused_state("order-1")
    assert [(s.id, s.phase, s.output) for s in state.steps] == [
        ("step_001", "Succeeded", {"orderId": "123"}),
        ("step_002", "Failed", None),
    ]
    assert state.to_json()["pause_reason"] is None


def test_paused_state_of_a_running_run_is_not_paused(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Running"))
    with pytest.raises(NotPaused, match=r"^run order-1 is Running, not paused: pause it first$"):
        client.get_paused_state("order-1")


AUDIT = [
    {"type": "run.pause_requested", "time": "2025-03-01T10:00:05Z", "actor": "alice"},
    {"type": "run.paused", "time": "2025-03-01T10:00:06Z", "actor": "system:serviceaccount:retcon:operator"},
    {"type": "step.injected", "time": "2025-03-01T10:01:00Z", "actor": "alice", "stepId": "step_002",
     "stepName": "validate-payment", "reason": "Corrected amount for partial refund test",
     "previousOutput": {"valid": True, "amount": 99}, "newOutput": {"valid": True, "amount": 50}},
]  # fmt: skip


def test_audit_trail_returns_entries_oldest_first_and_filters_by_type(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run(audit=AUDIT))
    assert [entry.type for entry in client.audit_trail("order-1")] == [
        "run.pause_requested",
        "run.paused",
        "step.injected",
    ]
    (injected,) = client.audit_trail("order-1", type="step.injected")
    assert injected.to_json() == {
        "type": "step.injected",
        "time": "2025-03-01T10:01:00Z",
        "actor": "alice",
        "step_id": "step_002",
        "step_name": "validate-payment",
        "reason": "Corrected amount for partial refund test",
        "previous_output": {"valid": True, "amount": 99},
        "new_output": {"valid": True, "amount": 50},
        "details": None,
    }


def test_an_unknown_audit_type_lists_the_known_ones(client: Client) -> None:
    with pytest.raises(
        InvalidInput, match=r"unknown audit entry type 'step\.inject'; use one of run\.pause_requested, "
    ):
        client.audit_trail("order-1", type="step.inject")


FRAUD = {
    "id": "step_004", "name": "fraud-check", "function": "shop.steps:fraud", "dependsOn": ["validate-payment"],
    "injected": True, "insertedAfter": "validate-payment", "insertedBy": "validate-payment/0",
}  # fmt: skip


def test_run_structure_separates_definition_inserted_steps_and_execution_order(
    cluster: FakeCluster, client: Client
) -> None:
    snapshot = definition(FRAUD)
    snapshot["steps"][2]["dependsOn"] = ["fraud-check"]  # downstream of the insertion point now waits for it
    steps = [*PAUSED_STEPS, step("step_004", "fraud-check", "Pending")]
    cluster.put("workflowruns", make_run(steps=steps, definition=snapshot))
    structure = client.run_structure("order-1")
    assert [s.name for s in structure.definition] == ["fetch-order", "validate-payment", "send-notification"]
    assert [(s.name, s.inserted_after, s.inserted_by) for s in structure.inserted] == [
        ("fraud-check", "validate-payment", "validate-payment/0")
    ]
    assert [(s.name, s.injected) for s in structure.execution_order] == [
        ("fetch-order", False),
        ("validate-payment", False),
        ("fraud-check", True),
        ("send-notification", False),
    ]
    as_json = structure.to_json()
    assert as_json["workflow"] == "order-processing"
    assert as_json["from_snapshot"] is True
    assert as_json["definition"][0] == {
        "id": "step_001",
        "name": "fetch-order",
        "type": "Standard",
        "work": "function shop.steps:fetch",
        "depends_on": [],
        "injected": False,
        "inserted_after": None,
        "inserted_by": None,
        "phase": "Succeeded",
    }


def test_run_structure_of_a_run_without_a_snapshot_reads_the_workflow(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run(phase="Pending", steps=[], definition=None))
    cluster.put(
        "workflows",
        {"apiVersion": GV, "kind": "Workflow", "metadata": {"name": "order-processing", "namespace": NS},
         "spec": {"steps": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}},
    )  # fmt: skip
    structure = client.run_structure("order-1")
    assert structure.from_snapshot is False
    assert [(s.id, s.name, s.depends_on) for s in structure.execution_order] == [
        (None, "a", ()),
        (None, "b", ("a",)),
    ]


def test_execution_path_lists_started_steps_by_start_time(cluster: FakeCluster, client: Client) -> None:
    snapshot = definition(FRAUD)
    steps = [
        PAUSED_STEPS[0],
        step("step_002", "validate-payment", "Succeeded", {"v": 1}, injected=True,
             startedAt="2025-03-01T10:00:03Z", finishedAt="2025-03-01T10:00:04.500000Z"),
        step("step_003", "send-notification", "Running", startedAt="2025-03-01T10:00:09Z"),
        step("step_004", "fraud-check", "Succeeded", {}, startedAt="2025-03-01T10:00:05Z",
             finishedAt="2025-03-01T10:00:08Z", attempts=[{"number": 1}, {"number": 2}]),
    ]  # fmt: skip
    cluster.put("workflowruns", make_run(phase="Running", steps=steps, definition=snapshot))
    path = client.execution_path("order-1")
    assert [(s.name, s.duration_seconds, s.injected, s.output_injected) for s in path.steps] == [
        ("fetch-order", 2.0, False, False),
        ("validate-payment", 1.5, False, True),
        ("fraud-check", 3.0, True, False),
        ("send-notification", None, False, False),
    ]
    assert path.to_json()["steps"][2] == {
        "id": "step_004",
        "name": "fraud-check",
        "type": "Standard",
        "phase": "Succeeded",
        "started_at": "2025-03-01T10:00:05Z",
        "finished_at": "2025-03-01T10:00:08Z",
        "duration_seconds": 3.0,
        "injected": True,
        "output_injected": False,
        "attempts": 2,
    }


def test_watch_run_follows_a_watch_until_the_run_pauses(cluster: FakeCluster, client: Client) -> None:
    running = [PAUSED_STEPS[0], step("step_002", "validate-payment", "Running"), PAUSED_STEPS[2]]
    cluster.put("workflowruns", make_run(phase="Running", steps=running))
    updates = iter(
        [{"phase": "Pausing"}, {"phase": "Paused", "pauseReason": "injection", "steps": PAUSED_STEPS}]
    )
    phases = []
    for snapshot in client.watch_run("order-1"):
        phases.append((snapshot.phase, snapshot.steps[1].phase))
        if (update := next(updates, None)) is not None:
            cluster.set_status("order-1", update)
    assert phases == [("Running", "Running"), ("Pausing", "Running"), ("Paused", "Succeeded")]
    # One read, then a watch: no polling.
    assert len(cluster.requests(kmock.action.FETCH, "workflowruns")) == 1
    assert len(cluster.requests(kmock.action.WATCH, "workflowruns")) == 1


def test_watch_run_of_a_finished_run_yields_it_once(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Succeeded"))
    assert [s.phase for s in client.watch_run("order-1")] == ["Succeeded"]
    assert cluster.requests(kmock.action.WATCH, "workflowruns") == []


# --- pause, resume, cancel, signal: the exact patches ------------------------------------------------


def test_pause_sets_the_pause_annotation(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Running"))
    assert client.pause_run("order-1") == "pause_requested"
    assert cluster.writes() == [("PATCH", RUN_PATH, annotations_patch(**{"retcon.dev/pause": "true"}))]


def test_pausing_a_paused_run_again_succeeds(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    assert client.pause_run("order-1") == "paused"
    cluster.put("workflowruns", make_run(pauseReason="wait", nextStepHint="approve"))
    assert client.pause_run("order-1") == "pause_requested"  # the operator upgrades the reason


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ("Succeeded", "^run order-1 is Succeeded: a finished run cannot be paused$"),
        (
            "Failed",
            "^run order-1 is Failed: it is already stopped; inject into the failed step, then resume it$",
        ),
    ],
)
def test_pausing_a_finished_run_is_refused(
    cluster: FakeCluster, client: Client, phase: str, message: str
) -> None:
    cluster.put("workflowruns", make_run(phase=phase))
    with pytest.raises(InvalidInput, match=message):
        client.pause_run("order-1")
    assert cluster.writes() == []


def test_resume_removes_the_pause_annotation_in_one_patch(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    result = client.resume_run("order-1")
    assert (result.run, result.from_step, result.released) == ("order-1", None, ())
    assert cluster.writes() == [("PATCH", RUN_PATH, annotations_patch(**{"retcon.dev/pause": None}))]
    assert "retcon.dev/pause" not in cluster.get("workflowruns", "order-1")["metadata"]["annotations"]


def test_resume_from_a_step_names_its_id_in_the_same_patch(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    assert client.resume_run("order-1", from_step="validate-payment").from_step == "step_002"
    assert cluster.writes() == [
        (
            "PATCH",
            RUN_PATH,
            annotations_patch(**{"retcon.dev/pause": None, "retcon.dev/resume-from-step": "step_002"}),
        )
    ]


def test_resume_from_an_unknown_step_lists_the_valid_ones(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run())
    with pytest.raises(StepNotFound) as caught:
        client.resume_run("order-1", from_step="step_009")
    assert str(caught.value) == (
        "step 'step_009' not found in run order-1; valid steps: step_001 (fetch-order),"
        " step_002 (validate-payment), step_003 (send-notification)"
    )
    assert caught.value.valid == (
        "step_001 (fetch-order)",
        "step_002 (validate-payment)",
        "step_003 (send-notification)",
    )
    assert cluster.writes() == []


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"phase": "Running"}, "^run order-1 is Running: there is nothing to resume$"),
        (
            {"phase": "Succeeded"},
            "^run order-1 is Succeeded: a finished run cannot be resumed; start a new run instead$",
        ),
        (
            {"phase": "Paused", "pauseReason": "wait", "nextStepHint": "approve"},
            "^run order-1 is Paused by its Wait step approve, not by a pause request: signal that step to go on$",
        ),
    ],
)
def test_resuming_a_run_that_is_not_paused_is_refused(
    cluster: FakeCluster, client: Client, status: dict[str, Any], message: str
) -> None:
    cluster.put("workflowruns", make_run(**status))
    with pytest.raises(NotPaused, match=message):
        client.resume_run("order-1")
    assert cluster.writes() == []


def pause_request(name: str, run: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "PauseRequest",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {"runName": run, "reason": "freeze"},
    }


def test_resume_of_a_run_held_by_pause_requests_names_them(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(annotations={"retcon.dev/pause": "true"}))
    cluster.put("pauserequests", pause_request("freeze-b", "order-1"))
    cluster.put("pauserequests", pause_request("freeze-a", "order-1"))
    cluster.put("pauserequests", pause_request("other-run", "order-2"))
    cluster.put("pauserequests", pause_request("going", "order-1", deletionTimestamp="2025-03-01T10:00:00Z"))
    with pytest.raises(RunHeld) as caught:
        client.resume_run("order-1")
    assert str(caught.value) == (
        "run order-1 is held by PauseRequest(s) freeze-a, freeze-b; delete them to resume"
    )
    assert caught.value.holders == ("freeze-a", "freeze-b")
    assert cluster.writes() == []


def test_resume_with_release_deletes_the_pause_requests_then_resumes(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run())
    cluster.put("pauserequests", pause_request("freeze-a", "order-1"))
    assert client.resume_run("order-1", release=True).released == ("freeze-a",)
    assert [(method, path.rsplit("/", 2)[-2]) for method, path, _ in cluster.writes()] == [
        ("DELETE", "pauserequests"),
        ("PATCH", "workflowruns"),
    ]
    assert not cluster.exists("pauserequests", "freeze-a")


def test_cancel_sets_the_cancel_annotation(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Running"))
    client.cancel_run("order-1")
    assert cluster.writes() == [("PATCH", RUN_PATH, annotations_patch(**{"retcon.dev/cancel": "true"}))]


def test_cancelling_a_finished_run_is_refused(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Cancelled"))
    with pytest.raises(InvalidInput, match=r"^run order-1 is already Cancelled: there is nothing to cancel$"):
        client.cancel_run("order-1")
    assert cluster.writes() == []


WAITING = [
    PAUSED_STEPS[0],
    step("step_002", "approve", "Waiting", type="Wait"),
    step("step_003", "ship", "Pending"),
]


def test_signal_annotates_the_wait_step_by_name_with_compact_json(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run(steps=WAITING, pauseReason="wait", nextStepHint="approve"))
    client.signal_step("order-1", "step_002", {"approved": True, "by": "bob"})
    assert cluster.writes() == [
        (
            "PATCH",
            RUN_PATH,
            annotations_patch(**{"signal.retcon.dev/approve": '{"approved":true,"by":"bob"}'}),
        )
    ]


@pytest.mark.parametrize(
    ("ref", "data", "error", "message"),
    [
        (
            "fetch-order",
            {},
            InvalidInput,
            r"^step step_001 \(fetch-order\) is a Standard step: only a Wait step takes a signal$",
        ),
        ("approve", [1], InvalidInput, "^the signal data must be a JSON object, got an array$"),
        ("approve", "yes", InvalidInput, "^the signal data must be a JSON object, got a string$"),
        ("nope", {}, StepNotFound, "^step 'nope' not found in run order-1; valid steps: step_001"),
    ],
)
def test_a_bad_signal_is_refused(
    cluster: FakeCluster, client: Client, ref: str, data: Any, error: type[Exception], message: str
) -> None:
    cluster.put("workflowruns", make_run(steps=WAITING, pauseReason="wait"))
    with pytest.raises(error, match=message):
        client.signal_step("order-1", ref, data)
    assert cluster.writes() == []


# --- injection ---------------------------------------------------------------------------------------


def test_inject_creates_an_injection_and_returns_the_previous_output(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run())
    cluster.api.injection_answer = {"phase": "Applied", "previousOutput": {"valid": True, "amount": 99}}
    previous = client.inject_step_output(
        "order-1",
        "validate-payment",
        {"valid": True, "amount": 50},
        "Corrected amount for partial refund test",
    )
    assert previous == {"valid": True, "amount": 99}
    assert cluster.writes() == [
        (
            "POST",
            f"/apis/{GV}/namespaces/{NS}/injections",
            {
                "apiVersion": GV,
                "kind": "Injection",
                "metadata": {
                    "generateName": "order-1-inject-",
                    "namespace": NS,
                    "name": "order-1-inject-00001",
                },
                "spec": {
                    "runName": "order-1",
                    "step": "step_002",
                    "output": {"valid": True, "amount": 50},
                    "reason": "Corrected amount for partial refund test",
                },
            },
        )
    ]
    assert len(cluster.requests(kmock.action.WATCH, "injections")) == 1


def test_inject_into_a_failed_step_of_a_failed_run_is_allowed(cluster: FakeCluster, client: Client) -> None:
    steps = [PAUSED_STEPS[0], step("step_002", "validate-payment", "Failed"), PAUSED_STEPS[2]]
    cluster.put("workflowruns", make_run(phase="Failed", steps=steps))
    cluster.api.injection_answer = {"phase": "Applied"}
    assert client.inject_step_output("order-1", "step_002", {"recovered": True}, "API timeout") is None


def test_a_rejected_injection_raises_with_the_operators_message(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run())
    cluster.api.injection_answer = {
        "phase": "Rejected",
        "message": "run order-1 resumed before the injection",
    }
    with pytest.raises(InjectionRejected) as caught:
        client.inject_step_output("order-1", "step_002", {}, "why not")
    assert str(caught.value) == (
        "injection order-1-inject-00001 was rejected: run order-1 resumed before the injection"
    )
    assert caught.value.injection == "order-1-inject-00001"


def test_an_unanswered_injection_times_out_and_says_what_to_check(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.put("workflowruns", make_run())
    with pytest.raises(
        Timeout,
        match=r"^injection order-1-inject-00001 is still Pending after 0\.3s: is the Retcon operator running",
    ):
        client.inject_step_output("order-1", "step_002", {}, "why not", timeout=0.3)


@pytest.mark.parametrize(
    ("run", "ref", "output", "reason", "error", "message"),
    [
        (make_run(phase="Running"), "step_002", {}, "r", NotPaused,
         "^run order-1 is Running: pause it first, then inject once it is Paused$"),
        (make_run(phase="Pausing"), "step_002", {}, "r", NotPaused,
         "^run order-1 is Pausing: its running steps are still finishing; inject once it is Paused$"),
        (make_run(phase="Succeeded"), "step_002", {}, "r", NotPaused,
         "^run order-1 is Succeeded: a finished run's history cannot be edited; start a new run instead$"),
        (make_run(), "step_003", {}, "r", InvalidInput,
         r"^step step_003 \(send-notification\) is Pending: only a Succeeded or Failed step can be injected into;"
         " it has not run yet, so it has no output to replace$"),
        (make_run(steps=[step("step_001", "a", "Running")]), "a", {}, "r", InvalidInput,
         r"^step step_001 \(a\) is Running: .*; wait until it finishes, then inject$"),
        (make_run(), "charge", {}, "r", StepNotFound,
         "^step 'charge' not found in run order-1; valid steps: step_001 .fetch-order., step_002"),
        (make_run(), "step_002", [1, 2], "r", InvalidInput, "^the output must be a JSON object, got an array$"),
        (make_run(), "step_002", 7, "r", InvalidInput, "^the output must be a JSON object, got a number$"),
        (make_run(), "step_002", {}, "  ", InvalidInput, "^a reason is required: say why, it goes into the audit trail$"),
        (make_run(), "step_002", {"x": "y" * (1024 * 1024)}, "r", InvalidInput, "^the output is 1048584 bytes of JSON; the limit is 1048576"),
    ],
)  # fmt: skip
def test_a_bad_injection_is_refused_before_anything_is_created(
    cluster: FakeCluster,
    client: Client,
    run: dict[str, Any],
    ref: str,
    output: Any,
    reason: str,
    error: type[Exception],
    message: str,
) -> None:
    cluster.put("workflowruns", run)
    with pytest.raises(error, match=message):
        client.inject_step_output("order-1", ref, output, reason)
    assert cluster.writes() == []


# --- starting a run, adding a step -------------------------------------------------------------------


def workflow_object(name: str = "order-processing") -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"steps": [{"name": "s", "image": "busybox"}]},
    }


def test_start_run_creates_a_workflow_run_with_a_generated_name(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflows", workflow_object())
    run = client.start_run("order-processing", {"orderId": "123"}, tenant="acme")
    assert (run.name, run.workflow, run.phase, run.tenant) == (
        "order-processing-00001",
        "order-processing",
        "Pending",
        "acme",
    )
    assert cluster.writes() == [
        (
            "POST",
            f"/apis/{GV}/namespaces/{NS}/workflowruns",
            {
                "apiVersion": GV,
                "kind": "WorkflowRun",
                "metadata": {
                    "namespace": NS,
                    "generateName": "order-processing-",
                    "name": "order-processing-00001",
                },
                "spec": {
                    "workflowRef": {"name": "order-processing"},
                    "input": {"orderId": "123"},
                    "tenant": "acme",
                },
            },
        )
    ]


def test_start_run_with_a_name_uses_it(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflows", workflow_object())
    assert client.start_run("order-processing", name="order-7").name == "order-7"
    ((_, _, body),) = cluster.writes()
    assert body["metadata"] == {"namespace": NS, "name": "order-7"}
    assert body["spec"]["input"] == {}


@pytest.mark.parametrize(
    ("workflow", "input", "name", "message"),
    [
        ("nope", {}, None, "^workflow nope not found in namespace shop: apply it first$"),
        ("order-processing", [1], None, "^the input must be a JSON object, got an array$"),
        ("order-processing", {}, "Bad_Name", "^run name 'Bad_Name' is not a valid Kubernetes name"),
        (
            "order-processing",
            {},
            "order-1",
            "^run order-1 already exists in namespace shop: choose another name$",
        ),
    ],
)
def test_a_bad_start_is_refused(
    cluster: FakeCluster, client: Client, workflow: str, input: Any, name: str | None, message: str
) -> None:
    cluster.put("workflows", workflow_object())
    cluster.put("workflowruns", make_run())
    with pytest.raises(InvalidInput, match=message):
        client.start_run(workflow, input, name=name)
    assert [method for method, _, _ in cluster.writes()] == (["POST"] if name == "order-1" else [])


NEW_STEP = {"name": "fraud-check", "function": "shop.steps:fraud"}


def test_add_step_annotates_the_run_with_the_request(cluster: FakeCluster, client: Client) -> None:
    cluster.put("workflowruns", make_run(phase="Running"))
    client.add_step("order-1", "step_002", NEW_STEP, "Extra check for this customer")
    ((method, path, body),) = cluster.writes()
    assert (method, path) == ("PATCH", RUN_PATH)
    value = body["metadata"]["annotations"]["retcon.dev/add-step"]
    assert value == (
        '{"after":"validate-payment","step":{"name":"fraud-check","function":"shop.steps:fraud"},'
        '"reason":"Extra check for this customer"}'
    )
    assert json.loads(value)["after"] == "validate-payment"


@pytest.mark.parametrize(
    ("after", "new", "annotations", "message"),
    [
        ("fetch-order", NEW_STEP, {}, "^step fetch-order is not an injection point of run order-1 .*: validate-payment"),
        ("validate-payment", {"name": "fetch-order", "image": "busybox"}, {},
         "^run order-1 already has a step named fetch-order; choose another name$"),
        ("validate-payment", {"name": "x"}, {}, "^the new step is invalid: .*needs a function or an image"),
        ("validate-payment", {"name": "x", "image": "b", "dynamicInjection": []}, {},
         "^the new step is invalid: dynamicInjection: Extra inputs are not permitted$"),
        ("validate-payment", NEW_STEP, {"retcon.dev/add-step": "{}"},
         "^run order-1 has an add-step request the operator has not taken yet"),
    ],
)  # fmt: skip
def test_a_bad_add_step_is_refused(
    cluster: FakeCluster,
    client: Client,
    after: str,
    new: dict[str, Any],
    annotations: dict[str, str],
    message: str,
) -> None:
    cluster.put("workflowruns", make_run(phase="Running", annotations=annotations))
    with pytest.raises(InvalidInput, match=message):
        client.add_step("order-1", after, new, "because")
    assert cluster.writes() == []


# --- errors are one line; the async client is the same SDK -------------------------------------------


def test_every_error_message_is_one_line() -> None:
    error = InvalidInput("first line\n  second   line\n")
    assert str(error) == "first line second line"
    assert error.message == str(error)


async def test_the_async_client_pauses_and_watches(cluster: FakeCluster) -> None:
    cluster.put("workflowruns", make_run(phase="Pausing", annotations={"retcon.dev/pause": "true"}))
    async with AsyncClient(kubeconfig=cluster.kubeconfig) as sdk:
        assert await sdk.pause_run("order-1") == "pause_requested"
        seen = []
        async for snapshot in sdk.watch_run("order-1"):
            seen.append(snapshot.phase)
            if len(seen) == 1:
                await asyncio.to_thread(
                    cluster.set_status, "order-1", {"phase": "Paused", "pauseReason": "injection"}
                )
        assert seen == ["Pausing", "Paused"]
        state = await sdk.get_paused_state("order-1")
        assert state.pause_reason == "injection"


def test_a_dropped_watch_reconnects_but_a_refused_one_raises() -> None:
    from lightkube import ApiError  # noqa: PLC0415 - only this test builds lightkube errors
    from lightkube.models.meta_v1 import Status  # noqa: PLC0415
    from lightkube.types import OnErrorAction  # noqa: PLC0415

    from retcon.client._async import _retry_watch  # noqa: PLC0415

    gone = ApiError(status=Status(code=410, message="too old resource version"))
    forbidden = ApiError(status=Status(code=403, message="forbidden"))
    assert _retry_watch(gone, 1).action is OnErrorAction.RETRY
    assert _retry_watch(ConnectionResetError(), 2).action is OnErrorAction.RETRY
    assert _retry_watch(ConnectionResetError(), 6).action is OnErrorAction.RAISE
    assert _retry_watch(forbidden, 1).action is OnErrorAction.RAISE
