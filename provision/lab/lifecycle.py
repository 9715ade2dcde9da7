"""`lab up`, `lab down`, `lab status`: putting the pieces together in order, and taking them apart.

`up` is idempotent (running hosts are kept, missing ones made, extra ones removed) and cleans up
what it made when it fails half-way. `down` removes everything the lab made — processes,
cgroups, namespaces, veths, files — finding them by name as well as from the state file.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from provision.lab import aptrepo, cgroups, host, inventory, keys, limits, network, rootfs
from provision.lab.access import wait_booted
from provision.lab.errors import LabError
from provision.lab.layout import MAX_HOSTS, Layout, check_name, state_root
from provision.lab.locks import locked
from provision.lab.state import LabState, all_labs, load
from provision.lab.system import require_root, require_tools

BOOT_TIMEOUT = 180.0  # 20 hosts booting at once on 2 cores take a while


@dataclass(frozen=True)
class LabInfo:
    """What callers (CLI, test fixtures) need to reach a lab's hosts."""

    name: str
    hosts: list[inventory.LabHost]
    key: Path
    known_hosts: Path
    cluster_file: Path
    ansible_inventory: Path
    state_dir: Path
    repo_url: str
    system_states: dict[str, str] = field(default_factory=dict)  # host → `systemctl is-system-running`


class Steps:
    """Progress per step: `emit` gets one line per finished (or failed) step, with its time."""

    def __init__(self, emit: Callable[[str], None] = lambda line: None):
        self.emit = emit

    @contextlib.contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.emit(f"[red]✗[/] {title} ({time.monotonic() - started:.1f} s)")
            raise
        self.emit(f"[green]✓[/] {title} ({time.monotonic() - started:.1f} s)")


def _lock():
    """One lock for every lab on the machine: ups and downs (and subnet choices) never interleave.
    A single file, so `down` leaves no per-lab lock file behind."""
    return locked(state_root() / ".lock")


def _allocate(name: str, control_planes: int) -> LabState:
    taken = {lab.index for lab in all_labs()}
    state = LabState(name=name, index=network.free_index(taken), control_planes=control_planes)
    state.save()  # claims the index before anything is made
    return state


def up(name: str, count: int, control_planes: int = 1, emit: Callable[[str], None] = lambda line: None) -> LabInfo:
    require_root()
    require_tools()
    check_name(name)
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"--hosts must be 1 to {MAX_HOSTS}, not {count}")
    if not 1 <= control_planes <= count:
        raise LabError(f"--control-planes must be 1 to {count} (the number of hosts), not {control_planes}")
    step = Steps(emit)
    with _lock():
        with step("rootfs and apt repository cached"):
            cache = rootfs.ensure(progress=lambda message: emit(f"  {message}"), prune=not all_labs())
        state = load(name)
        fresh = state is None
        if state is None:
            state = _allocate(name, control_planes)
        wanted = list(range(1, count + 1))
        made: list[int] = []
        try:
            _converge(state, wanted, control_planes, cache, step, made)
            return _info(state, _boot_all(state, step))
        except BaseException:
            emit("[yellow]failed: removing what this run made[/]")
            if fresh:
                _teardown(Layout(name, state.index))
                if not all_labs():
                    limits.restore_inotify()
            else:
                for number in made:
                    _remove_host(state.layout, number)
                state.hosts = [n for n in state.hosts if n not in made]
                state.save()
            raise


def _converge(state: LabState, wanted: list[int], control_planes: int, cache: Path, step: Steps,
              made: list[int]) -> None:
    layout = state.layout
    extra = [n for n in state.hosts if n not in wanted]
    if extra:
        with step(f"removed {len(extra)} host(s) beyond --hosts {len(wanted)}"):
            for number in extra:
                _remove_host(layout, number)
    changed = set(state.hosts) != set(wanted)
    state.hosts = sorted(set(state.hosts) & set(wanted))
    state.control_planes = control_planes
    state.save()
    with step(f"network {layout.subnet} (bridge in {layout.lan_netns}, leg {layout.root_leg} {layout.controller_address})"):
        network.create_lan(layout)
    with step(f"apt repository {layout.repo_url}"):
        if not cgroups.pids(cgroups.existing(layout.repo_cgroup)):
            cgroups.kill_and_remove(cgroups.existing(layout.repo_cgroup))
            aptrepo.serve(layout, cache / "repo", layout.state_dir / "repo.log")
    lab_key = keys.lab_key(layout.state_dir, state.name)
    public = keys.public_key(lab_key)
    to_start = [n for n in wanted if not host.is_alive(layout, n)]
    others = sum(len(lab.hosts) for lab in all_labs() if lab.name != state.name)
    limits.ensure_inotify(others + len(wanted), emit=step.emit)
    with step(f"{len(to_start)} host(s) started, {len(wanted) - len(to_start)} kept running"):
        host_keys = {}
        for number in wanted:
            if number in to_start:
                if number not in state.hosts:
                    made.append(number)
                    state.hosts = sorted({*state.hosts, number})
                    state.save()  # before making anything, so a failure knows to remove it
                host.stop(layout, number)  # a host that died may have left its cgroups behind
                host_keys[number] = host.prepare(layout, number, public, wanted)
                network.create_host(layout, number)
                host.start(layout, number, cache / "rootfs")
            else:
                host_keys[number] = keys.public_key(host.files(layout, number).upper / "etc/ssh/ssh_host_ed25519_key")
        keys.write_known_hosts(layout.state_dir / inventory.KNOWN_HOSTS, [
            (layout.host_name(n), layout.host_address(n), host_keys[n]) for n in wanted
        ])
        if changed:  # running hosts learn the names of the new ones
            for number in wanted:
                if number not in to_start:
                    host.update_hosts_file(layout, number, wanted)
    with step("inventory written"):
        inventory.write(state)


