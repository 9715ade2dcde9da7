"""Host-key trust: a known_hosts file checked strictly, or trust-on-first-use that records new keys.

Entries are named the way OpenSSH names them (`addr` on port 22, `[addr]:port` otherwise), so the
same file works with `ssh -o UserKnownHostsFile=...` and `ssh-keygen -R`. A key that differs from
the recorded one is refused in both modes: TOFU only ever adds, it never replaces.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import paramiko

from provision.transport.errors import HostKeyError


def entry_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    def __init__(self, path: Path, *, trust_on_first_use: bool = False):
        self.path = Path(path).expanduser()
        self.trust_on_first_use = trust_on_first_use
        self._lock = threading.Lock()  # TOFU appends from many connecting threads

    def load_into(self, client: paramiko.SSHClient) -> None:
        """Give a client the recorded keys; read afresh so keys another thread recorded count."""
        if self.path.is_file():
            client.load_host_keys(str(self.path))

    def policy(self, host: str) -> paramiko.MissingHostKeyPolicy:
        """What to do when the server's key has no entry: refuse naming `host`, or record it."""
        return _RecordOrRefuse(self, host)

    def record(self, name: str, key: paramiko.PKey) -> None:
        line = paramiko.hostkeys.HostKeyEntry([name], key).to_line()
        with self._lock:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)

    def unknown_error(self, host: str, name: str, key: paramiko.PKey) -> HostKeyError:
        where = self.path if self.path.is_file() else f"{self.path} (no such file)"
        return HostKeyError(
            host,
            f"host key for {host} ({_shown(name)}) is not in {where}; the host offers {key.get_name()} "
            f"{key.fingerprint}: after checking that fingerprint on the host, add the key "
            f"(ssh-keyscan) or run again with --trust-on-first-use",
        )

    def changed_error(self, host: str, name: str, got: paramiko.PKey, expected: paramiko.PKey) -> HostKeyError:
        return HostKeyError(
            host,
            f"REMOTE HOST IDENTIFICATION HAS CHANGED for {host} ({_shown(name)}): {self.path} expects "
            f"{expected.get_name()} {expected.fingerprint}, got {got.get_name()} {got.fingerprint}; "
            f"if the host was reinstalled, remove the old entry with ssh-keygen -R '{name}' -f {self.path}",
        )


def _shown(name: str) -> str:
    """'[10.0.0.1]:2222' → '10.0.0.1:2222'; '10.0.0.1' → '10.0.0.1:22'."""
    if name.startswith("["):
        address, _, port = name[1:].partition("]:")
        return f"{address}:{port}"
    return f"{name}:22"


class _RecordOrRefuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts, host: str):
        self.known = known
        self.host = host

    def missing_host_key(self, client, hostname, key):
        if not self.known.trust_on_first_use:
            raise self.known.unknown_error(self.host, hostname, key)
        self.known.record(hostname, key)
