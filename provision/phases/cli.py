"""`kubeprov up`, `phase list|run`, `token create|list|delete`, `join-command`: parse, call, print.

Registered onto the root app by provision/cli.py; its option types come from provision/options.py
and its consoles from provision/console.py, like every command module's.
"""


import functools
import inspect
import sys
from dataclasses import make_dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from provision.options import ClusterDirOpt, ConfigOpt, InventoryOpt, KnownHostsOpt, ParallelOpt, TofuOpt

BundleOpt = Annotated[Optional[Path], typer.Option("--bundle", help="Offline bundle for prepare: bin/NAME, images/*.tar, SHA256SUMS.")]
LabOpt = Annotated[bool, typer.Option("--lab", help="Hosts are kubeprov lab containers (prepare verifies kernel settings instead of setting them).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for an API server or a node.")]


def _run_options(
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    bundle: BundleOpt = None,
    known_hosts: KnownHostsOpt = None,
    trust_on_first_use: TofuOpt = False,
    lab: LabOpt = False,
    api_timeout: TimeoutOpt = 300.0,
    parallel: ParallelOpt = 20,
) -> None:
    """The options of every command that runs phases of `up` (up, phase run): declared once."""


# The parsed options, one field per parameter of _run_options: derived, so the two cannot differ.
RunArgs = make_dataclass("RunArgs", list(inspect.signature(_run_options).parameters), frozen=True)


def takes_run_options(command):
    """`command(run_args: RunArgs, **its own options)` as a CLI command with its own options followed by
    every option of _run_options: `phase run` takes `up`'s options by construction, not by copy."""
    shared = list(inspect.signature(_run_options).parameters.values())
    own = list(inspect.signature(command).parameters.values())[1:]  # the first receives the RunArgs

    @functools.wraps(command)
    def with_options(**values):
        run = RunArgs(**{p.name: values.pop(p.name) for p in shared})
        return command(run, **values)

    del with_options.__wrapped__  # typer must read the signature below, not the command's own
    with_options.__signature__ = inspect.Signature([*own, *shared])
    with_options.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return with_options


