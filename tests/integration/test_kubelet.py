"""The process kubelet runs real pods: environment, volumes, tokens, restarts, deletion, logs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from localkube.errors import LocalkubeError
from localkube.kubelet import find_log
from localkube.kubelet.downward import parse_quantity
from tests.support import ClusterHandle, wait_for

pytestmark = pytest.mark.cluster

PY = sys.executable  # the host's Python: images are ignored, so pods run host tools
TERMINAL = ("Succeeded", "Failed")


def _container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ignored", "command": ["sh", "-c", script], **extra}


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kubelet-test"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": containers,
            **spec,
        },
    }


def _get_pod(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.get_json("pod", name, "-n", namespace)
    return pod


def _wait_phase(
    cluster: ClusterHandle, namespace: str, name: str, phases: tuple[str, ...] = TERMINAL, timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = _get_pod(cluster, namespace, name)
        return pod if pod.get("status", {}).get("phase") in phases else None

    result: dict[str, Any] = wait_for(f"pod {namespace}/{name} to reach {'/'.join(phases)}", check, timeout)
    return result


def _run(
    cluster: ClusterHandle, namespace: str, manifest: dict[str, Any], timeout: float = 30
) -> dict[str, Any]:
    cluster.apply(manifest, namespace)
    return _wait_phase(cluster, namespace, manifest["metadata"]["name"], timeout=timeout)


def _log(cluster: ClusterHandle, namespace: str, pod: str, container: str | None = None) -> str:
    return find_log(cluster.kubelet_root, namespace, pod, container).read_text()


def _status_of(pod: dict[str, Any], container: str) -> dict[str, Any]:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"]["containerStatuses"]
    found: dict[str, Any] = next(s for s in statuses if s["name"] == container)
    return found


# --- node ----------------------------------------------------------------------------------------


def test_the_node_is_ready_with_capacity_and_a_fresh_lease(cluster: ClusterHandle) -> None:
    node = cluster.get_json("node", cluster.node_name)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    allocatable = node["status"]["allocatable"]
    assert parse_quantity(allocatable["pods"]) == 1000  # the apiserver writes it as "1k"
    assert parse_quantity(allocatable["cpu"]) == 64
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses == {"InternalIP": "127.0.0.1", "Hostname": cluster.node_name}
    lease = cluster.get_json("lease", cluster.node_name, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == cluster.node_name
    renewed = lease["spec"]["renewTime"]
    later = wait_for(
        "the lease to be renewed",
        lambda: (
            cluster.get_json("lease", cluster.node_name, "-n", "kube-node-lease")["spec"]["renewTime"]
            != renewed
        ),
        timeout=15,
        interval=0.5,
    )
    assert later


# --- environment and command line ---------------------------------------------------------------


def test_env_env_from_value_from_and_expansion_reach_the_process(
    cluster: ClusterHandle, namespace: str
) -> None:
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=COLOR=blue")
    cluster.kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=TOKEN=s3cret")
    container = _container(
        "main",
        'echo "color=$CFG_COLOR token=$TOKEN greeting=$GREETING pod=$POD ns=$NS node=$NODE ip=$IP '
        'label=$APP from=$FROM_CM host=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT arg=$1"',
        envFrom=[
            {"prefix": "CFG_", "configMapRef": {"name": "settings"}},
            {"secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
        env=[
            {"name": "WHO", "value": "world"},
            {"name": "GREETING", "value": "hello-$(WHO)-$$(WHO)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}}},
        ],
    )
    # `sh -c SCRIPT` takes its first argument as $0, so args become "$0" and "$1".
    container["args"] = ["sh", "$(GREETING)"]
    pod = _run(cluster, namespace, _pod("env", [container]))
    assert pod["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "env").strip() == (
        f"color=blue token=s3cret greeting=hello-world-$(WHO) pod=env ns={namespace} "
        f"node={cluster.node_name} ip=127.0.0.1 label=kubelet-test from=blue "
        f"host=127.0.0.1:{cluster.api_port} arg=hello-world-$(WHO)"
    )


def test_only_listed_host_variables_are_inherited(cluster: ClusterHandle, namespace: str) -> None:
    pod = _run(cluster, namespace, _pod("inherit", [_container("main", "env | cut -d= -f1 | sort")]))
    assert pod["status"]["phase"] == "Succeeded"
    names = set(_log(cluster, namespace, "inherit").split())
    assert {"PATH", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} <= names
    assert "KUBECONFIG" not in names
    assert names <= {
        *("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYENV_ROOT", "PYENV_VERSION", "VIRTUAL_ENV", "PYTHONPATH"),
        *("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOSTNAME", "PWD", "SHLVL", "OLDPWD", "_"),
    }


def test_working_dir_is_created_and_used(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> None:
    workdir = tmp_path / "not" / "there" / "yet"
    pod = _run(cluster, namespace, _pod("wd", [_container("main", "pwd", workingDir=str(workdir))]))
    assert pod["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "wd").strip() == str(workdir)
    assert workdir.is_dir()


def test_a_container_without_a_command_fails_with_a_clear_message(
    cluster: ClusterHandle, namespace: str
) -> None:
    pod = _run(cluster, namespace, _pod("nocmd", [{"name": "main", "image": "busybox"}]))
    assert pod["status"]["phase"] == "Failed"
    terminated = _status_of(pod, "main")["state"]["terminated"]
    assert terminated["reason"] == "StartError"
    assert "neither command nor args" in terminated["message"]


def test_a_missing_config_map_waits_until_it_exists(cluster: ClusterHandle, namespace: str) -> None:
    container = _container(
        "main",
        "echo $V",
        env=[{"name": "V", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "v"}}}],
    )
    cluster.apply(_pod("waits", [container]), namespace)

    def waiting_reason() -> str | None:
        state = _get_pod(cluster, namespace, "waits").get("status", {}).get("containerStatuses", [{}])[0]
        return str(state.get("state", {}).get("waiting", {}).get("reason", "")) or None

    assert wait_for("the container to wait for its ConfigMap", waiting_reason) == "CreateContainerConfigError"
    cluster.kubectl("create", "configmap", "later", "-n", namespace, "--from-literal=v=arrived")
    pod = _wait_phase(cluster, namespace, "waits")
    assert pod["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "waits").strip() == "arrived"


# --- init containers and volumes -----------------------------------------------------------------


def test_init_containers_run_in_order_before_the_containers(cluster: ClusterHandle, namespace: str) -> None:
    mount = [{"name": "shared", "mountPath": "/shared"}]
    pod = _pod(
        "init",
        [_container("main", "echo main >> /shared/order; cat /shared/order", volumeMounts=mount)],
        initContainers=[
            _container("first", "sleep 0.2; echo first >> /shared/order", volumeMounts=mount),
            _container("second", "echo second >> /shared/order", volumeMounts=mount),
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    result = _run(cluster, namespace, pod)
    assert result["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "init", "main").split() == ["first", "second", "main"]
    first = _status_of(result, "first")["state"]["terminated"]
    assert (first["exitCode"], first["reason"]) == (0, "Completed")
    conditions = {c["type"]: c["status"] for c in result["status"]["conditions"]}
    assert conditions["Initialized"] == "True"


def test_a_failed_init_container_fails_a_never_pod_without_running_containers(
    cluster: ClusterHandle, namespace: str
) -> None:
    pod = _pod("badinit", [_container("main", "echo ran")], initContainers=[_container("init", "exit 7")])
    result = _run(cluster, namespace, pod)
    assert result["status"]["phase"] == "Failed"
    assert _status_of(result, "init")["state"]["terminated"]["exitCode"] == 7
    assert "running" not in _status_of(result, "main")["state"]
    with pytest.raises(LocalkubeError, match="no log for container 'main'"):
        find_log(cluster.kubelet_root, namespace, "badinit", "main")


def test_a_sidecar_runs_beside_the_containers_and_stops_after_them(
    cluster: ClusterHandle, namespace: str
) -> None:
    mount = [{"name": "shared", "mountPath": "/shared"}]
    sidecar = _container(
        "proxy",
        "trap 'exit 0' TERM; echo proxy-up > /shared/proxy; while :; do sleep 0.05; done",
        restartPolicy="Always",
        volumeMounts=mount,
        # Without a startup probe a sidecar counts as started once its process runs.
        startupProbe={"exec": {"command": ["test", "-f", "/shared/proxy"]}, "periodSeconds": 1},
    )
    main = _container("main", "cat /shared/proxy", volumeMounts=mount)
    pod = _pod("sidecar", [main], initContainers=[sidecar], volumes=[{"name": "shared", "emptyDir": {}}])
    result = _run(cluster, namespace, pod)
    assert result["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "sidecar", "main").strip() == "proxy-up"
    assert "terminated" in _status_of(result, "proxy")["state"]


def test_an_unsupported_volume_fails_the_pod_with_a_clear_message(
    cluster: ClusterHandle, namespace: str
) -> None:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "nope"}}]
    result = _run(cluster, namespace, _pod("pvc", [_container("main", "true")], volumes=volumes))
    assert result["status"]["phase"] == "Failed"
    assert "persistentVolumeClaim volumes are not supported" in result["status"]["message"]


def test_two_containers_share_an_empty_dir(cluster: ClusterHandle, namespace: str) -> None:
    mount = [{"name": "scratch", "mountPath": "/scratch"}]
    pod = _pod(
        "shared",
        [
            _container(
                "writer",
                "echo $HOSTNAME-wrote > /scratch/note.tmp && mv /scratch/note.tmp /scratch/note",
                volumeMounts=mount,
            ),
            _container(
                "reader",
                "for i in $(seq 100); do [ -f /scratch/note ] && exec cat /scratch/note; sleep 0.05; done; "
                "exit 1",
                volumeMounts=mount,
            ),
        ],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    result = _run(cluster, namespace, pod)
    assert result["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "shared", "reader").strip() == "shared-wrote"


def test_config_map_secret_and_downward_api_volumes(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "files", "-n", namespace, "--from-literal=app.conf=debug=true")
    cluster.kubectl("create", "secret", "generic", "keys", "-n", namespace, "--from-literal=password=hunter2")
    script = (
        "cat /etc/app/conf/app.conf; echo; cat /etc/keys/password; echo; cat /etc/info/name; echo; "
        "cat /etc/info/labels; echo; stat -c %a /etc/keys/password; "
        "cat /etc/app.conf; echo; touch /etc/app/x 2>/dev/null && echo writable || echo read-only"
    )
    container = _container(
        "main",
        script,
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/app"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "conf/app.conf"},
            {"name": "sec", "mountPath": "/etc/keys"},
            {"name": "info", "mountPath": "/etc/info"},
        ],
    )
    volumes = [
        {
            "name": "cfg",
            "configMap": {"name": "files", "items": [{"key": "app.conf", "path": "conf/app.conf"}]},
        },
        {"name": "sec", "secret": {"secretName": "keys", "defaultMode": 0o400}},
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                ]
            },
        },
    ]
    result = _run(cluster, namespace, _pod("vols", [container], volumes=volumes))
    assert result["status"]["phase"] == "Succeeded", _log(cluster, namespace, "vols")
    assert _log(cluster, namespace, "vols").splitlines() == [
        "debug=true",
        "hunter2",
        "vols",
        'app="kubelet-test"',
        "400",
        "debug=true",
        "read-only",
    ]


def test_host_path_volumes_bind_the_host_folder(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "in").write_text("from the host")
    container = _container(
        "main", "cat /host/in; echo back > /host/out", volumeMounts=[{"name": "h", "mountPath": "/host"}]
    )
    volumes = [{"name": "h", "hostPath": {"path": str(tmp_path), "type": "Directory"}}]
    result = _run(cluster, namespace, _pod("hostpath", [container], volumes=volumes))
    assert result["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "hostpath") == "from the host"
    assert (tmp_path / "out").read_text() == "back\n"


# --- the ServiceAccount token ---------------------------------------------------------------------

IN_CLUSTER_CLIENT = """
import json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
namespace = open(sa + "/namespace").read()
context = ssl.create_default_context(cafile=sa + "/ca.crt")
server = os.environ["KUBERNETES_SERVICE_HOST"] + ":" + os.environ["KUBERNETES_SERVICE_PORT"]
url = "https://" + server + "/api/v1/namespaces/" + namespace + "/pods/" + os.environ["POD_NAME"]
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
try:
    with urllib.request.urlopen(request, context=context) as response:
        print(response.status, json.load(response)["metadata"]["name"])
