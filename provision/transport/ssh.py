"""`Transport`: one reused SSH connection per host, and the four things kubeprov does over it —
run a command, read a file, learn file states, and write a file only when it differs.

Built on paramiko's SSHClient directly (not fabric): what we need on top of it is strict host-key
errors that name the host, sudo wrapping, and a per-host pool, and fabric's extra layer (invoke
runners, config files) would sit between us and the exceptions we map to one-line errors.

Thread-safe: fan-out threads share one Transport; each host has its own lock for connecting, and a
paramiko connection carries concurrent channels.

Connecting retries what a host rebooting or sshd restarting looks like — connection refused or
reset, no answer or no SSH banner within the timeout (every UnreachableError) — with bounded
exponential backoff (`Options.connect_backoff`), each retry said as one line naming the host. A
refused key, a host key that is unknown or changed, or a name that does not resolve fails at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import paramiko

from provision import retries
from provision.config.models import Host
from provision.errors import KubeprovError
from provision.retries import Backoff
from provision.transport import remote
from provision.transport.errors import (
    AuthenticationError,
    CommandTimeout,
    HostKeyError,
    RemoteCommandError,
    TransportError,
    UnreachableError,
)
from provision.transport.hostkeys import KnownHosts, entry_name

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# Retries after 0.5, 1, 2, 4 s: sshd restarting is back within them; a host rebooting (no answer,
# each attempt waiting out connect_timeout) gets about a minute at the default 10 s timeout.
DEFAULT_CONNECT_BACKOFF = Backoff(attempts=5, first=0.5, maximum=8.0)

# paramiko logs each failed handshake from its own thread; we report it as one line per host, so
# its records would only repeat our error with a traceback-like prefix on stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Options:
    known_hosts: Path = DEFAULT_KNOWN_HOSTS  # used for hosts whose ssh.knownHosts is not set
    trust_on_first_use: bool = False
    connect_timeout: float = 10.0  # TCP connect, SSH banner, and authentication, each
    connect_backoff: Backoff = DEFAULT_CONNECT_BACKOFF  # retrying an unreachable host; retries.NO_RETRY: none
    command_timeout: float = 600.0
    backup_root: PurePosixPath = remote.BACKUP_ROOT  # on the host; a directory per run goes below it


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        """The first line worth showing: stderr's on failure, else stdout's."""
        for text in ((self.stderr, self.stdout) if not self.ok else (self.stdout, self.stderr)):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return ""

    def json(self, shown: str | None = None):
        """stdout parsed as JSON. Anything else is one KubeprovError line naming the host and the
        command (`shown`, e.g. "kubectl get nodes -o json", else the command as run), never a bare
        JSONDecodeError."""
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            text = self.stdout
            what = f"{exc.msg}: char {exc.pos} of {len(text)}; it begins {text[:80]!r}" if text.strip() else "it printed nothing"
            raise KubeprovError(f"{self.host}: `{shown or _short(self.command)}` printed output that is not JSON ({what})") from None


@dataclass(frozen=True)
class Change:
    path: str
    what: str  # "created", "content" or "mode" (owner/mode only)


def changes(files: dict[str, tuple[bytes, int]], states: dict[str, remote.FileState | None], *, owner: str = "root",
            group: str = "root") -> list[Change]:
    """What push would do to make each path hold its (content, mode), given the paths' states:
    the one diff that push and every plan (`up --dry-run`) use."""
    found = []
    for path in sorted(files):
        content, mode = files[path]
        state = states[path]
        if state is None or state.sha256 != hashlib.sha256(content).hexdigest():
            found.append(Change(path, "created" if state is None else "content"))
        elif (state.mode, state.owner, state.group) != (mode, owner, group):
            found.append(Change(path, "mode"))
    return found


class Transport:
    def __init__(self, options: Options | None = None, on_retry: Callable[[str, str], None] | None = None):
        """on_retry(host, line) gets each connect retry ("retry N/R in Ds: <reason>"); None: the
        process's sink (provision/retries.py: stderr, or the command's progress display)."""
        self.options = options or Options()
        self.on_retry = on_retry or retries.say
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._known: dict[Path, KnownHosts] = {}
        # One backup directory per Transport (per kubeprov run), so one run's replaced files sit together.
        self.backup_dir = PurePosixPath(self.options.backup_root) / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # --- connections ------------------------------------------------------------------------

    def known_hosts(self, host: Host) -> KnownHosts:
        path = Path(host.ssh.known_hosts or self.options.known_hosts).expanduser()
        with self._lock:
            if path not in self._known:
                self._known[path] = KnownHosts(path, trust_on_first_use=self.options.trust_on_first_use)
            return self._known[path]

    def _client(self, host: Host) -> paramiko.SSHClient:
        with self._lock:
            host_lock = self._host_locks.setdefault(host.name, threading.Lock())
        with host_lock:
            client = self._clients.get(host.name)
            transport = client.get_transport() if client else None
            if transport is not None and transport.is_active():
                return client
            if client is not None:
                client.close()
            client = retries.call(
                lambda: self._connect(host), self.options.connect_backoff,
                transient=lambda error: isinstance(error, UnreachableError),
                reason=lambda error: error.message,
                tell=lambda line: self.on_retry(host.name, line),
                gave_up=lambda error, attempts: UnreachableError(host.name, f"{error.message} (gave up after {attempts} attempts)"),
            )
            with self._lock:
                self._clients[host.name] = client
            return client

    def _connect(self, host: Host) -> paramiko.SSHClient:
        address, port, timeout = host.address, host.ssh.port, self.options.connect_timeout
        where = f"{host.ssh.user}@{address}:{port}"
        known = self.known_hosts(host)
        client = paramiko.SSHClient()
        known.load_into(client)
        client.set_missing_host_key_policy(known.policy(host.name))
        key = host.ssh.key.expanduser() if host.ssh.key else None
        try:
            client.connect(
                address, port=port, username=host.ssh.user,
                key_filename=str(key) if key else None, allow_agent=key is None, look_for_keys=key is None,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise known.changed_error(host.name, entry_name(address, port), exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthenticationError(host.name, f"{where} refused our key ({key or 'agent / ~/.ssh'}): {exc}") from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise UnreachableError(host.name, f"connection refused at {address}:{port} (is sshd running?)") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise UnreachableError(host.name, f"no answer from {address}:{port} within {timeout:g} s (host down?)") from None
        except paramiko.SSHException as exc:
            # paramiko gives up on a slow handshake quietly and then fails with "No existing
            # session"; what the server managed to send tells a hung host from a broken one.
            handshake = client.get_transport()
            banner = getattr(handshake, "remote_version", "")
            finished = handshake is not None and handshake.initial_kex_done
            client.close()
            if not banner:
                raise UnreachableError(
                    host.name, f"{address}:{port} accepted the connection but sent no SSH banner within {timeout:g} s"
                ) from None
            if not finished:
                raise UnreachableError(host.name, f"{address}:{port} did not finish the SSH handshake within {timeout:g} s") from None
            raise TransportError(host.name, f"SSH with {where} failed: {exc}") from None
        except FileNotFoundError as exc:
            client.close()
            raise TransportError(host.name, f"SSH key {exc.filename or key} does not exist") from None
        except socket.gaierror as exc:
            client.close()
            if exc.errno == socket.EAI_AGAIN:  # the resolver did not answer: worth asking again
                raise UnreachableError(host.name, f"cannot resolve {address}: {exc.strerror}") from None
            raise TransportError(host.name, f"cannot resolve {address}: {exc.strerror or exc}") from None
        except OSError as exc:
            client.close()
            raise UnreachableError(host.name, f"cannot reach {address}:{port}: {exc.strerror or exc}") from None
        transport = client.get_transport()
        transport.set_keepalive(30)
        # Small SSH packets (a channel open, an exec request) otherwise wait out the peer's delayed
        # ACK under Nagle's algorithm: ~40 ms on every command, most of a no-op `up`.
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    # --- commands ---------------------------------------------------------------------------

    def _as_root(self, host: Host, command: str) -> str:
        """Commands run as root: directly when we log in as root, else through `sudo -n`."""
        if host.ssh.user == "root":
            return command
        return shlex.join(["sudo", "-n", "--", "sh", "-c", command])

    def _exec(self, host: Host, command: str, stdin: bytes | None, timeout: float | None) -> tuple[int, bytes, bytes, float]:
        """Run `command` as it is; (exit code, stdout, stderr, seconds). Reconnects once if the
        pooled connection died since its last use."""
        timeout = self.options.command_timeout if timeout is None else timeout
        start = time.monotonic()
        try:
            channel = self._client(host).get_transport().open_session(timeout=self.options.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError):
            with self._lock:
                stale = self._clients.pop(host.name, None)
            if stale is not None:
                stale.close()
            try:
                channel = self._client(host).get_transport().open_session(timeout=self.options.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise TransportError(host.name, f"cannot open an SSH session: {exc}") from None
        with channel:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = start + timeout
            while True:
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                # sshd may send the exit status before the last output; only EOF (or close) ends the output.
                ended = channel.eof_received or channel.closed
                if ended and channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(host.name, f"command did not finish within {timeout:g} s: {_short(command)}")
                if ended:  # after EOF select() is always ready: wait for the exit status instead
                    channel.status_event.wait(min(remaining, 0.2))
                else:
                    select.select([channel], [], [], min(remaining, 0.2))
            return channel.recv_exit_status(), bytes(out), bytes(err), time.monotonic() - start

    def run(self, host: Host, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run a shell command as root on `host`. A non-zero exit is a Result, not an exception;
        unreachable hosts, bad keys and sudo wanting a password are TransportErrors."""
        code, out, err, seconds = self._exec(host, self._as_root(host, command), stdin, timeout)
        if code == 1 and host.ssh.user != "root" and b"sudo: a password is required" in err:
            raise AuthenticationError(
                host.name,
                f"sudo on {host.name} wants a password for {host.ssh.user}; allow it without one "
                f"('{host.ssh.user} ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/) or connect as root",
            )
        return Result(host.name, command, code, out.decode(errors="replace"), err.decode(errors="replace"), seconds)

    def _check(self, host: Host, command: str, *, stdin: bytes | None = None, what: str) -> Result:
        result = self.run(host, command, stdin=stdin)
        if not result.ok:
            raise RemoteCommandError(host.name, f"{what} failed (exit {result.exit_code}): {result.summary()}")
        return result

    # --- files ------------------------------------------------------------------------------

    def read_file(self, host: Host, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        code, out, err, _ = self._exec(host, self._as_root(host, remote.read_file(path)), None, None)
        if code == remote.MISSING_EXIT:
            return None
        if code != 0:
            message = err.decode(errors="replace").strip() or f"exit {code}"
            raise RemoteCommandError(host.name, f"reading {path} failed: {message}")
        return out

    def file_states(self, host: Host, paths: list[str]) -> dict[str, remote.FileState | None]:
        """sha256, mode and owner of many files in one round trip; None for a missing file."""
        if not paths:
            return {}
        result = self._check(host, remote.file_states(), stdin="".join(p + "\n" for p in paths).encode(), what="listing files")
        try:
            return remote.parse_states(result.stdout, paths)
        except ValueError as exc:
            raise RemoteCommandError(host.name, f"unexpected file listing: {exc}") from None

    def probe(self, host: Host, *, exists: list[str] = (), read: list[str] = (), units: list[str] = (),
              paths: list[str] = ()) -> remote.Probed:
        """In one round trip: which of `exists` exist, the bytes of `read`, the state of systemd
        `units`, and the file states of `paths` (provision/facts.py asks it of every host)."""
        exists, read, units, paths = list(exists), list(read), list(units), list(paths)
        result = self._check(host, remote.probe(exists, read, units), stdin="".join(p + "\n" for p in paths).encode(),
                             what="reading the host's state")
        try:
            return remote.parse_probe(result.stdout, exists, read, units, paths)
        except ValueError as exc:
            raise RemoteCommandError(host.name, f"unexpected answer reading the host's state: {exc}") from None

    def push(self, host: Host, files: dict[str, tuple[bytes, int]], *, owner: str = "root", group: str = "root",
             known: dict[str, remote.FileState | None] | None = None) -> list[Change]:
        """Make each path hold its (content, mode), writing only what differs; returns the changes.
        `known`: states of (some of) the paths read earlier in this run (provision/facts.py), so
        only the others are read now."""
        known = known or {}
        states = {**known, **self.file_states(host, [p for p in sorted(files) if p not in known])}
        found = changes(files, states, owner=owner, group=group)
        for change in found:
            content, mode = files[change.path]
            if change.what == "mode":
                self._check(host, remote.set_attributes(change.path, mode, owner, group), what=f"chmod/chown {change.path}")
            else:
                self._check(host, remote.write_file(change.path, mode, owner, group, self.backup_dir), stdin=content,
                            what=f"writing {change.path}")
        return found

    def put_if_different(
        self, host: Host, path: str, content: bytes, mode: int = 0o644, *, owner: str = "root", group: str = "root"
    ) -> bool:
        """Write one file only if its content, mode or owner differ; True when something changed.
        The replaced file is kept under `backup_dir` at its full path."""
        return bool(self.push(host, {path: (content, mode)}, owner=owner, group=group))


def _short(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


__all__ = ["Change", "DEFAULT_KNOWN_HOSTS", "Options", "Result", "Transport", "changes"]
