"""The Retcon SDK: start, watch and edit the history of workflow runs from Python.

`Client` is synchronous, `AsyncClient` the same for asyncio; both talk to the
cluster with your kubeconfig, like kubectl. The `kubectl retcon` plugin is built
on them. Every error is a `RetconError` whose message is one actionable line.
"""

from retcon.client._async import AsyncClient
from retcon.client._errors import (
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
from retcon.client._models import (
    AUDIT_TYPES,
    AuditRecord,
    ExecutionPath,
    JsonObject,
    PathStep,
    PausedState,
    PausedStep,
    PauseOutcome,
    ResumeResult,
    RunDetail,
    RunStructure,
    RunSummary,
    StepInfo,
    StructureStep,
)
from retcon.client._sync import Client

__all__ = [
    "AUDIT_TYPES",
    "AsyncClient",
    "AuditRecord",
    "Client",
    "ExecutionPath",
    "InjectionRejected",
    "InvalidInput",
    "JsonObject",
    "NotPaused",
    "PathStep",
    "PauseOutcome",
    "PausedState",
    "PausedStep",
    "PermissionDenied",
    "ResumeResult",
    "RetconError",
    "RunDetail",
    "RunHeld",
    "RunNotFound",
    "RunStructure",
    "RunSummary",
    "StepInfo",
    "StepNotFound",
    "StructureStep",
    "Timeout",
]
