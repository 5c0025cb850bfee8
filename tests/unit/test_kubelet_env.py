"""The process kubelet resolves a container's environment and command line as Kubernetes does."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localkube.kubelet.env import (
    build_command,
    build_container_env,
    build_process_env,
    expand,
    inherited_env,
    referenced_objects,
    service_env,
)
from localkube.kubelet.objects import Json, MissingReferenceError, PodSpecError

NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
PLAIN = st.text(alphabet=st.characters(exclude_characters="$", exclude_categories=["Cs"]), max_size=20)


def reference_expand(text: str, mapping: dict[str, str]) -> str:
    """An independent statement of the rules, by regular expression."""

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "$$":
            return "$"
        if found.startswith("$(") and found.endswith(")"):
            return mapping.get(found[2:-1], found)
        return found

    return re.sub(r"\$\$|\$\([^)]*\)|\$\(|\$.", replace, text, flags=re.DOTALL)


# --- $(VAR) expansion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)z", "xaybz"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("$", "$"),
        ("a$", "a$"),
        ("$()", "$()"),
        ("$(A)$(A)", "aa"),
        ("$$", "$"),
        ("$$$$", "$$"),
    ],
)
def test_expansion_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == expected


@given(PLAIN)
def test_text_without_a_dollar_is_unchanged(text: str) -> None:
    assert expand(text, {"A": "x"}) == text


@given(
    st.lists(st.one_of(PLAIN, NAMES.map(lambda n: f"$({n})"), st.just("$$"), st.just("$")), max_size=8),
    st.dictionaries(NAMES, PLAIN, max_size=4),
)
def test_expansion_agrees_with_an_independent_statement_of_the_rules(
    parts: list[str], mapping: dict[str, str]
) -> None:
    text = "".join(parts)
    assert expand(text, mapping) == reference_expand(text, mapping)


@given(NAMES, st.text(max_size=20))
def test_values_are_not_expanded_twice(name: str, value: str) -> None:
    # A value that itself looks like a reference is inserted literally.
    assert expand(f"$({name})", {name: value, "OTHER": "no"}) == value


@given(NAMES)
def test_an_escaped_reference_is_never_expanded(name: str) -> None:
    assert expand(f"$$({name})", {name: "value"}) == f"$({name})"


# --- the environment --------------------------------------------------------------------------


def _pod(**spec: object) -> Json:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {"nodeName": "node-a", "serviceAccountName": "runner", **spec},
    }


CONFIG = {"data": {"COLOR": "blue", "SIZE": "L", "bad=key": "skipped"}}
SECRET = {"data": {"TOKEN": base64.b64encode(b"s3cret").decode()}}


def _lookup(kind: str, name: str) -> Json | None:
    return {("configmap", "settings"): CONFIG, ("secret", "creds"): SECRET}.get((kind, name))


def _env(container: Json) -> dict[str, str]:
    return build_container_env(
        _pod(), container, node_name="node-a", services=service_env(6443), lookup=_lookup
    )


def test_service_variables_point_at_the_apiserver_on_loopback() -> None:
    env = _env({"name": "c"})
    assert env == {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}


def test_env_overrides_env_from_which_overrides_services() -> None:
    env = _env(
        {
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [{"name": "COLOR", "value": "red"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "1"}],
        }
    )
    assert env["COLOR"] == "red"
    assert env["SIZE"] == "L"
    assert env["KUBERNETES_SERVICE_PORT"] == "1"


def test_env_from_applies_prefixes_decodes_secrets_and_skips_invalid_names() -> None:
    env = _env(
        {
            "name": "c",
            "envFrom": [
                {"prefix": "CFG_", "configMapRef": {"name": "settings"}},
                {"secretRef": {"name": "creds"}},
            ],
        }
    )
    assert env["CFG_COLOR"] == "blue"
    assert env["TOKEN"] == "s3cret"  # noqa: S105 - a test fixture's value
    assert not any("=" in key for key in env)


def test_a_missing_optional_env_from_source_is_skipped() -> None:
    env = _env({"name": "c", "envFrom": [{"configMapRef": {"name": "absent", "optional": True}}]})
    assert "COLOR" not in env


def test_a_missing_required_env_from_source_is_a_missing_reference() -> None:
    with pytest.raises(MissingReferenceError, match='configmap "absent" not found'):
        _env({"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]})


def test_values_expand_earlier_variables_and_leave_unknown_ones() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": "A", "value": "one"},
                {"name": "B", "value": "$(A)-two-$(LATER)-$$(A)"},
                {"name": "LATER", "value": "three"},
                {"name": "C", "value": "$(KUBERNETES_SERVICE_HOST)"},
            ],
        }
    )
    assert env["B"] == "one-two-$(LATER)-$(A)"
    assert env["C"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("field_path", "expected"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['note']", 'say "hi"'),
        ("metadata.labels", 'app="web"\ntier="front"'),
        ("spec.nodeName", "node-a"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "127.0.0.1"),
        ("status.hostIP", "127.0.0.1"),
    ],
)
def test_field_refs_resolve(field_path: str, expected: str) -> None:
    env = _env({"name": "c", "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": field_path}}}]})
    assert env["V"] == expected


def test_an_unsupported_field_path_is_a_spec_error() -> None:
    with pytest.raises(PodSpecError, match=r"spec\.containers"):
        _env(
            {"name": "c", "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]}
        )


def test_key_refs_read_config_maps_and_secrets() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
            ],
        }
    )
    assert (env["C"], env["S"]) == ("blue", "s3cret")


def test_optional_key_refs_leave_the_variable_unset() -> None:
    env = _env(
        {
            "name": "c",
            "env": [
                {
                    "name": "A",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "NOPE", "optional": True}},
                },
                {
                    "name": "B",
                    "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}},
                },
            ],
        }
    )
    assert "A" not in env
    assert "B" not in env


def test_a_missing_required_key_names_the_key_and_object() -> None:
    with pytest.raises(MissingReferenceError, match="couldn't find key NOPE in ConfigMap ns/settings"):
        _env(
            {
                "name": "c",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "NOPE"}}}],
            }
        )


def test_resource_field_refs_use_limits_or_node_allocatable() -> None:
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}},
        "env": [
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "REQ_M",
                "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}},
            },
            {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        ],
    }
    env = _env(container)
    assert (env["MEM_MI"], env["CPU"], env["REQ_M"], env["REQ"]) == ("1024", "64", "250", "1")


def test_referenced_objects_lists_every_config_map_and_secret() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "b"}}],
        "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "d", "key": "k"}}},
            {"name": "Z", "value": "plain"},
        ],
    }
    assert referenced_objects(container) == {
        ("configmap", "a"),
        ("secret", "b"),
        ("configmap", "c"),
        ("secret", "d"),
    }


# --- command line and process environment ----------------------------------------------------


def test_command_and_args_expand_variables() -> None:
    container = {"command": ["echo", "$(A)"], "args": ["$(B)", "$$(A)", "$(NONE)"]}
    assert build_command(container, {"A": "1", "B": "2"}) == ["echo", "1", "2", "$(A)", "$(NONE)"]


def test_args_alone_are_the_command() -> None:
    assert build_command({"args": ["python", "-V"]}, {}) == ["python", "-V"]


def test_no_command_and_no_args_is_a_clear_error() -> None:
    with pytest.raises(PodSpecError, match="neither command nor args"):
        build_command({"name": "main", "image": "busybox"}, {})


def test_only_listed_variables_are_inherited() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "SECRET": "x", "KUBECONFIG": "/k", "EXTRA": "e"}
    assert inherited_env(environ) == {"PATH": "/bin", "HOME": "/root"}
    assert inherited_env(environ, ["EXTRA"]) == {"PATH": "/bin", "HOME": "/root", "EXTRA": "e"}


def test_kubernetes_variables_override_inherited_ones() -> None:
    assert build_process_env({"PATH": "/bin", "HOME": "/root"}, {"PATH": "/opt"}) == {
        "PATH": "/opt",
        "HOME": "/root",
    }
