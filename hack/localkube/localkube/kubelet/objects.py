"""Plain-dict views of Kubernetes objects and the time format the API speaks.

The kubelet handles pods as parsed JSON (`Json`), not typed models: it touches a
handful of fields per event, and parsing every watched pod into models would
cost more CPU than everything else it does per pod.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]


class PodSpecError(Exception):
    """A pod asks for something this kubelet cannot do: the pod fails with this message."""


class MissingReferenceError(Exception):
    """A ConfigMap, Secret or key the pod needs does not exist (yet): retried, like a kubelet."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 with second precision, as `metav1.Time` serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """RFC 3339 with microseconds, as `metav1.MicroTime` (Lease renewTime) serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def meta(obj: Json) -> Json:
    value: Json = obj.get("metadata") or {}
    return value


def pod_key(pod: Json) -> str:
    """`namespace/name`, the way Kubernetes components name a pod in their logs."""
    m = meta(pod)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def pod_uid(pod: Json) -> str:
    return str(meta(pod).get("uid", ""))
