"""Versions of the node software that does not come with Kubernetes' own release.

One table, bumped deliberately. crictl follows the Kubernetes minor (cri-tools releases one per
minor); the rest is tested against every supported minor. etcd's version is not here: it is
kubeadm's pin for the minor (provision/versions.py), the same one the etcd image uses.
"""

from __future__ import annotations

from provision.versions import defaults

CRICTL = {28: "v1.28.0", 29: "v1.29.0", 30: "v1.30.1", 31: "v1.31.1", 32: "v1.32.0", 33: "v1.33.0", 34: "v1.34.0", 35: "v1.35.0"}
CNI_PLUGINS = "v1.6.2"
CONTAINERD = "v1.7.24"
RUNC = "v1.2.4"

# pkgs.k8s.io revisions every package of a minor carries (kubelet 1.31.4-1.1, cri-tools 1.31.1-1.1).
PKGS_K8S_IO_REVISION = "-1.1"


def etcd(minor: int) -> str:
    """v3.5.24 for kubeadm's image tag 3.5.24-0."""
    return "v" + defaults(minor).etcd.split("-")[0]
