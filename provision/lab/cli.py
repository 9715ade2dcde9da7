"""`kubeprov lab …`: a local lab of real systemd hosts (see provision/lab/__init__.py)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from provision.lab.errors import LabError

out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

lab_app = typer.Typer(
    help="A local lab of real systemd hosts (systemd-nspawn, one network namespace each) to try kubeprov on. Needs root.",
    no_args_is_help=True,
)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Lab name: a-z0-9, at most 12 characters.")]


@lab_app.command("up")
def lab_up(
    hosts: Annotated[int, typer.Option("--hosts", "-N", help="How many hosts.")] = 3,
    name: NameOpt = "lab",
    control_planes: Annotated[int, typer.Option("--control-planes", help="The first K hosts are control planes; the rest workers.")] = 1,
) -> None:
    """Make (or keep) N hosts NAME-1 … NAME-N and write their inventories.

    Idempotent: running hosts are kept, missing ones made, extra ones removed. The first run
    builds the Debian rootfs and apt repository into the cache (about a minute).
    """
    from provision.lab import lifecycle

    lab = lifecycle.up(name, hosts, control_planes, emit=out.print)
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "ADDRESS", "ROLES", "SYSTEMD"):
        table.add_column(column)
    for h in lab.hosts:
        table.add_row(h.name, h.address, ", ".join(h.roles), lab.system_states.get(h.name, "?"))
    out.print(table)
    out.print(f"cluster file      {lab.cluster_file}")
    out.print(f"ansible inventory {lab.ansible_inventory}")
    out.print(f"ssh key           {lab.key}")
    out.print(f"known_hosts       {lab.known_hosts}")
    out.print(f"apt repository    {lab.repo_url}")


@lab_app.command("status")
def lab_status() -> None:
    """Every lab on this machine, its subnet and which hosts run."""
    from provision.lab import lifecycle

    labs = lifecycle.status()
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
