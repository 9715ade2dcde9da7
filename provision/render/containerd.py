"""containerd on every node: config.toml for the CRI plugin, registry mirrors, crictl's config.

The config uses schema `version = 2`: containerd 1.6 and 1.7 read it as is, and containerd 2.x
migrates it in memory at start. Registry mirrors use the `config_path` layout (one hosts.toml per
registry under /etc/containerd/certs.d/), which replaced the deprecated `registry.mirrors` tables.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from provision.config.models import Cluster, Host
from provision.errors import ConfigError
from provision.pki.store import Material
from provision.render.kubelet import CONTAINERD_ENDPOINT, pause_image
from provision.render.tree import File, Tree

CONFIG_PATH = PurePosixPath("/etc/containerd/config.toml")
CERTS_D = PurePosixPath("/etc/containerd/certs.d")
CRICTL_PATH = PurePosixPath("/etc/crictl.yaml")
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

_CRI = 'plugins."io.containerd.grpc.v1.cri"'
# A registry as containerd names its certs.d directory: host[:port], or _default for all of them.
_REGISTRY = re.compile(r"^(_default|[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?)$")


def _str(value: str) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def containerd_config(cluster: Cluster) -> str:
    cri = cluster.containerd
    return f"""\
# Rendered by kubeprov. Schema version 2: read by containerd 1.6/1.7, migrated by 2.x.
version = 2

[{_CRI}]
  # The pause image kubeadm pins for this Kubernetes minor.
  sandbox_image = {_str(pause_image(cluster))}
  # true where containerd lacks CAP_SYS_RESOURCE (containers, nspawn): containers then never get
  # an oom_score_adj below containerd's own.
  restrict_oom_score_adj = {_bool(cri.restrict_oom_score_adj)}

[{_CRI}.containerd]
  default_runtime_name = "runc"

[{_CRI}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{_CRI}.containerd.runtimes.runc.options]
  # The kubelet's cgroupDriver is systemd: both must agree or pods fail under resource pressure.
  SystemdCgroup = true

[{_CRI}.cni]
  bin_dir = {_str(CNI_BIN_DIR)}
  conf_dir = {_str(CNI_CONF_DIR)}

[{_CRI}.registry]
  # Mirrors and per-registry TLS: one hosts.toml per registry in this directory.
  config_path = {_str(str(CERTS_D))}
"""


def upstream_server(registry: str) -> str:
    """The registry's own endpoint, tried after the mirrors (Docker Hub's API host differs)."""
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"https://{registry}"


def hosts_toml(registry: str, mirrors: list[str]) -> str:
    lines = [f"# Rendered by kubeprov: mirrors for {registry}, tried in order before the registry itself."]
    if registry != "_default":
        lines.append(f"server = {_str(upstream_server(registry))}")
    for mirror in mirrors:
        lines += ["", f"[host.{_str(mirror)}]", '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def _check_mirrors(mirrors: dict[str, list[str]]) -> None:
    for registry, urls in mirrors.items():
        field = f"containerd.registryMirrors.{registry}"
        if not _REGISTRY.match(registry):
            # Also what keeps a name like ../x from escaping certs.d.
            raise ConfigError("not a registry name (host or host:port, lower-case, or _default)", field=field)
        if not urls:
            raise ConfigError("lists no mirror", field=field)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or '"' in url or any(c.isspace() for c in url):
                raise ConfigError(f"{url!r} is not an http(s) URL", field=field)


def crictl_config() -> str:
    return f"""\
# Rendered by kubeprov: crictl talks to containerd's CRI socket.
runtime-endpoint: {CONTAINERD_ENDPOINT}
image-endpoint: {CONTAINERD_ENDPOINT}
timeout: 10
"""


def render_containerd(cluster: Cluster, host: Host, material: Material) -> Tree:
    """containerd's files on a host that runs a kubelet."""
    if host not in cluster.nodes:
        return {}
    mirrors = cluster.containerd.registry_mirrors
    _check_mirrors(mirrors)
    tree: Tree = {
        CONFIG_PATH: File(containerd_config(cluster).encode()),
        CRICTL_PATH: File(crictl_config().encode()),
    }
    for registry, urls in sorted(mirrors.items()):
        tree[CERTS_D / registry / "hosts.toml"] = File(hosts_toml(registry, urls).encode())
    return tree
