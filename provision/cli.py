"""The `kubeprov` command: parse, call, print. Logic lives in the packages it calls."""

from __future__ import annotations

import datetime as dt
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from provision import __version__, addresses, console
from provision.console import OutputOpt, err, out
from provision.errors import KubeprovError, KubeprovWarning
from provision.options import (
    ClusterDirOpt, ConfigOpt, ConnectTimeoutOpt, HostsOpt, InventoryOpt, KnownHostsOpt, ParallelOpt, TofuOpt,
)

app = typer.Typer(
    name="kubeprov",
    help=(
        "Bootstrap Kubernetes clusters on bare metal and VMs over SSH, the kubeadm way.\n\n"
        "1. `kubeprov config example > cluster.yaml`, then list your hosts in it (or use an Ansible "
        "inventory with `-i`).\n\n"
        "2. `kubeprov config validate -c cluster.yaml`\n\n"
        "3. `kubeprov up -c cluster.yaml --dry-run` shows what each phase would do; without "
        "`--dry-run` it builds the cluster.\n\n"
        "No machines at hand? `sudo kubeprov lab up` boots local test hosts and writes a cluster file for them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Check a cluster file, or print a commented example.", no_args_is_help=True)
certs_app = typer.Typer(help="The cluster PKI: generate, check expiration, renew (rolled out to the hosts), rotate a CA.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(certs_app, name="certs")

def _version(value: bool) -> None:
    if value:
        out.print(f"kubeprov {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _load(config: Path | None, inventory: Path | None, cluster_dir: Path | None = None, *, expiry: bool = True):
    from provision.loading import load_for_command

    return load_for_command(config, inventory, cluster_dir, expiry=expiry)


# --- config ---------------------------------------------------------------------------------


@config_app.command("validate")
def config_validate(config: ConfigOpt = None, inventory: InventoryOpt = None) -> None:
    """Load and check a cluster file (and inventory); exit 2 naming the file and field if anything is wrong."""
    cluster = _load(config, inventory)
    table = Table(title=f"cluster {cluster.name} · Kubernetes {cluster.kubernetes_version}", title_justify="left")
    for column in ("host", "address", "internal address", "roles", "ssh"):
        table.add_column(column)
    for host in cluster.hosts:
        table.add_row(
            host.name, host.address, host.advertise_address, ", ".join(r.value for r in host.roles),
            f"{host.ssh.user}@:{host.ssh.port}",
        )
    console.table(table)
    endpoint = "%s:%d" % cluster.endpoint
    out.print(
        f"API endpoint {endpoint} · pods {cluster.networking.pod_subnet} · services "
        f"{cluster.networking.service_subnet} · etcd {cluster.etcd.topology.value} "
        f"({len(cluster.etcd_members)} members) · cni {cluster.cni.value}"
    )
    out.print(f"[green]ok[/] {config or inventory} is valid")


@config_app.command("example")
def config_example() -> None:
    """Print a commented cluster file to start from."""
    from importlib.resources import files

    sys.stdout.write(files("provision.config").joinpath("example.yaml").read_text())


# --- certs ----------------------------------------------------------------------------------

_ACTION_STYLE = {"created": "green", "kept": "dim", "external": "cyan", "stale": "yellow", "renewed": "green"}


def _print_outcomes(outcomes, verbose: bool) -> None:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
        if verbose or o.action not in ("kept",):
            style = _ACTION_STYLE.get(o.action, "")
            detail = f" — {o.detail}" if o.detail else ""
            out.print(f"[{style}]{o.action:8}[/] {o.label}{detail}")
    out.print(", ".join(f"{n} {action}" for action, n in sorted(counts.items())))


@certs_app.command("generate")
def certs_generate(
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list what was kept.")] = False,
) -> None:
    """Issue every missing CA, certificate, key and kubeconfig; keep and check what exists.

    Idempotent: existing files are never rewritten. A certificate that no longer matches the
    cluster (SANs, subject, signer) is reported as stale; replace it with `kubeprov certs renew`.
    """
    from provision.pki import PKIStore

    cluster = _load(config, inventory, cluster_dir)
    addresses.require(cluster)  # these write the hosts' IPs: a host known by name needs `up` first
    store = PKIStore(cluster)
    outcomes = store.generate()
    _print_outcomes(outcomes, verbose)
    out.print(f"PKI in {store.root}")
    if any(o.action == "stale" for o in outcomes):
        err.print("[yellow]warning:[/] some certificates are stale; `kubeprov certs renew NAME --host HOST` replaces them")


def _residual(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "-"
    if delta.total_seconds() <= 0:
        return "expired"
    days = delta.days
    return f"{days // 365}y" if days >= 365 else f"{days}d" if days else f"{int(delta.total_seconds() // 3600)}h"


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "-"


@certs_app.command("check-expiration")
def certs_check_expiration(
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    on_hosts: Annotated[bool, typer.Option("--on-hosts", help="Also read every host's copies and mark those that differ from the cluster directory's.")] = False,
    known_hosts: KnownHostsOpt = None,
    trust_on_first_use: TofuOpt = False,
    output: OutputOpt = console.Output.TABLE,
) -> None:
    """A table like `kubeadm certs check-expiration`: every certificate and kubeconfig, then the CAs.

    With --on-hosts, a third table: each certificate and kubeconfig every host holds (one SSH
    command per host), "same" as the cluster directory's, "differs" (with the host's own expiry:
    renewed by hand, or a `certs renew --local-only` not yet pushed) or "missing".

    Exit code 1 when anything is missing, stale or expires within 30 days, or differs on a host
    (each named on stderr). `-o json`: {"certificates": [...], "certificateAuthorities": [...]}, the
    same rows, and "onHosts": [{"host", "path", "state", "expires"}] with --on-hosts.
    """
    from provision.pki import PKIStore

    # expiry=False: this command is the full report; the one-line warning would repeat it.
    cluster = _load(config, inventory, cluster_dir, expiry=False)
    store = PKIStore(cluster)
    rows, ca_rows = store.check()
    held = []
    if on_hosts:
        from provision.pki import on_hosts as host_copies
        from provision.pki.store import read_material

        with _transport(known_hosts, trust_on_first_use, 10.0) as transport:
            held = host_copies.compare(transport, cluster, read_material(store))
    now = dt.datetime.now(dt.timezone.utc)
    problems: list[str] = []
    for row in rows:
        residual = row.residual(now)
        if residual is not None and residual < dt.timedelta(days=30):
            problems.append(f"{row.name} ({row.host or 'cluster'}): expires in {_residual(residual)}")
        problems += [f"{row.name} ({row.host or 'cluster'}): {p}" for p in row.problems]
    for row in ca_rows:
        problems += [f"{row.name}: {p}" for p in row.problems]
    problems += [f"{h.path} on {h.host}: {h.state} (`kubeprov up` pushes the cluster directory's)" for h in held if h.state != "same"]
    if output is console.Output.JSON:
        def as_json(row, ca: bool) -> dict:
            return {
                "name": row.name, **({} if ca else {"host": row.host or None}),
                "expires": f"{row.not_after:%Y-%m-%dT%H:%M:%SZ}" if row.not_after else None,
                "residual": _residual(row.residual(now)), **({} if ca else {"ca": row.ca}),
                "external": row.external, "problems": row.problems,
            }

        console.json({"certificates": [as_json(r, False) for r in rows],
                      "certificateAuthorities": [as_json(r, True) for r in ca_rows],
                      **({"onHosts": [{"host": h.host, "path": h.path, "state": h.state,
                                       "expires": f"{h.not_after:%Y-%m-%dT%H:%M:%SZ}" if h.not_after else None}
                                      for h in held]} if on_hosts else {})})
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("CERTIFICATE", "HOST", "EXPIRES", "RESIDUAL", "CA", "EXTERNAL"):
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(row.name, row.host or "-", _when(row.not_after), _residual(row.residual(now)), row.ca,
                          "yes" if row.external else "no")
        console.table(table)
        out.print()
        ca_table = Table(box=None, pad_edge=False)
        for column in ("CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL", "EXTERNAL"):
            ca_table.add_column(column, no_wrap=True)
        for row in ca_rows:
            ca_table.add_row(row.name, _when(row.not_after), _residual(row.residual(now)), "yes" if row.external else "no")
        console.table(ca_table)
        if on_hosts:
            out.print()
            host_table = Table(box=None, pad_edge=False)
            for column in ("ON HOST", "FILE", "STATE", "EXPIRES"):
                host_table.add_column(column, no_wrap=True)
            for h in held:
                host_table.add_row(h.host, h.path, h.state, _when(h.not_after))
            console.table(host_table)
    for problem in problems:
        err.print(f"[yellow]attention:[/] {escape(problem)}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@certs_app.command("renew")
def certs_renew(
    names: Annotated[list[str], typer.Argument(help="Certificate names (apiserver, etcd-peer, admin.conf, …) or `all`.")],
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    host: Annotated[Optional[list[str]], typer.Option("--host", help="Only these hosts' certificates (repeatable).")] = None,
    new_key: Annotated[bool, typer.Option("--new-key", help="Also replace the private key (default: keep it).")] = False,
    local_only: Annotated[bool, typer.Option("--local-only", help="Renew in the cluster directory only; a later `up` pushes them.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List per host, in the roll's order, the files that would be replaced and what would restart; change nothing, contact no host.")] = False,
    known_hosts: KnownHostsOpt = None,
    trust_on_first_use: TofuOpt = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for an API server, a static pod, etcd or a node.")] = 300.0,
) -> None:
    """Re-issue certificates and kubeconfigs from their CA with the current SANs and validity, and
    roll them out to the hosts that hold them.

    The old certificate and key are copied to CLUSTER_DIR/backup/UTC_TIME/ first; the key is
    kept unless --new-key. Then, like `kubeadm certs renew` on every control plane but without
    the manual restarts: external etcd members and control planes one at a time (each back, Ready
    and etcd healthy before the next), then the workers (not drained: only their kubelet
    restarts). On each, the replaced files are backed up on the host, and what reads them is
    restarted: a static pod whose certificates or kubeconfig changed (its manifest moved out and
    back), the kubelet for kubelet.conf, etcd's unit. An API server is taken out of the load
    balancers while it restarts. Interrupted, the same command continues the roll without
    renewing again.

    Examples: kubeprov certs renew all -c cluster.yaml --dry-run;
    kubeprov certs renew apiserver --host cp1 -c cluster.yaml
    """
    from provision.day2 import certs_renew as renewal
    from provision.phases.progress import HostLines
    from provision.pki import PKIStore

    cluster = _load(config, inventory, cluster_dir, expiry=False)
    addresses.require(cluster)  # these write the hosts' IPs: a host known by name needs `up` first
    store = PKIStore(cluster)
    creds = store.select(names, host or [])
    if not creds:
        raise KubeprovError("nothing matches those names and hosts")
    lines = HostLines(out, cluster)
    if dry_run:
        trees, changed = renewal.trial(cluster, names, host or [], new_key=new_key)
        out.print(f"renew {len(creds)} in {store.root}: " + ", ".join(c.label for c in creds), soft_wrap=True)
        if not local_only:
            for name, line in renewal.plan_lines(cluster, trees, changed):
                lines.line(name, line)
        out.print("dry run: nothing was changed", soft_wrap=True)
        return
    if local_only:
        _print_outcomes(store.renew(creds, new_key=new_key), verbose=True)
        out.print("the hosts keep the old ones until `kubeprov up` (or `certs renew` without --local-only) rolls them out", soft_wrap=True)
    else:
        from provision.phases.context import UpContext, UpOptions
        from provision.transport import DEFAULT_KNOWN_HOSTS

        journal = renewal.open_journal(store.root, [c.label for c in creds])
        with _transport(known_hosts, trust_on_first_use, 10.0) as transport:
            ctx = UpContext(cluster, UpOptions(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, api_timeout=timeout,
                                               node_timeout=timeout), transport, lines)
            hosts = renewal.hosts_holding(ctx)  # every host asked before anything changes: one that does not answer stops here
            if journal.done(renewal.LOCAL):
                out.print(f"resuming the interrupted renew: renewed in {store.root} already; rolling the hosts not done yet", soft_wrap=True)
            else:
                _print_outcomes(store.renew(creds, new_key=new_key), verbose=True)
                journal.mark(renewal.LOCAL, "done")
                ctx.reread_pki()
            rolled = renewal.roll_out(ctx, hosts, journal)
        out.print(f"rolled out to {len(rolled)} hosts: {', '.join(rolled) or 'none (their copies were current)'}", soft_wrap=True)
    from provision.loading import warn_expiring

    warn_expiring(cluster, config, inventory, cluster_dir)  # what this renew left expiring, read after it


# --- render ---------------------------------------------------------------------------------


@app.command("render")
def render(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to write DIR/HOST/PATH into.")],
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    diff: Annotated[
        Optional[Path],
        typer.Option("--diff", help="An earlier render to compare with (may be --out itself); prints what changes."),
    ] = None,
) -> None:
    """Write every host's desired files under DIR/HOST/ at the paths they will have on that host,
    and the cluster objects (applied through the API by `up`) under DIR/_cluster/.

    A dry run you can read: nothing is sent anywhere. Needs the PKI (`kubeprov certs generate`).
    The output holds private keys: it is created 0700, and secrets are never printed, not even by --diff.
    """
    from pathlib import PurePosixPath

    from provision.pki import PKIStore
    from provision.pki.store import read_material
    from provision.render import render_cluster, render_hosts
    from provision.render.diff import CLUSTER_DIR, diff_renders, read_render
    from provision.render.tree import File, write_trees

    cluster = _load(config, inventory, cluster_dir)
    addresses.require(cluster)  # these write the hosts' IPs: a host known by name needs `up` first
    store = PKIStore(cluster)
    material = read_material(store)
    stale = [row for row in store.check()[0] if row.problems]
    if stale:
        err.print(
            f"[yellow]warning:[/] {len(stale)} certificate(s) no longer match the cluster (first: {stale[0].name}"
            f"{' on ' + stale[0].host if stale[0].host else ''}: {stale[0].problems[0]}); "
            "`kubeprov certs check-expiration` lists them, `kubeprov certs renew` replaces them",
            soft_wrap=True,
        )
    trees = render_hosts(cluster, material)
    objects = render_cluster(cluster, material)
    if objects:
        trees[CLUSTER_DIR] = {PurePosixPath("/") / name: File(data, 0o644) for name, data in objects.items()}
    if diff is not None:
        changes = diff_renders(read_render(diff), trees)
        for change in changes:
            # A diff is text to reuse (patch, review): written as it is, tabs and long lines included.
            console.text(f"{change.kind:8} {change.host}:{change.path}" + (f"  {change.diff}" if change.kind == "mode" else ""))
            if change.kind == "changed" and change.diff:
                console.text(change.diff)
        console.text(f"{len(changes)} file(s) differ from {diff}")
    written = write_trees(out_dir, trees)
    for host, tree in sorted(trees.items()):
        secrets = sum(1 for f in tree.values() if f.secret)
        console.text(f"{host}: {len(tree)} files ({secrets} secret)")
    console.text(f"{len(written)} files written under {out_dir}" if written else f"{out_dir} is up to date")


# --- exec / sync (the SSH transport) ---------------------------------------------------------

def _transport(known_hosts: Path | None, tofu: bool, connect_timeout: float, command_timeout: float | None = None):
    from provision.transport import DEFAULT_KNOWN_HOSTS, Options, Transport

    timeouts = {"connect_timeout": connect_timeout} | ({"command_timeout": command_timeout} if command_timeout else {})
    return Transport(Options(known_hosts=known_hosts or DEFAULT_KNOWN_HOSTS, trust_on_first_use=tofu, **timeouts))


def _pick_hosts(cluster, names: list[str] | None):
    if not names:
        return cluster.hosts
    unknown = sorted(set(names) - {h.name for h in cluster.hosts})
    if unknown:
        raise KubeprovError(f"no host named {', '.join(unknown)} in cluster {cluster.name}")
    return [h for h in cluster.hosts if h.name in names]


@app.command("exec")
def exec_command(
    command: Annotated[list[str], typer.Argument(help="The command, after `--`; its words are joined by spaces, as ssh does.")],
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    host: HostsOpt = None,
    known_hosts: KnownHostsOpt = None,
    trust_on_first_use: TofuOpt = False,
    parallel: ParallelOpt = 20,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds the command may run on each host.")] = 600.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every host's full output after the table.")] = False,
) -> None:
    """Run a shell command as root on every host (through `sudo -n` when the SSH user is not root).

    Prints one row per host: exit code, time, and the first line of output (of stderr on failure).
    Exits 1 when the command failed or could not run on any host.
    """
    from provision.transport import fan_out

    cluster = _load(config, inventory)
    line = " ".join(command)
    with _transport(known_hosts, trust_on_first_use, connect_timeout, timeout) as transport:
        outcomes = fan_out(_pick_hosts(cluster, host), lambda h: transport.run(h, line), parallel=parallel)
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "EXIT", "TIME", "OUTPUT"):
        table.add_column(column, no_wrap=column != "OUTPUT")
    failed = 0
    for o in outcomes:
        if not o.ok:
            failed += 1
            table.add_row(o.host, "[red]-[/]", f"{o.duration:.2f}s", f"[red]{o.error_text}[/]")
        else:
            failed += not o.value.ok
            style = "green" if o.value.ok else "red"
            table.add_row(o.host, f"[{style}]{o.value.exit_code}[/]", f"{o.value.duration:.2f}s", o.value.summary())
    console.table(table)
    if verbose:
        for o in outcomes:
            if o.ok:
                out.print(f"--- {o.host} (exit {o.value.exit_code})", style="bold")
                out.out(o.value.stdout, end="", highlight=False)
                if o.value.stderr:
                    err.out(o.value.stderr, end="", highlight=False)
    if failed:
        err.print(f"[red]{failed} of {len(outcomes)} hosts failed[/]")
        raise typer.Exit(1)


@app.command("sync")
def sync(
    from_dir: Annotated[Path, typer.Option("--from", help="Directory written by `kubeprov render -o DIR` (DIR/HOST/PATH).")],
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    known_hosts: KnownHostsOpt = None,
    trust_on_first_use: TofuOpt = False,
    parallel: ParallelOpt = 20,
    connect_timeout: ConnectTimeoutOpt = 10.0,
) -> None:
    """Push each host's rendered files to it, writing only files whose content, mode or owner differ.

    Writes are atomic; a replaced file is kept under /var/backups/kubeprov/UTC_TIME/PATH on
    the host. Lists what changed per host; a second run changes nothing. Exits 1 if any host failed.
    """
    from provision.transport import sync_rendered

    cluster = _load(config, inventory)
    with _transport(known_hosts, trust_on_first_use, connect_timeout) as transport:
        outcomes = sync_rendered(transport, cluster, from_dir, parallel=parallel)
    changed = failed = 0
    for o in outcomes:
        if not o.ok:
            failed += 1
            err.print(f"[red]{o.host}: error:[/] {o.error_text}", soft_wrap=True)
        elif not o.value:
            out.print(f"{o.host}: [dim]unchanged[/] ({o.duration:.2f}s)")
        else:
            changed += len(o.value)
            out.print(f"{o.host}: {len(o.value)} changed ({o.duration:.2f}s)")
            for change in o.value:
                out.print(f"  [green]{change.what:8}[/] {change.path}")
    out.print(f"{changed} files changed on {sum(1 for o in outcomes if o.ok and o.value)} hosts" if changed else "nothing changed")
    if failed:
        raise typer.Exit(1)


from provision.lab.cli import lab_app  # noqa: E402  (kubeprov lab …)

app.add_typer(lab_app, name="lab")

from provision.artifacts.cli import artifacts_app  # noqa: E402  (kubeprov artifacts …)

app.add_typer(artifacts_app, name="artifacts")


# --- prepare (Ansible roles in playbooks/) ---------------------------------------------------


@app.command("prepare")
def prepare_command(
    config: ConfigOpt = None,
    inventory: InventoryOpt = None,
    cluster_dir: ClusterDirOpt = None,
    bundle: Annotated[Optional[Path], typer.Option("--bundle", help="Offline bundle: bin/NAME, images/*.tar, SHA256SUMS (verified first).")] = None,
    known_hosts: KnownHostsOpt = None,
    lab: Annotated[bool, typer.Option("--lab", help="Hosts are kubeprov lab containers: verify kernel modules/sysctls instead of setting them.")] = False,
    swapoff: Annotated[bool, typer.Option("--swapoff", help="Turn swap off on hosts that have it (default: preflight refuses them).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run the roles even when every host already has this exact state.")] = False,
    forks: ParallelOpt = 20,
) -> None:
    """Prepare every host for Kubernetes: preflight, kernel modules and sysctls, containerd + runc,
    CNI plugins, crictl, kubelet (enabled, not started), kubectl, external etcd, images.

    Runs the Ansible roles in playbooks/ through ansible-runner with an inventory generated from
    the cluster file, showing per-host progress. A re-run with nothing changed skips Ansible.
    """
    from provision.prepare import Options, prepare

    cluster = _load(config, inventory, cluster_dir)
    addresses.require(cluster)  # these write the hosts' IPs: a host known by name needs `up` first
    width = max(len(h.name) for h in cluster.hosts)

    def update(progress, what: str) -> None:
        if what in ("changed", "failed", "unreachable"):
            style = {"changed": "yellow", "failed": "red", "unreachable": "red"}[what]
            text = progress.error if what != "changed" else progress.task
            out.print(f"{progress.host:<{width}} [{style}]{what:11}[/] {escape(text)}", soft_wrap=True)
        elif what == "warning":
            out.print(f"{progress.host:<{width}} [yellow]warning[/]     {escape(progress.warnings[-1])}", soft_wrap=True)

    def skip_check(states) -> None:
        for state in states:
            if not state.current:
                out.print(f"{state.host:<{width}} [cyan]to apply[/]    {escape(state.reason)}", soft_wrap=True)

    options = Options(bundle=bundle, known_hosts=known_hosts or Options.known_hosts, lab=lab, swapoff=swapoff,
                      force=force, forks=forks)
    report = prepare(cluster, options, update, skip_check)
    if report.skipped:
        out.print(f"nothing to do: all {len(report.states)} hosts have this exact state "
                  f"(applied.json matches, services running); Ansible not run ({report.seconds:.1f}s)")
        return
    result = report.result
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "STATUS", "OK", "CHANGED", "FAILED", "SKIPPED", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    stopped_by = [h.host for h in result.hosts.values() if h.failed or h.unreachable]
    for name in [h.name for h in cluster.hosts]:
        h = result.hosts.get(name)
        if h is None:  # left out by --limit: its applied state already matched
            table.add_row(name, "[dim]current[/]", "-", "-", "-", "-", "")
            continue
        status = h.status if not (stopped_by and h.status in ("ok", "changed")) else f"stopped ({h.status})"
        style = "red" if h.failed or h.unreachable else "yellow" if h.changed else "green"
        table.add_row(name, f"[{style}]{status}[/]", str(h.ok), str(h.changed), str(h.failed), str(h.skipped), escape(h.error))
    console.table(table)
    out.print(f"inventory: {report.inventory} · {result.seconds:.1f}s in Ansible, {report.seconds:.1f}s in all")
    if not result.ok:
        for name in stopped_by:
            err.print(f"[red]{name}:[/] {escape(result.hosts[name].error)}", soft_wrap=True)
        if stopped_by:
            err.print(f"[red]prepare failed on {', '.join(stopped_by)}[/]")
        else:
            err.print(f"[red]prepare failed: ansible-runner {result.status} (exit {result.rc})[/]")
        raise typer.Exit(1)


from provision.phases.cli import register_up_commands  # noqa: E402  (kubeprov up, phase …, token …, join-command)

register_up_commands(app)

from provision.day2.cli import register_day2_commands  # noqa: E402  (kubeprov reset, node remove)

register_day2_commands(app)

from provision.upgrade.cli import register_upgrade_commands  # noqa: E402  (kubeprov upgrade plan)

register_upgrade_commands(app)

from provision.pki.rotate_ca_cli import register_rotate_ca  # noqa: E402

register_rotate_ca(certs_app)

# Group the commands in --help by what an operator is doing.
_PANELS = {
    "Build a cluster": ("config", "certs", "render", "prepare", "sync", "up", "phase"),
    "Operate it": ("token", "join-command", "exec", "upgrade"),
    "Tools": ("lab", "artifacts"),
}
for _panel, _names in _PANELS.items():
    for _info in [*app.registered_commands, *app.registered_groups]:
        if _info.name in _names:
            _info.rich_help_panel = _panel


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """kubeprov's own warnings (an inventory's, relayed from Ansible) as one line, like the others."""
    if issubclass(category, KubeprovWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main() -> None:
    warnings.showwarning = _show_warning
    try:
        app()
    except KubeprovError as exc:
        # escape: messages quote inventory text like [all:vars], which rich would take for markup.
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("KUBEPROV_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (set KUBEPROV_DEBUG=1 for the traceback)", soft_wrap=True)
        sys.exit(70)
