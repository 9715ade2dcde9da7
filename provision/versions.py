"""What each supported Kubernetes minor ships with, as kubeadm pins it (cmd/kubeadm/app/constants).

Used for image tags (etcd, CoreDNS, pause) and anything else that moves with the minor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MinorDefaults:
    etcd: str  # image tag of registry.k8s.io/etcd
    coredns: str  # image tag of registry.k8s.io/coredns/coredns
    pause: str  # the sandbox image tag


# kubeadm's SupportedEtcdVersion / CoreDNSVersion / PauseVersion per minor (at its latest patch).
DEFAULTS: dict[int, MinorDefaults] = {
    28: MinorDefaults(etcd="3.5.15-0", coredns="v1.10.1", pause="3.9"),
    29: MinorDefaults(etcd="3.5.16-0", coredns="v1.11.1", pause="3.9"),
    30: MinorDefaults(etcd="3.5.15-0", coredns="v1.11.3", pause="3.9"),
    31: MinorDefaults(etcd="3.5.24-0", coredns="v1.11.3", pause="3.10"),
    32: MinorDefaults(etcd="3.5.24-0", coredns="v1.11.3", pause="3.10"),
    33: MinorDefaults(etcd="3.5.24-0", coredns="v1.12.0", pause="3.10"),
    34: MinorDefaults(etcd="3.6.5-0", coredns="v1.12.1", pause="3.10.1"),
    35: MinorDefaults(etcd="3.6.6-0", coredns="v1.13.1", pause="3.10.1"),
}


def defaults(minor: int) -> MinorDefaults:
    return DEFAULTS[minor]


# The kubelet removed --pod-infra-container-image in 1.35 (it refuses to start with it). Before,
# kubeadm passed it so that the kubelet's image GC never removes the pause image. The kubelet
# renderer passes it below this minor; the model refuses it in kubelet.extraArgs from it on.
PAUSE_FLAG_REMOVED_IN = 35
