"""Real sshd daemons on loopback, standing in for hosts until the nspawn lab exists.

Each "host" is `/usr/sbin/sshd -D` with its own config, its own generated ed25519 host key and its
own address 127.42.<n>.<i> on a free port, started in a UTS namespace of its own so that `hostname`
differs per host. A generated client key is in the shared authorized_keys; a known_hosts file
lists every host key. Everything (daemons and their per-connection children, the temp dir) is
removed by `stop()`, which `sshd_fleet()` calls even when the body fails.

The hosts share this machine's filesystem: tests put files under `fleet.root / host.name`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from provision.config.models import SSH, Host, Role
from testkit import stop

SSHD = "/usr/sbin/sshd"
_fleet_numbers = itertools.count(1)


def unavailable_reason() -> str | None:
    """Why a fleet cannot start here, or None. Tests skip with this reason only."""
    if not Path(SSHD).exists():
        return f"{SSHD} is not installed (scripts/setup installs openssh-server)"
    if os.geteuid() != 0:
        return "sshd daemons on loopback need root"
    if not shutil.which("unshare") or not shutil.which("ssh-keygen"):
        return "unshare/ssh-keygen missing"
    return None


def _keygen(path: Path) -> list[str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split()[0:2]


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _answers_ssh(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Daemon:
    host: Host
    host_key: Path
    config: Path
    process: subprocess.Popen | None = None

    @property
    def host_key_line(self) -> str:
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[0:2]
        return f"[{self.host.address}]:{self.host.ssh.port} {kind} {blob}\n"


@dataclass
class SshdFleet:
    count: int
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubeprov-sshd-")))
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self):
        self.number = next(_fleet_numbers) % 200 + 40  # 127.<number>.0.x: fleets in one run never share addresses
        self.root.chmod(0o755)
        self.client_key = self.root / "client_key"
        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"

    @property
    def hosts(self) -> list[Host]:
        return [d.host for d in self.daemons]

    def hosts_as(self, user: str) -> list[Host]:
        return [h.model_copy(update={"ssh": h.ssh.model_copy(update={"user": user})}) for h in self.hosts]

    def start(self) -> SshdFleet:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        kind, blob = _keygen(self.client_key)
        self.authorized_keys.write_text(f"{kind} {blob}\n")
        for index in range(self.count):
            name = "cp1" if index == 0 else f"node{index}"
            address = f"127.{self.number}.{index // 250}.{index % 250 + 1}"
            home = self.root / "hosts" / name
            home.mkdir(parents=True)
            _keygen(home / "ssh_host_ed25519_key")
            host = Host(
                name=name, address=address, ssh=SSH(user="root", port=_free_port(address), key=self.client_key),
                roles=[Role.CONTROL_PLANE] if index == 0 else [Role.WORKER],
            )
            daemon = Daemon(host, home / "ssh_host_ed25519_key", home / "sshd_config")
            self.daemons.append(daemon)
            self._spawn(daemon)
        self.known_hosts.write_text("".join(d.host_key_line for d in self.daemons))
        for daemon in self.daemons:
            self._wait_ready(daemon)
        return self

    def _spawn(self, daemon: Daemon) -> None:
        host = daemon.host
        daemon.config.write_text(
            f"ListenAddress {host.address}:{host.ssh.port}\n"
            f"HostKey {daemon.host_key}\n"
            f"PidFile {daemon.config.parent / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nMaxStartups 200\nMaxSessions 50\nLogLevel ERROR\n"
        )
        # Debian's bash reads ~/.bashrc even for `ssh host CMD`; this machine's root .bashrc runs
        # pyenv (~0.3 s per command), which no real host has. Each host gets a mount namespace
        # with an empty .bashrc over it, and a UTS namespace with its own hostname.
        empty = self.root / "empty-bashrc"
        empty.touch()
        log = open(daemon.config.parent / "sshd.log", "ab")
        with log:
            daemon.process = subprocess.Popen(
                ["unshare", "--uts", "--mount", "--propagation", "private", "--", "sh", "-c",
                 'hostname "$1" && { [ ! -e /root/.bashrc ] || mount --bind "$4" /root/.bashrc; } '
                 '&& exec "$2" -D -e -f "$3"', "sh", host.name, SSHD, str(daemon.config), str(empty)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )

    def _wait_ready(self, daemon: Daemon, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                log = (daemon.config.parent / "sshd.log").read_text()
                raise RuntimeError(f"sshd for {daemon.host.name} exited {daemon.process.returncode}: {log.strip()}")
            if _answers_ssh(daemon.host.address, daemon.host.ssh.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {daemon.host.name} did not answer within {timeout} s")

    def restart(self, name: str) -> None:
        """Stop a host's sshd (dropping its connections) and start it again with the same key."""
        daemon = next(d for d in self.daemons if d.host.name == name)
        self._kill(daemon)
        self._spawn(daemon)
        self._wait_ready(daemon)

    def stop_host(self, name: str) -> None:
        """Stop a host's sshd (and its connections): its port then refuses, as a booting host's does."""
        self._kill(self._daemon(name))

    def start_host(self, name: str) -> None:
        """Start a stopped host's sshd again with the same key and port; returns once it answers."""
        daemon = self._daemon(name)
        self._spawn(daemon)
        self._wait_ready(daemon)

    def _daemon(self, name: str) -> Daemon:
        return next(d for d in self.daemons if d.host.name == name)

    def replace_host_key(self, name: str) -> None:
        """Give a host a new key and restart its sshd: what a reinstalled machine looks like."""
        daemon = next(d for d in self.daemons if d.host.name == name)
        self._kill(daemon)
        daemon.host_key.unlink()
        daemon.host_key.with_suffix(".pub").unlink()
        _keygen(daemon.host_key)
        self._spawn(daemon)
        self._wait_ready(daemon)

    def _kill(self, daemon: Daemon) -> None:
        process = daemon.process
        if process is None or process.poll() is not None:
            return
        children = _descendants(process.pid)  # per-connection sshd processes, set apart by setsid()
        stop(process, timeout=5)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for daemon in self.daemons:
            self._kill(daemon)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def temporary_user(sudoers_rule: str | None = None):
    """A throwaway login user (no home, /bin/sh), optionally with a sudoers drop-in; both removed after.

    Yields (name, set_rule): `set_rule(text)` rewrites the user's sudoers line, `set_rule(None)` drops it.
    """
    name = f"kpt{os.getpid() % 100000}{next(_fleet_numbers)}"
    sudoers = Path("/etc/sudoers.d") / f"kubeprov-test-{name}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name], check=True)

    def set_rule(rule: str | None) -> None:
        if rule is None:
            sudoers.unlink(missing_ok=True)
            return
        sudoers.write_text(f"{name} {rule}\n")
        sudoers.chmod(0o440)
        subprocess.run(["visudo", "-cqf", str(sudoers)], check=True)

    try:
        # A '!' password means "locked" to sshd without PAM; '*' only means "no password works".
        subprocess.run(["usermod", "-p", "*", name], check=True)
        set_rule(sudoers_rule)
        yield name, set_rule
    finally:
        sudoers.unlink(missing_ok=True)
        # The user's sshd session may take a moment to exit after the client hangs up, and
        # userdel refuses a user with live processes.
        for _ in range(50):
            if subprocess.run(["userdel", name], stderr=subprocess.DEVNULL).returncode in (0, 6):  # 6: no such user
                break
            time.sleep(0.1)
        else:
            subprocess.run(["userdel", "--force", name], check=False)


@contextlib.contextmanager
def sshd_fleet(count: int):
    fleet = SshdFleet(count)
    try:
        yield fleet.start()
    finally:
        fleet.stop()
