"""`kubeprov certs rotate-ca`: registered on the certs command group by provision/cli.py."""

from __future__ import annotations

from typing import Annotated

import typer

from provision.options import ClusterDirOpt, ConfigOpt, InventoryOpt, KnownHostsOpt, TofuOpt


def register_rotate_ca(certs_app: typer.Typer) -> None:
    from provision.console import out
    from provision.loading import load_for_command

    @certs_app.command("rotate-ca")
    def certs_rotate_ca(
        name: Annotated[str, typer.Argument(help="Which CA: ca, front-proxy-ca or etcd-ca.", show_default=True)] = "ca",
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        cluster_dir: ClusterDirOpt = None,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List the steps per host; change nothing, ask no host.")] = False,
        lab: Annotated[bool, typer.Option("--lab", help="The hosts are kubeprov lab containers (as `up --lab`).")] = False,
        timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for an API server, a static pod or a node.")] = 300.0,
    ) -> None:
        """Replace a CA of the running cluster (ca, front-proxy-ca or etcd-ca) without an outage.

        A new CA is issued; while every host is rolled (control planes one at a time, workers only
        restart their kubelet), the hosts trust the old and the new CA, every certificate and
        kubeconfig the CA signs is re-issued from the new one (for the cluster CA also each kubelet's
        client certificate, and pods restarted to read both CAs from kube-root-ca.crt), then the old
        CA is dropped. Each step is journalled in CLUSTER_DIR/rotate-ca.json: an interrupted run
        continues where it stopped when run again. The old CA's files stay in CLUSTER_DIR/backup/.

        Refused, nothing changed: an unknown CA, an external CA (its key absent), the etcd CA of
        external etcd members, another CA's rotation unfinished.

        Example: kubeprov certs rotate-ca ca -c cluster.yaml --dry-run
        """
        from provision.phases.context import UpContext, UpOptions
        from provision.phases.progress import HostLines
        from provision.pki.rotate_ca import Rotation, check, plan_lines, rotate
        from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport

        cluster = load_for_command(config, inventory, cluster_dir)
        hosts_file = known_hosts or DEFAULT_KNOWN_HOSTS
        options = UpOptions(known_hosts=hosts_file, lab=lab, api_timeout=timeout, node_timeout=timeout, bundle=None)
        check(cluster, UpContext(cluster, options, None).cluster_dir, name)
        lines = HostLines(out, cluster)
        if dry_run:
            ctx = UpContext(cluster, options, None)
            for host, line in plan_lines(Rotation(ctx, name)):
                lines.line(host, line)
            out.print("dry run: nothing was changed", soft_wrap=True)
            return
        with Transport(Options(known_hosts=hosts_file, trust_on_first_use=trust_on_first_use)) as transport:
            rotate(Rotation(UpContext(cluster, options, transport, lines), name))
