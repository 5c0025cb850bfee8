"""Test wiring: a real control plane for the cluster tests, one namespace per test.

Tests under ``tests/integration`` and ``tests/e2e`` are marked ``cluster``
automatically; select the fast ones with ``-m "not cluster"``.

The cluster is the local one from ``localkube`` (brought up on demand, and
stopped at the end of the session if this session started it), or an existing
cluster named *explicitly* by ``RETCON_TEST_KUBECONFIG``. The ambient
``KUBECONFIG`` is never used, so tests cannot touch a cluster by accident.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from localkube import cluster as localkube_cluster
from localkube.build import ensure_binaries
from localkube.layout import Layout
from tests.operator_process import OperatorProcess
from tests.support import ClusterHandle, wait_for

REPO = Path(__file__).resolve().parent.parent
CLUSTER_DIRS = ("integration", "e2e", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in CLUSTER_DIRS for part in Path(str(item.fspath)).parts):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    external = os.environ.get("RETCON_TEST_KUBECONFIG")
    layout = Layout.from_env()
    ensure_binaries(layout)
    kubectl_bin = layout.binary("kubectl")
    if external:
        yield ClusterHandle(Path(external), kubectl_bin, Path("/nonexistent"), 0, "", None)
        return
    was_up = localkube_cluster.status(layout).healthy
    localkube_cluster.up(layout, quiet=True)
    settings = localkube_cluster.Settings.load(layout)
    yield ClusterHandle(
        kubeconfig=layout.kubeconfig,
        kubectl_bin=kubectl_bin,
        kubelet_root=layout.kubelet_root,
        api_port=settings.api_port,
        node_name=localkube_cluster.NODE_NAME,
        layout=layout,
    )
    if not was_up and not os.environ.get("RETCON_KEEP_CLUSTER"):
        localkube_cluster.down(layout)


@pytest.fixture
def kubectl(cluster: ClusterHandle) -> Callable[..., subprocess.CompletedProcess[str]]:
    return cluster.kubectl


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount, deleted after the test."""
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    cluster.kubectl("create", "namespace", name)
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(cluster: ClusterHandle) -> None:
    """Retcon's generated CRDs, applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "stepresult-policy.yaml"))
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "user-roles.yaml"))


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The real operator, watching every namespace, with its admission webhook on loopback."""
    quickstart = Path(os.environ.get("RETCON_STATE", Path.home() / ".local/state/retcon")) / "operator.pid"
    if quickstart.exists():
        pid = quickstart.read_text().strip()
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            pytest.exit(
                f"an operator started by hack/quickstart is running (pid {pid}) and would race the tests' "
                f"operator: stop it with `kill {pid}`",
                returncode=2,
            )
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # The operator has an identity of its own (in a cluster, its ServiceAccount): the admin's
    # interventions in tests are then audited as the admin's.
    identity = cluster.user("retcon-operator", "system:masters") if cluster.layout else cluster.kubeconfig
    process = OperatorProcess(kubeconfig=identity, log=log).start()
    # A server-side dry run goes through admission: it passes once this operator's webhook answers
    # (a configuration left by an earlier, killed operator would still point at a dead port).
    probe = yaml.safe_dump(
        {
            "apiVersion": "retcon.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "admission-probe", "namespace": "default"},
            "spec": {"steps": [{"name": "a", "function": "m:f"}]},
        }
    )
    wait_for(
        "the operator's admission webhook to answer",
        lambda: (
            cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=probe, check=False).returncode == 0
        ),
        timeout=60,
    )
    yield process
    process.stop()
    if os.environ.get("RETCON_TEST_DEBUG"):
        print(log.read_text())
