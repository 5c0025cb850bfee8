"""`retcon-operator`: start the operator (kopf with Retcon's handlers).

Settings come from flags and `RETCON_*` environment variables (see
`retcon.kube.config` and `retcon.kube.webhook`); the Helm chart sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import kopf
import prometheus_client

from retcon.kube import webhook
from retcon.kube.config import OperatorConfig


def _configure_logging(level: str, json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415 - only when asked for

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="retcon-operator", description=__doc__.splitlines()[0])
    cli.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="a namespace (or glob) to watch; repeatable; default: all (or RETCON_NAMESPACES)",
    )
    cli.add_argument(
        "--peering",
        default=os.environ.get("RETCON_PEERING", ""),
        help="kopf peering name: replicas sharing it elect one active operator (default: standalone)",
    )
    cli.add_argument(
        "--liveness",
        default=os.environ.get("RETCON_LIVENESS", ""),
        help="serve health probes at this URL, e.g. http://0.0.0.0:8080/healthz",
    )
    cli.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("RETCON_METRICS_PORT", "0") or 0),
        help="serve Prometheus metrics on this port (0: off)",
    )
    cli.add_argument("--log-level", default=os.environ.get("RETCON_LOG_LEVEL", "INFO"))
    cli.add_argument(
        "--json-logs", action="store_true", default=os.environ.get("RETCON_JSON_LOGS", "") == "true"
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # Settings a user gets wrong are one line and exit 2, before anything starts.
        OperatorConfig.from_env()
        webhook.check_mode()
    except ValueError as error:
        print(f"retcon-operator: {error}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level, args.json_logs)
    import retcon.handlers  # noqa: F401, PLC0415 - registers the handlers with kopf

    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)

    namespaces = args.namespace or [
        n.strip() for n in os.environ.get("RETCON_NAMESPACES", "").split(",") if n.strip()
    ]
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=not args.peering,
                peering_name=args.peering or None,
                liveness_endpoint=args.liveness or None,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
