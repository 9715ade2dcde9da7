"""The rendered files prepare's roles act on, by role: the renderers' files, never a second template.

The SSH transport places every rendered file (docs/architecture.md: one writer); these are the
ones a role reacts to — containerd restarts for its config or unit, systemd reloads the kubelet's unit,
the os role applies the modules and sysctls, an etcd member restarts for its files. Their hashes
are in each host's applied-state record, so a change to one runs the roles again. Which rendered
path belongs to which role is decided here, from the renderers' own path constants.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import Cluster, EtcdTopology, Host
from provision.pki.store import Material
from provision.render import containerd, etcd, kubelet, node_os
from provision.render.cni import bridge, render_cni_host
from provision.render.pki_files import render_pki
from provision.render.tree import Tree, merge

ETCD_PKI_FILES = ("ca.crt", "server.crt", "server.key", "peer.crt", "peer.key", "healthcheck-client.crt", "healthcheck-client.key")


def role_of(path: PurePosixPath) -> str | None:
    """The role that acts on `path`, or None when none does (manifests, kubeconfigs…)."""
    if path in (node_os.MODULES_PATH, node_os.SYSCTL_PATH):
        return "os"
    if path in (containerd.CONFIG_PATH, containerd.UNIT_PATH) or containerd.CERTS_D in path.parents:
        return "containerd"
    if path == containerd.CRICTL_PATH:
        return "crictl"
    if path == bridge.CONFLIST:
        return "cni-plugins"
    if path in (kubelet.CONFIG_PATH, kubelet.FLAGS_ENV_PATH, kubelet.UNIT_PATH, kubelet.DROP_IN_PATH):
        return "kubelet"
    if path in (etcd.UNIT_PATH, etcd.ENV_PATH) or (path.parent == etcd.ETCD_PKI and path.name in ETCD_PKI_FILES):
        return "etcd"
    return None


def external_etcd(cluster: Cluster) -> bool:
    return cluster.etcd.topology is EtcdTopology.EXTERNAL


def render_for_prepare(cluster: Cluster, host: Host, material: Material | None) -> Tree:
    """The host's files that prepare's roles act on (the PKI only for external etcd members)."""
    trees = [
        node_os.render_node_os(cluster, host, material),
        containerd.render_containerd(cluster, host, material),
        kubelet.render_kubelet(cluster, host, material),
        render_cni_host(cluster, host, material),
    ]
    if external_etcd(cluster) and host in cluster.etcd_members:
        trees.append(etcd.render_etcd(cluster, host, material))
        trees.append(render_pki(cluster, host, material))
    return {path: file for path, file in merge(*trees).items() if role_of(path) is not None}
