"""The command line: ``python -m retcon_runner function`` and ``python -m retcon_runner report``.

Parses arguments, sends the runner's and the step's logs to stderr, and
hands over to the mode; the exit code is the mode's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from retcon_runner._api import DEFAULT_DEADLINE_SECONDS, ApiServer
from retcon_runner._function import run_function_step
from retcon_runner._report import run_report

_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    server: ApiServer | None = None,
) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    with _stderr_logging():
        if args.mode == "function":
            return run_function_step(env, server=server, deadline=args.deadline)
        return run_report(
            env, once=args.once, server=server, deadline=args.deadline, ready_file=args.ready_file
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retcon_runner",
        description="Run one Retcon workflow step in its pod and report the result as a StepResult.",
        epilog="Exit codes: 0 success, 1 retryable failure, 42 failure that must not be retried.",
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    function = modes.add_parser(
        "function",
        help="call $RETCON_FUNCTION (package.module:callable) with the run state, and report its output",
    )
    report = modes.add_parser(
        "report",
        help="sidecar for image steps: on SIGTERM or SIGINT, report the JSON object in $RETCON_OUTPUT",
    )
    report.add_argument("--once", action="store_true", help="report now instead of waiting for a signal")
    report.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="create PATH once stop signals are caught (for a startup probe)",
    )
    for mode in (function, report):
        mode.add_argument(
            "--deadline",
            type=float,
            default=DEFAULT_DEADLINE_SECONDS,
            metavar="SECONDS",
            help="how long to retry creating the StepResult (default: %(default)s)",
        )
    return parser


class _StderrHandler(logging.Handler):
    # Looks sys.stderr up on every record, so a replaced stderr (tests) is honoured.
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  # logging's own rule: report the failure, never raise.
            self.handleError(record)


@contextmanager
def _stderr_logging() -> Iterator[None]:
    # "retcon" covers the runner ("retcon.runner") and the step ("retcon.step.<name>").
    logger = logging.getLogger("retcon")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
