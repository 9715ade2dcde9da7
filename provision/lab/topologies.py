"""The cluster shapes a lab is built into by the e2e suite, bench/up.py and scripts/lab-cluster:
how many hosts, which roles, and what the lab's cluster file gains for each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Topology:
    hosts: int
    control_planes: int
    description: str


TOPOLOGIES = {
    "1cp-2workers": Topology(3, 1, "1 control plane + 2 workers, stacked etcd (the default)"),
    "3cp-1worker-haproxy": Topology(4, 3, "3 control planes + 1 worker behind a haproxy-keepalived VIP"),
    "external-etcd": Topology(5, 1, "1 control plane + 1 worker, etcd on 3 hosts of its own"),
    "worker-local-lb": Topology(3, 2, "2 control planes, a worker reaching them through its local haproxy"),
}


def vip_of(lab_hosts) -> str:
    """The API VIP of an HA lab: .100 of the lab's subnet, which no host holds."""
    return lab_hosts[0].address.rsplit(".", 1)[0] + ".100"


def cluster_document(name: str, lab_cluster_file: Path, lab_hosts, *, version: str | None = None,
                     bundle: Path | None = None, cluster_dir: Path | None = None) -> dict:
    """The lab's cluster file, shaped into topology `name`."""
    doc = yaml.safe_load(lab_cluster_file.read_text())
    hosts = doc["hosts"]
    doc["cni"] = "bridge"  # the CNI that needs no image: none can be pulled into a lab
    if version:
        doc["kubernetesVersion"] = version
    if bundle:
        doc["artifacts"] = {"source": "bundle", "bundleDir": str(bundle)}
    if cluster_dir:
        doc["clusterDir"] = str(cluster_dir)
    if name == "3cp-1worker-haproxy":
        doc["controlPlaneEndpoint"] = f"{vip_of(lab_hosts)}:6443"
        doc["loadBalancer"] = {"mode": "haproxy-keepalived"}
    elif name == "external-etcd":
        hosts[1]["roles"] = ["worker"]
        for host in hosts[2:]:
            host["roles"] = ["etcd"]
        doc["etcd"] = {"topology": "external"}
    elif name == "worker-local-lb":
        # No VIP: each worker balances over every control plane itself, on 127.0.0.1.
        doc["loadBalancer"] = {"workerLocalLB": True, "workerLocalLBPort": 6443}
    elif name != "1cp-2workers":
        raise KeyError(name)
    return doc
