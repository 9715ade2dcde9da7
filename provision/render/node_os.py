"""The node preparation kubeadm leaves to you: kernel modules and sysctls on every kubelet host.

systemd-modules-load reads /etc/modules-load.d at boot and systemd-sysctl applies /etc/sysctl.d,
so the settings survive a reboot; the prepare phase loads/applies them once right away.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import Cluster, Host, KubeProxyMode
from provision.pki.store import Material
from provision.render.tree import File, Tree

MODULES_PATH = PurePosixPath("/etc/modules-load.d/k8s.conf")
SYSCTL_PATH = PurePosixPath("/etc/sysctl.d/99-kubernetes.conf")

# overlay: containerd's default snapshotter. br_netfilter: makes bridged pod traffic visible to
# iptables (the bridge-nf-call-* sysctls below exist only once it is loaded).
BASE_MODULES = ("overlay", "br_netfilter")
# kube-proxy in ipvs mode: the virtual server core, the schedulers it may use, and conntrack.
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack")

# The kernel tunables the kubelet checks at start (pkg/kubelet/cm setupKernelTunables). With
# protectKernelDefaults: true (CIS 4.2.6, see kubelet.py) it refuses to start unless they already
# have these values, instead of changing them itself; so they are set here, at boot.
KUBELET_KERNEL_DEFAULTS = {
    "vm.overcommit_memory": 1,
    "vm.panic_on_oom": 0,
    "kernel.panic": 10,
    "kernel.panic_on_oops": 1,
    "kernel.keys.root_maxkeys": 1000000,
    "kernel.keys.root_maxbytes": 25000000,
}


def kernel_modules(cluster: Cluster) -> list[str]:
    modules = list(BASE_MODULES)
    if cluster.kube_proxy.mode is KubeProxyMode.IPVS:
        modules += IPVS_MODULES
    return modules


def sysctls(cluster: Cluster) -> dict[str, int]:
    values = {
        "net.bridge.bridge-nf-call-iptables": 1,
        "net.bridge.bridge-nf-call-ip6tables": 1,
        "net.ipv4.ip_forward": 1,
    }
    if cluster.networking.pod_subnet.version == 6:
        values["net.ipv6.conf.all.forwarding"] = 1
    values.update(KUBELET_KERNEL_DEFAULTS)
    return values


def render_node_os(cluster: Cluster, host: Host, material: Material) -> Tree:
    if host not in cluster.nodes:
        return {}
    modules = "# Rendered by kubeprov: kernel modules Kubernetes needs, loaded at boot.\n"
    modules += "".join(f"{name}\n" for name in kernel_modules(cluster))
    settings = "# Rendered by kubeprov: pod networking and the kernel defaults the kubelet checks.\n"
    settings += "".join(f"{key} = {value}\n" for key, value in sysctls(cluster).items())
    return {MODULES_PATH: File(modules.encode()), SYSCTL_PATH: File(settings.encode())}
