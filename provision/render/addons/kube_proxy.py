"""kube-proxy as `kubeadm init` installs it (phases/addons/proxy): a ConfigMap holding its
KubeProxyConfiguration and an in-cluster kubeconfig, a ServiceAccount, RBAC, and a DaemonSet on
every Linux node.

The KubeProxyConfiguration carries only what kubeadm sets on top of kube-proxy's own defaults
(bindAddress, clientConnection.kubeconfig, clusterCIDR) plus the mode from the cluster file; every
other field keeps kube-proxy's default, so the file parses on every supported minor.
"""

from __future__ import annotations

from provision.config.models import Cluster
from provision.pki.kubeconfigs import endpoint_url
from provision.render.addons import k8s

NAME = "kube-proxy"
CONFIG_KEY = "config.conf"
KUBECONFIG_KEY = "kubeconfig.conf"
CONFIG_DIR = "/var/lib/kube-proxy"
API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
NODE_PROXIER_ROLE = "system:node-proxier"  # built into the API server's bootstrap RBAC
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def kube_proxy_configuration(cluster: Cluster) -> dict:
    ipv6 = cluster.networking.pod_subnet.version == 6
    return {
        "apiVersion": API_VERSION,
        "kind": "KubeProxyConfiguration",
        # kubeadm's defaults (componentconfigs/kubeproxy.go): the node's primary IP is found by
        # kube-proxy itself; only the address family matters here.
        "bindAddress": "::" if ipv6 else "0.0.0.0",
        "clientConnection": {"kubeconfig": f"{CONFIG_DIR}/{KUBECONFIG_KEY}"},
        # Traffic from this range counts as pod traffic (not masqueraded when it stays in-cluster).
        "clusterCIDR": str(cluster.networking.pod_subnet),
        "mode": cluster.kube_proxy.mode.value,
    }


def in_cluster_kubeconfig(cluster: Cluster) -> dict:
    """The API at the controlPlaneEndpoint, authenticated by the pod's ServiceAccount token.

    Not the `kubernetes` Service IP: kube-proxy is what makes that IP work, so it cannot use it.
    """
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {"certificate-authority": f"{SERVICE_ACCOUNT_DIR}/ca.crt", "server": endpoint_url(cluster)},
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "namespace": "default", "user": "default"}}],
        "current-context": "default",
        "users": [{"name": "default", "user": {"tokenFile": f"{SERVICE_ACCOUNT_DIR}/token"}}],
    }


def config_map(cluster: Cluster) -> dict:
    data = {
        CONFIG_KEY: k8s.to_yaml(kube_proxy_configuration(cluster)),
        KUBECONFIG_KEY: k8s.to_yaml(in_cluster_kubeconfig(cluster)),
    }
    return k8s.config_map(NAME, k8s.KUBE_SYSTEM, data, labels={"app": NAME}, signed=True)


def image(cluster: Cluster) -> str:
    return f"{cluster.image_repository}/kube-proxy:{cluster.kubernetes_version}"


def daemon_set(cluster: Cluster) -> dict:
    labels = {"k8s-app": NAME}
    container = {
        "name": NAME,
        "image": image(cluster),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/kube-proxy", f"--config={CONFIG_DIR}/{CONFIG_KEY}", "--hostname-override=$(NODE_NAME)"],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # It programs the node's iptables/IPVS tables and loads kernel modules.
        "securityContext": {"privileged": True},
        "volumeMounts": [
            {"mountPath": CONFIG_DIR, "name": NAME},
            {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
            {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": k8s.metadata(NAME, k8s.KUBE_SYSTEM, labels=labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "containers": [container],
                    "hostNetwork": True,
                    "serviceAccountName": NAME,
                    # Every node needs Service routing, whatever taints it carries.
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "volumes": [
                        {"name": NAME, "configMap": {"name": NAME}},
                        # Shared with the kubelet and CNI plugins so iptables calls do not race.
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                },
            },
        },
    }


def kube_proxy_objects(cluster: Cluster) -> list[dict]:
    """In apply order: identity and permissions first, then the config, then the DaemonSet."""
    return [
        k8s.service_account(NAME),
        k8s.cluster_role_binding("kubeadm:node-proxier", NODE_PROXIER_ROLE, [k8s.service_account_subject(NAME)]),
        # Joining nodes read the ConfigMap with their bootstrap token (kubeadm join's preflight).
        k8s.read_config_map_role(NAME, NAME, k8s.KUBE_SYSTEM),
        k8s.role_binding(NAME, k8s.KUBE_SYSTEM, NAME, [k8s.group(k8s.BOOTSTRAP_TOKEN_GROUP)]),
        config_map(cluster),
        daemon_set(cluster),
    ]
