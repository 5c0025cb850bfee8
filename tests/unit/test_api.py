"""The API models are the schema: CRDs are generated from them and never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from retcon.api import WorkflowRunStatus, WorkflowSpec
from retcon.api.crds import KINDS, build_crd, drift, main, render_all, structural

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_crds_match_the_models() -> None:
    assert drift(REPO / "crds") == [], "run: python -m retcon.api.crds --write crds/"


def test_the_drift_check_notices_an_edit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    target = tmp_path / "retcon.dev_workflows.yaml"
    target.write_text(target.read_text().replace("Decision", "Choice"))
    assert main(["--check", str(tmp_path)]) == 1
    assert "retcon.dev_workflows.yaml" in capsys.readouterr().err


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_schema_is_structural(kind: Any) -> None:
    crd = build_crd(kind)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert "$ref" not in node
        assert "anyOf" not in node
        assert "additionalProperties" not in node or isinstance(node["additionalProperties"], dict)
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_kind_has_columns_names_and_a_category(kind: Any) -> None:
    crd = build_crd(kind)
    names = crd["spec"]["names"]
    assert names["categories"]
    assert names["shortNames"]
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[-1] == "Age"


def test_public_kinds_are_in_the_retcon_category_and_internal_ones_are_not() -> None:
    categories = {k.kind: k.categories for k in KINDS}
    assert all(
        "retcon" in categories[kind] for kind in ("Workflow", "WorkflowRun", "PauseRequest", "Injection")
    )
    assert "retcon" not in categories["StepResult"]


def test_free_form_json_is_preserved() -> None:
    crd = build_crd(next(k for k in KINDS if k.kind == "WorkflowRun"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["input"]["x-kubernetes-preserve-unknown-fields"] is True
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    output = status["properties"]["steps"]["items"]["properties"]["output"]
    assert output["x-kubernetes-preserve-unknown-fields"] is True


def test_status_schemas_carry_no_validation_rules() -> None:
    crd = build_crd(next(k for k in KINDS if k.kind == "WorkflowRun"))
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert not any("x-kubernetes-validations" in node for node in _walk(status))


def test_step_names_are_a_list_map_so_the_apiserver_refuses_duplicates() -> None:
    crd = build_crd(KINDS[0])
    steps = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "steps"
    ]
    assert steps["x-kubernetes-list-type"] == "map"
    assert steps["x-kubernetes-list-map-keys"] == ["name"]


def test_an_optional_union_other_than_none_is_refused() -> None:
    with pytest.raises(ValueError, match="only Optional"):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_every_rendered_file_is_valid_yaml_with_one_crd() -> None:
    for name, text in render_all().items():
        doc = yaml.safe_load(text)
        assert doc["kind"] == "CustomResourceDefinition"
        assert name == f"retcon.dev_{doc['spec']['names']['plural']}.yaml"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "a", "function": "m:f", "image": "x"}, "either a function or an image"),
        ({"name": "a"}, "needs a function or an image"),
        ({"name": "s", "type": "Sleep"}, "needs a duration"),
        ({"name": "d", "type": "Decision"}, "at least one route"),
        ({"name": "Bad_Name", "function": "m:f"}, "should match pattern"),
        ({"name": "a", "function": "not a ref"}, "should match pattern"),
        ({"name": "a", "function": "m:f", "surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_the_models_refuse_a_malformed_step(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkflowSpec.model_validate({"steps": [step]})


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "steps": [{"name": "a", "function": "m:f", "dependsOn": [], "timeoutSeconds": 5}],
            "pauseBehavior": "Release",
        }
    )
    assert spec.steps[0].depends_on == []
    assert spec.steps[0].timeout_seconds == 5
    assert spec.to_api()["steps"][0]["timeoutSeconds"] == 5


def test_a_status_written_by_a_newer_operator_still_reads() -> None:
    status = WorkflowRunStatus.model_validate({"phase": "Running", "fieldFromTheFuture": {"x": 1}})
    assert status.phase.value == "Running"
