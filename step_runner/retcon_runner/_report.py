"""Image steps: the reporting sidecar, ``python -m retcon_runner report``.

The operator runs it as a native sidecar (an init container with
``restartPolicy: Always``) beside any image. It idles until the kubelet stops
it (SIGTERM, after the main container exits) or SIGINT, then reads
``$RETCON_OUTPUT`` and creates the StepResult. It cannot see the main
container's exit code: the operator combines the two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from retcon_runner._api import DEFAULT_DEADLINE_SECONDS, ApiServer
from retcon_runner._errors import RunnerConfigError
from retcon_runner._outcome import (
    INVALID_OUTPUT,
    NON_RETRYABLE_EXIT_CODE,
    RETRYABLE_EXIT_CODE,
    SUCCESS_EXIT_CODE,
    StepOutcome,
)
from retcon_runner._output import (
    MAX_OUTPUT_FILE_BYTES,
    check_output,
    output_file_too_large,
    parse_output_file,
)
from retcon_runner._result import StepIdentity, publish_result

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

log = logging.getLogger("retcon.runner")


def read_output_file(path: Path) -> StepOutcome:
    """The outcome for what an image step left in ``path``.

    No file is ``Succeeded`` with ``{}`` and ``output_missing`` set (the
    operator fails the step anyway if the container exited non-zero); a file
    that is not a JSON object within the limits is ``NonRetryable``.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_OUTPUT_FILE_BYTES:
                return output_file_too_large(size)
            data = handle.read(MAX_OUTPUT_FILE_BYTES + 1)
    except FileNotFoundError:
        return dataclasses.replace(check_output({}), output_missing=True)
    except OSError as exc:
        message = f"cannot read the step output file: {exc}"
        return StepOutcome.failure(INVALID_OUTPUT, message, retryable=False)
    return parse_output_file(data)


def run_report(
    environ: Mapping[str, str],
    *,
    once: bool = False,
    server: ApiServer | None = None,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    ready_file: Path | None = None,
) -> int:
    """``python -m retcon_runner report``: wait for a stop signal (unless ``once``), then report."""
    with _signals_held(STOP_SIGNALS if not once else frozenset()):
        try:
            identity = StepIdentity.from_env(environ)
            output_path = _output_path(environ)
            api = server if server is not None else ApiServer.in_cluster(environ)
        except RunnerConfigError as exc:
            log.error("%s", exc)
            return NON_RETRYABLE_EXIT_CODE
        if not once:
            _mark_ready(ready_file)
            log.info("Waiting for step %s to finish", identity.step_name)
            received = signal.Signals(signal.sigwait(STOP_SIGNALS))
            log.info("Received %s; reporting the output of step %s", received.name, identity.step_name)
        # Still inside: a second signal must not cut the report short.
        outcome = read_output_file(output_path)
        if outcome.error is not None:
            log.error("Step %s output is unusable: %s", identity.step_name, outcome.error.message)
        elif outcome.output_missing:
            log.info("Step %s wrote no output file; reporting {}", identity.step_name)
        if not publish_result(api, identity, outcome, deadline=deadline):
            return RETRYABLE_EXIT_CODE
        return SUCCESS_EXIT_CODE


@contextmanager
def _signals_held(signals: frozenset[signal.Signals]) -> Iterator[None]:
    # Blocked signals wait in the queue for sigwait, even for PID 1, whose
    # signals with the default action the kernel would otherwise drop.
    if not signals:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        # Swallow repeats that arrived meanwhile, or unblocking would act on them now.
        while signal.sigpending() & signals:
            signal.sigwait(signals)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _output_path(environ: Mapping[str, str]) -> Path:
    value = environ.get("RETCON_OUTPUT", "")
    if not value:
        raise RunnerConfigError(
            "RETCON_OUTPUT is not set; this container must be started by the Retcon operator"
        )
    return Path(value)


def _mark_ready(ready_file: Path | None) -> None:
    # A startup probe can wait for this file, so the main container starts
    # only once a stop signal can no longer be missed.
    if ready_file is None:
        return
    try:
        ready_file.write_text("ready\n", encoding="utf-8")
    except OSError as exc:
        log.warning("Cannot write the ready file %s: %s", ready_file, exc)
