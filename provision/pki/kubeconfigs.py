"""The kubeconfig files kubeadm writes, as data, and their YAML.

admin.conf and super-admin.conf point at the controlPlaneEndpoint; controller-manager.conf and
scheduler.conf at the local API server of their own control plane (kubeadm ≥ 1.26 does the same,
so they keep working when the endpoint's load balancer does not); kubelet.conf at the endpoint on
workers and, on control planes, at their own API server (kubeadm's ControlPlaneKubeletLocalMode,
on by default from 1.33): a control plane's kubelet then never depends on the VIP, which its own
static pods (keepalived, kube-vip) provide, so its mirror pods and Node appear as soon as its
API server answers.
Credentials are embedded (client-certificate-data), as kubeadm does.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from provision import yamltext
from provision.config.models import Cluster, Host, Role, is_ip
from provision.pki.certlist import CLUSTER_ADMINS, MASTERS, NODES


def server_url(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if is_ip(host) and ":" in host else f"https://{host}:{port}"


def endpoint_url(cluster: Cluster) -> str:
    return server_url(*cluster.endpoint)


def local_url(cluster: Cluster, host: Host) -> str:
    return server_url(host.advertise_address, cluster.api_server_port)


def kubelet_url(cluster: Cluster, host: Host) -> str:
    """A control plane's own API server; the endpoint for workers, or their local API load
    balancer (render/ha.py) when they have one."""
    if host.has(Role.CONTROL_PLANE):
        return local_url(cluster, host)
    if cluster.load_balancer.worker_local_lb:
        return server_url("127.0.0.1", cluster.load_balancer.worker_local_lb_port)
    return endpoint_url(cluster)


@dataclass(frozen=True)
class KubeconfigSpec:
    file: str  # e.g. admin.conf, also its name for `certs renew`
    user: Callable[[Cluster, Host | None], str]
    organizations: Callable[[Cluster], tuple[str, ...]]
    server: Callable[[Cluster, Host | None], str]
    hosts: Callable[[Cluster], list[Host]] | None  # None: one file for the cluster
    needed: Callable[[Cluster], bool] = lambda cluster: True


def _admin_orgs(cluster: Cluster) -> tuple[str, ...]:
    # Before 1.29 kubeadm put admin.conf in system:masters; from 1.29 a bindable group instead.
    return (MASTERS,) if cluster.minor < 29 else (CLUSTER_ADMINS,)


KUBECONFIGS: tuple[KubeconfigSpec, ...] = (
    KubeconfigSpec("admin.conf", lambda c, h: "kubernetes-admin", _admin_orgs, lambda c, h: endpoint_url(c), None),
    KubeconfigSpec(
        "super-admin.conf", lambda c, h: "kubernetes-super-admin", lambda c: (MASTERS,),
        lambda c, h: endpoint_url(c), None, needed=lambda c: c.minor >= 29,
    ),
    KubeconfigSpec(
        "controller-manager.conf", lambda c, h: "system:kube-controller-manager", lambda c: (),
        local_url, lambda c: c.control_planes,
    ),
    KubeconfigSpec(
        "scheduler.conf", lambda c, h: "system:kube-scheduler", lambda c: (),
        local_url, lambda c: c.control_planes,
    ),
    KubeconfigSpec(
        "kubelet.conf", lambda c, h: f"system:node:{h.name}", lambda c: (NODES,),
        kubelet_url, lambda c: c.nodes,
    ),
)

KUBECONFIG_BY_FILE = {spec.file: spec for spec in KUBECONFIGS}

def build(cluster_name: str, server: str, user: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    context = f"{user}@{cluster_name}"
    doc = {
        "apiVersion": "v1",
        "clusters": [{"cluster": {"certificate-authority-data": b64(ca_pem), "server": server}, "name": cluster_name}],
        "contexts": [{"context": {"cluster": cluster_name, "user": user}, "name": context}],
        "current-context": context,
        "kind": "Config",
        "preferences": {},
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
    }
    return yamltext.dump(doc).encode()


@dataclass(frozen=True)
class Parsed:
    server: str
    user: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def parse(data: bytes) -> Parsed:
    """The parts of a kubeconfig we wrote. Raises ValueError when it is not of that shape."""
    try:
        doc = yamltext.load(data)
        context_name = doc["current-context"]
        context = next(c["context"] for c in doc["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
        user = next(u for u in doc["users"] if u["name"] == context["user"])
        return Parsed(
            server=cluster["server"],
            user=user["name"],
            ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
            cert_pem=base64.b64decode(user["user"]["client-certificate-data"]),
            key_pem=base64.b64decode(user["user"]["client-key-data"]),
        )
    except (yaml.YAMLError, KeyError, TypeError, StopIteration, ValueError) as exc:
        raise ValueError(f"not a kubeconfig with embedded client credentials ({exc.__class__.__name__})") from None
