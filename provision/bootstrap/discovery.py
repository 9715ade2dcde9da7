"""What a joining node uses to find and trust the cluster: the CA-certificate hash it pins, and
the cluster-info ConfigMap signed with bootstrap tokens.

The hash is kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` + hex of the SHA-256 of the CA
certificate's DER-encoded SubjectPublicKeyInfo (RFC 7469's public-key pin, over the key, not the
certificate, so a re-issued CA with the same key keeps the pin).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from provision.bootstrap.jws import SIGNATURE_KEY_PREFIX, detached_signature
from provision.bootstrap.token import BootstrapToken
from provision.config.models import Cluster
from provision.pki.store import Material
from provision.render.addons import k8s
from provision.render.cluster_objects import CLUSTER_INFO, unsigned_cluster_info_kubeconfig


def ca_cert_hash(ca_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return "sha256:" + digest.finalize().hex()


def signed_cluster_info(cluster: Cluster, material: Material, tokens: list[BootstrapToken]) -> dict:
    """kube-public/cluster-info with a `jws-kubeconfig-<id>` signature for each token that may sign
    (usage `signing`), exactly what kube-controller-manager's bootstrap signer would add."""
    kubeconfig = unsigned_cluster_info_kubeconfig(cluster, material).decode()
    data = {"kubeconfig": kubeconfig}
    for token in tokens:
        if "signing" in token.usages:
            data[SIGNATURE_KEY_PREFIX + token.id] = detached_signature(kubeconfig, token.id, token.secret)
    return k8s.config_map(CLUSTER_INFO, k8s.KUBE_PUBLIC, data)