except urllib.error.HTTPError as error:
    print(error.code, json.load(error)["reason"])
"""


def test_the_projected_service_account_token_works_and_rbac_applies(
    cluster: ClusterHandle, namespace: str
) -> None:
    client = {
        "name": "main",
        "image": "ignored",
        "command": [PY, "-c", IN_CLUSTER_CLIENT],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    denied = _run(cluster, namespace, _pod("denied", [client]))
    assert denied["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "denied").strip() == "403 Forbidden"

    cluster.kubectl("create", "role", "read-pods", "-n", namespace, "--verb=get", "--resource=pods")
    cluster.kubectl(
        "create", "rolebinding", "read-pods", "-n", namespace, "--role=read-pods",
        f"--serviceaccount={namespace}:default",
    )  # fmt: skip
    allowed = _run(cluster, namespace, _pod("allowed", [client]))
    assert allowed["status"]["phase"] == "Succeeded"
    assert _log(cluster, namespace, "allowed").strip() == "200 allowed"
    volumes = [v["name"] for v in allowed["spec"]["volumes"]]
    assert any(name.startswith("kube-api-access-") for name in volumes)  # injected by admission


# --- status, restarts, probes ----------------------------------------------------------------------


def test_exit_code_and_termination_message_reach_the_status(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    custom_path = str(tmp_path / "my-term")
    pod = _pod(
        "term",
        [
            _container("msg", "printf 'disk full' > /dev/termination-log; exit 3"),
            _container("custom", f"echo done > {custom_path}; exit 0", terminationMessagePath=custom_path),
            _container(
                "fallback", "echo last words; exit 2", terminationMessagePolicy="FallbackToLogsOnError"
            ),
        ],
    )
    result = _run(cluster, namespace, pod)
    assert result["status"]["phase"] == "Failed"
    msg = _status_of(result, "msg")["state"]["terminated"]
    assert (msg["exitCode"], msg["reason"], msg["message"]) == (3, "Error", "disk full")
    assert msg["containerID"].startswith("process://")
    custom = _status_of(result, "custom")["state"]["terminated"]
    assert (custom["exitCode"], custom["reason"], custom["message"]) == (0, "Completed", "done\n")
    fallback = _status_of(result, "fallback")["state"]["terminated"]
    assert fallback["message"] == "last words\n"


def test_running_status_looks_like_a_kubelets(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(_pod("runner", [_container("main", "sleep 30")]), namespace)
    pod = _wait_phase(cluster, namespace, "runner", ("Running",))
    status = pod["status"]
    assert (status["podIP"], status["hostIP"]) == ("127.0.0.1", "127.0.0.1")
    assert status["startTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    main = _status_of(pod, "main")
    assert (main["ready"], main["started"], main["restartCount"]) == (True, True, 0)
    assert main["state"]["running"]["startedAt"]
    pid = int(main["containerID"].removeprefix("process://"))
    assert Path(f"/proc/{pid}").exists()


def test_on_failure_restarts_the_failed_container_in_place(cluster: ClusterHandle, namespace: str) -> None:
    script = "echo try >> /data/tries; [ $(wc -l < /data/tries) -ge 3 ]"
    pod = _pod(
        "retry",
        [_container("main", script, volumeMounts=[{"name": "data", "mountPath": "/data"}])],
        restartPolicy="OnFailure",
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    result = _run(cluster, namespace, pod, timeout=30)
    assert result["status"]["phase"] == "Succeeded"
    main = _status_of(result, "main")
    assert main["restartCount"] == 2
    assert main["lastState"]["terminated"]["exitCode"] == 1
    assert _log(cluster, namespace, "retry") == ""  # restarts append; the script prints nothing


def test_readiness_follows_an_http_probe(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> None:
    port = 20000 + (time.monotonic_ns() // 1000) % 20000
    serve = f"cd {tmp_path} && exec {PY} -m http.server {port} --bind 127.0.0.1"
    container = _container(
        "web",
        f"sleep 1; {serve}",
        readinessProbe={
            "httpGet": {"path": "/ready", "port": port},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    cluster.apply(_pod("probed", [container], restartPolicy="Always"), namespace)
    pod = _wait_phase(cluster, namespace, "probed", ("Running",))
    assert _status_of(pod, "web")["ready"] is False
    (tmp_path / "ready").write_text("ok")
    wait_for(
        "the pod to become ready", lambda: _status_of(_get_pod(cluster, namespace, "probed"), "web")["ready"]
    )
    (tmp_path / "ready").unlink()
    wait_for(
        "the pod to become unready",
        lambda: not _status_of(_get_pod(cluster, namespace, "probed"), "web")["ready"],
    )


def test_a_liveness_failure_restarts_the_container(cluster: ClusterHandle, namespace: str) -> None:
    container = _container(
        "main",
        "sleep 300",
        livenessProbe={
            "exec": {"command": ["test", "-f", "/nonexistent"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    cluster.apply(
        _pod("live", [container], restartPolicy="Always", terminationGracePeriodSeconds=1), namespace
    )
    restarted = wait_for(
        "a restart after the liveness failure",
        lambda: _status_of(_get_pod(cluster, namespace, "live"), "main").get("restartCount", 0) >= 1,
    )
    assert restarted


def test_active_deadline_fails_the_pod(cluster: ClusterHandle, namespace: str) -> None:
    pod = _run(
        cluster, namespace, _pod("deadline", [_container("main", "sleep 60")], activeDeadlineSeconds=1)
    )
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")


# --- deletion and logs --------------------------------------------------------------------------


def test_deleting_a_running_pod_sends_sigterm_and_removes_it(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    script = (
        "trap 'echo got-term > /marker/term; exit 0' TERM; echo up > /marker/up; while :; do sleep 0.1; done"
    )
    container = _container("main", script, volumeMounts=[{"name": "m", "mountPath": "/marker"}])
    volumes = [{"name": "m", "hostPath": {"path": str(tmp_path)}}]
    cluster.apply(_pod("victim", [container], volumes=volumes, terminationGracePeriodSeconds=20), namespace)
    wait_for("the container to start", (tmp_path / "up").exists)
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "victim", "-n", namespace, "--wait=true", timeout=30)
    assert time.monotonic() - started < 10  # SIGTERM ended it, not the 20 s grace
    assert (tmp_path / "term").read_text() == "got-term\n"
    gone = cluster.kubectl("get", "pod", "victim", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_a_pod_deleted_before_it_started_is_just_removed(cluster: ClusterHandle, namespace: str) -> None:
    volumes = [{"name": "cfg", "configMap": {"name": "never-created"}}]
    mounts = [{"name": "cfg", "mountPath": "/cfg"}]
    pod = _pod("unstarted", [_container("main", "true", volumeMounts=mounts)], volumes=volumes)
    pod["spec"]["terminationGracePeriodSeconds"] = 30
    cluster.apply(pod, namespace)

    def waiting_message() -> str:
        statuses = _get_pod(cluster, namespace, "unstarted").get("status", {}).get("containerStatuses", [])
        return str(statuses[0]["state"].get("waiting", {}).get("message", "")) if statuses else ""

    assert 'configmap "never-created" not found' in wait_for(
        "the pod to wait for its volume", waiting_message
    )
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "unstarted", "-n", namespace, "--wait=true", timeout=30)
    assert time.monotonic() - started < 5  # nothing ran, so nothing waited for the 30 s grace
    with pytest.raises(LocalkubeError):
        find_log(cluster.kubelet_root, namespace, "unstarted", "main")


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    script = "trap '' TERM; echo $$$$ > /marker/pid; while :; do sleep 0.1; done"
    container = _container("main", script, volumeMounts=[{"name": "m", "mountPath": "/marker"}])
    volumes = [{"name": "m", "hostPath": {"path": str(tmp_path)}}]
    cluster.apply(_pod("stubborn", [container], volumes=volumes, terminationGracePeriodSeconds=1), namespace)
    wait_for("the container to start", (tmp_path / "pid").exists)
    pid = int((tmp_path / "pid").read_text())
    cluster.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=true", timeout=30)
    assert not Path(f"/proc/{pid}").exists()


def test_a_force_deleted_pod_has_its_processes_killed(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    script = "echo $$$$ > /marker/pid; exec sleep 300"
    container = _container("main", script, volumeMounts=[{"name": "m", "mountPath": "/marker"}])
    volumes = [{"name": "m", "hostPath": {"path": str(tmp_path)}}]
    cluster.apply(_pod("forced", [container], volumes=volumes), namespace)
    wait_for("the container to start", (tmp_path / "pid").exists)
    pid = int((tmp_path / "pid").read_text())
    cluster.kubectl("delete", "pod", "forced", "-n", namespace, "--grace-period=0", "--force")
    wait_for(f"process {pid} to end", lambda: not Path(f"/proc/{pid}").exists(), timeout=10)


def test_logs_are_kept_per_container_and_found_by_name(cluster: ClusterHandle, namespace: str) -> None:
    pod = _pod("logs", [_container("out", "echo to-stdout; echo to-stderr >&2"), _container("quiet", "true")])
    assert _run(cluster, namespace, pod)["status"]["phase"] == "Succeeded"
    path = find_log(cluster.kubelet_root, namespace, "logs", "out")
    assert path.read_text() == "to-stdout\nto-stderr\n"
    assert path.parent.name == f"{namespace}_logs_{_get_pod(cluster, namespace, 'logs')['metadata']['uid']}"
    with pytest.raises(LocalkubeError, match="out, quiet"):
        find_log(cluster.kubelet_root, namespace, "logs")


# --- controllers on top ------------------------------------------------------------------------


def test_a_burst_of_job_pods_all_succeed_quickly(cluster: ClusterHandle, namespace: str) -> None:
    count = 40
    pods = [_pod(f"burst-{i}", [_container("main", "true")]) for i in range(count)]
    started = time.monotonic()
    cluster.apply(pods, namespace)

    def all_succeeded() -> bool:
        listing = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
        succeeded: int = sum(p["status"].get("phase") == "Succeeded" for p in listing["items"])
        return succeeded == count

    wait_for(f"{count} pods to succeed", all_succeeded, timeout=60, interval=0.2)
    assert time.monotonic() - started < 30


def test_a_deployment_becomes_available(cluster: ClusterHandle, namespace: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [_container("web", "sleep 300")]},
            },
        },
    }
    cluster.apply(deployment, namespace)
    wait_for(
        "the deployment to have 2 available replicas",
        lambda: (
            cluster.get_json("deployment", "web", "-n", namespace).get("status", {}).get("availableReplicas")
            == 2
        ),
    )
