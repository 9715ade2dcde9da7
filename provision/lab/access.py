"""Reaching lab hosts with the system ssh client, strictly checked against the lab's known_hosts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def ssh_args(address: str, key: Path, known_hosts: Path, *, connect_timeout: int = 5) -> list[str]:
    return [
        "ssh", "-i", str(key),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
        f"root@{address}",
    ]


def wait_booted(address: str, key: Path, known_hosts: Path, timeout: float, alive=lambda: True) -> str:
    """Wait until sshd answers and systemd has finished booting; return is-system-running's word.

    `alive` is asked between tries so a host whose nspawn died fails at once, not at the timeout.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("its systemd-nspawn exited")
        proc = subprocess.run(
            ssh_args(address, key, known_hosts, connect_timeout=2) + ["systemctl", "is-system-running", "--wait"],
            capture_output=True, text=True, timeout=max(5.0, deadline - time.monotonic()), check=False,
        )
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        errors = proc.stderr.strip().splitlines()
        last = state or (errors[-1] if errors else last)
        time.sleep(0.2)
    raise TimeoutError(f"not booted after {timeout:.0f} s ({last})")
