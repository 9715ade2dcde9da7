"""calico, the manifest way (upstream's calico.yaml, Kubernetes datastore, no Typha), for one pinned
release, built from data.

Included: the calico-config ConfigMap (CNI conflist template, BIRD backend, auto MTU); the CRDs
calico's components read and write; ServiceAccounts, ClusterRoles and bindings for calico-node,
the CNI plugin and calico-kube-controllers; the calico-node DaemonSet (init containers that
install the CNI binaries and conflist and mount bpffs) and the calico-kube-controllers Deployment
with its PodDisruptionBudget. The IPv4 pool is podSubnet (CALICO_IPV4POOL_CIDR), IPIP
encapsulated; an IPv6 podSubnet becomes a VXLAN IPv6 pool instead. Node addresses are taken
from the node's InternalIP (the kubelet's --node-ip), not guessed from interfaces.

Left out on purpose: the tigera-operator, Typha (worth it above ~50 nodes) and the full OpenAPI
schemas of calico's CRDs. Upstream's CRD schemas run to thousands of lines; here each CRD is
defined from one row of `CRDS` with a structural schema that keeps spec/status as given
(x-kubernetes-preserve-unknown-fields). The API server then stores calico's objects without
checking their fields - calico's own components validate what they read - which is the price of
not shipping a vendored copy of upstream's file.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from provision.config.models import Cluster
from provision.render.cni.objects import (
    KUBE_SYSTEM,
    cluster_role,
    cluster_role_binding,
    field_env,
    host_path,
    meta,
    rule,
    service_account,
)

# Pinned release; image names as upstream's calico.yaml of that release writes them.
CALICO_VERSION = "v3.29.2"
CNI_IMAGE = f"docker.io/calico/cni:{CALICO_VERSION}"
NODE_IMAGE = f"docker.io/calico/node:{CALICO_VERSION}"
KUBE_CONTROLLERS_IMAGE = f"docker.io/calico/kube-controllers:{CALICO_VERSION}"

CALICO_GROUP = "crd.projectcalico.org"
ANP_GROUP = "policy.networking.k8s.io"


class CRD(NamedTuple):
    kind: str
    plural: str
    namespaced: bool = False
    group: str = CALICO_GROUP
    version: str = "v1"
    status: bool = False  # has a status subresource


# The custom resources calico v3.29 (manifest install) defines, one row each.
CRDS: tuple[CRD, ...] = (
    CRD("BGPConfiguration", "bgpconfigurations"),
    CRD("BGPFilter", "bgpfilters"),
    CRD("BGPPeer", "bgppeers"),
    CRD("BlockAffinity", "blockaffinities"),
    CRD("CalicoNodeStatus", "caliconodestatuses"),
    CRD("ClusterInformation", "clusterinformations"),
    CRD("FelixConfiguration", "felixconfigurations"),
    CRD("GlobalNetworkPolicy", "globalnetworkpolicies"),
    CRD("GlobalNetworkSet", "globalnetworksets"),
    CRD("HostEndpoint", "hostendpoints"),
    CRD("IPAMBlock", "ipamblocks"),
    CRD("IPAMConfig", "ipamconfigs"),
    CRD("IPAMHandle", "ipamhandles"),
    CRD("IPPool", "ippools"),
    CRD("IPReservation", "ipreservations"),
    CRD("KubeControllersConfiguration", "kubecontrollersconfigurations"),
    CRD("NetworkPolicy", "networkpolicies", namespaced=True),
    CRD("NetworkSet", "networksets", namespaced=True),
    CRD("Tier", "tiers"),
    # Kubernetes' AdminNetworkPolicy (sig-network network-policy-api), which calico-node watches.
    CRD("AdminNetworkPolicy", "adminnetworkpolicies", group=ANP_GROUP, version="v1alpha1", status=True),
)


def crd_object(crd: CRD) -> dict:
    free_form = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": free_form,
    }
    if crd.status:
        properties["status"] = free_form
    version = {
        "name": crd.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": properties}},
    }
    if crd.status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": meta(f"{crd.plural}.{crd.group}"),
        "spec": {
            "group": crd.group,
            "names": {
                "kind": crd.kind,
                "listKind": f"{crd.kind}List",
                "plural": crd.plural,
                "singular": crd.kind.lower(),
            },
            "scope": "Namespaced" if crd.namespaced else "Cluster",
            "versions": [version],
        },
    }


# --- configuration -----------------------------------------------------------------------------


def cni_network_config() -> dict:
    """The conflist template calico's install-cni fills in (the __PLACEHOLDERS__ are its own)."""
    return {
        "name": "k8s-pod-network",
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "calico",
                "log_level": "info",
                "log_file_path": "/var/log/calico/cni/cni.log",
                "datastore_type": "kubernetes",
                "nodename": "__KUBERNETES_NODE_NAME__",
                "mtu": "__CNI_MTU__",
                "ipam": {"type": "calico-ipam"},
                "policy": {"type": "k8s"},
                "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"},
            },
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def _config_map() -> dict:
    # install-cni substitutes __CNI_MTU__ textually and the result must be a JSON number.
    template = json.dumps(cni_network_config(), indent=2).replace('"__CNI_MTU__"', "__CNI_MTU__")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("calico-config", KUBE_SYSTEM),
        "data": {
            "typha_service_name": "none",
            "calico_backend": "bird",
            "veth_mtu": "0",  # 0: calico picks the MTU from the host interface
            "cni_network_config": template,
        },
    }


