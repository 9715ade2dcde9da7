"""containerd on every node: its unit, config.toml for the CRI plugin, registry mirrors, crictl's config.

The config uses schema `version = 2`: containerd 1.6 and 1.7 read it as is, and containerd 2.x
migrates it in memory at start. Registry mirrors use the `config_path` layout (one hosts.toml per
registry under /etc/containerd/certs.d/), which replaced the deprecated `registry.mirrors` tables.
Registry names and mirror URLs are checked by the model (config/models.py: Containerd).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from provision.config.models import Cluster, Host
from provision.pki.store import Material
from provision.render.kubelet import CONTAINERD_ENDPOINT, pause_image
from provision.render.templates import render_text
from provision.render.tree import File, Tree

CONFIG_PATH = PurePosixPath("/etc/containerd/config.toml")
# In /etc: it overrides the unit Debian's package ships, when that package provides containerd.
UNIT_PATH = PurePosixPath("/etc/systemd/system/containerd.service")
BINARY = "/usr/bin/containerd"  # where Debian's package and a bundle's binary land (artifacts/needs.py)
CERTS_D = PurePosixPath("/etc/containerd/certs.d")
CRICTL_PATH = PurePosixPath("/etc/crictl.yaml")
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

_CRI = 'plugins."io.containerd.grpc.v1.cri"'


def containerd_config(cluster: Cluster) -> str:
    return render_text(
        "containerd/config.toml.j2",
        cri=_CRI,
        sandbox_image=pause_image(cluster),
        restrict_oom_score_adj=cluster.containerd.restrict_oom_score_adj,
        cni_bin_dir=CNI_BIN_DIR,
        cni_conf_dir=CNI_CONF_DIR,
        certs_d=str(CERTS_D),
    )


def containerd_unit() -> str:
    return render_text("systemd/containerd.service.j2", binary=BINARY, config_path=str(CONFIG_PATH))


def upstream_server(registry: str) -> str:
    """The registry's own endpoint, tried after the mirrors (Docker Hub's API host differs)."""
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"https://{registry}"


def hosts_toml(registry: str, mirrors: list[str]) -> str:
    server = None if registry == "_default" else upstream_server(registry)
    return render_text("containerd/hosts.toml.j2", registry=registry, server=server, mirrors=mirrors)


def crictl_config() -> str:
    return render_text("crictl.yaml.j2", endpoint=CONTAINERD_ENDPOINT)


def render_containerd(cluster: Cluster, host: Host, material: Material) -> Tree:
    """containerd's files on a host that runs a kubelet."""
    if host not in cluster.nodes:
        return {}
    mirrors = cluster.containerd.registry_mirrors
    tree: Tree = {
        CONFIG_PATH: File(containerd_config(cluster).encode()),
        UNIT_PATH: File(containerd_unit().encode()),
        CRICTL_PATH: File(crictl_config().encode()),
    }
    for registry, urls in sorted(mirrors.items()):
        tree[CERTS_D / registry / "hosts.toml"] = File(hosts_toml(registry, urls).encode())
    return tree
