"""The SSH transport against real sshd daemons on loopback (tests/transport_sshd.py).

Expectations come from outside the code under test: hostnames set by the fixture, fingerprints
from `ssh-keygen -lf`, sha256/mode/mtime read from the local filesystem the daemons share.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path, PurePosixPath

import pytest

from provision.config.models import SSH, Cluster, Host, Role
from provision.errors import ConfigError
from provision.render.tree import File, write_trees
from provision.retries import Backoff
from provision.transport import remote
from provision.transport.ssh import Change
from provision.transport import (
    AuthenticationError,
    CommandTimeout,
    HostKeyError,
    Options,
    Transport,
    TransportError,
    UnreachableError,
    fan_out,
    sync_rendered,
)
from transport_sshd import sshd_fleet, temporary_user, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module")
def fleet():
    with sshd_fleet(3) as fleet:
        yield fleet


@pytest.fixture
def transport(fleet):
    with Transport(Options(known_hosts=fleet.known_hosts, connect_timeout=5, backup_root=fleet.root / "backups")) as t:
        yield t


def fingerprint(public_key: Path) -> str:
    """OpenSSH's own SHA256 fingerprint of a public key file."""
    return subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True).stdout.split()[1]


def host_dir(fleet, host: Host) -> Path:
    return fleet.root / "hosts" / host.name


# --- commands ---------------------------------------------------------------------------------


def test_each_host_answers_with_its_own_hostname(fleet, transport):
    outcomes = fan_out(fleet.hosts, lambda h: transport.run(h, "hostname; id -u"))
    assert [o.host for o in outcomes] == ["cp1", "node1", "node2"]
    for outcome in outcomes:
        assert outcome.ok, outcome.error_text
        assert outcome.value.exit_code == 0
        assert outcome.value.stdout.split() == [outcome.host, "0"]


def test_connection_is_reused_across_calls(fleet, transport):
    host = fleet.hosts[0]
    # sshd puts the client's address and source port in SSH_CONNECTION: the same port twice means
    # the second command travelled over the first command's TCP connection.
    first = transport.run(host, "echo $SSH_CONNECTION").stdout.split()
    second = transport.run(host, "echo $SSH_CONNECTION").stdout.split()
    assert first[1] == second[1]
    assert first[2:] == [host.address, str(host.ssh.port)]
    other = Transport(Options(known_hosts=fleet.known_hosts))
    with other:
        assert other.run(host, "echo $SSH_CONNECTION").stdout.split()[1] != first[1]


def test_failing_command_on_one_host_does_not_hide_the_others(fleet, transport):
    command = '[ "$(hostname)" != node1 ] || { echo "node1 is broken" >&2; exit 7; }; hostname'
    outcomes = {o.host: o for o in fan_out(fleet.hosts, lambda h: transport.run(h, command))}
    broken = outcomes["node1"].value
    assert (broken.exit_code, broken.stderr, broken.stdout) == (7, "node1 is broken\n", "")
    assert broken.summary() == "node1 is broken"
    for name in ("cp1", "node2"):
        assert outcomes[name].value.exit_code == 0
        assert outcomes[name].value.stdout == f"{name}\n"


def test_stdin_and_binary_output_round_trip(fleet, transport):
    data = bytes(range(256)) * 64
    result = transport.run(fleet.hosts[0], "sha256sum", stdin=data)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_large_output_arrives_whole_every_time(fleet, transport):
    # sshd may send the exit status before the last of the output; a reader that stops at the exit
    # status cut `kubectl get -o json` at ~32 KiB on real hosts. Several MiB written at once and an
    # immediate exit, many times over, must always arrive byte for byte.
    host = fleet.hosts[0]
    out_file, err_file = host_dir(fleet, host) / "big.out", host_dir(fleet, host) / "big.err"
    out_file.write_text(os.urandom(3 << 20).hex())  # 6 MiB of text, so decoding cannot alter it
    err_file.write_text(os.urandom(128 << 10).hex())
    expected = {"stdout": out_file.read_bytes(), "stderr": err_file.read_bytes()}
    commands = [f"cat {out_file}; cat {err_file} >&2; exit 3", f"cat {err_file} >&2; cat {out_file}; exit 3"]
    for attempt in range(30):
        result = transport.run(host, commands[attempt % 2])  # either stream may be the one still in flight
        assert result.exit_code == 3
        for stream, want in expected.items():
            got = getattr(result, stream).encode()
            assert (len(got), hashlib.sha256(got).hexdigest()) == (len(want), hashlib.sha256(want).hexdigest()), (
                f"attempt {attempt + 1}: {stream} differs"
            )


