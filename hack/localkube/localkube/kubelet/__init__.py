"""The process kubelet: runs pods' containers as local processes, for tests on a machine without containers.

It registers a Ready Node (kept alive with a Lease), binds every unscheduled
pod to that node through pods/binding (no scheduler runs), and runs the pods
bound to it: images are ignored and each container's ``command`` + ``args``
runs with the host's tools, in its own mount namespace where the pod's volumes
(emptyDir, configMap, secret, downwardAPI, projected ServiceAccount tokens,
hostPath) are bind-mounted at their mount paths. It reports pod status like a
kubelet (phases, container states, exit codes, termination messages,
conditions), honours restart policies, probes, ``activeDeadlineSeconds`` and
graceful deletion, and appends each container's output to
``ROOT/pods/<namespace>_<pod>_<uid>/<container>.log`` (see `find_log`).

On start it adopts nothing: a pod bound to this node that already ran (phase
Running, or a container that started) has lost its processes, so it is marked
Failed with reason ``NodeRestart`` and its containers terminated with reason
``ContainerStatusUnknown``; bound pods that never started are run as usual.
On SIGTERM or SIGINT it ends every process it started and exits, writing
nothing more to the API.

Layers: ``kubelet`` (watch, bind, dispatch) > ``worker`` (one pod's life) >
``provision``, ``process``, ``probes``, ``node``, ``client`` (effects) >
``env``, ``volumes``, ``status``, ``downward`` (pure, unit-tested) > ``objects``.
"""

from localkube.kubelet.logs import find_log

__all__ = ["find_log"]
