"""`kubeprov etcd backup` and `kubeprov etcd restore`: parse, call, print (provision/day2/etcd_backup.py
does the work). Registered by provision/day2/cli.py's register_day2_commands.

What a command produces goes to stdout (the backup's path; the restore's last line), progress per
host to stderr, like every command's (provision/console.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from provision.options import ClusterDirOpt, ConfigOpt, ConnectTimeoutOpt, InventoryOpt, KnownHostsOpt, ParallelOpt, TofuOpt

PANEL = "Operate it"

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be done on each host; change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when stdin is not a terminal).")]


def _sayer(names: list[str]):
    from provision.console import err

    width = max([len(n) for n in names] + [len("local")])

    def say(host: str, text: str) -> None:
        style = "yellow" if text.startswith("warning:") else ""
        line = escape(text)
        err.print(f"{escape(host):<{width}}  " + (f"[{style}]{line}[/]" if style else line), soft_wrap=True)

    return say


def _transport(known_hosts: Path | None, tofu: bool, connect_timeout: float):
    from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport

    return Transport(Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=tofu,
                             connect_timeout=connect_timeout))


def register_etcd_commands(app: typer.Typer) -> None:
    from provision.console import out
    from provision.loading import load_for_command

    etcd_app = typer.Typer(help="The cluster's etcd: back it up, restore it (same hosts or fresh ones).", no_args_is_help=True)
    app.add_typer(etcd_app, name="etcd", rich_help_panel=PANEL)

    @etcd_app.command("backup")
    def etcd_backup(
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The archive to write (must not exist). "
                                                       "Default: CLUSTER_DIR/etcd-backups/etcd-<UTC time>.tar.gz.")] = None,
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        cluster_dir: ClusterDirOpt = None,
        dry_run: DryRunOpt = False,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        connect_timeout: ConnectTimeoutOpt = 10.0,
    ) -> None:
        """A snapshot of etcd from a healthy member (stacked or external), with the CA material a restore needs.

        Writes one .tar.gz, mode 0600 (it holds CA keys): snapshot.db, pki/ (the cluster, front-proxy
        and etcd CAs, sa.key/sa.pub), secrets/encryption-key (Secrets at rest), manifest.json
        (cluster, versions, members, revision, time) and SHA256SUMS; and FILE.sha256 beside it.
        Never overwrites a file. Prints the archive's path on stdout.
        """
        from provision.day2 import etcd_backup as eb
        from provision.pki import PKIStore

        cluster = load_for_command(config, inventory, cluster_dir, expiry=False)
        path = output or eb.default_path(PKIStore(cluster).root)
        say = _sayer([h.name for h in cluster.etcd_members])
        if dry_run:
            eb.collect_ca(PKIStore(cluster).root)  # refuses now what the real run would refuse
            if path.exists():
                raise eb.KubeprovError(f"{path} exists: refusing to overwrite it; name another file with -o")
            for host, line in eb.plan_backup(cluster, path):
                say(host, line)
            out.print("dry run: nothing was changed")
            return
        with _transport(known_hosts, trust_on_first_use, connect_timeout) as transport:
            result = eb.backup(cluster, transport, path, say)
        say("local", f"wrote {result.path} (0600; sha256 in {eb.sidecar_path(result.path).name}): snapshot of "
                     f"{result.size} bytes from {result.host}, etcd {result.version}, revision {result.revision}")
        out.print(str(result.path))

    @etcd_app.command("restore")
    def etcd_restore(
        file: Annotated[Path, typer.Argument(help="An archive written by `kubeprov etcd backup`.")],
        config: ConfigOpt = None,
        inventory: InventoryOpt = None,
        cluster_dir: ClusterDirOpt = None,
        yes: YesOpt = False,
        dry_run: DryRunOpt = False,
        bundle: Annotated[Optional[Path], typer.Option("--bundle", help="Fresh hosts: the offline bundle `up` prepares them from.")] = None,
        lab: Annotated[bool, typer.Option("--lab", help="Fresh hosts: they are kubeprov lab containers (as `up --lab`).")] = False,
        timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for etcd's health, an API server or a node.")] = 300.0,
        known_hosts: KnownHostsOpt = None,
        trust_on_first_use: TofuOpt = False,
        parallel: ParallelOpt = 20,
        connect_timeout: ConnectTimeoutOpt = 10.0,
    ) -> None:
        """Restore the cluster's etcd from a backup: on the same hosts, or on fresh hosts after the old ones are gone.

        The archive's sha256 sums are checked first (a mismatch is one error line; nothing changes),
        and every member's new data dir is made on this machine with `etcdutl`/`etcdctl snapshot restore`
        (one of them must be on PATH) before any host changes.

        Same hosts (every etcd member has a data dir): the control-plane static pods and etcd are
        stopped, each member's data dir is moved aside to DATA_DIR.before-restore-TIME (kept) and
        replaced, etcd starts and is waited for, then the API servers (/readyz), then every kubelet
        restarts. Fresh hosts (no member has a data dir): the backup's CAs, service-account keys and
        encryption key go into the cluster directory (refused if it holds different ones), etcd's data
        dir is seeded before etcd first starts, and `up` runs: one command brings the control plane
        back with every object of the snapshot. Asks first unless --yes.
        """
        from provision.day2 import etcd_backup as eb
        from provision.day2.prompt import confirm

        cluster = load_for_command(config, inventory, cluster_dir, expiry=False)
        say = _sayer([h.name for h in cluster.hosts])

        def ask(plan) -> None:
            what = ("stop the control plane and replace etcd's data on " + ", ".join(plan.seeds)
                    if plan.layout.mode == "same-hosts" else
                    f"seed etcd on {', '.join(plan.seeds)} and build the cluster with `up`")
            confirm(f"restore cluster {cluster.name} from {file.name}: {what}?", yes)

        with _transport(known_hosts, trust_on_first_use, connect_timeout) as transport:
            plan, lines = eb.restore(cluster, file, transport, say, dry_run=dry_run, parallel=parallel, timeout=timeout,
                                     confirm=ask)
        if dry_run:
            say("local", f"hosts: {plan.layout.mode} ({'every member has' if plan.layout.mode == 'same-hosts' else 'no member has'} "
                         f"a data dir in {cluster.etcd.data_dir})")
            for host, line in lines:
                say(host, line)
            out.print("dry run: nothing was changed")
            return
        if plan.layout.mode == "same-hosts":
            out.print(f"etcd restored on {', '.join(plan.seeds)} from {file} (revision {plan.backup.manifest.get('revision')}); "
                      f"the old data is in {plan.aside} on each member")
            return
        _up_after_seed(cluster, plan, bundle=bundle, lab=lab, timeout=timeout, parallel=parallel, known_hosts=known_hosts,
                       tofu=trust_on_first_use)
        out.print(f"cluster {cluster.name} built on fresh hosts from {file} (revision {plan.backup.manifest.get('revision')})")


def _up_after_seed(cluster, plan, *, bundle, lab, timeout, parallel, known_hosts, tofu) -> None:
    """`up`'s phases on the seeded hosts, as `kubeprov up` runs them (its progress on stderr)."""
    from provision.console import err
    from provision.phases.progress import ConsoleReporter
    from provision.phases.runner import PhaseFailed
    from provision.phases.up import UpOptions, up
    from provision.transport import DEFAULT_KNOWN_HOSTS, Options

    options = UpOptions(bundle=bundle, known_hosts=known_hosts or UpOptions.known_hosts, lab=lab, parallel=parallel,
                        api_timeout=timeout, node_timeout=timeout)
    try:
        report = up(cluster, options, ConsoleReporter(err), fresh=True,
                    transport_options=Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=tofu))
    except PhaseFailed as failure:
        raise _seeded_hint(failure) from None
    err.print(f"up: {', '.join(f'{name} {status}' for name, status in report.statuses.items())} ({report.total:.1f}s)",
              soft_wrap=True)


def _seeded_hint(failure):
    from provision.errors import KubeprovError

    error = KubeprovError(f"{failure}; etcd's data is seeded: fix the cause and run `kubeprov up` (it resumes)")
    error.exit_code = failure.exit_code
    return error
