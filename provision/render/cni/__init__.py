"""The pod network (cluster.cni): which renderer each choice needs.

flannel and calico are cluster objects applied through the API (DIR/_cluster/cni-<name>.yaml);
bridge is files on every node and needs no image at all; none renders nothing (bring your own).
"""

from __future__ import annotations

from provision.config.models import CNI, Cluster, Host
from provision.pki.store import Material
from provision.render.cni.bridge import node_pod_cidrs, render_bridge
from provision.render.cni.calico import calico_objects
from provision.render.cni.flannel import flannel_objects
from provision.render.cni.objects import dump_all
from provision.render.tree import Tree

_OBJECTS = {CNI.FLANNEL: flannel_objects, CNI.CALICO: calico_objects}


def cni_objects(cluster: Cluster) -> list[dict]:
    build = _OBJECTS.get(cluster.cni)
    return build(cluster) if build else []


def render_cni_objects(cluster: Cluster, material: Material) -> dict[str, bytes]:
    """Cluster renderer: the CNI's manifest, one multi-document file."""
    objects = cni_objects(cluster)
    return {f"cni-{cluster.cni.value}.yaml": dump_all(objects)} if objects else {}


def render_cni_host(cluster: Cluster, host: Host, material: Material) -> Tree:
    """Host renderer: only the bridge CNI puts files on the nodes."""
    return render_bridge(cluster, host) if cluster.cni is CNI.BRIDGE else {}


__all__ = ["cni_objects", "node_pod_cidrs", "render_cni_host", "render_cni_objects"]
