"""Function steps: load ``package.module:callable``, call it with the state and context, judge the result.

``run_step`` is the whole step without Kubernetes (users call it in their own
tests); ``run_function_step`` is ``python -m retcon_runner function``: it adds
reading ``$RETCON_INPUT``, writing ``$RETCON_OUTPUT``, creating the StepResult
and choosing the exit code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from retcon_runner._api import DEFAULT_DEADLINE_SECONDS, ApiServer
from retcon_runner._context import InvalidInputError, StepContext, parse_input_document
from retcon_runner._errors import NonRetryableError, RunnerConfigError
from retcon_runner._outcome import (
    INVALID_FUNCTION,
    INVALID_INPUT,
    NON_RETRYABLE_EXIT_CODE,
    RETRYABLE_EXIT_CODE,
    StepOutcome,
    compose_message,
    exception_headline,
    exception_type_name,
    format_traceback,
)
from retcon_runner._output import check_output
from retcon_runner._result import StepIdentity, publish_result
from retcon_runner._state import ReadOnlyState

StepFunction = Callable[[ReadOnlyState, StepContext], Any]

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
"""The exit code when the pod is stopped (timeout, cancel) before the step returns."""

log = logging.getLogger("retcon.runner")

_SPEC_FORM = "'package.module:callable'"


class _Terminated(BaseException):
    """SIGTERM arrived while the step ran. A BaseException, so ``except Exception`` lets it through."""


class FunctionLoadError(Exception):
    """The step function could not be loaded; ``outcome`` says how to report it."""

    def __init__(self, outcome: StepOutcome) -> None:
        super().__init__(outcome.error.message if outcome.error else "")
        self.outcome = outcome


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``package.module:callable`` (the callable may be dotted: ``module:Class.method``)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not _dotted(module_name) or not _dotted(attribute):
        raise _load_error(f"step function {spec!r} is not of the form {_SPEC_FORM}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _load_error(f"cannot import module {module_name!r} for step function {spec!r}: {exc}") from exc
    except SyntaxError as exc:
        raise _load_error(
            f"module {module_name!r} for step function {spec!r} has a syntax error: {exc}"
        ) from exc
    except Exception as exc:
        # Code that runs at import time may fail for a passing reason (a network call): retry.
        message = compose_message(
            f"importing module {module_name!r} for step function {spec!r} failed: {exception_headline(exc)}",
            format_traceback(exc),
        )
        outcome = StepOutcome.failure(exception_type_name(exc), message, retryable=True)
        raise FunctionLoadError(outcome) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _load_error(
                f"module {module_name!r} has no attribute {attribute!r} (step function {spec!r})"
            ) from None
    if not callable(target):
        raise _load_error(f"step function {spec!r} is not callable: it is a {type(target).__name__}")
    return target  # type: ignore[no-any-return]  # callable() narrowed it.


def run_step(fn: StepFunction | str, input_document: Mapping[str, Any]) -> StepOutcome:
    """Run a step function on ``input_document`` as the runner would in a pod, without Kubernetes.

    ``fn`` is the callable or its ``"package.module:callable"`` name;
    ``input_document`` is shaped like ``$RETCON_INPUT`` (``{"state": {...}}`` is
    enough). Returns the outcome: ``Succeeded`` with the output, ``Failed``
    (retryable) or ``NonRetryable`` with the error. Never raises for a
    failing step.
    """
    outcome, _ = _run(fn, input_document)
    return outcome


def run_function_step(
    environ: Mapping[str, str],
    *,
    server: ApiServer | None = None,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> int:
    """``python -m retcon_runner function``: run the step, report it, return the exit code."""
    try:
        identity = StepIdentity.from_env(environ)
        api = server if server is not None else ApiServer.in_cluster(environ)
    except RunnerConfigError as exc:
        log.error("%s", exc)
        return NON_RETRYABLE_EXIT_CODE
    try:
        with _stop_on_sigterm():
            outcome = _execute(environ)
    except _Terminated:
        log.warning("Received SIGTERM; step %s was stopped before it finished", identity.step_name)
        return TERMINATED_EXIT_CODE
    _log_outcome(identity.step_name, outcome)
    if outcome.succeeded and outcome.output is not None:
        _write_output(environ.get("RETCON_OUTPUT"), outcome.output)
    if not publish_result(api, identity, outcome, deadline=deadline):
        return RETRYABLE_EXIT_CODE
    return outcome.exit_code


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    # The runner is PID 1 in its container, and the kernel drops signals that
    # PID 1 has no handler for: without one, stopping the pod would wait for
    # the grace period to end in SIGKILL.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(environ: Mapping[str, str]) -> StepOutcome:
    spec = environ.get("RETCON_FUNCTION", "")
    if not spec:
        return _load_error(f"RETCON_FUNCTION is not set; name the step's callable as {_SPEC_FORM}").outcome
    input_path = environ.get("RETCON_INPUT", "")
    if not input_path:
        return StepOutcome.failure(INVALID_INPUT, "RETCON_INPUT is not set", retryable=False)
    try:
        document = json.loads(Path(input_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return StepOutcome.failure(
            INVALID_INPUT, f"cannot read the input document {input_path}: {exc}", retryable=False
        )
    outcome, error = _run(spec, document)
    if error is not None:
        # The StepResult holds a trimmed message; the log keeps the whole story.
        print(format_traceback(error), file=sys.stderr, flush=True)
    return outcome


def _run(fn: StepFunction | str, document: object) -> tuple[StepOutcome, BaseException | None]:
    if isinstance(fn, str):
        try:
            fn = load_function(fn)
        except FunctionLoadError as exc:
            return exc.outcome, None
    try:
        state, context = parse_input_document(document)
    except InvalidInputError as exc:
        return StepOutcome.failure(INVALID_INPUT, f"invalid input document: {exc}", retryable=False), None
    try:
        result = fn(state, context)
    except (Exception, SystemExit) as exc:  # noqa: BLE001  # Any failure of the step is its outcome.
        return _failure(exc), exc
    if inspect.isawaitable(result):
        result, error = _await(result)
        if error is not None:
            return _failure(error), error
    return check_output(result), None


def _await(awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    # Imported here: asyncio costs a third of the runner's start-up, and most steps are not async.
    import asyncio  # noqa: PLC0415
    import concurrent.futures  # noqa: PLC0415

    if not _loop_running():
        return asyncio.run(_settle(awaitable))
    # Called from async code (an async test): the step gets its own loop in a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _settle(awaitable)).result()


def _loop_running() -> bool:
    import asyncio  # noqa: PLC0415 - see _await

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _settle(awaitable: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    # Catching here, right above the step, keeps asyncio's frames out of the traceback.
    try:
        return await awaitable, None
    except (Exception, SystemExit) as exc:  # noqa: BLE001  # Any failure of the step is its outcome.
        return None, exc


def _failure(exc: BaseException) -> StepOutcome:
    name = exception_type_name(exc)
    if isinstance(exc, NonRetryableError):
        message = str(exc) or f"the step raised {type(exc).__name__}"
        cause = exc.__cause__
        if cause is None and not exc.__suppress_context__:
            cause = exc.__context__
        if cause is not None:
            message += f"\n\ncaused by {exception_headline(cause)}"
        return StepOutcome.failure(name, message, retryable=False)
    if isinstance(exc, SystemExit):
        headline = (
            f"SystemExit: the step called sys.exit({exc.code!r}); "
            "return the output, or raise an exception to fail the step"
        )
    else:
        headline = exception_headline(exc)
    message = compose_message(headline, format_traceback(exc))
    return StepOutcome.failure(name, message, retryable=True)


def _load_error(message: str) -> FunctionLoadError:
    return FunctionLoadError(StepOutcome.failure(INVALID_FUNCTION, message, retryable=False))


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _log_outcome(step_name: str, outcome: StepOutcome) -> None:
    if outcome.succeeded:
        log.info("Step %s succeeded with an output of %d bytes", step_name, outcome.output_bytes)
    elif outcome.error is not None:
        first_line = outcome.error.message.splitlines()[0] if outcome.error.message else outcome.error.type
        log.error("Step %s ended %s: %s", step_name, outcome.outcome.value, first_line)


def _write_output(path: str | None, output: dict[str, Any]) -> None:
    # The StepResult is what counts; the file is kept for parity with image steps.
    if not path:
        return
    target = Path(path)
    temporary: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".output-")
        temporary = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(output, handle, ensure_ascii=False, separators=(",", ":"))
        temporary.replace(target)
    except OSError as exc:
        log.warning("Cannot write the step output to %s: %s", path, exc)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
