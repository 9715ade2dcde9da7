"""`kubeprov certs generate` issues kubeadm's certificate tree, checked with the openssl CLI.

The expected subjects, SANs and usages below are kubeadm's rules written out by hand from its
certlist.go / pkiutil (GetAPIServerAltNames, getAltNames for etcd) and the 1.29 changes
(kubernetes/kubernetes#119859, #120521, #121837, KEP-4214); nothing is computed with
provision.pki's own functions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from testkit import cluster_dir_of, hosts, openssl_key_kind, openssl_verify, openssl_x509, run_cli

SERVER, CLIENT = "serverAuth", "clientAuth"


@dataclass
class Expected:
    path: str  # relative to the pki dir
    ca: str  # CA cert relative to the pki dir
    cn: str
    orgs: set[str]
    usages: set[str]
    dns: set[str]
    ips: set[str]


def kubeadm_leaves(doc: dict) -> list[Expected]:
    """Every leaf certificate kubeadm would make on each control plane of the cluster file `doc`."""
    minor = int(doc["kubernetesVersion"].split(".")[1])
    domain = doc.get("networking", {}).get("dnsDomain", "cluster.local")
    service_subnet = ipaddress.ip_network(doc.get("networking", {}).get("serviceSubnet", "10.96.0.0/12"))
    first_service_ip = str(service_subnet.network_address + 1)
    endpoint = doc.get("controlPlaneEndpoint")
    endpoint_host = endpoint.rsplit(":", 1)[0].strip("[]") if endpoint else None
    extra = doc.get("certificates", {}).get("apiServerExtraSANs", [])

    def is_ip(value: str) -> bool:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True

    # 1.28: system:masters on the apiserver's kubelet client and both etcd clients; 1.29 dropped it.
    kubelet_client_orgs = {"system:masters"} if minor < 29 else {"kubeadm:cluster-admins"}
    etcd_client_orgs = {"system:masters"} if minor < 29 else set()

    found = []
    for host in doc["hosts"]:
        if "control-plane" not in host["roles"]:
            continue
        name, address = host["name"], host.get("internalAddress", host["address"])
        node = f"nodes/{name}"
        api_names = [name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     f"kubernetes.default.svc.{domain}", first_service_ip, address, *extra]
        if endpoint_host:
            api_names.append(endpoint_host)
        api_dns = {n for n in api_names if not is_ip(n)}
        api_ips = {str(ipaddress.ip_address(n)) for n in api_names if is_ip(n)}
        etcd_dns, etcd_ips = {name, "localhost"}, {address, "127.0.0.1", "::1"}
        found += [
            Expected(f"{node}/apiserver.crt", "ca.crt", "kube-apiserver", set(), {SERVER}, api_dns, api_ips),
            Expected(f"{node}/apiserver-kubelet-client.crt", "ca.crt", "kube-apiserver-kubelet-client",
                     kubelet_client_orgs, {CLIENT}, set(), set()),
            Expected(f"{node}/front-proxy-client.crt", "front-proxy-ca.crt", "front-proxy-client", set(), {CLIENT},
                     set(), set()),
            Expected(f"{node}/etcd/server.crt", "etcd/ca.crt", name, set(), {SERVER, CLIENT}, etcd_dns, etcd_ips),
            Expected(f"{node}/etcd/peer.crt", "etcd/ca.crt", name, set(), {SERVER, CLIENT}, etcd_dns, etcd_ips),
            Expected(f"{node}/etcd/healthcheck-client.crt", "etcd/ca.crt", "kube-etcd-healthcheck-client",
                     etcd_client_orgs, {CLIENT}, set(), set()),
            Expected(f"{node}/apiserver-etcd-client.crt", "etcd/ca.crt", "kube-apiserver-etcd-client",
                     etcd_client_orgs, {CLIENT}, set(), set()),
        ]
    return found


CAS = {"ca.crt": "kubernetes", "front-proxy-ca.crt": "front-proxy-ca", "etcd/ca.crt": "etcd-ca"}

SINGLE = {"hosts": hosts(1)}
HA = {
    "hosts": hosts(3, 2),
    "controlPlaneEndpoint": "api.test.example:6443",
    "networking": {"serviceSubnet": "10.112.0.0/16", "dnsDomain": "k8s.test"},
    "certificates": {"apiServerExtraSANs": ["api.extra.example", "203.0.113.7"]},
}


def _generate(make_cluster, **overrides) -> tuple[dict, Path]:
    path = make_cluster(**overrides)
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    return yaml.safe_load(path.read_text()), cluster_dir_of(path)


@pytest.mark.parametrize("version", ["v1.31.4", "v1.28.9"])
@pytest.mark.parametrize("shape", [SINGLE, HA], ids=["1cp", "3cp+2w"])
def test_every_leaf_follows_kubeadm(make_cluster, shape, version):
    doc, cluster_dir = _generate(make_cluster, kubernetesVersion=version, **shape)
    pki = cluster_dir / "pki"
    now = dt.datetime.now(dt.timezone.utc)
    expected = kubeadm_leaves(doc)
    assert len(expected) == 7 * sum("control-plane" in h["roles"] for h in doc["hosts"])

    for want in expected:
        crt = pki / want.path
        ok, output = openssl_verify(pki / want.ca, crt)
        assert ok, output
        got = openssl_x509(crt)
        assert got.subject == ({"CN": [want.cn], "O": sorted(want.orgs)} if want.orgs else {"CN": [want.cn]}), want.path
        assert got.issuer == {"CN": [CAS[want.ca]]}, want.path
        assert got.ext_key_usage == want.usages, want.path
        assert (got.dns, got.ips) == (want.dns, want.ips), want.path
        assert got.is_ca is False and got.basic_constraints_critical, want.path
        assert got.key_usage == {"Digital Signature", "Key Encipherment"}, want.path  # RSA key
        assert abs(got.not_after - (now + dt.timedelta(days=365))) < dt.timedelta(minutes=2), want.path
        assert dt.timedelta(minutes=4) < now - got.not_before < dt.timedelta(minutes=7), want.path

    # Nothing issued that kubeadm would not have: every .crt under nodes/ is an expected leaf.
    issued = {str(p.relative_to(pki)) for p in (pki / "nodes").rglob("*.crt")}
    assert issued == {want.path for want in expected}

    for crt, cn in CAS.items():
        ca = openssl_x509(pki / crt)
        assert ca.subject == ca.issuer == {"CN": [cn]}
        assert ca.is_ca and ca.basic_constraints_critical
        assert "Certificate Sign" in ca.key_usage
        assert openssl_verify(pki / crt, pki / crt)[0]  # self-signed
        assert abs(ca.not_after - (now + dt.timedelta(days=3650))) < dt.timedelta(minutes=2)
        assert dt.timedelta(minutes=4) < now - ca.not_before < dt.timedelta(minutes=7)


def test_apiserver_sans_without_endpoint_are_each_hosts_own(make_cluster):
    """No controlPlaneEndpoint: kubeadm adds no endpoint SAN, so cp2's cert does not name cp1."""
    doc, cluster_dir = _generate(make_cluster, hosts=hosts(3))
    for want in kubeadm_leaves(doc):
        if want.path.endswith("/apiserver.crt"):
            got = openssl_x509(cluster_dir / "pki" / want.path)
            assert (got.dns, got.ips) == (want.dns, want.ips), want.path


