"""`kubeprov exec` and `kubeprov sync` as a user runs them, against real sshd daemons on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from provision.render.tree import File, write_trees
from transport_sshd import sshd_fleet, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

KUBEPROV = Path(sys.executable).parent / "kubeprov"


@pytest.fixture(scope="module")
def fleet():
    with sshd_fleet(3) as fleet:
        yield fleet


def cluster_file(path: Path, fleet, *, known_hosts: Path | None = None, extra_hosts=()) -> Path:
    hosts = [
        {
            "name": h.name,
            "address": h.address,
            "ssh": {"user": "root", "port": h.ssh.port, "key": str(h.ssh.key), "knownHosts": str(known_hosts or fleet.known_hosts)},
            "roles": [r.value for r in h.roles],
        }
        for h in fleet.hosts
    ]
    data = {"apiVersion": "kubeprov.io/v1alpha1", "kind": "Cluster", "kubernetesVersion": "v1.31.4", "hosts": hosts + list(extra_hosts)}
    path.write_text(yaml.safe_dump(data))
    return path


def kubeprov(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(KUBEPROV), *args], capture_output=True, text=True, timeout=120, env=env)


def rows(output: str) -> dict[str, list[str]]:
    """Table rows keyed by host name (first column)."""
    return {line.split()[0]: line.split() for line in output.splitlines()[1:] if line.strip()}


def test_exec_prints_a_row_per_host(fleet, tmp_path):
    config = cluster_file(tmp_path / "cluster.yaml", fleet)
    run = kubeprov("exec", "-c", str(config), "--", "hostname")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].split() == ["HOST", "EXIT", "TIME", "OUTPUT"]
    table = rows(run.stdout)
    for host in fleet.hosts:
        assert table[host.name][1] == "0"
        assert table[host.name][3] == host.name


def test_exec_fails_when_one_host_fails_and_shows_its_stderr(fleet, tmp_path):
    config = cluster_file(tmp_path / "cluster.yaml", fleet)
    run = kubeprov("exec", "-c", str(config), "--", '[ "$(hostname)" != node2 ] || { echo disk full >&2; exit 5; }; echo fine')
    assert run.returncode == 1
    table = rows(run.stdout)
    assert table["node2"][1] == "5" and table["node2"][3:] == ["disk", "full"]
    assert table["cp1"][1] == table["node1"][1] == "0"
    assert table["cp1"][3] == "fine"
    assert "1 of 3 hosts failed" in run.stderr
    assert "Traceback" not in run.stderr


def test_exec_names_a_host_that_is_down_after_saying_each_retry(fleet, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = {"name": "gone1", "address": "127.0.0.1", "ssh": {"port": port}, "roles": ["worker"]}
    config = cluster_file(tmp_path / "cluster.yaml", fleet, extra_hosts=[down])
    run = kubeprov("exec", "-c", str(config), "--connect-timeout", "2", "--", "true")
    assert run.returncode == 1
    assert rows(run.stdout)["gone1"][1] == "-"
    refused = f"connection refused at 127.0.0.1:{port} (is sshd running?)"
    assert f"{refused} (gave up after 5 attempts)" in " ".join(run.stdout.split())
    # The default backoff (0.5, 1, 2, 4 s), each retry one line on stderr naming the host; stdout keeps the table alone.
    retries = [line for line in run.stderr.splitlines() if "retry" in line]
    assert retries == [f"gone1: retry {n}/4 in {delay}: {refused}" for n, delay in enumerate(("0.5s", "1.0s", "2.0s", "4.0s"), 1)]
    assert "retry" not in run.stdout
    assert [rows(run.stdout)[h.name][1] for h in fleet.hosts] == ["0", "0", "0"]


def test_exec_refuses_unknown_keys_unless_trusting_on_first_use(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    config = cluster_file(tmp_path / "cluster.yaml", fleet, known_hosts=known)
    strict = kubeprov("exec", "-c", str(config), "--", "true")
    assert strict.returncode == 1
    assert f"host key for cp1 ({fleet.hosts[0].address}:{fleet.hosts[0].ssh.port}) is not in {known}" in " ".join(strict.stdout.split())
    assert not known.exists()
    tofu = kubeprov("exec", "-c", str(config), "--trust-on-first-use", "--", "true")
    assert tofu.returncode == 0, tofu.stdout + tofu.stderr
    assert sorted(known.read_text().splitlines()) == sorted(fleet.known_hosts.read_text().splitlines())
    assert kubeprov("exec", "-c", str(config), "--", "true").returncode == 0


def test_sync_twice_second_run_reports_nothing_changed(fleet, tmp_path):
    config = cluster_file(tmp_path / "cluster.yaml", fleet)
    trees = {}
    for host in fleet.hosts:
        base = PurePosixPath(fleet.root) / "hosts" / host.name / "cli-sync"
        trees[host.name] = {
            base / "etc/kubernetes/kubelet.conf": File(f"kubelet on {host.name}\n".encode(), 0o600),
            base / "etc/hosts.extra": File(b"10.0.0.1 api\n", 0o644),
        }
    rendered = tmp_path / "rendered"
    # As `kubeprov render -o DIR` writes it: the cluster objects beside the hosts, not pushed.
    write_trees(rendered, {**trees, "_cluster": {PurePosixPath("/kube-proxy.yaml"): File(b"kind: DaemonSet\n", 0o644)}})

    first = kubeprov("sync", "-c", str(config), "--from", str(rendered))
    assert first.returncode == 0, first.stderr
    for host in fleet.hosts:
        assert f"{host.name}: 2 changed" in first.stdout
        for path in trees[host.name]:
            assert f"created  {path}" in first.stdout
    assert "6 files changed on 3 hosts" in first.stdout

    second = kubeprov("sync", "-c", str(config), "--from", str(rendered))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "nothing changed"
    for host in fleet.hosts:
        assert f"{host.name}: unchanged" in second.stdout


def test_sync_from_a_missing_directory_is_one_clear_error(fleet, tmp_path):
    config = cluster_file(tmp_path / "cluster.yaml", fleet)
    run = kubeprov("sync", "-c", str(config), "--from", str(tmp_path / "nope"))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {tmp_path / 'nope'}: no such directory; write it with `kubeprov render -o DIR`"
