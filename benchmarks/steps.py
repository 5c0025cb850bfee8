"""Benchmark: how fast Retcon moves from one step to the next, and what it costs the API server.

Runs against the local control plane (started if needed) with the real
operator as a child process, and prints:

- step-to-step latency: from the operator seeing a step's pod finish to the
  next step's Job being created (exact samples from the operator's
  transition trace), as percentiles;
- throughput: steps finished per second of wall time;
- API requests per step, from the apiserver's own `apiserver_request_total`,
  split by verb and resource (every client counted: operator, Job
  controller, kubelet, step pods);
- the operator's memory (RSS now and peak).

Usage: python benchmarks/steps.py [--sequential 20] [--runs 50] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from tests.operator_process import OperatorProcess  # noqa: E402
from tests.support import ClusterHandle  # noqa: E402

from localkube import cluster as localkube_cluster  # noqa: E402
from localkube.layout import Layout  # noqa: E402

METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def api_requests(layout: Layout) -> Counter[tuple[str, str]]:
    settings = localkube_cluster.Settings.load(layout)
    text = localkube_cluster.api_get(layout, settings, "/metrics", timeout=10)
    counts: Counter[tuple[str, str]] = Counter()
    for line in str(text).splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        counts[(labels.get("verb", ""), labels.get("resource", ""))] += int(float(match.group("value")))
    return counts


def workflow(name: str, steps: int) -> dict[str, Any]:
    env = [{"name": "PYTHONPATH", "value": str(REPO / "benchmarks")}]
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "defaults": {"env": env},
            "steps": [{"name": f"s{i:02d}", "function": "bench_steps:noop"} for i in range(steps)],
        },
    }


def run(name: str, workflow_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "retcon.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow_name}, "input": {"started": name}},
    }


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def component_pids(layout: Layout) -> dict[str, int]:
    pids = {}
    for component in ("kube-apiserver", "etcd", "kube-controller-manager", "kubelet"):
        pid = localkube_cluster._read_pid(layout, component)
        if pid is not None:
            pids[component] = pid
    return pids


def scenario(
    cluster: ClusterHandle,
    layout: Layout,
    trace: Path,
    namespace: str,
    label: str,
    runs: int,
    steps: int,
    operator_pid: int,
) -> dict[str, Any]:
    name = f"wf-{label}"
    cluster.apply(workflow(name, steps), namespace)
    trace.write_text("")
    before = api_requests(layout)
    pids = {"operator": operator_pid, **component_pids(layout)}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    names = [f"{label}-{i:03d}" for i in range(runs)]
    cluster.apply([run(n, name) for n in names], namespace)
    pending = set(names)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        items = cluster.get_json("workflowruns", "-n", namespace)["items"]
        for item in items:
            phase = (item.get("status") or {}).get("phase")
            if item["metadata"]["name"] in pending and phase in ("Succeeded", "Failed"):
                if phase == "Failed":
                    message = item["status"].get("message")
                    raise SystemExit(f"run {item['metadata']['name']} failed: {message}")
                pending.discard(item["metadata"]["name"])
        time.sleep(0.2)
    if pending:
        raise SystemExit(f"runs did not finish in 10 minutes: {sorted(pending)[:5]}")
    wall = time.monotonic() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    after = api_requests(layout)
    delta = after - before
    samples = [json.loads(line)["seconds"] for line in trace.read_text().splitlines() if line.strip()]
    total_steps = runs * steps
    return {
        "label": label,
        "runs": runs,
        "steps": total_steps,
        "wall": wall,
        "samples": samples,
        "requests": delta,
        "per_step": sum(delta.values()) / total_steps,
        "cpu": cpu,
    }


def report(result: dict[str, Any]) -> None:
    samples = [s * 1000 for s in result["samples"]]
    print(f"\n== {result['label']}: {result['runs']} run(s) x {result['steps'] // result['runs']} steps")
    print(f"wall time                {result['wall']:.1f} s")
    print(f"throughput               {result['steps'] / result['wall']:.1f} steps/s")
    if samples:
        print(
            f"step-to-step latency     n={len(samples)}  p50={percentile(samples, 50):.1f} ms  "
            f"p95={percentile(samples, 95):.1f} ms  p99={percentile(samples, 99):.1f} ms  "
            f"max={max(samples):.1f} ms  mean={statistics.fmean(samples):.1f} ms"
        )
    per_step = {name: seconds / result["steps"] * 1000 for name, seconds in result["cpu"].items()}
    cpu = ", ".join(f"{name} {ms:.0f}" for name, ms in per_step.items())
    print(f"CPU ms per step          {cpu}")
    requests: Counter[tuple[str, str]] = result["requests"]
    mutating = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
    writes = sum(v for (verb, _), v in requests.items() if verb in mutating)
    print(f"API requests per step    {result['per_step']:.1f} (writes {writes / result['steps']:.1f})")
    for (verb, resource), count in sorted(requests.items(), key=lambda item: -item[1])[:12]:
        print(f"    {verb:<7} {resource:<22} {count / result['steps']:6.2f}/step")


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--sequential", type=int, default=20, help="steps of the one sequential run")
    cli.add_argument("--runs", type=int, default=50, help="concurrent runs")
    cli.add_argument("--steps", type=int, default=5, help="steps of each concurrent run")
    args = cli.parse_args()

    layout = Layout.from_env()
    localkube_cluster.up(layout, quiet=True)
    settings = localkube_cluster.Settings.load(layout)
    cluster = ClusterHandle(
        kubeconfig=layout.kubeconfig,
        kubectl_bin=layout.binary("kubectl"),
        kubelet_root=layout.kubelet_root,
        api_port=settings.api_port,
        node_name=localkube_cluster.NODE_NAME,
        layout=layout,
    )
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "stepresult-policy.yaml"))
    work = Path(tempfile.mkdtemp(prefix="retcon-bench-"))
    trace = work / "transitions.jsonl"
    operator = OperatorProcess(
        kubeconfig=layout.kubeconfig,
        log=work / "operator.log",
        webhook="off",
        extra_env={"RETCON_TRACE_FILE": str(trace)},
    ).start()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        if operator.process is None:
            raise SystemExit("the operator process is gone")
        pid = operator.process.pid
        results = [
            scenario(cluster, layout, trace, namespace, "sequential", 1, args.sequential, pid),
            scenario(cluster, layout, trace, namespace, "concurrent", args.runs, args.steps, pid),
        ]
        rss, peak = rss_mib(operator.process.pid)
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    for result in results:
        report(result)
    print(f"\noperator memory          RSS {rss:.0f} MiB, peak {peak:.0f} MiB")
    print(f"operator log             {work / 'operator.log'}")
    (work / "results.yaml").write_text(
        yaml.safe_dump(
            [{k: v for k, v in r.items() if k not in ("samples", "requests")} for r in results],
            sort_keys=False,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
