"""Running the system tools the lab is made of (ip, debootstrap, systemd-nspawn, ssh-keygen)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from provision.lab.errors import LabError

REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "dpkg-scanpackages": "dpkg-dev",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, cgroups, overlay mounts, systemd-nspawn): "
            "run it with sudo or as root"
        )


def require_tools(names: Sequence[str] = tuple(REQUIRED_TOOLS)) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        packages = sorted({REQUIRED_TOOLS.get(name, name) for name in missing})
        raise LabError(f"missing {', '.join(missing)}: apt-get install {' '.join(packages)} (or run scripts/setup)")


def run(args: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 600) -> str:
    """Run a command; on failure raise LabError naming it with the last lines it printed."""
    try:
        proc = subprocess.run(
            list(args), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise LabError(f"{args[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(args[:3])} …: no answer after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise LabError(f"`{' '.join(args)}` failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def in_netns(netns: str, args: Sequence[str]) -> list[str]:
    """Prefix a command so it runs in a named network namespace.

    nsenter, not `ip netns exec`: the latter remounts /sys and loses /sys/fs/cgroup.
    """
    return ["nsenter", f"--net=/run/netns/{netns}", *args]