def register_up_commands(app: typer.Typer) -> None:
    from provision import console
    from provision.console import OutputOpt, err, out
    from provision.loading import load_for_command

    def options(args: RunArgs):
        from provision.phases.context import UpOptions

        return UpOptions(bundle=args.bundle, known_hosts=args.known_hosts or UpOptions.known_hosts, lab=args.lab,
                         parallel=args.parallel, api_timeout=args.api_timeout, node_timeout=args.api_timeout)

    def transport_options(known_hosts, tofu):
        from provision.transport import DEFAULT_KNOWN_HOSTS, Options

        return Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=tofu)

    def run(cluster, opts, *, dry_run=False, skip=(), only=None, fresh=False, tofu=False):
        from provision.phases.progress import ConsoleReporter, summary_table
        from provision.phases.up import up

        from provision.phases.runner import PhaseFailed

        try:
            report = up(cluster, opts, ConsoleReporter(out), dry_run=dry_run, skip=skip, only=only, fresh=fresh,
                        transport_options=transport_options(opts.known_hosts, tofu))
        except PhaseFailed as failure:
            if failure.report is not None:
                if failure.report.resumed:
                    out.print("[cyan]resumed[/] an interrupted run: phases marked ↷ had finished and were not run again")
                console.table(summary_table(failure.report))
            if only is None:
                err.print("[yellow]the journal remembers the finished phases: run `kubeprov up` again to resume[/]")
            raise
        if report.resumed:
            out.print("[cyan]resumed[/] an interrupted run: phases marked ↷ had finished and were not run again")
        console.table(summary_table(report))
        return report

    @app.command("up")
    @takes_run_options
    def up_command(
        run_args: RunArgs,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what each phase would do on each host; change nothing.")] = False,
        skip_phases: Annotated[Optional[str], typer.Option("--skip-phases", help="Comma-separated phases to skip (a parent skips its children); see `kubeprov phase list`.")] = None,
        fresh: Annotated[bool, typer.Option("--fresh", help="Ignore the journal of an interrupted run; run every phase.")] = False,
        merge_kubeconfig: Annotated[Optional[bool], typer.Option("--merge-kubeconfig/--no-merge-kubeconfig", help="Merge admin.conf into ~/.kube/config (asked on a terminal; off otherwise).")] = None,
    ) -> None:
        """Bootstrap the cluster: every phase in order (`kubeprov phase list`), resuming an interrupted run.

        Writes the admin kubeconfig to kubeconfigs/admin.conf in the cluster directory and offers to merge it
        into ~/.kube/config. A second run with nothing changed changes nothing. On a running cluster, hosts
        in it whose files change (e.g. an extra API server flag) are rolled: control planes one at a time,
        each back and Ready before the next, workers drained in batches (provision/rolling.py).
        """
        cluster = load_for_command(run_args.config, run_args.inventory, run_args.cluster_dir)
        skip = [name for name in (skip_phases or "").split(",") if name.strip()]
        report = run(cluster, options(run_args), dry_run=dry_run, skip=skip, fresh=fresh, tofu=run_args.trust_on_first_use)
        if dry_run:
            out.print("dry run: nothing was changed")
            return
        from provision.pki import PKIStore

        admin = PKIStore(cluster).kubeconfig_path("admin.conf", None)
        out.print(f"admin kubeconfig: {admin}  (kubectl --kubeconfig {admin} get nodes)")
        if report.statuses.get("verify") != "done":
            return
        if merge_kubeconfig is None and sys.stdin.isatty():
            merge_kubeconfig = typer.confirm("merge it into ~/.kube/config?", default=False)
        if merge_kubeconfig:
            from provision.kube.kubeconfig_merge import merge_kubeconfig as merge

            context = merge(admin, Path("~/.kube/config"))
            out.print(f"merged into ~/.kube/config as context {context}")

    phase_app = typer.Typer(help="The phases of `up`: list them, or run one (with its children).", no_args_is_help=True)
    app.add_typer(phase_app, name="phase")

    @phase_app.command("list")
    def phase_list(output: OutputOpt = console.Output.TABLE) -> None:
        """Every phase of `up`, in order, with what it does.

        `-o json`: [{"phase", "parent", "description"}, …] in the same order.
        """
        from provision.phases.phase import flatten
        from provision.phases.up import UP_PHASES

        steps = flatten(UP_PHASES)
        if output is console.Output.JSON:
            console.json([{"phase": step.path, "parent": step.path.rpartition("/")[0] or None,
                           "description": step.phase.description} for step in steps])
            return
        table = Table(box=None, pad_edge=False)
        table.add_column("PHASE", no_wrap=True)
        table.add_column("WHAT IT DOES")
        for step in steps:
            table.add_row("  " * step.depth + step.path, escape(step.phase.description))
        console.table(table)

    @phase_app.command("run")
    @takes_run_options
    def phase_run(
        run_args: RunArgs,
        name: Annotated[str, typer.Argument(help="A phase (or parent) from `kubeprov phase list`.")],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what it would do.")] = False,
    ) -> None:
        """Run one phase of `up` and its children (the journal is neither read nor written); takes every
        option of `up` that applies to a run."""
        cluster = load_for_command(run_args.config, run_args.inventory, run_args.cluster_dir)
        run(cluster, options(run_args), dry_run=dry_run, only=[name], tofu=run_args.trust_on_first_use)

    token_app = typer.Typer(help="Bootstrap tokens for joining nodes by hand (`kubeadm join`).", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    def kubectl(cluster, known_hosts, tofu):
        from provision.phases.context import UpContext, UpOptions
        from provision.transport import Transport

        transport = Transport(transport_options(known_hosts, tofu))
        return transport, UpContext(cluster, UpOptions(), transport).kubectl(local=False)

    @token_app.command("create")
    def token_create(
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        known_hosts: KnownHostsOpt = None,
        ttl: Annotated[str, typer.Option("--ttl", help="Lifetime, a Go duration (24h, 90m); 0 never expires.")] = "24h",
        description: Annotated[str, typer.Option("--description", help="Shown by `token list`.")] = "",
        print_join_command: Annotated[bool, typer.Option("--print-join-command", help="Print the whole `kubeadm join` line.")] = False,
    ) -> None:
        """Create a token in the cluster (and sign cluster-info with it); print it."""
        from provision.bootstrap import manage
        from provision.bootstrap.join import join_command
        from provision.bootstrap.token import BootstrapToken, parse_ttl
        from provision.pki import PKIStore

        cluster = load_for_command(config, inventory)
        token = BootstrapToken.generate(ttl=parse_ttl(ttl), description=description)
        transport, k = kubectl(cluster, known_hosts, False)
        with transport:
            manage.create(k, token)
        if print_join_command:
            ca = (PKIStore(cluster).pki_dir / "ca.crt").read_bytes()
            console.text(join_command(cluster, token, ca))
        else:
            console.text(token.token)

    @token_app.command("list")
    def token_list(config: ConfigOpt = None, inventory: InventoryOpt = None, known_hosts: KnownHostsOpt = None,
                   output: OutputOpt = console.Output.TABLE) -> None:
        """The cluster's bootstrap tokens, like `kubeadm token list`.

        `-o json`: [{"token", "ttl", "expires", "usages", "description", "extraGroups"}, …], the same rows.
        """
        import datetime as dt

        from provision.bootstrap import manage

        cluster = load_for_command(config, inventory)
        transport, k = kubectl(cluster, known_hosts, False)
        with transport:
            tokens = manage.list_tokens(k)
        now = dt.datetime.now(dt.timezone.utc)

        def ttl(t) -> str:
            return "<forever>" if t.expires is None else ("<expired>" if t.expired(now) else f"{int((t.expires - now).total_seconds() // 3600)}h")

        if output is console.Output.JSON:
            console.json([{"token": t.token, "ttl": ttl(t), "expires": f"{t.expires:%Y-%m-%dT%H:%M:%SZ}" if t.expires else None,
                           "usages": list(t.usages), "description": t.description, "extraGroups": list(t.groups)} for t in tokens])
            return
        table = Table(box=None, pad_edge=False)
        for column in ("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"):
            table.add_column(column, no_wrap=column != "DESCRIPTION")
        for t in tokens:
            table.add_row(t.token, ttl(t), f"{t.expires:%Y-%m-%dT%H:%M:%SZ}" if t.expires else "<never>", ",".join(t.usages),
                          escape(t.description) or "<none>", ",".join(t.groups))
        console.table(table)

    @token_app.command("delete")
    def token_delete(
        tokens: Annotated[list[str], typer.Argument(help="Token ids or whole tokens.")],
        config: ConfigOpt = None, inventory: InventoryOpt = None, known_hosts: KnownHostsOpt = None,
    ) -> None:
        """Delete bootstrap tokens: nodes can no longer join with them."""
        from provision.bootstrap import manage

        cluster = load_for_command(config, inventory)
        transport, k = kubectl(cluster, known_hosts, False)
        with transport:
            for token in tokens:
                out.print(f"bootstrap token {manage.delete(k, token)} deleted")

    @app.command("join-command")
    def join_command_cmd(
        config: ConfigOpt = None, inventory: InventoryOpt = None, known_hosts: KnownHostsOpt = None,
        ttl: Annotated[str, typer.Option("--ttl", help="The new token's lifetime.")] = "24h",
    ) -> None:
        """Create a token and print the `kubeadm join` line that adds a worker with it."""
        from provision.bootstrap import manage
        from provision.bootstrap.join import join_command
        from provision.bootstrap.token import BootstrapToken, parse_ttl
        from provision.pki import PKIStore

        cluster = load_for_command(config, inventory)
        token = BootstrapToken.generate(ttl=parse_ttl(ttl))
        transport, k = kubectl(cluster, known_hosts, False)
        with transport:
            manage.create(k, token)
        console.text(join_command(cluster, token, (PKIStore(cluster).pki_dir / "ca.crt").read_bytes()))
