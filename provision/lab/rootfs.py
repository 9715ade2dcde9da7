"""The cached Debian rootfs every lab host boots from (read-only lower layer of its overlay).

Built once with debootstrap from Debian's mirror (about a minute), together with the lab's apt
repository resolved against it, then kept under the cache directory (KUBEPROV_LAB_CACHE,
default /var/cache/kubeprov). A stamp records what went in; a different recipe rebuilds.
Per-host files (hostname, machine-id, keys, addresses) never go here: they go in each host's
overlay upper directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from provision.lab import aptrepo
from provision.render.node_os import KUBELET_KERNEL_DEFAULTS
from provision.lab.layout import cache_root
from provision.lab.locks import locked
from provision.lab.system import run

SUITE = "bookworm"
MIRROR = os.environ.get("KUBEPROV_LAB_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("KUBEPROV_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")

# Besides minbase: what a machine Ansible and kubelet will manage has.
PACKAGES = (
    "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2", "procps",
    "iptables", "ca-certificates", "sudo", "kmod", "conntrack", "socat", "ethtool",
    "iputils-ping", "netbase", "curl", "less",
)

# Units that need hardware, a real kernel console or a writable /proc/sys; inside nspawn they only fail.
MASKED_UNITS = (
    "systemd-networkd-wait-online.service", "systemd-timesyncd.service", "e2scrub_reap.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
)

# cgroup v1 controllers come read-only into an nspawn host; runc needs to write them.
CGROUP_RW_UNIT = """\
[Unit]
Description=Make cgroup v1 controllers writable for runc (kubeprov lab)
DefaultDependencies=no
After=sys-fs-cgroup.mount
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d"; done'

[Install]
WantedBy=sysinit.target
"""

# The kubelet sets these kernel-wide tunables at start and exits when it cannot (/proc/sys is
# read-only in a host). They are never changed on this machine: in each host, a small file holding
# the wanted value is bind-mounted over each /proc/sys entry that differs, which only that host sees.
KUBELET_KERNEL_TUNABLES = {key.replace(".", "/"): str(value) for key, value in KUBELET_KERNEL_DEFAULTS.items()}
TUNABLES_SCRIPT = "#!/bin/sh\n# kubeprov lab: the kubelet's kernel tunables, seen by this host only (see rootfs.py)\n" \
    "mkdir -p /run/kubeprov-lab/sysctl\n" + "".join(
        f"[ \"$(cat /proc/sys/{key})\" = {value} ] || {{ echo {value} > /run/kubeprov-lab/sysctl/{key.replace('/', '.')} && "
        f"mount --bind /run/kubeprov-lab/sysctl/{key.replace('/', '.')} /proc/sys/{key}; }}\n"
        for key, value in KUBELET_KERNEL_TUNABLES.items())
TUNABLES_UNIT = """\
[Unit]
Description=The kubelet's kernel tunables, for this host only (kubeprov lab)
DefaultDependencies=no
After=systemd-sysctl.service
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kubeprov-lab-tunables

[Install]
WantedBy=sysinit.target
"""

SSHD_CONFIG = """\
# kubeprov lab: one ed25519 host key per host, made when the host is created
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
"""

# kubelet reads /dev/kmsg (bound read-only); journald must not also try to.
JOURNALD_CONFIG = "[Journal]\nReadKMsg=no\nStorage=persistent\n"


def recipe() -> dict:
    return {"suite": SUITE, "mirror": MIRROR, "packages": sorted(PACKAGES), "repo": sorted(aptrepo.PACKAGES),
            "masked": sorted(MASKED_UNITS), "cgroup_unit": CGROUP_RW_UNIT,
            "tunables": TUNABLES_SCRIPT, "tunables_unit": TUNABLES_UNIT, "sshd": SSHD_CONFIG,
            "journald": JOURNALD_CONFIG, "format": 1}


def fingerprint() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Named after the recipe: a changed recipe builds beside the old rootfs, which running labs
    still use as their overlays' lower layer, instead of pulling it from under them."""
    return cache_root() / f"rootfs-{SUITE}-{fingerprint()}"


def rootfs_dir() -> Path:
    return cache_dir() / "rootfs"


def repo_dir() -> Path:
    return cache_dir() / "repo"


def is_current() -> bool:
    return (cache_dir() / "stamp.json").is_file()  # written last: its presence means complete


def ensure(progress=lambda message: None, prune: bool = False) -> Path:
    """Return the cache dir (rootfs/ and repo/), building it first if missing.

    `prune` removes rootfs builds of other recipes: only when no lab runs on them.
    """
    with locked(cache_root() / ".rootfs.lock"):
        if prune:
            for other in cache_root().glob(f"rootfs-{SUITE}-*"):
                if other != cache_dir():
                    shutil.rmtree(other, ignore_errors=True)
        if is_current():
            return cache_dir()
        progress(f"building the {SUITE} rootfs and apt repository (once; about a minute)")
        build_dir = cache_root() / f".rootfs-{SUITE}.build-{os.getpid()}"
        shutil.rmtree(build_dir, ignore_errors=True)
        try:
            _build(build_dir)
            build_dir.rename(cache_dir())
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return cache_dir()


def _build(build_dir: Path) -> None:
    root = build_dir / "rootfs"
    root.mkdir(parents=True)
    started = time.monotonic()
    # In a private mount namespace: debootstrap's /proc and /sys mounts in the target die with it.
    run(["unshare", "--mount", "--propagation", "private",
         "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
        timeout=1800)
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {SUITE}-security main\n"
    )
    aptrepo.download(root, build_dir / "repo")
    _configure(root)
    (build_dir / "stamp.json").write_text(json.dumps(
        {"fingerprint": fingerprint(), "recipe": recipe(), "built": time.time(),
         "seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")


def _configure(root: Path) -> None:
    etc = root / "etc"
    (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (etc / "ssh/sshd_config.d/kubeprov-lab.conf").write_text(SSHD_CONFIG)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()  # each host gets its own, made at creation
    (etc / "systemd/journald.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/journald.conf.d/kubeprov-lab.conf").write_text(JOURNALD_CONFIG)
    units = etc / "systemd/system"
    (units / "kubeprov-cgroup-rw.service").write_text(CGROUP_RW_UNIT)
    (units / "sysinit.target.wants").mkdir(parents=True, exist_ok=True)
    _symlink(units / "sysinit.target.wants/kubeprov-cgroup-rw.service", "/etc/systemd/system/kubeprov-cgroup-rw.service")
    (units / "kubeprov-tunables.service").write_text(TUNABLES_UNIT)
    _symlink(units / "sysinit.target.wants/kubeprov-tunables.service", "/etc/systemd/system/kubeprov-tunables.service")
    script = root / "usr/local/sbin/kubeprov-lab-tunables"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(TUNABLES_SCRIPT)
    script.chmod(0o755)
    for unit in MASKED_UNITS:
        _symlink(units / unit, "/dev/null")
    # Empty machine-id: every host gets its own in its overlay.
    (etc / "machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # Hosts reach only the lab's repository, written per host; no lists from the mirror remain.
    (etc / "apt/sources.list").write_text("")
    for leftover in (root / "var/lib/apt/lists").glob("*"):
        if leftover.is_file():
            leftover.unlink()
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("")
    for path in ("var/lib/containerd", "var/lib/kubelet", "var/lib/etcd"):
        (root / path).mkdir(parents=True, exist_ok=True)  # mount points for the hosts' real dirs


def _symlink(path: Path, target: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)