def _from_config(name: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": "calico-config", "key": key}}}


def _pool_env(cluster: Cluster) -> list[dict]:
    subnet = str(cluster.networking.pod_subnet)
    if cluster.networking.pod_subnet.version == 4:
        values = {
            "IP": "autodetect",
            "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
            "CALICO_IPV4POOL_CIDR": subnet,
            "CALICO_IPV4POOL_IPIP": "Always",
            "CALICO_IPV4POOL_VXLAN": "Never",
            "CALICO_IPV6POOL_VXLAN": "Never",
            "FELIX_IPV6SUPPORT": "false",
        }
    else:
        values = {
            "IP": "none",
            "IP6": "autodetect",
            "IP6_AUTODETECTION_METHOD": "kubernetes-internal-ip",
            "CALICO_IPV6POOL_CIDR": subnet,
            "CALICO_IPV6POOL_VXLAN": "Always",
            "CALICO_IPV6POOL_NAT_OUTGOING": "true",
            "FELIX_IPV6SUPPORT": "true",
        }
    return [{"name": k, "value": v} for k, v in values.items()]


# --- calico-node -------------------------------------------------------------------------------


def _calico_node(cluster: Cluster) -> dict:
    node_name = field_env("KUBERNETES_NODE_NAME", "spec.nodeName")
    endpoint_override = [{"configMapRef": {"name": "kubernetes-services-endpoint", "optional": True}}]
    privileged = {"privileged": True}
    init_containers = [
        {
            "name": "upgrade-ipam",
            "image": CNI_IMAGE,
            "command": ["/opt/cni/bin/calico-ipam", "-upgrade"],
            "envFrom": endpoint_override,
            "env": [node_name, _from_config("CALICO_NETWORKING_BACKEND", "calico_backend")],
            "volumeMounts": [
                {"name": "host-local-net-dir", "mountPath": "/var/lib/cni/networks"},
                {"name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin"},
            ],
            "securityContext": privileged,
        },
        {
            "name": "install-cni",
            "image": CNI_IMAGE,
            "command": ["/opt/cni/bin/install"],
            "envFrom": endpoint_override,
            "env": [
                {"name": "CNI_CONF_NAME", "value": "10-calico.conflist"},
                _from_config("CNI_NETWORK_CONFIG", "cni_network_config"),
                node_name,
                _from_config("CNI_MTU", "veth_mtu"),
                {"name": "SLEEP", "value": "false"},
            ],
            "volumeMounts": [
                {"name": "cni-bin-dir", "mountPath": "/host/opt/cni/bin"},
                {"name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d"},
            ],
            "securityContext": privileged,
        },
        {
            "name": "mount-bpffs",
            "image": NODE_IMAGE,
            "command": ["calico-node", "-init", "-best-effort"],
            "volumeMounts": [
                {"name": "sys-fs", "mountPath": "/sys/fs", "mountPropagation": "Bidirectional"},
                {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "Bidirectional"},
                {"name": "nodeproc", "mountPath": "/nodeproc", "readOnly": True},
            ],
            "securityContext": privileged,
        },
    ]
    env = [
        {"name": "DATASTORE_TYPE", "value": "kubernetes"},
        {"name": "WAIT_FOR_DATASTORE", "value": "true"},
        field_env("NODENAME", "spec.nodeName"),
        _from_config("CALICO_NETWORKING_BACKEND", "calico_backend"),
        {"name": "CLUSTER_TYPE", "value": "k8s,bgp"},
        *_pool_env(cluster),
        *(_from_config(name, "veth_mtu") for name in (
            "FELIX_IPINIPMTU", "FELIX_VXLANMTU", "FELIX_VXLANMTUV6", "FELIX_WIREGUARDMTU", "FELIX_WIREGUARDMTUV6"
        )),
        {"name": "CALICO_DISABLE_FILE_LOGGING", "value": "true"},
        {"name": "FELIX_DEFAULTENDPOINTTOHOSTACTION", "value": "ACCEPT"},
        {"name": "FELIX_HEALTHENABLED", "value": "true"},
    ]
    node = {
        "name": "calico-node",
        "image": NODE_IMAGE,
        "envFrom": endpoint_override,
        "env": env,
        "securityContext": privileged,
        "resources": {"requests": {"cpu": "250m"}},
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/calico-node", "-shutdown"]}}},
        "livenessProbe": {
            "exec": {"command": ["/bin/calico-node", "-felix-live", "-bird-live"]},
            "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10,
        },
        "readinessProbe": {
            "exec": {"command": ["/bin/calico-node", "-felix-ready", "-bird-ready"]},
            "periodSeconds": 10, "timeoutSeconds": 10,
        },
        "volumeMounts": [
            {"name": "cni-net-dir", "mountPath": "/host/etc/cni/net.d"},
            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
            {"name": "var-run-calico", "mountPath": "/var/run/calico"},
            {"name": "var-lib-calico", "mountPath": "/var/lib/calico"},
            {"name": "policysync", "mountPath": "/var/run/nodeagent"},
            {"name": "bpffs", "mountPath": "/sys/fs/bpf"},
            {"name": "cni-log-dir", "mountPath": "/var/log/calico/cni", "readOnly": True},
        ],
    }
    labels = {"k8s-app": "calico-node"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta("calico-node", KUBE_SYSTEM, labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "hostNetwork": True,
                    "tolerations": [
                        {"effect": "NoSchedule", "operator": "Exists"},
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"effect": "NoExecute", "operator": "Exists"},
                    ],
                    "serviceAccountName": "calico-node",
                    "terminationGracePeriodSeconds": 0,
                    "priorityClassName": "system-node-critical",
                    "initContainers": init_containers,
                    "containers": [node],
                    "volumes": [
                        host_path("lib-modules", "/lib/modules"),
                        host_path("var-run-calico", "/var/run/calico", "DirectoryOrCreate"),
                        host_path("var-lib-calico", "/var/lib/calico", "DirectoryOrCreate"),
                        host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate"),
                        host_path("sys-fs", "/sys/fs/", "DirectoryOrCreate"),
                        host_path("bpffs", "/sys/fs/bpf", "Directory"),
                        host_path("nodeproc", "/proc"),
                        host_path("cni-bin-dir", "/opt/cni/bin", "DirectoryOrCreate"),
                        host_path("cni-net-dir", "/etc/cni/net.d"),
                        host_path("cni-log-dir", "/var/log/calico/cni"),
                        host_path("host-local-net-dir", "/var/lib/cni/networks"),
                        host_path("policysync", "/var/run/nodeagent", "DirectoryOrCreate"),
                    ],
                },
            },
        },
    }


