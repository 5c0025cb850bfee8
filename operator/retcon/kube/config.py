"""The operator's settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from retcon import __version__


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True)
class OperatorConfig:
    #: Image for function steps that name none: a step-runner image holding the step code.
    runner_image: str = f"retcon/step-runner:{__version__}"
    #: ServiceAccount step pods run as when the step names none; it may only create StepResults.
    step_service_account: str = "retcon-step"
    #: Create that ServiceAccount and its Role in a namespace the first time a run starts there.
    manage_step_rbac: bool = True
    #: Namespaces to watch; empty means all.
    namespaces: tuple[str, ...] = ()
    #: Seconds a pod may outlive its step's timeout before the kubelet kills it anyway.
    deadline_slack_seconds: int = 30
    #: Python executable in the step-runner image.
    python: str = "python"
    #: With several replicas: only the holder of a Lease reconciles.
    leader_elect: bool = False
    lease_namespace: str = "default"
    lease_name: str = "retcon-operator"
    lease_seconds: float = 15.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            runner_image=env.get("RETCON_RUNNER_IMAGE", defaults.runner_image),
            step_service_account=env.get("RETCON_STEP_SERVICE_ACCOUNT", defaults.step_service_account),
            manage_step_rbac=env.get("RETCON_MANAGE_STEP_RBAC", "true").lower() in ("1", "true", "yes"),
            namespaces=_list(env.get("RETCON_NAMESPACES")),
            python=env.get("RETCON_RUNNER_PYTHON", defaults.python),
            leader_elect=env.get("RETCON_LEADER_ELECT", "false").lower() in ("1", "true", "yes"),
            lease_namespace=env.get("RETCON_LEASE_NAMESPACE") or env.get("POD_NAMESPACE") or "default",
            lease_name=env.get("RETCON_LEASE_NAME", defaults.lease_name),
            lease_seconds=_seconds(env, "RETCON_LEASE_SECONDS", defaults.lease_seconds),
        )


def _seconds(env: Any, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 1:
        raise ValueError(f"{name} must be a number of seconds of at least 1, not {raw!r}")
    return value
