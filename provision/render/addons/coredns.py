"""CoreDNS as `kubeadm init` installs it (phases/addons/dns): ServiceAccount, ClusterRole and
binding, the Corefile ConfigMap, a 2-replica Deployment and the `kube-dns` Service on the tenth
address of the service range (the address every kubelet's clusterDNS points at).
"""

from __future__ import annotations

from provision.config.models import Cluster
from provision.render.addons import k8s
from provision.render.templates import render_text
from provision.versions import defaults

NAME = "coredns"
SERVICE = "kube-dns"  # kept from kube-dns days: clients and kubelets know it by this name
LABELS = {"k8s-app": SERVICE}
DEFAULT_REGISTRY = "registry.k8s.io"
REPLICAS = 2
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"


def corefile(cluster: Cluster) -> str:
    return render_text(
        "coredns/Corefile.j2",
        domain=cluster.networking.dns_domain,
        cache_cluster_zone=cluster.minor < 32,  # see the template: kubeadm ≥ 1.32 stops caching it
    )


def image(cluster: Cluster) -> str:
    """kubeadm's rule (images.GetDNSImage): the official image lives at registry.k8s.io/coredns/coredns;
    a custom imageRepository is expected to mirror it flat, as <repository>/coredns."""
    repository = cluster.image_repository
    if repository == DEFAULT_REGISTRY:
        repository = f"{repository}/coredns"
    return f"{repository}/coredns:{defaults(cluster.minor).coredns}"


def cluster_role() -> dict:
    return {
        "apiVersion": f"{k8s.RBAC_API}/v1",
        "kind": "ClusterRole",
        "metadata": k8s.metadata("system:coredns"),
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }


def deployment(cluster: Cluster) -> dict:
    ports = [
        {"containerPort": 53, "name": "dns", "protocol": "UDP"},
        {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
        {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
        {"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"},
        {"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"},
    ]
    container = {
        "name": NAME,
        "image": image(cluster),
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": ports,
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "liveness-probe", "scheme": "HTTP"},
            "initialDelaySeconds": 60,
            "timeoutSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 5,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "readiness-probe", "scheme": "HTTP"}},
        # Binds port 53 without root privileges; nothing else.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": k8s.metadata(NAME, k8s.KUBE_SYSTEM, labels=LABELS),
        "spec": {
            "replicas": REPLICAS,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": NAME,
                    # Prefer the two replicas on different nodes, so one node's loss keeps DNS up.
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {
                                            "matchExpressions": [{"key": "k8s-app", "operator": "In", "values": [SERVICE]}]
                                        },
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    # Allowed on control planes: a cluster of control planes only still has DNS.
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"},
                    ],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [container],
                    # The node's resolver, not itself: CoreDNS forwards to the node's upstreams.
                    "dnsPolicy": "Default",
                    "volumes": [
                        {"name": "config-volume", "configMap": {"name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]}}
                    ],
                },
            },
        },
    }


def service(cluster: Cluster) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": k8s.metadata(
            SERVICE,
            k8s.KUBE_SYSTEM,
            labels={**LABELS, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            annotations={"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        ),
        "spec": {
            "clusterIP": cluster.networking.dns_service_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
            "selector": LABELS,
        },
    }


def coredns_objects(cluster: Cluster) -> list[dict]:
    """In apply order. (kubeadm's Service also carries resourceVersion "0", an artefact of its
    create-or-update client; it is not desired state, so it is left out.)"""
    return [
        k8s.service_account(NAME),
        cluster_role(),
        k8s.cluster_role_binding("system:coredns", "system:coredns", [k8s.service_account_subject(NAME)]),
        k8s.config_map(NAME, k8s.KUBE_SYSTEM, {"Corefile": corefile(cluster)}),
        deployment(cluster),
        service(cluster),
    ]
