"""A host's files in the two stages of a build: before the host is in the cluster, and after.

The renderers give each host its steady state, with two exceptions that depend on where the
build is: a joining control plane of a stacked etcd gets its API server, controller manager and
scheduler only once its etcd member votes (control_plane.after_local_etcd_votes), and kube-vip
reads super-admin.conf until kubeadm:cluster-admins is bound, admin.conf after
(ha.render_kube_vip_after_bootstrap). Which stage a host is in is a fact of the run (its joined
marker); what it holds in each stage is decided here, not in the phases.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import Cluster, Host
from provision.render.control_plane import after_local_etcd_votes
from provision.render.ha import render_kube_vip_after_bootstrap
from provision.render.tree import Tree


def after_bootstrap(cluster: Cluster, host: Host) -> Tree:
    """The files that replace the rendered ones once the host has joined (kube-vip on admin.conf)."""
    return render_kube_vip_after_bootstrap(cluster, host)


def staged(cluster: Cluster, host: Host, tree: Tree, *, joined: bool) -> Tree:
    """`tree` (the host's rendered files) as the host holds it in its stage."""
    if joined:
        return {**tree, **after_bootstrap(cluster, host)}
    held_back = after_local_etcd_votes(cluster, host)
    return {path: f for path, f in tree.items() if path not in held_back}


def every_stage(cluster: Cluster, host: Host, tree: Tree) -> set[PurePosixPath]:
    """Every path the host holds in either stage."""
    return {*tree, *after_bootstrap(cluster, host)}
