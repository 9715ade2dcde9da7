"""Which certificates, keys and kubeconfigs land on which host, at kubeadm's paths.

Control planes get what `kubeadm init`/`join --control-plane` leaves in /etc/kubernetes: the
shared CAs with their keys (the controller-manager signs kubelet CSRs with ca.key), sa.key/pub,
their own leaf certificates and kubeconfigs. With external etcd the etcd CA key stays in the
cluster directory: control planes only need to trust it. External etcd members get their etcd
certificates; workers get ca.crt and kubelet.conf.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import Cluster, EtcdTopology, Host, Role
from provision.pki.certlist import CA_BY_NAME, CERTS, SA_KEY, SA_PUB
from provision.pki.kubeconfigs import KUBECONFIGS
from provision.pki.store import Material
from provision.render.tree import File, Tree

KUBERNETES_DIR = PurePosixPath("/etc/kubernetes")
PKI_DIR = KUBERNETES_DIR / "pki"

KEY, CERT = 0o600, 0o644
SIGNING_SUFFIX = "-signing.crt"  # next to a CA bundle during `certs rotate-ca`: its signing certificate


def render_pki(cluster: Cluster, host: Host, material: Material) -> Tree:
    tree: Tree = {}

    def ca(name: str, with_key: bool) -> None:
        crt, key = material.cas[name]
        base = CA_BY_NAME[name].base_name
        tree[PKI_DIR / f"{base}.crt"] = File(crt, CERT)
        if with_key and key is not None:
            tree[PKI_DIR / f"{base}.key"] = File(key, KEY)
            # The cluster CA's .crt is a rotation's bundle: the one the controller manager signs with, alone.
            if name == "ca" and name in material.signing:
                tree[PKI_DIR / f"{base}{SIGNING_SUFFIX}"] = File(material.signing[name], CERT)

    control_plane = host.has(Role.CONTROL_PLANE)
    stacked = cluster.etcd.topology is EtcdTopology.STACKED
    etcd_member = host.name in {h.name for h in cluster.etcd_members}

    if control_plane:
        ca("ca", with_key=True)
        ca("front-proxy-ca", with_key=True)
        ca("etcd-ca", with_key=stacked)
        sa_key, sa_pub = material.sa
        tree[PKI_DIR / SA_KEY] = File(sa_key, KEY)
        tree[PKI_DIR / SA_PUB] = File(sa_pub, CERT)
    elif host in cluster.nodes:
        ca("ca", with_key=False)
    if etcd_member and not control_plane:
        ca("etcd-ca", with_key=False)

    for spec in CERTS:
        pair = material.leaves.get((spec.name, host.name))
        if pair is not None:
            tree[PKI_DIR / f"{spec.base_name}.crt"] = File(pair[0], CERT)
            tree[PKI_DIR / f"{spec.base_name}.key"] = File(pair[1], KEY)

    for kc in KUBECONFIGS:
        if not kc.needed(cluster):
            continue
        per_host = kc.hosts is not None
        if per_host:
            data = material.kubeconfigs.get((kc.file, host.name))
        else:
            data = material.kubeconfigs.get((kc.file, None)) if control_plane else None
        if data is not None:
            tree[KUBERNETES_DIR / kc.file] = File(data, KEY)
    return tree
