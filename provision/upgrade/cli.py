"""`kubeprov upgrade …`: plan (what would change, and whether it may) and apply (roll the cluster to it)."""

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
        at that version and what prepare would install. Exits 1 when the upgrade is not allowed;
`upgrade apply` makes it.

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

    @upgrade_app.command("apply")
    def upgrade_apply(
        target: Annotated[str, typer.Option("--version", help="The version to upgrade to: the cluster file's kubernetesVersion must say it.")],
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        cluster_dir: ClusterDirOpt = None,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List per host what it would do; change nothing.")] = False,
        batch: Annotated[int, typer.Option("--batch", min=1, help="Workers drained and upgraded at once.")] = 1,
        drain_timeout: Annotated[float, typer.Option("--drain-timeout", min=1, help="Seconds a worker's drain may take.")] = 300.0,
        force: Annotated[bool, typer.Option("--force", help="Drain pods no controller manages too (they are deleted).")] = False,
        lab: Annotated[bool, typer.Option("--lab", help="The hosts are kubeprov lab containers (as `up --lab`).")] = False,
        timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for an API server, a static pod or a node.")] = 300.0,
    ) -> None:
        """Roll the running cluster to --version, which the cluster file's kubernetesVersion (and its artifact source) must already have.

        Refused, naming why, with nothing changed: the file says another version, upgrade plan's skew or
        upgrade rules say no, or the offline bundle lacks the version's binaries or images. Otherwise: an
        etcd snapshot (CLUSTER_DIR/etcd-backups/), then the control planes one at a time (stacked etcd
        healthy before and after each; prepare's roles on that host install the new binaries and images,
        the new manifests are pushed with a backup of each replaced file, the kubelet restarted, its static
        pods waited for with the new manifests Ready), then the workers in batches (cordon, drain, new
        kubelet, uncordon), then the cluster objects (kubeadm-config, kube-proxy). Each step is journalled:
        an interrupted apply continues where it stopped when run again.

        Example: kubeprov upgrade apply -c cluster.yaml --version v1.28.7
        """
        from provision.phases.context import UpContext, UpOptions
        from provision.phases.progress import HostLines
        from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport
        from provision.upgrade.apply import Upgrade, apply, check, plan_lines

        cluster = load_for_command(config, inventory, cluster_dir)
        lines = HostLines(out, cluster)
        hosts_file = known_hosts or DEFAULT_KNOWN_HOSTS
        with Transport(Options(known_hosts=hosts_file, trust_on_first_use=trust_on_first_use)) as transport:
            ctx = UpContext(cluster, UpOptions(known_hosts=hosts_file, lab=lab, api_timeout=timeout, node_timeout=timeout,
                                               bundle=None), transport, lines)
            check(ctx, target)
            upgrade = Upgrade(ctx, cluster.kubernetes_version, batch=batch, drain_timeout=drain_timeout, force=force)
            if dry_run:
                for host, line in plan_lines(upgrade):
                    lines.line(host, line)
                out.print("dry run: nothing was changed", soft_wrap=True)
                return
            apply(upgrade)
