"""What the engine reads and what it decides: plain frozen data, no Kubernetes objects.

`RunView` is the run as the engine needs it, `Observed` what the cluster shows
of the run's children, and `Decision` the new status plus the actions that
make the cluster match it. The kube layer builds the first two and carries
out the third.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from retcon.api.run import DefinitionStep, WorkflowRunStatus
from retcon.api.stepresult import StepResultSpec

# Annotations a user sets on a run with plain kubectl.
PAUSE_ANNOTATION = "retcon.dev/pause"
#: Kept by the admission webhook: who asked for each intervention, from authentication.
INTENTS_ANNOTATION = "retcon.dev/intents"
#: `signal.retcon.dev/<step name>: <JSON object>` completes a Wait step with that data.
SIGNAL_PREFIX = "signal.retcon.dev/"
CANCEL_ANNOTATION = "retcon.dev/cancel"
RESUME_FROM_ANNOTATION = "retcon.dev/resume-from-step"
#: A step to add to a paused run: `{"after": ..., "step": {...}, "reason": ...}`.
ADD_STEP_ANNOTATION = "retcon.dev/add-step"

#: The main container's exit code for "do not retry" (a function raising NonRetryableError).
NON_RETRYABLE_EXIT_CODE = 42
#: Outputs up to this size (compact JSON) are kept in the run's status; larger ones by reference.
INLINE_OUTPUT_LIMIT = 16 * 1024
#: What one attempt's input record (a ConfigMap) can hold.
MAX_INPUT_BYTES = 1024 * 1024 - 4096
#: How long a finished pod may wait for its StepResult before the attempt counts as failed.
RESULT_GRACE_SECONDS = 30.0
#: How long a started attempt may go unseen (no Job in the cache) before it counts as lost.
LOST_JOB_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Intent:
    """One intervention on a run, recorded at admission with the authenticated actor."""

    seq: int
    type: str  # pause | resume | cancel | signal | add-step
    actor: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InjectionRequest:
    """An Injection object not yet Applied or Rejected."""

    name: str
    uid: str
    step: str
    output: Mapping[str, Any]
    reason: str
    actor: str
    created: datetime


@dataclass(frozen=True)
class PauseHold:
    """A PauseRequest naming the run; it holds while it exists (unless released)."""

    name: str
    uid: str
    reason: str
    actor: str
    created: datetime
    deleted_by: str | None = None  # set while its deletion waits on the operator


@dataclass(frozen=True)
class RunView:
    """The parts of a WorkflowRun the engine decides from."""

    name: str
    namespace: str
    uid: str
    generation: int
    input: Mapping[str, Any]
    status: WorkflowRunStatus
    tenant: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: Names of PauseRequest objects that currently hold this run.
    pause_requests: tuple[str, ...] = ()
    #: Every PauseRequest naming the run, with who made it (and who deletes it).
    holds: tuple[PauseHold, ...] = ()
    intents: tuple[Intent, ...] = ()
    injections: tuple[InjectionRequest, ...] = ()
    #: The operator's own user name: its own annotation changes are not someone's intervention.
    operator_user: str = ""


@dataclass(frozen=True)
class ObservedAttempt:
    """What the cluster shows of one attempt's Job, pod and result."""

    job_name: str
    job_exists: bool = False
    job_failed: str | None = None  # the Job's Failed condition: "reason: message"
    #: The API itself (not just a cache that may still be filling) says the Job does not exist.
    job_missing: bool = False
    pod_phase: str | None = None  # Pending | Running | Succeeded | Failed, None before a pod exists
    exit_code: int | None = None  # the main container's, once it terminated
    termination_reason: str | None = None
    termination_message: str | None = None
    waiting_reason: str | None = None  # e.g. "ImagePullBackOff: ..." while the container cannot start
    finished_at: datetime | None = None
    pod_reason: str | None = None  # pod-level, e.g. DeadlineExceeded
    result: StepResultSpec | None = None
    result_name: str | None = None


@dataclass(frozen=True)
class Observed:
    attempts: Mapping[str, ObservedAttempt] = field(default_factory=dict)  # by Job name
    #: Outputs kept outside the run object, loaded by the kube layer, by step id.
    outputs: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    #: Step ids whose output's StepResult the API says no longer exists.
    lost_outputs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StartAttempt:
    """Create the attempt's immutable input record, then its Job."""

    step: DefinitionStep
    attempt: int
    job_name: str
    input_name: str
    input_document: dict[str, Any]


@dataclass(frozen=True)
class StopAttempt:
    job_name: str
    reason: str


@dataclass(frozen=True)
class RecordEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class InjectionResult:
    name: str
    phase: Literal["Applied", "Rejected"]
    message: str
    step_id: str | None = None
    step_name: str | None = None
    previous_output: Mapping[str, Any] | None = None
    actor: str = ""


@dataclass(frozen=True)
class PauseRequestResult:
    name: str
    phase: Literal["Holding", "Released"]
    message: str


Action = StartAttempt | StopAttempt | RecordEvent


@dataclass(frozen=True)
class Decision:
    status: WorkflowRunStatus
    actions: tuple[Action, ...] = ()
    #: Seconds until the engine must look again (a retry, a sleep, a timeout), if any.
    requeue_after: float | None = None
    #: Annotations consumed by this decision, to be removed from the run.
    consumed_annotations: tuple[str, ...] = ()
    #: Annotations to set on the run (a hold after an injection into a failed run).
    set_annotations: Mapping[str, str] = field(default_factory=dict)
    injections: tuple[InjectionResult, ...] = ()
    pause_requests: tuple[PauseRequestResult, ...] = ()
    #: PauseRequests being deleted whose finalizer can go (their release is in the audit).
    finalize_pause_requests: tuple[str, ...] = ()

    @property
    def starts(self) -> tuple[StartAttempt, ...]:
        return tuple(a for a in self.actions if isinstance(a, StartAttempt))