def _boot_all(state: LabState, step: Steps) -> dict[str, str]:
    layout = state.layout
    key = layout.state_dir / inventory.KEY
    known_hosts = layout.state_dir / inventory.KNOWN_HOSTS

    def boot(number: int) -> str:
        try:
            return wait_booted(layout.host_address(number), key, known_hosts, BOOT_TIMEOUT,
                               alive=lambda: host.is_alive(layout, number))
        except (RuntimeError, TimeoutError) as exc:
            tail = host.console_tail(layout, number)
            raise LabError(f"host {layout.host_name(number)} ({layout.host_address(number)}): {exc}"
                           + (f"; console: {tail}" if tail else "")) from None

    with step(f"{len(state.hosts)} host(s) booted, sshd answering with known host keys"):
        with ThreadPoolExecutor(max_workers=min(32, len(state.hosts))) as pool:
            words = list(pool.map(boot, state.hosts))
    return {layout.host_name(n): word for n, word in zip(state.hosts, words)}


def _info(state: LabState, system_states: dict[str, str]) -> LabInfo:
    top = state.layout.state_dir
    return LabInfo(
        name=state.name, hosts=inventory.lab_hosts(state), key=top / inventory.KEY,
        known_hosts=top / inventory.KNOWN_HOSTS, cluster_file=top / inventory.CLUSTER_FILE,
        ansible_inventory=top / inventory.ANSIBLE_INVENTORY, state_dir=top, repo_url=state.layout.repo_url,
        system_states=system_states,
    )


def _remove_host(layout: Layout, number: int) -> None:
    host.stop(layout, number)
    network.remove_host(layout, number)
    _unmount_below(layout.host_dir(number))
    shutil.rmtree(layout.host_dir(number), ignore_errors=True)


def down(name: str, emit: Callable[[str], None] = lambda line: None) -> bool:
    """Remove the lab; True if there was anything to remove."""
    require_root()
    check_name(name)
    with _lock():
        state = load(name)
        layout = state.layout if state else Layout(name, 0)  # the index only names addresses
        removed = _teardown(layout, step=Steps(emit))
        if not all_labs():
            limits.restore_inotify()
    return removed


def _teardown(layout: Layout, step: Steps | None = None) -> bool:
    step = step or Steps()
    found_cgroups = cgroups.find(layout.cgroup_prefix)
    found_netns = network.lab_netns(layout)
    leg = network.link_exists(layout.root_leg)
    found_dir = layout.state_dir.exists()
    if not (found_cgroups or found_netns or leg or found_dir):
        return False
    with step(f"processes killed, {len(found_cgroups)} cgroup(s) removed"):
        cgroups.kill_and_remove(found_cgroups)
    with step(f"{len(found_netns)} network namespace(s) and the leg {layout.root_leg} removed"):
        network.remove_all(layout)
    with step(f"files removed ({layout.state_dir})"):
        _unmount_below(layout.state_dir)
        shutil.rmtree(layout.state_dir, ignore_errors=True)
    return True


def _unmount_below(top: Path) -> None:
    """Safety net: overlays live in private mount namespaces, but never delete through a mount."""
    prefix = str(top.resolve()) + "/"
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def status() -> list[tuple[LabState, dict[str, bool]]]:
    """Every lab with, per host name, whether it is running."""
    return [
        (state, {state.layout.host_name(n): host.init_pid(state.layout, n) is not None for n in state.hosts})
        for state in all_labs()
    ]


def info(name: str) -> LabInfo:
    state = load(check_name(name))
    if state is None:
        raise LabError(f"no lab named {name!r} (`kubeprov lab up --name {name}` makes it)")
    return _info(state, {})
