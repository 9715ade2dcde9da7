"""Every certificate of the cluster, as data: the table kubeadm keeps in phases/certs/certlist.go.

A `CertSpec` says what a certificate is (file name, subject, usages, which CA signs it) and how
to compute its SANs for a host. Whether it is issued per host and where it lands follows from
that. Nothing here touches disk or generates keys; `store.py` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.x509.oid import ExtendedKeyUsageOID

from provision.config.models import Cluster, Host, is_ip

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH

# kubeadm 1.29 stopped handing out system:masters (KEP-4214): admin.conf and the apiserver's
# kubelet client use kubeadm:cluster-admins; only super-admin.conf keeps the break-glass group.
MASTERS = "system:masters"
CLUSTER_ADMINS = "kubeadm:cluster-admins"
NODES = "system:nodes"


@dataclass(frozen=True)
class SANs:
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class CASpec:
    name: str  # kubeadm's name, as `certs renew` / `check-expiration` show it
    base_name: str  # path under the pki dir, without .crt/.key
    common_name: str


@dataclass(frozen=True)
class CertSpec:
    name: str
    base_name: str
    ca: str  # CASpec.name
    usages: tuple
    common_name: Callable[[Cluster, Host], str]
    organizations: Callable[[Cluster], tuple[str, ...]] = lambda cluster: ()
    sans: Callable[[Cluster, Host], SANs] = lambda cluster, host: SANs()
    hosts: Callable[[Cluster], list[Host]] = field(default=lambda cluster: cluster.control_planes)


def _fixed(value: str) -> Callable[[Cluster, Host], str]:
    return lambda cluster, host: value


def _node_name(cluster: Cluster, host: Host) -> str:
    return host.name


def _split(names: list[str]) -> SANs:
    """Sort names into DNS and IP SANs, dropping duplicates but keeping first-seen order."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        bucket = ips if is_ip(name) else dns
        if name not in bucket:
            bucket.append(name)
    return SANs(tuple(dns), tuple(ips))


def apiserver_sans(cluster: Cluster, host: Host) -> SANs:
    domain = cluster.networking.dns_domain
    # Like kubeadm, only an explicit controlPlaneEndpoint is added: without one, `cluster.endpoint`
    # falls back to the first control plane, whose address must not appear on the others' certs.
    endpoint_host = cluster.endpoint[0] if cluster.control_plane_endpoint else host.advertise_address
    return _split(
        [
            host.name,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{domain}",
            cluster.networking.api_service_ip,
            host.advertise_address,
            # the DNS name the operator knows the host by (an IP address there is not one the cluster uses)
            *(() if is_ip(host.address) else (host.address,)),
            endpoint_host,
            # workers behind a local API load balancer dial https://127.0.0.1:<port>
            *(("localhost", "127.0.0.1") if cluster.load_balancer.worker_local_lb else ()),
            *cluster.certificates.api_server_extra_sans,
        ]
    )


def etcd_sans(cluster: Cluster, host: Host) -> SANs:
    return _split([host.name, "localhost", host.advertise_address, "127.0.0.1", "::1"])


def _etcd_client_orgs(cluster: Cluster) -> tuple[str, ...]:
    return (MASTERS,) if cluster.minor < 29 else ()


def _kubelet_client_orgs(cluster: Cluster) -> tuple[str, ...]:
    return (MASTERS,) if cluster.minor < 29 else (CLUSTER_ADMINS,)


def _etcd_members(cluster: Cluster) -> list[Host]:
    return cluster.etcd_members


def _etcd_hosts(cluster: Cluster) -> list[Host]:
    """Hosts that need an etcd client or health-check cert: the members, plus control planes."""
    seen = {h.name for h in cluster.etcd_members}
    return cluster.etcd_members + [h for h in cluster.control_planes if h.name not in seen]


CAS: tuple[CASpec, ...] = (
    CASpec("ca", "ca", "kubernetes"),
    CASpec("front-proxy-ca", "front-proxy-ca", "front-proxy-ca"),
    CASpec("etcd-ca", "etcd/ca", "etcd-ca"),
)

CERTS: tuple[CertSpec, ...] = (
    CertSpec("apiserver", "apiserver", "ca", (SERVER_AUTH,), _fixed("kube-apiserver"), sans=apiserver_sans),
    CertSpec(
        "apiserver-kubelet-client", "apiserver-kubelet-client", "ca", (CLIENT_AUTH,),
        _fixed("kube-apiserver-kubelet-client"), organizations=_kubelet_client_orgs,
    ),
    CertSpec("front-proxy-client", "front-proxy-client", "front-proxy-ca", (CLIENT_AUTH,), _fixed("front-proxy-client")),
    # etcd 3.2+ wants client auth on its server cert too (etcd-io/etcd#9785), hence both usages.
    CertSpec("etcd-server", "etcd/server", "etcd-ca", (SERVER_AUTH, CLIENT_AUTH), _node_name,
             sans=etcd_sans, hosts=_etcd_members),
    CertSpec("etcd-peer", "etcd/peer", "etcd-ca", (SERVER_AUTH, CLIENT_AUTH), _node_name,
             sans=etcd_sans, hosts=_etcd_members),
    CertSpec("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca", (CLIENT_AUTH,),
             _fixed("kube-etcd-healthcheck-client"), organizations=_etcd_client_orgs, hosts=_etcd_hosts),
    CertSpec("apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca", (CLIENT_AUTH,),
             _fixed("kube-apiserver-etcd-client"), organizations=_etcd_client_orgs),
)

# The service-account signing key pair: not a certificate, shared by every control plane.
SA_KEY, SA_PUB = "sa.key", "sa.pub"

_BY_NAME = {spec.name: spec for spec in CERTS}
CA_BY_NAME = {ca.name: ca for ca in CAS}


def cert_spec(name: str) -> CertSpec:
    return _BY_NAME[name]


def cert_names() -> list[str]:
    return [spec.name for spec in CERTS]


def issued(cluster: Cluster) -> list[tuple[CertSpec, Host]]:
    """Every (certificate, host) pair the cluster needs, in table order."""
    return [(spec, host) for spec in CERTS for host in spec.hosts(cluster)]
