"""Pure renderers: (cluster, PKI material) → each host's desired files, and the cluster objects.

A host renderer is `f(cluster, host, material) -> Tree` (absolute host path → File); it returns
an empty tree for hosts it does not concern. A cluster renderer is
`f(cluster, material) -> dict[str, bytes]` (file name under DIR/_cluster/ → YAML manifest).
Register new renderers in the two tuples below; `render_hosts` merges their trees and refuses
two renderers writing one path differently.
"""

from __future__ import annotations

from provision.config.models import Cluster
from provision.pki.store import Material
from provision.render.cluster_objects import render_cluster_objects
from provision.render.cni import render_cni_host, render_cni_objects
from provision.render.containerd import render_containerd
from provision.render.control_plane import render_control_plane
from provision.render.etcd import render_etcd
from provision.render.ha import render_ha
from provision.render.kubelet import render_kubelet
from provision.render.node_os import render_node_os
from provision.render.pki_files import render_pki
from provision.render.tree import Tree, merge

HOST_RENDERERS = (render_pki, render_kubelet, render_containerd, render_node_os, render_ha, render_control_plane, render_etcd, render_cni_host,)
CLUSTER_RENDERERS: tuple = (render_cluster_objects, render_cni_objects,)


def render_hosts(cluster: Cluster, material: Material) -> dict[str, Tree]:
    """Every host's tree: what it should hold once kubeprov is done with it."""
    return {
        host.name: merge(*(renderer(cluster, host, material) for renderer in HOST_RENDERERS))
        for host in cluster.hosts
    }


def render_cluster(cluster: Cluster, material: Material) -> dict[str, bytes]:
    """Cluster objects (applied through the API later), file name → manifest."""
    objects: dict[str, bytes] = {}
    for renderer in CLUSTER_RENDERERS:
        for name, data in renderer(cluster, material).items():
            if name in objects:
                raise ValueError(f"two cluster renderers produce {name}")
            objects[name] = data
    return objects
