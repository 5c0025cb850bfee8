"""The Retcon step runner: runs one step inside its pod and reports the result.

It is installed into step images on its own, without the operator, and uses
the Python standard library only.

For step authors: a function step is ``def step(state, context) -> dict``;
``state`` is a ``ReadOnlyState``, ``context`` a ``StepContext``; raise
``NonRetryableError`` to fail for good. ``run_step`` runs a step locally, as
in the pod, for tests. The command line (``python -m retcon_runner function``
or ``report``) is what the operator runs.
"""

from __future__ import annotations

from retcon_runner._context import StepContext
from retcon_runner._errors import NonRetryableError
from retcon_runner._function import run_step
from retcon_runner._outcome import (
    MAX_MESSAGE_BYTES,
    MAX_OUTPUT_BYTES,
    NON_RETRYABLE_EXIT_CODE,
    RETRYABLE_EXIT_CODE,
    SUCCESS_EXIT_CODE,
    Outcome,
    StepError,
    StepOutcome,
)
from retcon_runner._state import ReadOnlyList, ReadOnlyState

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_OUTPUT_BYTES",
    "NON_RETRYABLE_EXIT_CODE",
    "RETRYABLE_EXIT_CODE",
    "SUCCESS_EXIT_CODE",
    "NonRetryableError",
    "Outcome",
    "ReadOnlyList",
    "ReadOnlyState",
    "StepContext",
    "StepError",
    "StepOutcome",
    "run_step",
]
