"""The day-2 commands — `kubeprov reset`, `kubeprov node remove`: parse, call, print.

Registered onto the root app by provision/cli.py (register_day2_commands); option types from
provision/options.py, consoles from provision/console.py, like every command module's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from provision.day2.prompt import confirm
from provision.options import (
    ConfigOpt,
    ConnectTimeoutOpt,
    HostsOpt,
    InventoryOpt,
    KnownHostsOpt,
    ParallelOpt,
    TofuOpt,
)

PANEL = "Operate it"

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when stdin is not a terminal).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be done on each host; change nothing.")]

_STYLE = {"ok": "", "changed": "yellow", "failed": "red"}


def _transport(known_hosts: Path | None, tofu: bool, connect_timeout: float):
    from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport

    return Transport(Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=tofu,
                             connect_timeout=connect_timeout))


def _sayer(names: list[str]):
    """Per-host progress lines on stdout: `host  text`, the host's column as wide as the longest name."""
    from provision.console import out

    width = max((len(n) for n in names), default=0)

    def say(host: str, text: str, status: str) -> None:
        style = _STYLE.get(status, "")
        line = escape(text)
        out.print(f"{host:<{width}}  " + (f"[{style}]{line}[/]" if style else line), soft_wrap=True)

    return say


def register_day2_commands(app: typer.Typer) -> None:
    from provision.console import err, out
    from provision.day2.etcd_cli import register_etcd_commands
    from provision.loading import load_for_command

    register_etcd_commands(app)  # kubeprov etcd backup|restore (provision/day2/etcd_cli.py)

    @app.command("reset", rich_help_panel=PANEL)
    def reset_command(
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        host: HostsOpt = None,
        yes: YesOpt = False,
        dry_run: DryRunOpt = False,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        parallel: ParallelOpt = 20,
        connect_timeout: ConnectTimeoutOpt = 10.0,
    ) -> None:
        """Undo `up` on the named hosts (every host without --host), like `kubeadm reset`, so each can take a fresh `up`.

        A control plane with stacked etcd first stops its API server (the load balancers are given
        3 s to drop it) and leaves etcd (member remove through a healthy member that stays). Then on
        each host: the kubelet stopped and disabled, static pod manifests removed, every pod and
        container removed (crictl rmp -af), mounts under /var/lib/kubelet unmounted, /etc/kubernetes,
        /var/lib/kubelet, etcd's data, /etc/cni/net.d, /var/lib/cni and the joined marker removed,
        CNI interfaces (cni0, pod veths, flannel.1, cali*, …) deleted, kube-proxy's KUBE-* iptables
        chains, nftables and IPVS tables dropped. Packages, binaries, images and containerd stay.
        Other hosts are not touched.

        Refused, naming why: the last control plane while other nodes stay; with stacked etcd, the first
        control plane of the cluster file while others stay; removing etcd members that would leave
        etcd without a healthy quorum; an external etcd member unless every host is reset.

        Reset does not drain: a node leaving the cluster for good goes with `kubeprov node remove`.
        Asks before acting unless --yes. Exits 1 when any host failed (each named on one line).

        Example: `kubeprov reset -c cluster.yaml --host w1 --dry-run`, then the same with `--yes`;
        `kubeprov up -c cluster.yaml` then joins w1 again as a fresh host.
        """
        from provision.day2.reset import check_etcd, plan_reset, run_reset

        cluster = load_for_command(config, inventory, expiry=False)
        plan = plan_reset(cluster, host)
        names = [h.name for h in plan.hosts]
        say = _sayer(names)
        with _transport(known_hosts, trust_on_first_use, connect_timeout) as transport:
            view = check_etcd(transport, cluster, plan.leave_etcd, parallel=parallel) if plan.leave_etcd else None
            scope = f"every host of cluster {cluster.name} ({', '.join(names)})" if plan.whole else ", ".join(names)
            if not dry_run:
                confirm(f"reset {scope}, deleting their Kubernetes state?", yes)
            started = time.monotonic()
            outcomes = run_reset(transport, plan, say, dry_run=dry_run, parallel=parallel, view=view)
        failed = [o for o in outcomes if o.error]
        if dry_run:
            out.print("dry run: nothing was changed")
        elif not failed:
            out.print(f"{len(outcomes)} host(s) reset in {time.monotonic() - started:.1f}s; "
                      "`kubeprov up` builds them again (a host you retire: take it out of the cluster file)")
        if failed:
            for o in failed:
                err.print(f"[red]{o.host}: error:[/] {escape(o.error)}", soft_wrap=True)
            err.print(f"[red]reset failed on {', '.join(o.host for o in failed)}[/]")
            raise typer.Exit(1)

    node_app = typer.Typer(help="Nodes of a running cluster: remove one for good.", no_args_is_help=True)
    app.add_typer(node_app, name="node", rich_help_panel=PANEL)

    @node_app.command("remove")
    def node_remove(
        name: Annotated[str, typer.Argument(help="The host (node name) to take out of the cluster.")],
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        yes: YesOpt = False,
        dry_run: DryRunOpt = False,
        timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds the drain may take (kubectl drain --timeout).")] = 300.0,
        force: Annotated[bool, typer.Option("--force", help="Also delete pods that no controller manages (kubectl drain --force): they are lost, not moved.")] = False,
        skip_reset: Annotated[bool, typer.Option("--skip-reset", help="The machine is gone for good: remove its node and etcd member without reaching it.")] = False,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        connect_timeout: ConnectTimeoutOpt = 10.0,
    ) -> None:
        """Take a node out of the cluster for good: cordon and drain it, remove its etcd member, reset the host, delete the Node.

        The drain evicts pods (PodDisruptionBudgets are respected; DaemonSet pods stay) within --timeout;
        kubectl runs on a control plane that stays, through SSH. A control plane's API server is stopped
        next (the load balancers are given 3 s to drop it); with stacked etcd it then leaves etcd through
        a healthy member that stays. Refused, naming why: the last control plane; a removal
        that would leave etcd without a healthy quorum; an external etcd member.

        Afterwards take the host out of the cluster file (or inventory): the next `kubeprov up` would
        join it again otherwise, and that `up` gives the remaining hosts files that no longer name it.
        Asks before acting unless --yes.

        Example: `kubeprov node remove w2 -c cluster.yaml --dry-run`, then the same with `--yes`.
        """
        from provision.day2.node import plan_remove, remove_node

        cluster = load_for_command(config, inventory, expiry=False)
        plan = plan_remove(cluster, name)
        say = _sayer([plan.host.name, *(h.name for h in plan.api_hosts)])
        with _transport(known_hosts, trust_on_first_use, connect_timeout) as transport:
            remove_node(transport, plan, say, timeout=timeout, dry_run=dry_run, force=force, skip_reset=skip_reset,
                        confirm=lambda: confirm(f"remove node {name} from cluster {cluster.name}"
                                                + ("" if skip_reset else " and reset the host") + "?", yes))
        if dry_run:
            out.print("dry run: nothing was changed")
            return
        source = f"{config}" if config else f"{inventory}" if inventory else "the cluster file"
        out.print(f"{name} removed from cluster {cluster.name}. Now take it out of {source}: the next `kubeprov up` "
                  "would join it again otherwise (and that `up` updates the other hosts' files that name it)")