def test_command_timeout_names_the_host_and_keeps_the_connection(fleet, transport):
    host = fleet.hosts[1]
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"^node1: command did not finish within 0.5 s: sleep 30"):
        transport.run(host, "sleep 30", timeout=0.5)
    assert time.monotonic() - start < 3
    assert transport.run(host, "echo still here").stdout == "still here\n"


# --- host keys --------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_by_default(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    host = fleet.hosts[0]
    with Transport(Options(known_hosts=known)) as t, pytest.raises(HostKeyError) as caught:
        t.run(host, "true")
    message = str(caught.value)
    assert message.startswith(f"cp1: host key for cp1 ({host.address}:{host.ssh.port}) is not in {known};")
    assert fingerprint(fleet.daemons[0].host_key.with_suffix(".pub")) in message
    assert "--trust-on-first-use" in message
    assert known.read_text() == ""  # nothing recorded without TOFU


def test_changed_host_key_is_refused_with_both_fingerprints(fleet, tmp_path):
    impostor = tmp_path / "old_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    host = fleet.hosts[1]
    recorded = impostor.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host.address}]:{host.ssh.port} {' '.join(recorded)}\n")
    # Trust-on-first-use does not make a changed key acceptable, nor touch the recorded one.
    said = []
    for tofu in (False, True):
        options = Options(known_hosts=known, trust_on_first_use=tofu, connect_backoff=Backoff(attempts=5, first=1.0))
        with Transport(options, on_retry=lambda *line: said.append(line)) as t, pytest.raises(HostKeyError) as caught:
            t.run(host, "true")
        assert said == []  # a changed key is never retried
        message = str(caught.value)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED for node1" in message
        assert f"expects ssh-ed25519 {fingerprint(impostor.with_suffix('.pub'))}" in message
        assert f"got ssh-ed25519 {fingerprint(fleet.daemons[1].host_key.with_suffix('.pub'))}" in message
        assert len(message.splitlines()) == 1
        assert known.read_text().split() == [f"[{host.address}]:{host.ssh.port}", *recorded]


def test_reinstalled_host_is_refused_until_its_entry_is_removed(tmp_path):
    with sshd_fleet(1) as fleet:
        options = Options(known_hosts=fleet.known_hosts, connect_timeout=5)
        host = fleet.hosts[0]
        with Transport(options) as t:
            assert t.run(host, "hostname").stdout == "cp1\n"
        fleet.replace_host_key("cp1")
        with Transport(options) as t, pytest.raises(HostKeyError, match="REMOTE HOST IDENTIFICATION HAS CHANGED for cp1"):
            t.run(host, "hostname")


def test_a_dropped_connection_is_replaced_on_the_next_call():
    with sshd_fleet(1) as fleet, Transport(Options(known_hosts=fleet.known_hosts, connect_timeout=5)) as t:
        host = fleet.hosts[0]
        before = t.run(host, "echo $SSH_CONNECTION").stdout.split()[1]
        fleet.restart("cp1")  # kills the session process that served our connection
        after = t.run(host, "echo $SSH_CONNECTION").stdout.split()[1]
        assert after != before


