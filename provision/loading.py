"""A cluster loaded for a command: the model, then what the operator should know about it,
one line each on stderr (never on stdout, so `-o json` and piped text stay clean)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from provision.config.models import Cluster
from provision.console import err


def load_for_command(config: Path | None, inventory: Path | None, cluster_dir: Path | None = None, *,
                     expiry: bool = True) -> Cluster:
    """Load the cluster file (and inventory) with the IPs `up` learnt for hosts known by name
    (provision/addresses.py); warn about settings that are usually a mistake and, when `expiry`,
    about certificates of the cluster directory that expire within 30 days."""
    from provision import addresses
    from provision.config import load_cluster, warnings_for

    cluster = load_cluster(config, inventory)
    if cluster_dir is not None:
        cluster = cluster.model_copy(update={"cluster_dir": cluster_dir})
    cluster = addresses.with_recorded(cluster)
    for warning in warnings_for(cluster):
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if expiry:
        warn_expiring(cluster, config, inventory, cluster_dir)
    return cluster


def warn_expiring(cluster: Cluster, config: Path | None, inventory: Path | None, cluster_dir: Path | None) -> None:
    """One line on stderr when certificates of the cluster directory expire within 30 days,
    with the `kubeprov certs renew` command (and the -c/-i/--cluster-dir given) that renews them."""
    from provision.pki.expiry import warning

    args = [*(["-c", str(config)] if config else []), *(["-i", str(inventory)] if inventory else []),
            *(["--cluster-dir", str(cluster_dir)] if cluster_dir else [])]
    line = warning(cluster, renew_args=args)
    if line:
        err.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)
