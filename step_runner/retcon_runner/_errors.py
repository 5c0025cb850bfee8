"""Exceptions: the one step authors raise, and the runner's own configuration error."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise from a step to fail it for good: the operator does not retry it.

    Use it when trying again cannot help (bad input, a refused payment, a
    record that does not exist). Any other exception fails the attempt and the
    step is retried within its ``retry.limit``.
    """

    # Report the public name, not the private module, in tracebacks and results.
    __module__ = "retcon_runner"


class RunnerConfigError(Exception):
    """The container was not set up the way the operator sets up step pods.

    Nothing can be reported without the missing settings, so the runner prints
    the message and exits instead of creating a StepResult.
    """
