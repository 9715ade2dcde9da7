"""Kernel limits a lab outgrows: inotify instances.

Every host's systemd, journald, logind and dbus each hold inotify instances, all counted against
root's fs.inotify.max_user_instances (128 by default): past ~15 hosts the next host's systemd
stalls at boot. `lab up` raises the limit when the lab needs more, remembers the machine's value,
and `lab down` of the last lab puts it back.
"""

from __future__ import annotations

from pathlib import Path

from provision.lab.layout import state_root

INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
PER_HOST = 16  # measured ~7 per idle host; room for containerd and kubelet


def _saved() -> Path:
    return state_root() / ".inotify-max-user-instances.orig"


def ensure_inotify(total_hosts: int, emit=lambda line: None) -> None:
    current = int(INOTIFY.read_text())
    needed = 128 + PER_HOST * total_hosts
    if current >= needed:
        return
    if not _saved().exists():
        state_root().mkdir(parents=True, exist_ok=True)
        _saved().write_text(f"{current}\n")
    INOTIFY.write_text(f"{needed}\n")
    emit(f"  raised fs.inotify.max_user_instances {current} → {needed} (restored by the last `lab down`)")


def restore_inotify() -> None:
    """Put the machine's value back (called when no lab is left)."""
    try:
        original = int(_saved().read_text())
    except (OSError, ValueError):
        return
    if int(INOTIFY.read_text()) > original:
        INOTIFY.write_text(f"{original}\n")
    _saved().unlink(missing_ok=True)
