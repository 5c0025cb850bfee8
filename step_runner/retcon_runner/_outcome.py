"""What one attempt of a step came to: the outcome, its exit code, and error messages.

Owns the exit-code contract with the operator and the rules for error
messages (size limit, trimming tracebacks from the top).
"""

from __future__ import annotations

import enum
import importlib
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUCCESS_EXIT_CODE = 0
"""The step succeeded."""

RETRYABLE_EXIT_CODE = 1
"""The attempt failed; the operator retries the step within its ``retry.limit``."""

NON_RETRYABLE_EXIT_CODE = 42
"""The step failed and must not be retried (``NonRetryableError``, invalid output, bad function)."""

MAX_OUTPUT_BYTES = 1024 * 1024
"""The largest step output accepted: bytes of its compact, UTF-8 JSON encoding."""

MAX_MESSAGE_BYTES = 4 * 1024
"""The largest error message stored in a StepResult (UTF-8 bytes)."""

_MAX_ERROR_TYPE_LENGTH = 256

# Error types the runner itself reports (the others are exception names).
INVALID_OUTPUT = "InvalidOutput"
OUTPUT_TOO_LARGE = "OutputTooLarge"
INVALID_FUNCTION = "InvalidFunction"
INVALID_INPUT = "InvalidInput"

# Frames are named by the path the module was imported from: compare without resolving links.
_PACKAGE_DIR = str(Path(__file__).absolute().parent) + os.sep
# The runner's frames, and the import machinery's around a module that failed to import.
_HIDDEN_FRAMES = (
    _PACKAGE_DIR,
    str(Path(importlib.__file__).absolute().parent) + os.sep,
    "<frozen importlib.",
)
_TRIMMED_HEAD = "… (earlier lines trimmed)\n"
_TRIMMED_TAIL = " … (truncated)"
_SEPARATOR = "\n\n"


class Outcome(enum.StrEnum):
    """How an attempt ended, as written to ``StepResult.spec.outcome``."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NON_RETRYABLE = "NonRetryable"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    Outcome.SUCCEEDED: SUCCESS_EXIT_CODE,
    Outcome.FAILED: RETRYABLE_EXIT_CODE,
    Outcome.NON_RETRYABLE: NON_RETRYABLE_EXIT_CODE,
}


@dataclass(frozen=True)
class StepError:
    """Why an attempt did not succeed: ``StepResult.spec.error``."""

    type: str
    message: str


@dataclass(frozen=True)
class StepOutcome:
    """The result of one attempt: what ``run_step`` returns and the runner reports.

    ``output`` is a plain JSON object when the outcome is ``Succeeded`` and
    ``None`` otherwise; ``error`` is the reverse.
    """

    outcome: Outcome
    output: dict[str, Any] | None = None
    error: StepError | None = None
    output_bytes: int = 0
    output_missing: bool = False

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    @property
    def exit_code(self) -> int:
        """The exit code the step container ends with for this outcome."""
        return self.outcome.exit_code

    @classmethod
    def success(cls, output: dict[str, Any], output_bytes: int, *, missing: bool = False) -> StepOutcome:
        return cls(Outcome.SUCCEEDED, output=output, output_bytes=output_bytes, output_missing=missing)

    @classmethod
    def failure(cls, error_type: str, message: str, *, retryable: bool) -> StepOutcome:
        outcome = Outcome.FAILED if retryable else Outcome.NON_RETRYABLE
        return cls(outcome, error=StepError(error_type[:_MAX_ERROR_TYPE_LENGTH], compose_message(message)))


def exception_type_name(exc: BaseException) -> str:
    """The exception's name as Python prints it: module-qualified unless built in."""
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_headline(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, or just the type for an empty message."""
    text = str(exc)
    name = exception_type_name(exc)
    return f"{name}: {text}" if text else name


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback (with its chained causes), without the runner's or importlib's frames."""
    summary = traceback.TracebackException.from_exception(exc)
    _drop_runner_frames(summary, set())
    return "".join(summary.format()).rstrip("\n")


def _drop_runner_frames(summary: traceback.TracebackException, seen: set[int]) -> None:
    if id(summary) in seen:
        return
    seen.add(id(summary))
    kept = [frame for frame in summary.stack if not frame.filename.startswith(_HIDDEN_FRAMES)]
    summary.stack = traceback.StackSummary.from_list(kept)
    for chained in (summary.__cause__, summary.__context__):
        if chained is not None:
            _drop_runner_frames(chained, seen)


def compose_message(headline: str, detail: str = "", limit: int = MAX_MESSAGE_BYTES) -> str:
    """An error message within ``limit`` UTF-8 bytes: the headline, then as much of ``detail`` as fits.

    The headline keeps its start (that is where a message says what went
    wrong); the detail, a traceback, keeps its end (the frames nearest the
    error), losing whole lines from its top.
    """
    head = _keep_start(_printable(headline), limit if not detail else limit // 2)
    if not detail:
        return head
    room = limit - _size(head) - _size(_SEPARATOR)
    if room < 2 * _size(_TRIMMED_HEAD):
        return head
    return head + _SEPARATOR + _keep_end(_printable(detail), room)


def _printable(text: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8 and would break the request body.
    return text.encode("utf-8", "replace").decode("utf-8")


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _keep_start(text: str, limit: int) -> str:
    if _size(text) <= limit:
        return text
    room = max(limit - _size(_TRIMMED_TAIL), 0)
    return text.encode("utf-8")[:room].decode("utf-8", "ignore") + _TRIMMED_TAIL


def _keep_end(text: str, limit: int) -> str:
    if _size(text) <= limit:
        return text
    room = max(limit - _size(_TRIMMED_HEAD), 0)
    data = text.encode("utf-8")
    tail = data[len(data) - room :].decode("utf-8", "ignore")
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return _TRIMMED_HEAD + tail
