"""A cgroup of its own, in every hierarchy, for each lab host (and the repo server).

systemd-nspawn on a hybrid (v1 + unified) machine refuses to start unless its process already
sits in a cgroup of its own in the `systemd` and `unified` hierarchies; putting it in one in
every v1 controller too makes nspawn root the host's cgroup namespace there, so the host's own
systemd (and later kubelet) can use the controllers without touching anyone else's.

The cgroups are made beneath this process's own cgroup in each hierarchy, so the lab stays
inside whatever limits the caller runs under. Teardown kills every process in the tree.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from provision.lab.errors import LabError

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[tuple[Path, str]]:
    """(mount point, this process's cgroup path in it) for every mounted cgroup hierarchy."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        mount_point = Path(fields[4])
        if fstype == "cgroup2":
            found.append((mount_point, own.get("", "/")))
        elif fstype == "cgroup":
            options = fields[-1].split(",")
            keys = [o for o in options if o in _v1_keys(own)]
            if keys:
                found.append((mount_point, own[keys[0]]))
    if not found:
        raise LabError("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return found


def _v1_keys(own: dict[str, str]) -> set[str]:
    keys = set()
    for controllers in own:
        if controllers:
            keys.add(controllers)
            keys.update(controllers.split(","))
    return keys


def parent_dirs() -> list[Path]:
    """Where lab cgroups are made: this process's cgroup in each hierarchy."""
    return [mount / rel.lstrip("/") for mount, rel in hierarchies()]


def create(name: str) -> list[Path]:
    dirs = []
    for parent in parent_dirs():
        path = parent / name
        path.mkdir(exist_ok=True)
        # A new cpuset (v1) has no CPUs or memory nodes: a process cannot join it until set.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((parent / knob).read_text())
        dirs.append(path)
    return dirs


def enter(dirs: list[Path], pid: int) -> None:
    """Move `pid` into the cgroups; called in the child between fork and exec."""
    for path in dirs:
        (path / "cgroup.procs").write_text(f"{pid}\n")


def find(prefix: str) -> list[Path]:
    """Every lab cgroup whose name starts with `prefix`, in every hierarchy."""
    return sorted(p for parent in parent_dirs() if parent.is_dir() for p in parent.glob(f"{prefix}*") if p.is_dir())


def pids(dirs: list[Path]) -> set[int]:
    found: set[int] = set()
    for directory in _walk(dirs):
        try:
            found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        except OSError:
            pass  # removed meanwhile by the host's own systemd
    return found


def _walk(tops: list[Path]) -> list[Path]:
    """Every cgroup in these trees, deepest first; tolerant of cgroups vanishing while we look."""
    found = []
    for top in tops:
        for directory, _, _ in os.walk(top):  # os.walk ignores directories that disappear
            found.append(Path(directory))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _nspid_levels(pid: int | str) -> list[str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    return next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])


def namespace_inits(pids_: set[int], *, depth: int | None = None) -> list[int]:
    """Processes that are PID 1 of a PID namespace below ours; with `depth`, only those exactly
    that many levels below (1: the hosts' systemd, not the pause process of a pod inside a host)."""
    own = len(_nspid_levels("self"))
    inits = []
    for pid in pids_:
        levels = _nspid_levels(pid)
        if len(levels) > own and levels[-1] == "1" and (depth is None or len(levels) == own + depth):
            inits.append(pid)
    return inits


def kill_and_remove(dirs: list[Path], timeout: float = 30) -> None:
    """SIGKILL everything in these cgroup trees, hosts' PID 1 first, then remove the cgroups.

    Killing nspawn would leave the host's systemd running, and a clean poweroff stalls for
    minutes; killing a PID namespace's init makes the kernel kill the whole namespace at once.
    """
    dirs = [d for d in dirs if d.is_dir()]
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        alive = pids(dirs)
        if not alive:
            break
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(alive)[:10]} in {dirs[0].name} survived SIGKILL for {timeout:.0f} s")
        for pid in namespace_inits(alive) or sorted(alive):
            _kill(pid)
            killed.add(pid)
        time.sleep(0.05)
    _reap(killed | pids_seen_as_children())
    for top in dirs:
        _remove_tree(top, deadline)


def pids_seen_as_children() -> set[int]:
    """Our own exited children (launchers we started in this process), to reap."""
    me = str(os.getpid())
    found = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me:
            found.add(int(status.parent.name))
    return found


def _reap(candidates: set[int]) -> None:
    """Collect the exit status of any of these that are our children, so no zombie lingers."""
    for pid in candidates:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_tree(top: Path, deadline: float) -> None:
    # Children first: a cgroup with sub-cgroups cannot be removed. An emptied cgroup may stay
    # busy for a moment while the kernel reaps its last task, hence the retry.
    for path in _walk([top]):
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"cannot remove cgroup {path}: {exc.strerror}") from None
                time.sleep(0.05)


def existing(name: str) -> list[Path]:
    """The cgroup called exactly `name`, in each hierarchy where it exists."""
    return [parent / name for parent in parent_dirs() if (parent / name).is_dir()]
