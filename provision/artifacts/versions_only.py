"""Clusters that stand for "any cluster of version V", for `kubeprov artifacts list --version V`.

Two shapes between them take every optional path: stacked etcd + flannel + kube-vip, and
external etcd + calico + haproxy/keepalived with a local haproxy on workers. The union of
their needs is everything a cluster of that version might need; each artifact's `when` says
which setting brings it in.
"""

from __future__ import annotations

from provision.config.loader import cluster_from_data
from provision.config.models import Cluster, LoadBalancer

_VIP = "10.0.0.100:6443"
# The file's spelling of the key, whatever capitalisation the model settles on.
_WORKER_LOCAL_LB = LoadBalancer.model_fields["worker_local_lb"].alias or "worker_local_lb"


def _hosts(cps: int, workers: int, etcd: int) -> list[dict]:
    hosts = [{"name": f"cp{i}", "address": f"10.0.0.{10 + i}", "roles": ["control-plane"]} for i in range(1, cps + 1)]
    hosts += [{"name": f"w{i}", "address": f"10.0.0.{20 + i}", "roles": ["worker"]} for i in range(1, workers + 1)]
    hosts += [{"name": f"etcd{i}", "address": f"10.0.0.{30 + i}", "roles": ["etcd"]} for i in range(1, etcd + 1)]
    return hosts


def _cluster(version: str, **fields) -> Cluster:
    data = {"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": version} | fields
    return cluster_from_data(data, "--version")


def default_cluster(version: str) -> Cluster:
    """The plainest cluster of a version: one control plane, one worker, stacked etcd, default CNI."""
    return _cluster(version, hosts=_hosts(1, 1, 0))


def every_shape(version: str) -> list[Cluster]:
    return [
        _cluster(version, hosts=_hosts(3, 1, 0), controlPlaneEndpoint=_VIP, cni="flannel", loadBalancer={"mode": "kube-vip"}),
        _cluster(
            version, hosts=_hosts(3, 1, 3), controlPlaneEndpoint=_VIP, cni="calico", etcd={"topology": "external"},
            loadBalancer={"mode": "haproxy-keepalived", "workerLocalLB": True},
        ),
    ]
