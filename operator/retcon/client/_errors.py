"""What the SDK raises: one base class, one subclass per kind of mistake or trouble.

Every message is a single line that says what is wrong and what to do, so the
CLI can print it as it is and a script can log it without reformatting.
"""

from __future__ import annotations


def _one_line(message: str) -> str:
    return " ".join(message.split())


class RetconError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))

    @property
    def message(self) -> str:
        return str(self)


class RunNotFound(RetconError):
    def __init__(self, message: str, *, run: str, namespace: str) -> None:
        super().__init__(message)
        self.run = run
        self.namespace = namespace


class StepNotFound(RetconError):
    def __init__(self, message: str, *, step: str, valid: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.step = step
        self.valid = valid


class InvalidInput(RetconError):
    """The request itself is wrong: malformed JSON, a step in the wrong phase, an unknown type..."""


class NotPaused(RetconError):
    """The run is not in a phase that allows the request (inject, resume, paused state)."""

    def __init__(self, message: str, *, phase: str | None = None) -> None:
        super().__init__(message)
        self.phase = phase


class InjectionRejected(RetconError):
    """The operator refused an Injection; its status message says why."""

    def __init__(self, message: str, *, injection: str) -> None:
        super().__init__(message)
        self.injection = injection


class RunHeld(RetconError):
    """PauseRequest objects still hold the run."""

    def __init__(self, message: str, *, holders: tuple[str, ...]) -> None:
        super().__init__(message)
        self.holders = holders


class PermissionDenied(RetconError):
    """The API server refused the user (401/403)."""


class Timeout(RetconError):
    """Waiting for the operator took longer than allowed."""
