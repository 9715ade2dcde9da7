"""The kubeconfigs `certs generate` writes are read by a real kubectl and hold kubeadm's identities.

kubeadm's rules (kubeconfig phase, 1.29+ with KEP-4214): admin.conf → kubernetes-admin in
kubeadm:cluster-admins (system:masters before 1.29), super-admin.conf → kubernetes-super-admin in
system:masters (1.29+ only), controller-manager.conf / scheduler.conf → system:kube-controller-manager
/ system:kube-scheduler pointing at their own control plane's advertise address and bind port,
kubelet.conf → system:node:<name> in system:nodes; admin, super-admin and kubelet point at the
controlPlaneEndpoint.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from testkit import VENV_BIN, cluster_dir_of, hosts, openssl_public_key, openssl_verify, openssl_x509, run_cli

KUBECTL = VENV_BIN / "kubectl"


def kubectl_view(kubeconfig: Path) -> dict:
    proc = subprocess.run(
        [str(KUBECTL), "config", "view", "--raw", "-o", "json", "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def expected_kubeconfigs(minor: int, endpoint: str, port: int, doc_hosts: list[dict]) -> dict[str, tuple[str, list[str], str]]:
    """kubeconfig path (relative to kubeconfigs/) → (user CN, O list, server URL), by kubeadm's rules."""
    found = {"admin.conf": ("kubernetes-admin", ["system:masters" if minor < 29 else "kubeadm:cluster-admins"], endpoint)}
    if minor >= 29:
        found["super-admin.conf"] = ("kubernetes-super-admin", ["system:masters"], endpoint)
    for host in doc_hosts:
        local = f"https://{host['internalAddress']}:{port}"
        if "control-plane" in host["roles"]:
            found[f"nodes/{host['name']}/controller-manager.conf"] = ("system:kube-controller-manager", [], local)
            found[f"nodes/{host['name']}/scheduler.conf"] = ("system:kube-scheduler", [], local)
        # A control plane's kubelet talks to its own API server (kubeadm's ControlPlaneKubeletLocalMode).
        kubelet_server = local if "control-plane" in host["roles"] else endpoint
        found[f"nodes/{host['name']}/kubelet.conf"] = (f"system:node:{host['name']}", ["system:nodes"], kubelet_server)
    return found


@pytest.mark.parametrize(
    "version, endpoint, url, mode",
    [
        # a VIP on another port than the API servers': haproxy remaps it (kube-vip cannot)
        ("v1.31.4", "10.0.0.100:8443", "https://10.0.0.100:8443", "haproxy-keepalived"),
        ("v1.28.9", "api.test.example", "https://api.test.example:6444", "none"),  # no port: apiServerPort
    ],
)
def test_kubectl_reads_every_kubeconfig(make_cluster, tmp_path, version, endpoint, url, mode):
    doc_hosts = hosts(3, 2)
    path = make_cluster(kubernetesVersion=version, hosts=doc_hosts, controlPlaneEndpoint=endpoint, apiServerPort=6444,
                        loadBalancer={"mode": mode})
    rc, out, err = run_cli("certs", "generate", "-c", path)
    assert rc == 0, out + err
    cluster_dir = cluster_dir_of(path)
    ca_crt = cluster_dir / "pki" / "ca.crt"
    expected = expected_kubeconfigs(int(version.split(".")[1]), url, 6444, doc_hosts)

    written = {str(p.relative_to(cluster_dir / "kubeconfigs")) for p in (cluster_dir / "kubeconfigs").rglob("*.conf")}
    assert written == set(expected)

    for relative, (user, orgs, server) in expected.items():
        view = kubectl_view(cluster_dir / "kubeconfigs" / relative)
        context = next(c["context"] for c in view["contexts"] if c["name"] == view["current-context"])
        cluster = next(c["cluster"] for c in view["clusters"] if c["name"] == context["cluster"])
        credentials = next(u["user"] for u in view["users"] if u["name"] == context["user"])
        assert context["cluster"] == "test" and context["user"] == user, relative
        assert view["current-context"] == f"{user}@test", relative
        assert cluster["server"] == server, relative
        assert base64.b64decode(cluster["certificate-authority-data"]) == ca_crt.read_bytes(), relative

        cert_file, key_file = tmp_path / "client.crt", tmp_path / "client.key"
        cert_file.write_bytes(base64.b64decode(credentials["client-certificate-data"]))
        key_file.write_bytes(base64.b64decode(credentials["client-key-data"]))
        ok, output = openssl_verify(ca_crt, cert_file)
        assert ok, f"{relative}: {output}"
        got = openssl_x509(cert_file)
        assert got.subject == ({"CN": [user], "O": orgs} if orgs else {"CN": [user]}), relative
        assert got.ext_key_usage == {"clientAuth"} and got.is_ca is False, relative
        assert not got.dns and not got.ips, relative
        assert openssl_public_key(key_file, of_cert=False) == openssl_public_key(cert_file, of_cert=True), relative
