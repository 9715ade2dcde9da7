"""The command-line options several command modules share (provision/cli.py, provision/phases/cli.py,
…): defined once here, so the command modules import them instead of each other."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path],
    # readable=False: the loader reports an unreadable file as one line (click would draw a usage box).
    typer.Option(
        "--config", "-c", help="Cluster file (apiVersion: kubeprov.io/v1alpha1, kind: Cluster).",
        show_default=False, readable=False,
    ),
]
InventoryOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--inventory", "-i",
        help="Ansible inventory (file or directory, read by ansible-core: INI, YAML, group_vars/, host_vars/, "
        "plugins) with kubespray's groups kube_control_plane, kube_node, etcd; supplies the hosts.",
        show_default=False, readable=False,
    ),
]
ClusterDirOpt = Annotated[
    Optional[Path],
    typer.Option("--cluster-dir", help="Local cluster directory (PKI, kubeconfigs). Default: from the cluster file."),
]

KnownHostsOpt = Annotated[
    Optional[Path],
    typer.Option("--known-hosts", help="known_hosts file for hosts whose ssh.knownHosts is unset. Default: ~/.ssh/known_hosts."),
]
TofuOpt = Annotated[
    bool,
    typer.Option("--trust-on-first-use", help="Record the key of a host not yet in known_hosts. A changed key is still refused."),
]
ParallelOpt = Annotated[int, typer.Option("--parallel", "-j", min=1, help="How many hosts at a time.")]
ConnectTimeoutOpt = Annotated[float, typer.Option("--connect-timeout", min=0.1, help="Seconds to reach a host and log in.")]
HostsOpt = Annotated[Optional[list[str]], typer.Option("--host", help="Only these hosts (repeatable).")]
