"""One lab host: its overlay's files, its systemd-nspawn boot, and its end.

A host is the cached rootfs (read-only lower) plus an upper directory of its own holding what
makes it a distinct machine: hostname, machine-id, ssh host key, /etc/hosts, resolv.conf and
sources.list. The overlay is mounted in a private mount namespace that only its nspawn sees, so
the mount disappears with the host and never shows in this machine's mount table.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from provision.fsutil import PUBLIC_FILE_MODE, atomic_write
from provision.lab import aptrepo, cgroups, keys
from provision.lab.layout import Layout

# Real directories (not overlayfs) where runc, kubelet and etcd need them; see LAB-NOTES.
DATA_DIRS = {"containerd": "/var/lib/containerd", "kubelet": "/var/lib/kubelet", "etcd": "/var/lib/etcd"}


@dataclass(frozen=True)
class HostFiles:
    """Where a host's pieces live under the lab's state directory."""

    top: Path

    @property
    def upper(self) -> Path:
        return self.top / "upper"

    @property
    def work(self) -> Path:
        return self.top / "work"

    @property
    def root(self) -> Path:
        """Mount point of the merged overlay (mounted only inside the host's mount namespace)."""
        return self.top / "root"

    @property
    def console(self) -> Path:
        return self.top / "console.log"

    def data(self, name: str) -> Path:
        return self.top / "data" / name


def files(layout: Layout, number: int) -> HostFiles:
    return HostFiles(layout.host_dir(number))


def hosts_file(layout: Layout, numbers: list[int]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{layout.host_address(n)}\t{layout.host_name(n)}" for n in numbers]
    return "\n".join(lines) + "\n"


def prepare(layout: Layout, number: int, lab_public_key: str, all_numbers: list[int]) -> str:
    """Write the host's own files into its upper dir; return its ssh host public key."""
    f = files(layout, number)
    for path in (f.upper, f.work, f.root, *(f.data(name) for name in DATA_DIRS)):
        path.mkdir(parents=True, exist_ok=True)
    etc = f.upper / "etc"
    etc.mkdir(exist_ok=True)
    name = layout.host_name(number)
    _write(etc / "hostname", f"{name}\n")
    if not (etc / "machine-id").exists():  # stable across restarts, distinct per host
        _write(etc / "machine-id", f"{secrets.token_hex(16)}\n")
    _write(etc / "hosts", hosts_file(layout, all_numbers))
    # Name resolution stays inside the lab: nothing answers there, /etc/hosts does the work.
    _write(etc / "resolv.conf", f"nameserver {layout.gateway}\noptions timeout:1 attempts:1\n")
    (etc / "apt").mkdir(exist_ok=True)
    _write(etc / "apt/sources.list", aptrepo.sources_list(layout))
    keys.write_authorized_keys(f.upper / "root", lab_public_key)
    return keys.host_key(etc / "ssh", name)


def _write(path: Path, text: str) -> None:
    atomic_write(path, text.encode(), PUBLIC_FILE_MODE, replace=True)


def nspawn_args(layout: Layout, number: int) -> list[str]:
    f = files(layout, number)
    args = [
        "systemd-nspawn", "--boot", "--quiet",
        f"--directory={f.root}", f"--machine={layout.host_name(number)}",
        # No machined here (PID 1 is not systemd): don't register, stay in the cgroup we made.
        "--register=no", "--keep-unit",
        f"--network-namespace-path=/run/netns/{layout.host_netns(number)}",
        # runc inside the host needs every capability and the keyring syscalls.
        "--capability=all", "--system-call-filter=@keyring",
        "--bind-ro=/dev/kmsg",  # kubelet opens it
        "--resolv-conf=off", "--timezone=off", "--link-journal=no",
        "--console=read-only",
    ]
    args += [f"--bind={f.data(name)}:{target}" for name, target in DATA_DIRS.items()]
    return args


def start(layout: Layout, number: int, rootfs: Path) -> int:
    """Boot the host; return the pid of its launcher (which becomes systemd-nspawn)."""
    f = files(layout, number)
    cgroup_dirs = cgroups.create(layout.host_cgroup(number))
    overlay = f"lowerdir={rootfs},upperdir={f.upper},workdir={f.work}"
    script = f"mount -t overlay overlay -o {shlex.quote(overlay)} {shlex.quote(str(f.root))} && exec " + \
        " ".join(shlex.quote(a) for a in nspawn_args(layout, number))
    with open(f.console, "ab") as console:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: cgroups.enter(cgroup_dirs, os.getpid()),
        )
    return proc.pid


def init_pid(layout: Layout, number: int) -> int | None:
    """The host's PID 1 (its systemd) as seen from here, or None when the host is not running."""
    # Exactly one level below ours: a pod's pause inside the host is an init too (and PIDs wrap).
    inits = cgroups.namespace_inits(cgroups.pids(cgroups.existing(layout.host_cgroup(number))), depth=1)
    return min(inits) if inits else None


def is_alive(layout: Layout, number: int) -> bool:
    return bool(cgroups.pids(cgroups.existing(layout.host_cgroup(number))))


def console_tail(layout: Layout, number: int, lines: int = 5) -> str:
    try:
        text = files(layout, number).console.read_text(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # systemd's colours
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def update_hosts_file(layout: Layout, number: int, all_numbers: list[int]) -> None:
    """Rewrite /etc/hosts of a host, through its running root when it runs (the overlay is live)."""
    text = hosts_file(layout, all_numbers)
    pid = init_pid(layout, number)
    target = Path(f"/proc/{pid}/root/etc/hosts") if pid else files(layout, number).upper / "etc/hosts"
    target.write_text(text)


def stop(layout: Layout, number: int) -> None:
    cgroups.kill_and_remove(cgroups.existing(layout.host_cgroup(number)))