def test_modes_keys_0600_dirs_0700(make_cluster):
    _, cluster_dir = _generate(make_cluster, hosts=hosts(3, 2), controlPlaneEndpoint="10.0.0.100:6443")
    files = [p for p in cluster_dir.rglob("*") if p.is_file()]
    assert files
    for path in [cluster_dir, *cluster_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix in (".crt", ".pub"):
            assert mode & 0o022 == 0, path  # public, but writable by the owner only
        else:  # private keys, kubeconfigs that embed one, the Secrets encryption key
            assert mode == 0o600, path
    assert {p.name for p in files if p.suffix == ".key"} >= {"ca.key", "sa.key", "apiserver.key", "peer.key"}


@pytest.mark.parametrize("algorithm", ["ECDSA-P256", "RSA-4096"])
def test_key_algorithm(make_cluster, algorithm):
    _, cluster_dir = _generate(make_cluster, certificates={"keyAlgorithm": algorithm})
    pki = cluster_dir / "pki"
    keys = sorted(pki.rglob("*.key"))
    assert len(keys) == 3 + 1 + 7  # CAs, sa, one control plane's leaves
    for key in keys:
        assert openssl_key_kind(key) == algorithm, key
    for crt in pki.rglob("*.crt"):
        got = openssl_x509(crt)
        assert got.public_key == algorithm, crt
        if not got.is_ca:
            # kubeadm sets keyEncipherment only for RSA keys (it means RSA key transport).
            want = {"Digital Signature"} if algorithm.startswith("ECDSA") else {"Digital Signature", "Key Encipherment"}
            assert got.key_usage == want, crt
