"""`kubeadm join` command lines for adding a node by hand with a bootstrap token."""

from __future__ import annotations

import shlex

from provision.bootstrap.discovery import ca_cert_hash
from provision.bootstrap.token import BootstrapToken
from provision.config.models import Cluster
from provision.render.cluster_objects import control_plane_endpoint
from provision.render.staticpod import join_host_port


def api_endpoint(cluster: Cluster) -> str:
    """host:port a joining node dials: controlPlaneEndpoint, else the first control plane."""
    return control_plane_endpoint(cluster) or join_host_port(*cluster.endpoint)


def join_command(cluster: Cluster, token: BootstrapToken, ca_pem: bytes) -> str:
    return shlex.join([
        "kubeadm", "join", api_endpoint(cluster),
        "--token", token.token,
        "--discovery-token-ca-cert-hash", ca_cert_hash(ca_pem),
    ])
