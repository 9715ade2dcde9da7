"""`kubeprov lab …`: a local lab of real systemd hosts (see provision/lab/__init__.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from provision import console
from provision.console import OutputOpt, out
from provision.lab.errors import LabError

lab_app = typer.Typer(
    help="A local lab of real systemd hosts (systemd-nspawn, one network namespace each) to try kubeprov on. Needs root.",
    no_args_is_help=True,
)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Lab name: a-z0-9, at most 12 characters.")]


@lab_app.command("up")
def lab_up(
    hosts: Annotated[Optional[int], typer.Option("--hosts", "-N", help="How many hosts (default 3, or the topology's).")] = None,
    name: NameOpt = "lab",
    control_planes: Annotated[Optional[int], typer.Option(
        "--control-planes", help="The first K hosts are control planes; the rest workers (default 1, or the topology's).")] = None,
    topology: Annotated[Optional[str], typer.Option(
        "--topology", help="Shape the cluster file: 1cp-2workers, 3cp-1worker-haproxy, external-etcd, worker-local-lb.")] = None,
    bundle: Annotated[Optional[Path], typer.Option(
        "--bundle", help="An offline bundle: the cluster file takes its Kubernetes version and uses it as artifact source.")] = None,
) -> None:
    """Make (or keep) N hosts NAME-1 … NAME-N and write their inventories.

    Idempotent: running hosts are kept, missing ones made, extra ones removed. The first run
    builds the Debian rootfs and apt repository into the cache (about a minute). Then
    `kubeprov up --lab -c <cluster file>` builds a cluster on them.
    """
    import subprocess

    import yaml

    from provision.lab import lifecycle
    from provision.lab.topologies import TOPOLOGIES, cluster_document

    shape = TOPOLOGIES.get(topology) if topology else None
    if topology and shape is None:
        raise LabError(f"--topology: no topology {topology!r} (one of {', '.join(TOPOLOGIES)})")
    if bundle and not (bundle / "SHA256SUMS").is_file():
        raise LabError(f"--bundle: {bundle} is not an offline bundle (no SHA256SUMS)")
    if hosts is None:
        hosts = shape.hosts if shape else 3
    if control_planes is None:
        control_planes = shape.control_planes if shape else 1
    lab = lifecycle.up(name, hosts, control_planes, emit=out.print)
    if topology or bundle:
        version = None
        if bundle:
            said = subprocess.run([str(bundle / "bin" / "kubelet"), "--version"], capture_output=True, text=True)
            if said.returncode != 0:
                raise LabError(f"--bundle: {bundle}/bin/kubelet --version failed: {said.stderr.strip()[:200]}")
            version = said.stdout.split()[-1]
        doc = cluster_document(topology or "1cp-2workers", lab.cluster_file, lab.hosts, version=version,
                               bundle=bundle.resolve() if bundle else None)
        lab.cluster_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "ADDRESS", "ROLES", "SYSTEMD"):
        table.add_column(column)
    for h in lab.hosts:
        table.add_row(h.name, h.address, ", ".join(h.roles), lab.system_states.get(h.name, "?"))
    console.table(table)
    out.print(f"cluster file      {lab.cluster_file}")
    out.print(f"ansible inventory {lab.ansible_inventory}")
    out.print(f"ssh key           {lab.key}")
    out.print(f"known_hosts       {lab.known_hosts}")
    out.print(f"apt repository    {lab.repo_url}")


@lab_app.command("status")
def lab_status(output: OutputOpt = console.Output.TABLE) -> None:
    """Every lab on this machine, its subnet and which hosts run.

    `-o json`: [{"name", "subnet", "stateDir", "hosts": [{"name", "address", "running"}, …]}, …].
    """
    from provision.lab import lifecycle

    labs = lifecycle.status()
    if output is console.Output.JSON:
        console.json([
            {"name": state.name, "subnet": str(state.layout.subnet), "stateDir": str(state.layout.state_dir),
             "hosts": [{"name": state.layout.host_name(n), "address": str(state.layout.host_address(n)),
                        "running": running[state.layout.host_name(n)]} for n in state.hosts]}
            for state, running in labs
        ])
        return
    if not labs:
        out.print("no labs")
        return
    for state, running in labs:
        up_count = sum(running.values())
        out.print(f"[bold]{state.name}[/] {state.layout.subnet} · {up_count}/{len(running)} hosts running · {state.layout.state_dir}")
        for number in state.hosts:
            host_name = state.layout.host_name(number)
            mark = "[green]running[/]" if running[host_name] else "[red]stopped[/]"
            out.print(f"  {host_name:16} {state.layout.host_address(number):15} {mark}")


@lab_app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_ssh(
    host: Annotated[str, typer.Argument(help="Host name (e.g. lab-1) or its number in the lab.")],
    command: Annotated[Optional[list[str]], typer.Argument(help="Command to run (after --); default: a shell.")] = None,
    name: NameOpt = "lab",
) -> None:
    """ssh into a lab host as root, checking its host key strictly."""
    from provision.lab import lifecycle
    from provision.lab.access import ssh_args

    lab = lifecycle.info(name)
    by_name = {h.name: h for h in lab.hosts}
    target = by_name.get(host) or by_name.get(f"{name}-{host}")
    if target is None:
        raise LabError(f"lab {name} has no host {host!r} (hosts: {', '.join(by_name)})")
    args = ssh_args(target.address, lab.key, lab.known_hosts)
    if sys.stdin.isatty() and not command:
        args.insert(1, "-t")
    os.execvp(args[0], args + list(command or []))


@lab_app.command("down")
def lab_down(name: NameOpt = "lab") -> None:
    """Remove the lab: hosts, processes, cgroups, namespaces, veths and its state directory."""
    from provision.lab import lifecycle

    if lifecycle.down(name, emit=out.print):
        out.print(f"lab {name} removed")
    else:
        out.print(f"no lab {name}: nothing to remove")