# --- calico-kube-controllers -------------------------------------------------------------------


def _kube_controllers() -> list[dict]:
    labels = {"k8s-app": "calico-kube-controllers"}
    container = {
        "name": "calico-kube-controllers",
        "image": KUBE_CONTROLLERS_IMAGE,
        "env": [
            {"name": "ENABLED_CONTROLLERS", "value": "node"},
            {"name": "DATASTORE_TYPE", "value": "kubernetes"},
        ],
        "livenessProbe": {
            "exec": {"command": ["/usr/bin/check-status", "-l"]},
            "periodSeconds": 10, "initialDelaySeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10,
        },
        "readinessProbe": {"exec": {"command": ["/usr/bin/check-status", "-r"]}, "periodSeconds": 10},
        "securityContext": {"runAsNonRoot": True},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("calico-kube-controllers", KUBE_SYSTEM, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"name": "calico-kube-controllers", "namespace": KUBE_SYSTEM, "labels": labels},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                    ],
                    "serviceAccountName": "calico-kube-controllers",
                    "priorityClassName": "system-cluster-critical",
                    "containers": [container],
                },
            },
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta("calico-kube-controllers", KUBE_SYSTEM, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }
    return [deployment, budget]


# --- RBAC --------------------------------------------------------------------------------------

