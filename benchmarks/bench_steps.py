"""The benchmark's step: does nothing, so what is measured is Retcon and Kubernetes."""

from __future__ import annotations

from typing import Any


def noop(state: Any, context: Any) -> dict[str, Any]:
    return {context.step_name: context.attempt}