def test_trust_on_first_use_records_keys_then_checks_them(fleet, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"  # neither file nor directory exists yet
    with Transport(Options(known_hosts=known, trust_on_first_use=True)) as t:
        outcomes = fan_out(fleet.hosts, lambda h: t.run(h, "hostname"))
    assert all(o.ok for o in outcomes), [o.error_text for o in outcomes]
    assert known.stat().st_mode & 0o777 == 0o600
    # The same entries the fixture derived from the host key files, in OpenSSH's format.
    assert sorted(known.read_text().splitlines()) == sorted(fleet.known_hosts.read_text().splitlines())
    # What was recorded is now enforced strictly.
    with Transport(Options(known_hosts=known)) as t:
        assert t.run(fleet.hosts[2], "hostname").stdout == "node2\n"


def test_wrong_client_key_is_an_authentication_error(fleet, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    host = fleet.hosts[0].model_copy(update={"ssh": fleet.hosts[0].ssh.model_copy(update={"key": stranger})})
    said = []
    options = Options(known_hosts=fleet.known_hosts, connect_backoff=Backoff(attempts=5, first=1.0))
    start = time.monotonic()
    with Transport(options, on_retry=lambda *line: said.append(line)) as t, pytest.raises(AuthenticationError) as caught:
        t.run(host, "true")
    # A refused key is refused again: no retry, no wait, one line naming the host.
    assert said == [] and time.monotonic() - start < 1.0
    message = str(caught.value)
    assert message.startswith(f"cp1: root@{host.address}:{host.ssh.port} refused our key ({stranger})") and "\n" not in message


# --- hosts that are down ----------------------------------------------------------------------


def _down_host(name: str, port: int, address: str = "127.0.0.1") -> Host:
    return Host(name=name, address=address, ssh=SSH(port=port), roles=[Role.WORKER])


def test_host_with_nothing_listening_is_retried_a_bounded_number_of_times_and_the_others_still_answer(fleet):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nobody listens there
    down = _down_host("down1", port)
    said = []
    options = Options(known_hosts=fleet.known_hosts, connect_backoff=Backoff(attempts=3, first=0.01, maximum=0.02))
    with Transport(options, on_retry=lambda *line: said.append(line)) as t:
        outcomes = {o.host: o for o in fan_out([*fleet.hosts, down], lambda h: t.run(h, "hostname"))}
    assert isinstance(outcomes["down1"].error, UnreachableError)
    refused = f"connection refused at 127.0.0.1:{port} (is sshd running?)"
    assert outcomes["down1"].error_text == f"{refused} (gave up after 3 attempts)"
    assert said == [("down1", f"retry 1/2 in 10ms: {refused}"), ("down1", f"retry 2/2 in 20ms: {refused}")]
    assert [outcomes[h.name].value.stdout for h in fleet.hosts] == ["cp1\n", "node1\n", "node2\n"]


def test_a_host_whose_sshd_comes_up_after_the_first_attempt_is_reached_after_one_retry():
    with sshd_fleet(1) as fleet:
        host = fleet.hosts[0]
        fleet.stop_host("cp1")  # booting: nothing listens on its SSH port yet
        said = []

        def on_retry(name: str, line: str) -> None:
            said.append((name, line))
            fleet.start_host("cp1")  # sshd comes up while kubeprov waits to try again

        options = Options(known_hosts=fleet.known_hosts, connect_timeout=5, connect_backoff=Backoff(attempts=4, first=0.05))
        with Transport(options, on_retry=on_retry) as t:
            assert t.run(host, "hostname").stdout == "cp1\n"
    assert said == [("cp1", f"retry 1/3 in 50ms: connection refused at {host.address}:{host.ssh.port} (is sshd running?)")]


def test_host_that_never_answers_times_out_within_the_timeout_on_each_attempt(fleet):
    # A listener whose accept queue takes the connection but never speaks: a hung host.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    said = []
    try:
        hung = _down_host("hung1", silent.getsockname()[1])
        options = Options(known_hosts=fleet.known_hosts, connect_timeout=1.0, connect_backoff=Backoff(attempts=2, first=0.01))
        with Transport(options, on_retry=lambda *line: said.append(line)) as t:
            start = time.monotonic()
            outcomes = {o.host: o for o in fan_out([hung, *fleet.hosts], lambda h: t.run(h, "hostname"))}
            elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert isinstance(outcomes["hung1"].error, UnreachableError)
    silence = f"127.0.0.1:{hung.ssh.port} accepted the connection but sent no SSH banner within 1 s"
    assert str(outcomes["hung1"].error) == f"hung1: {silence} (gave up after 2 attempts)"
    assert said == [("hung1", f"retry 1/1 in 10ms: {silence}")]
    assert 1.9 <= elapsed < 4.0  # two attempts of 1 s each
    assert outcomes["node2"].value.stdout == "node2\n"


def test_a_name_that_does_not_resolve_fails_at_once_naming_the_host(fleet):
    nowhere = Host(name="typo1", address="no-such-host.invalid", roles=[Role.WORKER])  # .invalid never resolves (RFC 2606)
    try:
        socket.getaddrinfo(nowhere.address, 22)
    except socket.gaierror as error:
        if error.errno != socket.EAI_NONAME:  # EAI_AGAIN: a resolver that does not answer, which is retried
            pytest.skip(f"this machine's resolver says {error.strerror!r}, not that the name does not exist")
    said = []
    with Transport(Options(known_hosts=fleet.known_hosts, connect_backoff=Backoff(attempts=5, first=1.0)),
                   on_retry=lambda *line: said.append(line)) as t, pytest.raises(TransportError) as caught:
        t.run(nowhere, "true")
    assert not isinstance(caught.value, UnreachableError) and said == []
    assert str(caught.value).startswith("typo1: cannot resolve no-such-host.invalid: ")


# --- files ------------------------------------------------------------------------------------


def test_read_file_returns_bytes_or_none(fleet, transport):
    host = fleet.hosts[0]
    path = host_dir(fleet, host) / "blob"
    path.write_bytes(bytes(range(256)))
    assert transport.read_file(host, str(path)) == bytes(range(256))
    assert transport.read_file(host, str(path) + ".missing") is None


def test_probe_answers_existence_contents_and_file_states_in_one_command(fleet, transport):
    """provision/phases/facts.py reads each host with one probe; its answers must equal what the
    local filesystem (which the daemons share) says, whatever the names and contents hold."""
    host = fleet.hosts[1]
    root = host_dir(fleet, host) / "probe"
    root.mkdir(parents=True, exist_ok=True)
    record = root / "applied.json"
    record.write_bytes(b'{"fingerprint": "abc"}\n\nsecond line\n')
    odd = root / "back\\slash name"  # sha256sum escapes such a name: the hash must still be read
    odd.write_bytes(b"odd")
    odd.chmod(0o640)
    plain = root / "plain"
    plain.write_bytes(b"")
    missing, directory = root / "missing", root
    paths = [str(plain), str(missing), str(odd), str(directory)]

    probed = transport.probe(host, exists=[str(record), str(missing)], read=[str(record), str(missing)], paths=paths)

    assert probed.exists == {str(record): True, str(missing): False}
    assert probed.contents == {str(record): record.read_bytes(), str(missing): None}
    for path in (plain, odd):
        state = probed.files[str(path)]
        assert state.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert state.mode == path.stat().st_mode & 0o7777
        assert (state.owner, state.group) == ("root", "root")
    assert probed.files[str(missing)] is None and probed.files[str(directory)] is None  # not regular files


def test_push_with_known_states_reads_only_the_paths_it_was_not_told(fleet, transport):
    host = fleet.hosts[1]
    target = host_dir(fleet, host) / "known" / "file"
    assert transport.push(host, {str(target): (b"one", 0o644)}) == [Change(str(target), "created")]
    known = transport.file_states(host, [str(target)])
    # Told the state, push compares with it and writes nothing; told a stale state, it trusts it.
    assert transport.push(host, {str(target): (b"one", 0o644)}, known=known) == []
    assert transport.push(host, {str(target): (b"two", 0o644)}, known={str(target): None}) == [Change(str(target), "created")]
    assert target.read_bytes() == b"two"


def test_http_get_reads_a_plain_http_listener_on_the_host(fleet, transport):
    """The etcd /health check's transport: bash's /dev/tcp, no curl or python3 started."""
    import http.server

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"health":"true"}' if self.path == "/health" else b"no"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = transport.run(fleet.hosts[0], remote.http_get("127.0.0.1", port, "/health"))
        assert remote.http_answer(result.stdout) == (200, '{"health":"true"}')
        result = transport.run(fleet.hosts[0], remote.http_get("127.0.0.1", port, "/other"))
        assert remote.http_answer(result.stdout)[0] == 404
    finally:
        server.shutdown()
    closed = transport.run(fleet.hosts[0], remote.http_get("127.0.0.1", port, "/health"))
    assert not closed.ok and remote.http_answer(closed.stdout)[0] == 0


def test_put_if_different_writes_once_backs_up_and_never_rewrites(fleet, transport):
    host = fleet.hosts[2]
    target = host_dir(fleet, host) / "etc" / "kubernetes" / "admin.conf"
    backups = Path(transport.backup_dir)

    assert transport.put_if_different(host, str(target), b"first\n", 0o600) is True
    assert target.read_bytes() == b"first\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)
    assert not backups.exists()  # nothing was replaced
    mtime = target.stat().st_mtime_ns
    inode = target.stat().st_ino

    time.sleep(0.02)
    assert transport.put_if_different(host, str(target), b"first\n", 0o600) is False
    assert (target.stat().st_mtime_ns, target.stat().st_ino) == (mtime, inode)
    assert not backups.exists()

    assert transport.put_if_different(host, str(target), b"second\n", 0o600) is True
    assert target.read_bytes() == b"second\n"
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    backup = backups / str(target).lstrip("/")
    assert backup.read_bytes() == b"first\n"
    assert backup.stat().st_mode & 0o777 == 0o600
    assert backups.stat().st_mode & 0o777 == 0o700
    # No temp files left beside the target.
    assert sorted(p.name for p in target.parent.iterdir()) == ["admin.conf"]

    # Same content, other mode: fixed in place, reported as a change, then stable.
    assert transport.put_if_different(host, str(target), b"second\n", 0o644) is True
    assert target.stat().st_mode & 0o777 == 0o644
    assert transport.put_if_different(host, str(target), b"second\n", 0o644) is False


def test_put_if_different_many_hosts_at_once(fleet, transport):
    def put(host):
        return transport.put_if_different(host, str(host_dir(fleet, host) / "motd"), f"I am {host.name}\n".encode())

    assert [o.value for o in fan_out(fleet.hosts, put)] == [True, True, True]
    assert [o.value for o in fan_out(fleet.hosts, put)] == [False, False, False]
    for host in fleet.hosts:
        assert (host_dir(fleet, host) / "motd").read_text() == f"I am {host.name}\n"


# --- sync of a rendered tree ------------------------------------------------------------------


class CountingTransport(Transport):
    """The real Transport, counting SSH command round trips per host."""

    def __init__(self, options):
        super().__init__(options)
        self.round_trips: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def _exec(self, host, command, stdin, timeout):
        with self._count_lock:
            self.round_trips[host.name] = self.round_trips.get(host.name, 0) + 1
        return super()._exec(host, command, stdin, timeout)


def _tree_for(fleet, host) -> dict[PurePosixPath, File]:
    """A rendered tree as `render` would write it; its paths lie in the host's corner of the shared disk."""
    base = PurePosixPath(host_dir(fleet, host)) / "synced"
    return {
        base / "etc/kubernetes/pki/ca.crt": File(f"CA for {host.name}\n".encode(), 0o644),
        base / "etc/kubernetes/pki/apiserver.key": File(os.urandom(64), 0o600),
        base / "etc/kubernetes/manifests/kube-apiserver.yaml": File(b"kind: Pod\n", 0o600),
        base / "etc/containerd/config.toml": File(b"version = 2\n", 0o644),
    }


def fleet_cluster(fleet) -> Cluster:
    return Cluster(apiVersion="kubeprov.io/v1alpha1", kind="Cluster", kubernetes_version="v1.31.4", hosts=fleet.hosts)


def test_sync_pushes_each_host_its_tree_and_a_second_run_writes_nothing(fleet, tmp_path):
    cluster = fleet_cluster(fleet)
    trees = {h.name: _tree_for(fleet, h) for h in fleet.hosts}
    rendered = tmp_path / "rendered"
    write_trees(rendered, trees)
    options = Options(known_hosts=fleet.known_hosts, backup_root=fleet.root / "backups-sync")

    with CountingTransport(options) as t:
        first = sync_rendered(t, cluster, rendered)
    for outcome in first:
        assert outcome.ok, outcome.error_text
        assert sorted(c.path for c in outcome.value) == sorted(str(p) for p in trees[outcome.host])
        assert {c.what for c in outcome.value} == {"created"}
        for path, file in trees[outcome.host].items():
            assert Path(path).read_bytes() == file.content
            assert Path(path).stat().st_mode & 0o777 == file.mode
    mtimes = {Path(p): Path(p).stat().st_mtime_ns for tree in trees.values() for p in tree}

    with CountingTransport(options) as t:
        second = sync_rendered(t, cluster, rendered)
    assert [(o.host, o.value) for o in second] == [(h.name, []) for h in fleet.hosts]
    assert t.round_trips == {h.name: 1 for h in fleet.hosts}  # one listing per host, no writes
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # One file changes in the rendered tree: exactly that file on that host is pushed.
    changed = next(p for p in trees["node1"] if p.name == "config.toml")
    (rendered / "node1" / str(changed).lstrip("/")).write_bytes(b"version = 3\n")
    with CountingTransport(options) as t:
        third = {o.host: o.value for o in sync_rendered(t, cluster, rendered)}
    assert [(c.path, c.what) for c in third["node1"]] == [(str(changed), "content")]
    assert third["cp1"] == third["node2"] == []
    assert Path(changed).read_bytes() == b"version = 3\n"
    assert t.round_trips == {"cp1": 1, "node1": 2, "node2": 1}


def test_sync_refuses_a_tree_that_misses_a_host(fleet, tmp_path):
    rendered = tmp_path / "rendered"
    write_trees(rendered, {"cp1": _tree_for(fleet, fleet.hosts[0])})
    with Transport(Options(known_hosts=fleet.known_hosts)) as t, pytest.raises(ConfigError, match="nothing rendered for host node1"):
        sync_rendered(t, fleet_cluster(fleet), rendered)


# --- a non-root login user, root through sudo -n -----------------------------------------------


@pytest.mark.skipif(shutil.which("sudo") is None or shutil.which("useradd") is None, reason="sudo/useradd not installed (scripts/setup installs sudo)")
def test_non_root_user_runs_as_root_through_sudo_and_a_password_prompt_is_an_error(fleet):
    with temporary_user("ALL=(ALL) ALL") as (user, set_rule):
        host = fleet.hosts_as(user)[0]
        with Transport(Options(known_hosts=fleet.known_hosts, backup_root=fleet.root / "backups-sudo")) as t:
            # sudo wants a password: one clear error, not a hang and not exit code 1 passed off as the command's.
            with pytest.raises(AuthenticationError, match=rf"^cp1: sudo on cp1 wants a password for {user};"):
                t.run(host, "id -u")
            set_rule("ALL=(ALL) NOPASSWD: ALL")
            # The login is the user's (sshd saw it), the command is root's (sudo made it so).
            assert t.run(host, "id -u; echo $SUDO_USER").stdout.split() == ["0", user]
            target = host_dir(fleet, host) / "root-only" / "token"
            assert t.put_if_different(host, str(target), b"secret\n", 0o600) is True
            assert (target.stat().st_uid, target.stat().st_mode & 0o777) == (0, 0o600)
            assert t.read_file(host, str(target)) == b"secret\n"
            assert t.put_if_different(host, str(target), b"secret\n", 0o600) is False


# --- retries in up's progress ------------------------------------------------------------------


def test_up_says_a_connect_retry_as_a_line_of_the_phase_it_happens_in(make_cluster):
    from provision.config import load_cluster
    from provision.phases.runner import Reporter
    from provision.phases.up import UpOptions, up
    from provision.pki import PKIStore

    with sshd_fleet(1) as fleet:
        host = fleet.hosts[0]
        ssh = {"user": "root", "port": host.ssh.port, "key": str(host.ssh.key)}
        cluster = load_cluster(make_cluster(hosts=[{"name": "cp1", "address": host.address, "ssh": ssh, "roles": ["control-plane"]}]))
        PKIStore(cluster).generate()  # with a PKI, planning preflight asks each host whether it joined already
        fleet.stop_host("cp1")

        class Lines(Reporter):
            """What up reports, as the CLI's ConsoleReporter would draw it; starts cp1's sshd on the first retry."""

            def __init__(self):
                self.lines = []

            def host_line(self, step, host, status, text):
                self.lines.append((step.path, host, status, text))
                if text.startswith("retry ") and len(self.lines) == 1:
                    fleet.start_host("cp1")

            def phase_end(self, step, status, seconds, detail=""):
                self.lines.append((step.path, status))

        lines = Lines()
        options = Options(known_hosts=fleet.known_hosts, connect_timeout=5, connect_backoff=Backoff(attempts=4, first=0.05))
        up(cluster, UpOptions(known_hosts=fleet.known_hosts), lines, dry_run=True, only=["preflight"], transport_options=options)
    refused = f"connection refused at {host.address}:{host.ssh.port} (is sshd running?)"
    assert lines.lines == [("preflight", "cp1", "warning", f"retry 1/3 in 50ms: {refused}"), ("preflight", "planned")]
