"""flannel as upstream's kube-flannel.yml installs it, built from data for one pinned release.

Objects, in apply order: Namespace kube-flannel (privileged Pod Security level: flannel needs
NET_ADMIN and host paths), ServiceAccount, ClusterRole + binding, ConfigMap kube-flannel-cfg
(the CNI conflist and net-conf.json with Network = podSubnet, VXLAN backend) and the DaemonSet.
flanneld runs with --kube-subnet-mgr: it takes each node's spec.podCIDR, so the
controller-manager must allocate node CIDRs (--allocate-node-cidrs, --cluster-cidr).
The CNI binary is copied to /opt/cni/bin, as upstream does; containerd's bin_dir must include it.
"""

from __future__ import annotations

import json

from provision.config.models import Cluster
from provision.render.cni.objects import (
    cluster_role,
    cluster_role_binding,
    field_env,
    host_path,
    meta,
    rule,
    service_account,
)

# Pinned release and the images upstream's manifest of that release names.
FLANNEL_VERSION = "v0.26.7"
FLANNEL_IMAGE = f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"
FLANNEL_CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"

NAMESPACE = "kube-flannel"
LABELS = {"app": "flannel", "k8s-app": "flannel", "tier": "node"}


def net_conf(cluster: Cluster) -> dict:
    subnet = cluster.networking.pod_subnet
    conf: dict = {"Network": str(subnet)} if subnet.version == 4 else {
        "EnableIPv4": False, "EnableIPv6": True, "IPv6Network": str(subnet)
    }
    conf.update({"EnableNFTables": False, "Backend": {"Type": "vxlan"}})
    return conf


def cni_conf() -> dict:
    return {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _daemon_set() -> dict:
    cfg_mount = {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"}
    init_containers = [
        {
            "name": "install-cni-plugin",
            "image": FLANNEL_CNI_PLUGIN_IMAGE,
            "command": ["cp"],
            "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
            "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
        },
        {
            "name": "install-cni",
            "image": FLANNEL_IMAGE,
            "command": ["cp"],
            "args": ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
            "volumeMounts": [{"name": "cni", "mountPath": "/etc/cni/net.d"}, cfg_mount],
        },
    ]
    flanneld = {
        "name": "kube-flannel",
        "image": FLANNEL_IMAGE,
        "command": ["/opt/bin/flanneld"],
        "args": ["--ip-masq", "--kube-subnet-mgr"],
        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
        "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
        "env": [
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
        ],
        "volumeMounts": [
            {"name": "run", "mountPath": "/run/flannel"},
            cfg_mount,
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
        ],
    }
    linux_only = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]
            }
        }
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("kube-flannel-ds", NAMESPACE, LABELS),
        "spec": {
            "selector": {"matchLabels": {"app": "flannel"}},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "affinity": linux_only,
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": "flannel",
                    "initContainers": init_containers,
                    "containers": [flanneld],
                    "volumes": [
                        host_path("run", "/run/flannel"),
                        host_path("cni-plugin", "/opt/cni/bin"),
                        host_path("cni", "/etc/cni/net.d"),
                        {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
                        host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
                    ],
                },
            },
        },
    }


def flannel_objects(cluster: Cluster) -> list[dict]:
    namespace_labels = {"k8s-app": "flannel", "pod-security.kubernetes.io/enforce": "privileged"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(NAMESPACE, labels=namespace_labels)},
        service_account("flannel", NAMESPACE),
        cluster_role(
            "flannel",
            [
                rule([""], ["pods"], ["get"]),
                rule([""], ["nodes"], ["get", "list", "watch"]),
                rule([""], ["nodes/status"], ["patch"]),
            ],
        ),
        cluster_role_binding("flannel", "flannel", "flannel", NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("kube-flannel-cfg", NAMESPACE, LABELS),
            "data": {
                "cni-conf.json": json.dumps(cni_conf(), indent=2) + "\n",
                "net-conf.json": json.dumps(net_conf(cluster), indent=2) + "\n",
            },
        },
        _daemon_set(),
    ]
