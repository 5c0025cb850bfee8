"""Prometheus metrics, all prefixed `retcon_`, with bounded labels (a phase, never a run name).

Also an optional trace of step transitions (``RETCON_TRACE_FILE``): one JSON
line per transition with its exact latency, for the benchmark, which needs
exact percentiles rather than histogram buckets.
"""

from __future__ import annotations

import json
import os
from typing import IO

from prometheus_client import Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

STEP_TRANSITION = Histogram(
    "retcon_step_transition_seconds",
    "From seeing a step's pod finish to the next step's Job being created.",
    buckets=_FAST,
)
STEP_DURATION = Histogram(
    "retcon_step_duration_seconds",
    "Wall time of finished step attempts, by outcome.",
    ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
RECONCILE = Histogram("retcon_reconcile_seconds", "Time to decide and apply one reconcile.", buckets=_FAST)
RECONCILE_ERRORS = Counter("retcon_reconcile_errors_total", "Reconciles that failed and were retried.")
CONFLICTS = Counter("retcon_status_conflicts_total", "Status writes refused because the run had changed.")
RUNS_STARTED = Counter("retcon_runs_started_total", "Runs whose Workflow was snapshotted and that began.")
RUNS_FINISHED = Counter("retcon_runs_finished_total", "Runs that reached a final phase.", ["phase"])
ACTIVE_RUNS = Gauge("retcon_active_runs", "Runs neither finished nor cancelled, as this operator sees them.")
STEPS_FINISHED = Counter("retcon_steps_finished_total", "Steps that reached a final phase.", ["phase"])
PAUSES = Counter("retcon_pauses_total", "Runs that became Paused, by reason.", ["reason"])
INJECTIONS = Counter("retcon_injections_total", "Injections of a step output, by result.", ["result"])
DYNAMIC_INJECTIONS = Counter("retcon_dynamic_injections_total", "Steps inserted by dynamicInjection rules.")


class TransitionTrace:
    """Appends `{"seconds": ..}` lines to a file when RETCON_TRACE_FILE names one."""

    def __init__(self, path: str | None = None) -> None:
        target = path if path is not None else os.environ.get("RETCON_TRACE_FILE")
        self._file: IO[str] | None = open(target, "a", buffering=1) if target else None  # noqa: SIM115, PTH123 - kept open for the process's life

    def record(self, seconds: float, concurrent: int) -> None:
        STEP_TRANSITION.observe(seconds)
        if self._file is not None:
            self._file.write(json.dumps({"seconds": seconds, "concurrent": concurrent}) + "\n")
