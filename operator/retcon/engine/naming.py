"""Deterministic names for a run's children, so a retried reconcile adopts instead of duplicating."""

from __future__ import annotations

import re

_MAX = 63


def _label_safe(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())


def job_name(run_name: str, run_uid: str, step_id: str, attempt: int) -> str:
    """`<run>-<NNN>-a<attempt>-<uid5>`: unique per run (by uid), step and attempt; a DNS label."""
    number = step_id.removeprefix("step_")
    suffix = f"-{number}-a{attempt}-{_label_safe(run_uid)[:5]}"
    head = _label_safe(run_name)[: _MAX - len(suffix)].rstrip("-") or "run"
    return head + suffix


def input_name(job: str) -> str:
    """The immutable ConfigMap holding an attempt's input."""
    return f"{job}-input"


def step_id(index: int) -> str:
    """`step_001` for the first step; ids never get reused within a run."""
    return f"step_{index:03d}"
