"""Push a rendered tree (DIR/<host>/<absolute path>, from `kubeprov render`) to the hosts.

Per host: one round trip lists the sha256, mode and owner of every path, then only the files that
differ are written (atomically, with a backup of what they replace). A second run writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from provision.config.models import Cluster
from provision.errors import ConfigError
from provision.render.diff import CLUSTER_DIR
from provision.render.tree import Tree, read_tree
from provision.transport.fanout import DEFAULT_PARALLEL, Outcome, fan_out
from provision.transport.ssh import Change, Transport


def read_rendered(cluster: Cluster, rendered_dir: Path) -> dict[str, Tree]:
    """Each host's tree; every host must have one and every directory must be a host, but for the
    render's cluster objects (_cluster/: applied to the API by `up`, not pushed to a host)."""
    rendered_dir = Path(rendered_dir)
    if not rendered_dir.is_dir():
        raise ConfigError("no such directory; write it with `kubeprov render -o DIR`", source=str(rendered_dir))
    names = {host.name for host in cluster.hosts}
    strangers = sorted(p.name for p in rendered_dir.iterdir() if p.is_dir() and p.name not in names | {CLUSTER_DIR})
    if strangers:
        raise ConfigError(
            f"{', '.join(strangers)} {'is not a host' if len(strangers) == 1 else 'are not hosts'} of cluster "
            f"{cluster.name}; render again into an empty directory", source=str(rendered_dir),
        )
    trees = {}
    for name in sorted(names):
        if not (rendered_dir / name).is_dir():
            raise ConfigError(f"nothing rendered for host {name}; run `kubeprov render -o {rendered_dir}`", source=str(rendered_dir))
        trees[name] = read_tree(rendered_dir / name)
    return trees


def sync_rendered(
    transport: Transport, cluster: Cluster, rendered_dir: Path, *, parallel: int = DEFAULT_PARALLEL
) -> list[Outcome[list[Change]]]:
    trees = read_rendered(cluster, rendered_dir)

    def push(host):
        return transport.push(host, {str(path): (file.content, file.mode) for path, file in trees[host.name].items()})

    return fan_out(cluster.hosts, push, parallel=parallel)
