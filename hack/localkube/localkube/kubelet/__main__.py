"""`python -m localkube.kubelet --kubeconfig PATH --node-name NAME --root DIR [--pass-env NAME ...]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from localkube.errors import LocalkubeError
from localkube.kubelet.client import ApiError
from localkube.kubelet.kubelet import KubeletConfig, run_kubelet


def parse_args(argv: list[str] | None = None) -> KubeletConfig:
    parser = argparse.ArgumentParser(
        prog="python -m localkube.kubelet",
        description="The process kubelet: registers NODE, binds unscheduled pods to it and runs them "
        "as local processes until SIGTERM or SIGINT, then ends every process it started.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True, help="credentials for the apiserver")
    parser.add_argument("--node-name", required=True, help="the Node to register and run pods for")
    parser.add_argument("--root", type=Path, required=True, help="folder for pod volumes and logs")
    parser.add_argument(
        "--pass-env",
        action="append",
        default=[],
        metavar="NAME",
        help="also pass this variable of the kubelet's environment to containers (repeatable)",
    )
    args = parser.parse_args(argv)
    return KubeletConfig(
        kubeconfig=args.kubeconfig,
        node_name=args.node_name,
        root=args.root.resolve(),
        pass_env=tuple(args.pass_env),
    )


async def _main(config: KubeletConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_kubelet(config, stop)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        asyncio.run(_main(config))
    except (LocalkubeError, ApiError) as error:
        print(f"kubelet: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
