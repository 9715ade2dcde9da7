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


from provision import yamltext
from provision import versions
from provision.config.models import Cluster, Host, is_ip
from provision.pki.store import Material
from provision.render.templates import render_template
from provision.render.tree import File, Tree

KUBELET_DIR = PurePosixPath("/var/lib/kubelet")
CONFIG_PATH = KUBELET_DIR / "config.yaml"
FLAGS_ENV_PATH = KUBELET_DIR / "kubeadm-flags.env"
# Where the upstream packages (pkgs.k8s.io) install them: kubelet.service comes with the kubelet
# package, the drop-in with kubeadm. /etc/systemd/system stays free for the administrator.
UNIT_PATH = PurePosixPath("/usr/lib/systemd/system/kubelet.service")
DROP_IN_PATH = PurePosixPath("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")
BOOTSTRAP_KUBECONFIG = "/etc/kubernetes/bootstrap-kubelet.conf"
KUBECONFIG = "/etc/kubernetes/kubelet.conf"

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
        "protectKernelDefaults": cluster.kubelet.protect_kernel_defaults,
        "tlsMinVersion": "VersionTLS12",
        "tlsCipherSuites": list(STRONG_CIPHER_SUITES),
        # Not set, on purpose: resolvConf (kubeadm points it at systemd-resolved's file only when
        # that service runs on the node, which a renderer cannot see; the default /etc/resolv.conf
        # is right elsewhere) and failCgroupV1 (its default turns true in 1.35: a 1.35 kubelet
        # refuses cgroup v1 hosts, which is upstream's decision, not ours to hide).
    }


def dump_yaml(obj: dict) -> bytes:
    """YAML the way Kubernetes' own tools write component configs: keys sorted, block style."""
    return yamltext.dump(obj, sort_keys=True).encode()


# --- per-node flags: /var/lib/kubelet/kubeadm-flags.env -------------------------------------------

# kubeadm ≥ 1.34 (NodeLocalCRISocket, on by default) keeps the CRI socket in the configuration only;
# before that it also passed the flag. The config field alone would do; we follow kubeadm.
_CRI_FLAG_DROPPED_IN = 34
# The kubelet removed --pod-infra-container-image in 1.35 (it refuses to start with it). Before,
# kubeadm passed it so that the kubelet's image GC never removes the pause image.
_PAUSE_FLAG_REMOVED_IN = versions.PAUSE_FLAG_REMOVED_IN


def pause_image(cluster: Cluster) -> str:
    return f"{cluster.image_repository}/pause:{versions.defaults(cluster.minor).pause}"


def kubelet_flags(cluster: Cluster, host: Host) -> dict[str, str]:
    """The flags that differ per node (or per version), with kubelet.extraArgs replacing ours.
    The model (config/models.py: Kubelet) has checked that every extraArg fits the env file."""
    flags = {
        # kubeprov issues kubelet.conf for system:node:<host name>, so the node must register under
        # exactly that name whatever the machine's hostname is (kubeadm sets it only when they
        # differ, which a renderer cannot see; setting it always is harmless when they agree).
        "hostname-override": host.name,
    }
    # The node IP the cluster uses, not whatever address the default route happens to pick. A
    # host known only by a DNS name (no internalAddress) leaves the choice to the kubelet.
    if is_ip(host.advertise_address):
        flags["node-ip"] = host.advertise_address
    if cluster.minor < _CRI_FLAG_DROPPED_IN:
        flags["container-runtime-endpoint"] = CONTAINERD_ENDPOINT
    if cluster.minor < _PAUSE_FLAG_REMOVED_IN:
        flags["pod-infra-container-image"] = pause_image(cluster)
    flags.update(cluster.kubelet.extra_args)
    return flags


def format_flags(flags: dict[str, str]) -> str:
    """dict → `--k=v …`, sorted, the way kubeadm builds argument lists."""
    return " ".join(f"--{name}={flags[name]}" for name in sorted(flags))


def flags_env(cluster: Cluster, host: Host) -> bytes:
    return f'KUBELET_KUBEADM_ARGS="{format_flags(kubelet_flags(cluster, host))}"\n'.encode()


# --- systemd: the packaged unit and kubeadm's drop-in ----------------------------------------------

def kubelet_unit() -> bytes:
    return render_template("systemd/kubelet.service.j2")


def kubeadm_drop_in() -> bytes:
    return render_template(
        "systemd/10-kubeadm.conf.j2",
        bootstrap_kubeconfig=BOOTSTRAP_KUBECONFIG,
        kubeconfig=KUBECONFIG,
        config_path=CONFIG_PATH,
        flags_env_path=FLAGS_ENV_PATH,
    )


def render_kubelet(cluster: Cluster, host: Host, material: Material) -> Tree:
    """The kubelet's files on a host that runs one (control planes and workers)."""
    if host not in cluster.nodes:
        return {}
    return {
        CONFIG_PATH: File(dump_yaml(kubelet_configuration(cluster))),
        FLAGS_ENV_PATH: File(flags_env(cluster, host)),
        UNIT_PATH: File(kubelet_unit()),
        DROP_IN_PATH: File(kubeadm_drop_in()),
    }
