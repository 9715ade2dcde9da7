"""Pure renderers: (cluster, PKI material) → each host's desired files."""

from __future__ import annotations

from provision.config.models import Cluster
from provision.pki.store import Material
from provision.render.pki_files import render_pki
from provision.render.tree import Tree, merge


def render_hosts(cluster: Cluster, material: Material) -> dict[str, Tree]:
    """Every host's tree. Later renderers (manifests, node files) merge into the same trees."""
    return {host.name: merge(render_pki(cluster, host, material)) for host in cluster.hosts}
