"""A real Kubernetes control plane on a machine without a container engine.

`localkube` builds kube-apiserver, kube-controller-manager, kubectl and etcd
from Go modules (pinned in ``gobuild/go.mod``), runs them on loopback, and
stands in for the kubelet with a process kubelet that runs pod containers as
local processes. Tests and the quick start use it; the operator never imports it.
"""

from localkube.layout import KUBERNETES_VERSION, Layout

__all__ = ["KUBERNETES_VERSION", "Layout"]