_CRUD = ["get", "list", "create", "update", "delete"]
_IPAM = ["blockaffinities", "ipamblocks", "ipamhandles"]


def _roles() -> list[dict]:
    calico = [CALICO_GROUP]
    kube_controllers = [
        rule([""], ["nodes"], ["watch", "list", "get"]),
        rule([""], ["pods"], ["get", "list", "watch"]),
        rule(calico, ["ipreservations"], ["list"]),
        rule(calico, [*_IPAM, "tiers"], [*_CRUD, "watch"]),
        rule(calico, ["ippools"], ["list", "watch"]),
        rule(calico, ["hostendpoints"], _CRUD),
        rule(calico, ["clusterinformations"], ["get", "list", "create", "update", "watch"]),
        rule(calico, ["kubecontrollersconfigurations"], ["get", "create", "list", "update", "watch"]),
    ]
    cni_plugin = [
        rule([""], ["pods", "nodes", "namespaces"], ["get"]),
        rule([""], ["pods/status"], ["patch"]),
        rule(calico, [*_IPAM, "clusterinformations", "ippools", "ipreservations", "ipamconfigs"], _CRUD),
    ]
    readable = [
        "globalfelixconfigs", "felixconfigurations", "bgppeers", "bgpfilters", "globalbgpconfigs", "bgpconfigurations",
        "ippools", "ipreservations", "ipamblocks", "globalnetworkpolicies", "globalnetworksets", "networkpolicies",
        "networksets", "clusterinformations", "hostendpoints", "blockaffinities", "caliconodestatuses", "tiers",
    ]
    node = [
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["calico-cni-plugin"], "verbs": ["create"]},
        rule([""], ["pods", "nodes", "namespaces"], ["get"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["watch", "list"]),
        rule([""], ["endpoints", "services"], ["watch", "list", "get"]),
        rule([""], ["configmaps"], ["get"]),
        rule([""], ["nodes/status"], ["patch", "update"]),
        rule(["networking.k8s.io"], ["networkpolicies"], ["watch", "list"]),
        rule([ANP_GROUP], ["adminnetworkpolicies"], ["watch", "list"]),
        rule([""], ["pods", "namespaces", "serviceaccounts"], ["list", "watch"]),
        rule([""], ["pods/status"], ["patch"]),
        rule(calico, readable, ["get", "list", "watch"]),
        rule(calico, ["ippools", "felixconfigurations", "clusterinformations"], ["create", "update"]),
        rule(calico, ["caliconodestatuses"], ["update"]),
        rule([""], ["nodes"], ["get", "list", "watch"]),
        rule(calico, ["bgpconfigurations", "bgppeers"], ["create", "update"]),
        rule(calico, _IPAM, _CRUD),
        rule(calico, ["ipamconfigs"], ["get", "create"]),
        rule(calico, ["blockaffinities"], ["watch"]),
        rule(["apps"], ["daemonsets"], ["get"]),
    ]
    found = []
    for name, rules in (("calico-kube-controllers", kube_controllers), ("calico-cni-plugin", cni_plugin), ("calico-node", node)):
        found += [
            service_account(name, KUBE_SYSTEM),
            cluster_role(name, rules),
            cluster_role_binding(name, name, name, KUBE_SYSTEM),
        ]
    return found


def calico_objects(cluster: Cluster) -> list[dict]:
    """Apply order: CRDs first (the API must know the kinds), then config, RBAC, workloads."""
    return [
        *(crd_object(crd) for crd in CRDS),
        _config_map(),
        *_roles(),
        _calico_node(cluster),
        *_kube_controllers(),
    ]
