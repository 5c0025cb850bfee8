"""CustomResourceDefinitions, generated from the pydantic models (never edited by hand).

`python -m retcon.api.crds --write crds/` regenerates the YAML; `--check`
exits non-zero when the files differ from the models (CI runs it, and so does
a unit test). The conversion turns pydantic's JSON Schema into a Kubernetes
*structural* schema: references inlined, optional fields flattened, free-form
objects marked `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from retcon.api.intervention import InjectionSpec, InjectionStatus, PauseRequestSpec, PauseRequestStatus
from retcon.api.meta import GROUP, VERSION
from retcon.api.run import WorkflowRunSpec, WorkflowRunStatus
from retcon.api.stepresult import StepResultSpec
from retcon.api.workflow import WorkflowSpec

CATEGORY = "retcon"
_DROP = {"title", "additionalProperties", "$defs"}


def _column(
    name: str, path: str, kind: str = "string", *, priority: int = 0, description: str = ""
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        column["priority"] = priority
    if description:
        column["description"] = description
    return column


AGE = _column("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    spec: type[BaseModel]
    status: type[BaseModel] | None
    short_names: Sequence[str]
    columns: Sequence[dict[str, Any]]
    categories: Sequence[str] = (CATEGORY,)
    description: str = ""
    required_spec: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: tuple[Kind, ...] = (
    Kind(
        kind="Workflow",
        plural="workflows",
        spec=WorkflowSpec,
        status=None,
        short_names=("rwf",),
        description="A reusable workflow definition: steps, defaults, pause behaviour, injection rules.",
        columns=(
            _column("Pause", ".spec.pauseBehavior", description="What a run does after an injection"),
            _column("Points", ".spec.injectionPoints", priority=1, description="Allowed injection points"),
            _column("Description", ".spec.description", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="WorkflowRun",
        plural="workflowruns",
        spec=WorkflowRunSpec,
        status=WorkflowRunStatus,
        short_names=("wfrun", "rwfr"),
        description="One execution of a Workflow with an input; its status is the run's history.",
        columns=(
            _column("Workflow", ".spec.workflowRef.name"),
            _column("Phase", ".status.phase"),
            _column("Progress", ".status.progress", description="Finished/total steps"),
            _column("Current", ".status.currentStep", description="Running steps"),
            _column("Next", ".status.nextStepHint", description="The step that runs next"),
            _column("Reason", ".status.pauseReason", priority=1, description="Why the run is paused"),
            _column("Tenant", ".spec.tenant", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="PauseRequest",
        plural="pauserequests",
        spec=PauseRequestSpec,
        status=PauseRequestStatus,
        short_names=("pausereq",),
        description="Holds a run at its next step boundary for as long as the object exists.",
        columns=(
            _column("Run", ".spec.runName"),
            _column("Phase", ".status.phase"),
            _column("Reason", ".spec.reason"),
            _column("By", ".status.requestedBy", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="Injection",
        plural="injections",
        spec=InjectionSpec,
        status=InjectionStatus,
        short_names=("inj",),
        description="Replaces one step's output in a paused or failed run, once, with a reason.",
        columns=(
            _column("Run", ".spec.runName"),
            _column("Step", ".spec.step"),
            _column("Phase", ".status.phase"),
            _column("Reason", ".spec.reason", priority=1),
            _column("By", ".status.appliedBy", priority=1),
            _column("Message", ".status.message", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="StepResult",
        plural="stepresults",
        spec=StepResultSpec,
        status=None,
        short_names=("stepres",),
        categories=("retcon-internal",),
        description="Internal: one attempt's result, reported by its step pod (which may only create these).",
        columns=(
            _column("Run", ".spec.runName"),
            _column("Step", ".spec.stepName"),
            _column("Attempt", ".spec.attempt", "integer"),
            _column("Outcome", ".spec.outcome"),
            AGE,
        ),
    ),
)


def structural(
    schema: dict[str, Any], defs: dict[str, Any] | None = None, *, in_status: bool = False
) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node into a Kubernetes structural schema node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node = copy.deepcopy(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[1]]
        merged = {**target, **node}  # the field's own description wins over the model's
        return structural(merged, defs, in_status=in_status)
    if "anyOf" in node:
        options = [option for option in node.pop("anyOf") if option != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"only Optional[X] unions are supported in CRD schemas, got {options}")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "default" or v is not None}}
        return structural(merged, defs, in_status=in_status)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) is None:
        node.pop("default")
    free_form = (
        node.get("type") == "object"
        and "properties" not in node
        and node.get("additionalProperties") in (True, None, {})
    )
    if free_form:
        node["x-kubernetes-preserve-unknown-fields"] = True
    if in_status:
        node.pop("x-kubernetes-validations", None)
        node.pop("default", None)
    for key in _DROP:
        node.pop(key, None)
    if "properties" in node:
        node["properties"] = {
            name: structural(child, defs, in_status=in_status) for name, child in node["properties"].items()
        }
    if "items" in node:
        node["items"] = structural(node["items"], defs, in_status=in_status)
    return node


def _model_schema(model: type[BaseModel], *, in_status: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return structural(schema, schema.get("$defs", {}), in_status=in_status)


def build_crd(kind: Kind) -> dict[str, Any]:
    properties: dict[str, Any] = {"spec": _model_schema(kind.spec)}
    if kind.status is not None:
        properties["status"] = _model_schema(kind.status, in_status=True)
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": kind.description,
                "required": ["spec"] if kind.required_spec else [],
                "properties": properties,
            }
        },
        "additionalPrinterColumns": list(kind.columns),
    }
    if kind.status is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "retcon"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [version],
        },
    }


HEADER = (
    "# Generated by `python -m retcon.api.crds --write crds/ --also charts/retcon/crds/`"
    " from operator/retcon/api. Do not edit.\n"
)


def render_all() -> dict[str, str]:
    """File name -> YAML text, for every kind."""
    return {
        f"{GROUP}_{kind.plural}.yaml": HEADER + yaml.safe_dump(build_crd(kind), sort_keys=False, width=120)
        for kind in KINDS
    }


def drift(folder: Path) -> list[str]:
    """Names of files in `folder` that differ from (or are missing for) the models."""
    wanted = render_all()
    stale = [
        name
        for name, text in wanted.items()
        if not (folder / name).exists() or (folder / name).read_text() != text
    ]
    extra = [p.name for p in folder.glob(f"{GROUP}_*.yaml") if p.name not in wanted]
    return sorted(stale + extra)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retcon.api.crds", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="DIR", help="write the CRD YAML files into DIR")
    mode.add_argument("--check", type=Path, metavar="DIR", help="exit 1 if DIR differs from the models")
    parser.add_argument(
        "--also", type=Path, action="append", default=[], metavar="DIR", help="with --write: also write DIR"
    )
    args = parser.parse_args(argv)
    if args.write:
        for folder in (args.write, *args.also):
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in render_all().items():
                (folder / name).write_text(text)
            for name in drift(folder):  # files of kinds that no longer exist
                (folder / name).unlink()
        return 0
    stale = drift(args.check)
    if stale:
        print(
            f"CRDs in {args.check} are out of date with the models: {', '.join(stale)}; "
            f"run: python -m retcon.api.crds --write {args.check}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
