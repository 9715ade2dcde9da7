"""The kubelet on every node: its KubeletConfiguration, its per-node flags and its systemd unit.

What lands where, as `kubeadm init/join` and the upstream kubelet .deb leave it:

    /var/lib/kubelet/config.yaml          the cluster-wide KubeletConfiguration (the same on every
                                          node; also what the kubelet-config ConfigMap carries)
    /var/lib/kubelet/kubeadm-flags.env    KUBELET_KUBEADM_ARGS: the flags that differ per node
    /usr/lib/systemd/system/kubelet.service               from the kubelet package
    /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf   from the kubeadm package

kubeadm's own defaults (cmd/kubeadm/app/componentconfigs/kubelet.go) are kept; on top of them we
set the CIS Kubernetes Benchmark's kubelet items (section 4.2) that kubeadm leaves at the
kubelet's defaults. Each choice is commented where it is made.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from provision.config.models import Cluster

KUBELET_API_VERSION = "kubelet.config.k8s.io/v1beta1"
CONTAINERD_ENDPOINT = "unix:///run/containerd/containerd.sock"
MANIFESTS_DIR = "/etc/kubernetes/manifests"
CLIENT_CA_FILE = "/etc/kubernetes/pki/ca.crt"

# CIS 4.2.13: only AEAD ciphers with forward secrecy on the kubelet's port 10250.
STRONG_CIPHER_SUITES = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
]


def kubelet_configuration(cluster: Cluster) -> dict:
    """The cluster-wide KubeletConfiguration (v1beta1) as a plain dict.

    Every node gets exactly this in /var/lib/kubelet/config.yaml, and the kubelet-config ConfigMap
    in kube-system carries it, as kubeadm does; what differs per node lives in kubeadm-flags.env.
    """
    return {
        "apiVersion": KUBELET_API_VERSION,
        "kind": "KubeletConfiguration",
        # --- kubeadm's defaults -------------------------------------------------------------
        "authentication": {
            "anonymous": {"enabled": False},  # CIS 4.2.1
            "webhook": {"enabled": True},  # ServiceAccount tokens may call the kubelet API too
            "x509": {"clientCAFile": CLIENT_CA_FILE},  # CIS 4.2.3: clients need a cluster-CA cert
        },
        "authorization": {"mode": "Webhook"},  # CIS 4.2.2: SubjectAccessReview, never AlwaysAllow
        "cgroupDriver": "systemd",  # containerd is configured with SystemdCgroup = true to match
        "clusterDNS": [cluster.networking.dns_service_ip],
        "clusterDomain": cluster.networking.dns_domain,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "rotateCertificates": True,  # CIS 4.2.11; kubeadm hard-codes it
        "staticPodPath": MANIFESTS_DIR,
        # A config field since 1.27 (the flag is deprecated), so it is set here for every node:
        # all kubeprov nodes run containerd at its default socket.
        "containerRuntimeEndpoint": CONTAINERD_ENDPOINT,
        # --- the cluster file ---------------------------------------------------------------
        "maxPods": cluster.kubelet.max_pods,
        # Serving certificates signed by the cluster CA through CSRs (someone must approve them)
        # instead of the kubelet's self-signed one: CIS 4.2.12 / RotateKubeletServerCertificate.
        "serverTLSBootstrap": cluster.kubelet.server_tls_bootstrap,
        # --- CIS 4.2 items kubeadm leaves at the kubelet's defaults ----------------------------
        "readOnlyPort": 0,  # CIS 4.2.4: no unauthenticated port 10255 (also the kubelet's default)
        # CIS 4.2.6: the kubelet refuses to start if a kernel tunable it needs differs, instead of
        # silently changing it; node_os.py's sysctl file sets exactly those values.
        "protectKernelDefaults": True,
        "tlsMinVersion": "VersionTLS12",
        "tlsCipherSuites": list(STRONG_CIPHER_SUITES),
        # Not set, on purpose: resolvConf (kubeadm points it at systemd-resolved's file only when
        # that service runs on the node, which a renderer cannot see; the default /etc/resolv.conf
        # is right elsewhere) and failCgroupV1 (its default turns true in 1.35: a 1.35 kubelet
        # refuses cgroup v1 hosts, which is upstream's decision, not ours to hide).
    }


def dump_yaml(obj: dict) -> bytes:
    """YAML the way Kubernetes' own tools write component configs: keys sorted, block style."""
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).encode()
