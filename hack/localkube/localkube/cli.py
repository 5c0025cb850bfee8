"""``localkube``: bring a real control plane up on this machine, inspect it, stop it.

Every user-facing problem is a :class:`LocalkubeError`, printed on one line
with exit code 1; ``status`` exits 3 when the cluster is not fully up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from localkube import cluster, pki
from localkube.build import ensure_binaries
from localkube.errors import LocalkubeError
from localkube.layout import Layout


def _print_status(state: cluster.Status) -> None:
    for component in state.components:
        where = f"pid {component.pid}" if component.pid else "-"
        print(f"{component.name:<26} {'running' if component.running else 'stopped':<8} {where}")
    print(f"{'apiserver':<26} {'ready' if state.api_ready else 'not ready':<8} {state.server}")
    print(f"{'node ' + cluster.NODE_NAME:<26} {'Ready' if state.node_ready else 'NotReady'}")
    if state.kubeconfig:
        print(f"{'kubeconfig':<26} {state.kubeconfig}")


def _cmd_up(args: argparse.Namespace, layout: Layout) -> int:
    started = time.monotonic()
    state = cluster.up(layout, kubelet=not args.no_kubelet, timeout=args.timeout)
    _print_status(state)
    print(f"Ready in {time.monotonic() - started:.1f}s. Use it with: export KUBECONFIG={layout.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace, layout: Layout) -> int:
    stopped = cluster.down(layout, purge=args.purge)
    print(("Stopped " + ", ".join(stopped)) if stopped else "Nothing was running")
    if args.purge:
        print(f"Removed {layout.home}")
    return 0


def _cmd_status(args: argparse.Namespace, layout: Layout) -> int:
    state = cluster.status(layout)
    _print_status(state)
    return 0 if state.healthy else 3


def _cmd_kubeconfig(args: argparse.Namespace, layout: Layout) -> int:
    if not layout.kubeconfig.exists():
        raise LocalkubeError("no local cluster yet: run `localkube up` first")
    print(layout.kubeconfig)
    return 0


def _cmd_env(args: argparse.Namespace, layout: Layout) -> int:
    print(f"export KUBECONFIG={layout.kubeconfig}")
    print(f"export PATH={layout.bin_dir}:$PATH")
    return 0


def _cmd_user(args: argparse.Namespace, layout: Layout) -> int:
    if not (layout.pki / "ca.crt").exists():
        raise LocalkubeError("no local cluster yet: run `localkube up` first")
    settings = cluster.Settings.load(layout)
    path = pki.user_kubeconfig(
        layout.pki, layout.users, name=args.name, groups=tuple(args.group), server=settings.server
    )
    print(path)
    return 0


def _cmd_logs(args: argparse.Namespace, layout: Layout) -> int:
    from localkube.kubelet.logs import find_log  # noqa: PLC0415 - only `logs` needs the kubelet

    namespace, _, pod = args.pod.rpartition("/")
    path = find_log(layout.kubelet_root, namespace or "default", pod, args.container)
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


def _cmd_build(args: argparse.Namespace, layout: Layout) -> int:
    seconds = ensure_binaries(layout)
    print(
        f"{'Built' if seconds else 'Cached'}: {layout.bin_dir}" + (f" in {seconds:.0f}s" if seconds else "")
    )
    return 0


def _cmd_kubectl(args: argparse.Namespace, layout: Layout) -> int:
    ensure_binaries(layout)
    env = dict(os.environ, KUBECONFIG=str(layout.kubeconfig))
    kubectl = str(cluster.kubectl_path(layout))
    os.execve(kubectl, [kubectl, *args.args], env)  # noqa: S606 - hand the terminal to kubectl


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="localkube",
        description=f"A real Kubernetes {cluster.version()} control plane on loopback, process kubelet.",
    )
    sub = root.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build if needed, start what is not running, wait until usable")
    up.add_argument("--no-kubelet", action="store_true", help="start no process kubelet (no node)")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each stage")
    up.set_defaults(run=_cmd_up)
    down = sub.add_parser("down", help="stop the components this tool started")
    down.add_argument("--purge", action="store_true", help="also delete data, certificates and logs")
    down.set_defaults(run=_cmd_down)
    sub.add_parser("status", help="show components; exit 3 unless all are up").set_defaults(run=_cmd_status)
    sub.add_parser("kubeconfig", help="print the admin kubeconfig's path").set_defaults(run=_cmd_kubeconfig)
    sub.add_parser("env", help="print shell exports for KUBECONFIG and PATH").set_defaults(run=_cmd_env)
    user = sub.add_parser("user", help="make a client-certificate user; print its kubeconfig's path")
    user.add_argument("name", help="user name (the certificate's CN)")
    user.add_argument("--group", action="append", default=[], help="a group (O); repeatable")
    user.set_defaults(run=_cmd_user)
    logs = sub.add_parser("logs", help="print a container's log kept by the process kubelet")
    logs.add_argument("pod", help="NAMESPACE/POD (namespace defaults to 'default')")
    logs.add_argument("-c", "--container", help="container name, if the pod has several")
    logs.set_defaults(run=_cmd_logs)
    sub.add_parser("build", help="build the binaries into the cache (no-op when cached)").set_defaults(
        run=_cmd_build
    )
    kubectl = sub.add_parser("kubectl", help="run the matching kubectl against the local cluster")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)
    kubectl.set_defaults(run=_cmd_kubectl)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    layout = Layout.from_env()
    try:
        result: int = args.run(args, layout)
    except LocalkubeError as error:
        print(f"localkube: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result
