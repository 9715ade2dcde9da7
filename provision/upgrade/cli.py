"""`kubeprov upgrade …`: plan now (apply: issue 13)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from provision import console
from provision.console import OutputOpt
from provision.options import ClusterDirOpt, ConfigOpt, InventoryOpt, KnownHostsOpt, TofuOpt


def register_upgrade_commands(app: typer.Typer) -> None:
    from provision.console import out
    from provision.loading import load_for_command

    upgrade_app = typer.Typer(help="Upgrades: what changes, with Kubernetes' version skew rules.", no_args_is_help=True)
    app.add_typer(upgrade_app, name="upgrade")

    @upgrade_app.command("plan")
    def upgrade_plan(
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        cluster_dir: ClusterDirOpt = None,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        target: Annotated[Optional[str], typer.Option("--version", help="The version to plan for (default: the cluster file's kubernetesVersion).")] = None,
        output: OutputOpt = console.Output.TABLE,
    ) -> None:
        """What an upgrade to --version would change, and whether it may.

        Reads the running versions from the cluster (each Node's kubelet, each control plane's static
        pods, kube-proxy), checks them against Kubernetes' version skew policy and kubeadm's rules
        (the control plane moves one minor at a time, never down a minor; kubelets at most three minors
        behind; etcd to the target minor's, never down), and lists per host the files `up` would change
        at that version and what prepare would install. Exits 1 when the upgrade is not allowed.

        Example: kubeprov upgrade plan -c cluster.yaml --version v1.28.7
        """
        from provision.phases.context import UpContext, UpOptions
        from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport
        from provision.upgrade.plan import plan

        cluster = load_for_command(config, inventory, cluster_dir)
        with Transport(Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=trust_on_first_use)) as transport:
            ctx = UpContext(cluster, UpOptions(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS), transport)
            result = plan(ctx, target or cluster.kubernetes_version)
        if output is console.Output.JSON:
            console.json(result.as_json())
        else:
            for line in result.skew:
                out.print(f"skew now: {line}", soft_wrap=True)
            for row in result.components:
                out.print(f"{row['component']:<24} {row['host']:<14} {row['current']:>10} → {row['target']}", soft_wrap=True)
            for host, lines in result.files.items():
                out.print(f"{host}: " + (f"{len(lines)} files change" if lines else "no file changes"), soft_wrap=True)
                for line in lines:
                    out.print(f"    {line}", soft_wrap=True)
            for name in result.objects:
                out.print(f"object: {name} changes", soft_wrap=True)
            for host, what in result.nodes.items():
                out.print(f"{host}: {what}", soft_wrap=True)
            for line in result.problems:
                out.print(f"not allowed: {line}", soft_wrap=True)
        if result.problems:
            raise typer.Exit(1)
